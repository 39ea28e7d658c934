"""The Reload hand-shake between workers and their supervisor (server/workers/announce.py):
the supervisor's status file, and the wait of the worker that served a Reload RPC."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time

import pytest

from export.errors import BundleError
from server.errors import DeadlineExceeded
from server.workers import announce
from server.workers.supervisor import SupervisorConfig, WorkerSupervisor


class _LiveProcess:
    def __init__(self, pid: int) -> None:
        self.pid, self.signals = pid, []

    def poll(self):
        return None

    def send_signal(self, sig: int) -> None:
        self.signals.append(sig)


@pytest.fixture
def supervisor(tmp_path, monkeypatch):
    sup = WorkerSupervisor(SupervisorConfig(workers=2, host="127.0.0.1", port=0), [])
    sup._reload_file = tmp_path / "bundle_path"
    for worker, pid in zip(sup.workers, (101, 102)):
        worker.process = _LiveProcess(pid)
    monkeypatch.setenv(announce.ENV_RELOAD_FILE, str(sup._reload_file))
    yield sup
    os.close(sup._ready_r)
    os.close(sup._ready_w)


def _say(sup: WorkerSupervisor, *lines: str) -> None:
    os.write(sup._ready_w, "".join(f"{line}\n" for line in lines).encode())
    sup._read_ready()


def _status(sup: WorkerSupervisor) -> dict:
    return json.loads((sup._reload_file.parent / announce.STATUS_FILE).read_text())


def _wait(token: str, version: str, timeout_s: float = 0.3) -> None:
    asyncio.run(announce.wait_for_every_worker(token, version, time.monotonic() + timeout_s))


def test_a_reload_rpc_is_passed_on_and_answered_once_every_worker_serves_it(supervisor):
    _say(supervisor, "ready 0 101 v1", "ready 1 102 v1")
    _say(supervisor, "ready 0 101 v2", "reload 0 101 tok1 /releases/v2")  # worker 0 served the RPC
    assert supervisor._reload_file.read_text() == "/releases/v2"
    assert supervisor.workers[1].process.signals == [signal.SIGHUP]
    assert supervisor.workers[0].process.signals == []  # the one that served it has it already
    assert _status(supervisor)["workers"]["1"]["version"] == "v1"
    with pytest.raises(DeadlineExceeded, match="workers 1 do not serve it yet"):
        _wait("tok1", "v2")
    _say(supervisor, "ready 1 102 v2")
    _wait("tok1", "v2")  # returns


def test_a_worker_that_cannot_load_it_fails_the_reload_with_its_reason(supervisor):
    _say(supervisor, "ready 0 101 v1", "ready 1 102 v1", "ready 0 101 v2", "reload 0 101 tok2 /r/v2")
    _say(supervisor, "reload_failed 1 102 checksum mismatch in model.onnx")
    with pytest.raises(BundleError, match="worker 1: checksum mismatch in model.onnx"):
        _wait("tok2", "v2")


def test_a_stale_status_or_a_replaced_worker_never_answers_a_reload(supervisor):
    _say(supervisor, "ready 0 101 v2", "ready 1 102 v2")
    with pytest.raises(DeadlineExceeded, match="not passed the reload on"):
        _wait("another-token", "v2")  # the status is of no reload this worker announced
    _say(supervisor, "reload 0 101 tok3 /r/v2", "ready 1 999 v3")  # pid 999 is not worker 1
    assert _status(supervisor)["workers"]["1"]["version"] == "v2"
    supervisor.workers[1].process, supervisor.workers[1].version = _LiveProcess(103), None  # replaced,
    supervisor._write_status()  # as _spawn does: no version until the new process says it serves
    with pytest.raises(DeadlineExceeded):
        _wait("tok3", "v2")


def test_without_a_supervisor_there_is_nothing_to_wait_for(monkeypatch):
    monkeypatch.delenv(announce.ENV_READY_FD, raising=False)
    assert announce.announce_reload("/r/v2") is None
    _wait(None, "v2", timeout_s=0)  # returns at once
