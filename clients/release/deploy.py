"""Deploy a published release to a running server, and take it back when it does not come up.

deploy:   Reload("current") -> wait until GetInfo reports the new bundle version -> smoke test
          (a few Recommend calls must each return k items from that version).
rollback: point `current` back at the previous release; if the server no longer serves
          what it served before, Reload("current") again and wait for the previous version.

Reload names a release, not a path: the server resolves it in its own release directory
(`recserve serve --release-dir`, the publish directory; server/release_guard.py), so the
client never needs to know where that directory is mounted on the server.

The server keeps its old bundle when a Reload fails (server/reload.py), so a refused bundle
needs only the pointer put back. Everything goes through the public gRPC API.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from rich.console import Console

from clients.client import RecommenderClient
from clients.errors import DeadlineExceeded, RecommenderError
from clients.release.outcome import DeployFailed, RollbackFailed
from clients.release.publish import POINTER, PublishDir, PublishedRelease


@dataclass(frozen=True)
class DeployTimeouts:
    reload_s: float = 600.0
    """Deadline of the Reload call (the server loads, verifies and warms the bundle first)."""
    settle_s: float = 60.0
    """After Reload, how long GetInfo may take to report the new version."""
    poll_s: float = 0.2


@dataclass(frozen=True)
class SmokeTest:
    queries: tuple[str, ...]
    """Texts sent as Recommend queries (titles from the new catalog)."""
    k: int


def smoke_test(client: RecommenderClient, expected_version: str, smoke: SmokeTest) -> None:
    """Each query must answer k items, all from expected_version; raises DeployFailed."""
    for query in smoke.queries:
        try:
            result = client.recommend(query, k=smoke.k)
        except RecommenderError as exc:
            raise DeployFailed(f"smoke test: Recommend({query!r}) failed: {exc}") from None
        if result.bundle_version != expected_version:
            raise DeployFailed(f"smoke test: Recommend({query!r}) was answered by bundle "
                               f"{result.bundle_version}, not {expected_version}")
        if len(result.items) != smoke.k or not all(item.item_id for item in result.items):
            raise DeployFailed(f"smoke test: Recommend({query!r}, k={smoke.k}) returned "
                               f"{len(result.items)} items")


class Deployer:
    def __init__(self, client: RecommenderClient, timeouts: DeployTimeouts | None = None,
                 console: Console | None = None) -> None:
        self.client = client
        self.pointer = POINTER  # the release name the server resolves in its release directory
        self.timeouts = timeouts or DeployTimeouts()
        self.console = console or Console(stderr=True)

    def served_version(self) -> str:
        return self.client.info().bundle_version

    def deploy(self, expected_version: str, smoke: SmokeTest) -> None:
        """Serve expected_version and smoke-test it; raises DeployFailed."""
        with self.console.status(f"server {self.client.options.target}: reloading {self.pointer}"):
            self._reload_and_wait(expected_version, DeployFailed)
        with self.console.status("smoke test"):
            smoke_test(self.client, expected_version, smoke)
        self.console.print(f"server {self.client.options.target} serves {expected_version}; "
                           f"smoke test passed ({len(smoke.queries)} queries, k={smoke.k})")

    def rollback(self, publish: PublishDir, previous: PublishedRelease | None,
                 served_before: str) -> str:
        """Pointer back to `previous`, server back to what it served; returns the served version."""
        try:
            publish.switch(previous.name if previous else None)
        except OSError as exc:
            raise RollbackFailed(f"could not point {publish.root / POINTER} back at "
                                 f"{previous.name if previous else 'nothing'}: {exc}") from None
        try:
            served = self.served_version()
        except RecommenderError as exc:
            raise RollbackFailed(f"pointer restored, but the server cannot be asked what it serves: "
                                 f"{exc}") from None
        if served == served_before or (previous and served == previous.bundle_version):
            return served  # the server never switched, or already serves the previous release
        if previous is None:
            raise RollbackFailed(f"the server serves {served} and there is no previous release "
                                 f"to reload (it served {served_before} before)")
        with self.console.status(f"rolling back: reloading {previous.name}"):
            self._reload_and_wait(previous.bundle_version, RollbackFailed)
        return previous.bundle_version

    def _reload_and_wait(self, expected_version: str, failure: type[Exception]) -> None:
        try:
            reloaded = self.client.reload(self.pointer, deadline_s=self.timeouts.reload_s)
        except DeadlineExceeded:
            reloaded = None  # the server finishes a reload its caller gave up on: keep watching
        except RecommenderError as exc:
            raise failure(f"Reload({self.pointer}) failed: {exc}") from None
        if reloaded is not None and reloaded.bundle_version != expected_version:
            raise failure(f"Reload({self.pointer}) loaded {reloaded.bundle_version}, "
                          f"not {expected_version}")
        self._wait_for_version(expected_version, failure)

    def _wait_for_version(self, expected_version: str, failure: type[Exception]) -> None:
        end = time.monotonic() + self.timeouts.settle_s
        last = "no answer"
        while True:
            try:
                last = self.served_version()
                if last == expected_version:
                    return
            except RecommenderError as exc:
                last = str(exc)
            if time.monotonic() >= end:
                raise failure(f"server still reports {last} {self.timeouts.settle_s:.0f}s after the "
                              f"reload, not {expected_version}")
            time.sleep(self.timeouts.poll_s)
