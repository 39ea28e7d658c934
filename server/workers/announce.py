"""What a worker tells its supervisor, and what it reads back (no-ops outside a supervisor).

A worker writes one line per event to the supervisor's pipe (ENV_READY_FD): `ready` when it
serves a bundle version (at start-up and after every reload), `reload` after a Reload RPC
(the others must load the same bundle), `reload_failed` when a reload the supervisor asked
for kept the old bundle. The supervisor writes the bundle path the others must load to
ENV_RELOAD_FILE, and each worker's state to `workers.json` beside it, which the worker that
served the Reload RPC reads until every worker serves the new version: so a Reload answers
only when any connection, to any worker, sees the new bundle (the release step's smoke test
relies on that).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from pathlib import Path

from export.errors import BundleError
from server.errors import DeadlineExceeded
from server.live.log_sharing import ENV_INDEX

ENV_READY_FD = "RECSERVE_WORKER_READY_FD"
ENV_RELOAD_FILE = "RECSERVE_WORKER_RELOAD_FILE"
STATUS_FILE = "workers.json"
_POLL_S = 0.02  # a reload takes seconds; the answer waits at most one poll longer


def _tell_supervisor(kind: str, value: str) -> bool:
    fd = os.environ.get(ENV_READY_FD)
    if fd:  # one short write to a pipe: atomic, never interleaved with another worker's
        line = " ".join(value.split())  # one line whatever the message
        os.write(int(fd), f"{kind} {os.environ.get(ENV_INDEX, '0')} {os.getpid()} {line}\n".encode())
    return bool(fd)


def announce_ready(version: str) -> None:
    """This process serves `version` (at start-up and after each reload)."""
    _tell_supervisor("ready", version)


def announce_reload_failed(reason: str) -> None:
    """A reload kept the old bundle: a Reload RPC waiting on this worker fails with `reason`."""
    _tell_supervisor("reload_failed", reason[:2000])


def announce_reload(bundle_path: str) -> str | None:
    """After a Reload RPC: the other workers load the same bundle. Returns the token to wait
    on (`wait_for_every_worker`), or None when this process has no supervisor."""
    token = uuid.uuid4().hex
    return token if _tell_supervisor("reload", f"{token} {bundle_path}") else None


def reload_target() -> str | None:
    """On SIGHUP: the bundle another worker reloaded to over the API, if that is why the
    supervisor sent it (None: reload the configured path)."""
    path = os.environ.get(ENV_RELOAD_FILE)
    try:
        return Path(path).read_text() if path else None
    except FileNotFoundError:
        return None


def write_status(reload_file: Path, reload_token: str, workers: dict[int, dict]) -> None:
    """Supervisor side: every worker's {pid, version, failed}, replaced whole."""
    path = reload_file.parent / STATUS_FILE
    draft = path.with_suffix(".tmp")
    draft.write_text(json.dumps({"reload": reload_token, "workers": workers}))
    os.replace(draft, path)


def _read_status() -> dict | None:
    reload_file = os.environ.get(ENV_RELOAD_FILE)
    if not reload_file:
        return None
    try:
        return json.loads((Path(reload_file).parent / STATUS_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


async def wait_for_every_worker(token: str | None, version: str, deadline: float) -> None:
    """Return once every worker serves `version` after the reload `token` announced.

    BundleError when a worker could not load it (it keeps its old bundle; the caller, e.g.
    the release step, rolls back), DeadlineExceeded at `deadline` (time.monotonic())."""
    if token is None:
        return
    behind: list[str] = []
    while True:
        status = _read_status()
        if status is not None and status.get("reload") == token:  # the supervisor passed it on
            workers = status["workers"]
            failed = {i: w["failed"] for i, w in workers.items() if w.get("failed")}
            if failed:
                named = "; ".join(f"worker {i}: {reason}" for i, reason in sorted(failed.items()))
                raise BundleError(f"this worker serves {version}, but not every worker could load "
                                  f"it (they keep their bundle): {named}")
            behind = sorted(i for i, w in workers.items() if w.get("version") != version)
            if not behind:
                return
        if time.monotonic() >= deadline:
            waiting = f"workers {', '.join(behind)} do not serve it yet" if behind else \
                "the supervisor has not passed the reload on yet"
            raise DeadlineExceeded(f"this worker serves {version}; {waiting}")
        await asyncio.sleep(_POLL_S)
