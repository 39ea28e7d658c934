"""server/ports.py: a reserved port is held against other binds but shared with SO_REUSEPORT."""

from __future__ import annotations

import socket

import pytest

from server.ports import address_of, reserve_port


def test_a_reserved_port_is_held_yet_shared_with_a_reuseport_listener():
    held = reserve_port("127.0.0.1", 0)
    port = held.getsockname()[1]
    assert address_of("127.0.0.1", held) == f"127.0.0.1:{port}"
    with socket.socket() as other, pytest.raises(OSError):
        other.bind(("127.0.0.1", port))  # what bind(0) elsewhere could have picked meanwhile
    listener = reserve_port("127.0.0.1", port)  # as a worker or HAProxy binds it
    listener.listen()
    with socket.create_connection(("127.0.0.1", port), timeout=2):
        accepted, _ = listener.accept()  # the held socket, not listening, takes no connection
        accepted.close()
    listener.close()
    held.close()
