"""Ports held before anything listens on them, so a chosen port cannot be taken meanwhile."""

from __future__ import annotations

import socket


def reserve_port(host: str, port: int) -> socket.socket:
    """A bound (not listening) SO_REUSEPORT socket: it holds the port (port 0: a free one, chosen
    now) while processes that also set SO_REUSEPORT (the workers, HAProxy) bind and listen on it.
    Only listening sockets receive connections, so holding it never swallows a call."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host.strip("[]"), port))
    return sock


def address_of(host: str, sock: socket.socket) -> str:
    """host:port of a reserved socket, bracketed for IPv6."""
    port = sock.getsockname()[1]
    return f"[{host.strip('[]')}]:{port}" if ":" in host else f"{host}:{port}"
