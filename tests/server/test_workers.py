"""`recserve serve --workers 2`: a real supervisor and two worker processes on one port (port 0).

One server for the module; the tests run in order and the last one stops it with SIGTERM.
Each call uses a new channel (a new connection), so the kernel's SO_REUSEPORT spreading
reaches both workers.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import time
import urllib.request

import grpc
import pytest

from clients.client import RecommenderClient
from clients.options import ClientOptions, RetryPolicy
from protos import recommender_pb2 as pb
from protos import recommender_pb2_grpc as pb_grpc
from server.workers.process import ServerProcess
from tests.server.connections import new_connection


def _release(small_bundle, releases, name: str) -> str:
    """A copy of the small bundle as release `name` (its own version string)."""
    shutil.copytree(small_bundle, releases / name)
    manifest = json.loads((releases / name / "manifest.json").read_text())
    manifest["version"] = f"{manifest['version']}-{name}"
    (releases / name / "manifest.json").write_text(json.dumps(manifest))
    return manifest["version"]


@pytest.fixture(scope="module")
def two_workers(small_bundle, tmp_path_factory):
    work = tmp_path_factory.mktemp("workers")
    releases = work / "releases"
    releases.mkdir()
    _release(small_bundle, releases, "v1")
    (releases / "current").symlink_to("v1", target_is_directory=True)  # re-pointed by a reload test
    server = ServerProcess(releases / "current", work / "live", work / "server.log",
                           extra_args=("--workers", "2", "--metrics-port", "0", "--release-dir", str(releases)))
    server.start()
    yield server, work
    server.kill()


def _call(port: int, request: pb.RecommendRequest, timeout: float = 10.0) -> pb.RecommendResponse:
    with new_connection(port) as channel:
        return pb_grpc.RecommenderStub(channel).Recommend(request, timeout=timeout)


def _workers_seen(port: int, request: pb.RecommendRequest, calls: int = 24) -> dict[str, pb.RecommendResponse]:
    return {r.timings.worker_id: r for r in (_call(port, request) for _ in range(calls))}


def test_calls_are_spread_over_the_workers(two_workers):
    server, _ = two_workers
    seen = _workers_seen(server.port, pb.RecommendRequest(query="christmas lantern", k=5))
    assert len(seen) == 2, seen.keys()
    assert all(r.items for r in seen.values())
    # one scrape of the supervisor's port covers every worker (prometheus multiprocess mode)
    metrics_port = int(re.search(r"metrics on :(\d+)", server.log_text()).group(1))
    scrape = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
    served = sum(float(line.rsplit(" ", 1)[1]) for line in scrape.splitlines()
                 if line.startswith("recserve_requests_total{") and 'method="Recommend"' in line
                 and 'code="OK"' in line)
    assert served >= 24


def test_a_write_acknowledged_by_one_worker_is_read_through_min_sequence_on_all(two_workers):
    server, _ = two_workers
    with RecommenderClient(f"127.0.0.1:{server.port}") as client:
        written = client.upsert_items([pb.Item(item_id="ws-new-1", title="ZEPPELIN TEA COSY",
                                               text="a brand new item", attributes={"probe": "ws"})])
    probe = pb.RecommendRequest(query="zeppelin tea cosy", k=3, min_sequence=written.sequence,
                                filter=pb.Filter(attribute_equals={"probe": "ws"}))
    answers = [_call(server.port, probe) for _ in range(24)]
    assert len({a.timings.worker_id for a in answers}) == 2
    assert all([i.item_id for i in a.items] == ["ws-new-1"] for a in answers)


def test_a_killed_worker_is_replaced_while_calls_keep_succeeding(two_workers):
    server, _ = two_workers
    request = pb.RecommendRequest(query="red mug", k=3)
    before = _workers_seen(server.port, request)
    victim = int(sorted(before)[0].rsplit("-", 1)[1])
    os.kill(victim, signal.SIGKILL)
    failures, seen_after = 0, set()
    # A call on a connection to the dead worker fails UNAVAILABLE and is retried by the client
    # (a replacement joins the port only once it serves).
    options = ClientOptions(target=f"127.0.0.1:{server.port}", deadline_s=30.0,
                            retry=RetryPolicy(max_attempts=60, initial_backoff_s=0.1, max_backoff_s=0.5))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(seen_after - set(before)) == 0:
        try:
            with RecommenderClient(options=options) as client:
                seen_after.add(client.recommend_request(request, raw=True).timings.worker_id)
        except Exception:  # noqa: BLE001 - counted, must stay 0
            failures += 1
        time.sleep(0.05)
    assert failures == 0
    replacement = seen_after - set(before)
    assert replacement and all(not w.endswith(f"-{victim}") for w in replacement)
    assert "restarting in" in server.log_text()


def _every_worker_serves(port: int, version: str, timeout_s: float = 60.0) -> set[str]:
    request = pb.RecommendRequest(query="christmas lantern", k=3)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        seen = _workers_seen(port, request, calls=12)
        if len(seen) == 2 and all(r.bundle_version == version for r in seen.values()):
            break
        time.sleep(0.2)
    return {r.bundle_version for r in seen.values()} if len(seen) == 2 else set()


def test_sighup_reloads_every_worker(two_workers, small_bundle):
    server, work = two_workers
    releases = work / "releases"
    version = _release(small_bundle, releases, "v2")
    (releases / "current").unlink()
    (releases / "current").symlink_to("v2", target_is_directory=True)
    server.process.send_signal(signal.SIGHUP)  # the supervisor forwards it to every worker
    assert _every_worker_serves(server.port, version) == {version}


def test_a_reload_rpc_on_one_worker_reloads_every_worker(two_workers, small_bundle):
    server, work = two_workers
    version = _release(small_bundle, work / "releases", "v3")
    with RecommenderClient(f"127.0.0.1:{server.port}") as client:
        assert client.reload("v3", deadline_s=60).bundle_version == version  # one worker answers
    # ... only once the other serves it too: every new connection sees the new version at once
    seen = _workers_seen(server.port, pb.RecommendRequest(query="christmas lantern", k=3))
    assert len(seen) == 2 and {r.bundle_version for r in seen.values()} == {version}


def test_sigterm_drains_every_worker_and_exits_0(two_workers):
    server, _ = two_workers
    pids = {int(w.rsplit("-", 1)[1]) for w in _workers_seen(server.port, pb.RecommendRequest(query="mug"))}
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        in_flight = pb_grpc.RecommenderStub(channel).Recommend.future(
            pb.RecommendRequest(query="lantern gift", k=5), timeout=10)
        server.process.send_signal(signal.SIGTERM)
        assert in_flight.result().items  # admitted before the drain: answered
    assert server.process.wait(timeout=60) == 0
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


class _DeadProcess:
    """A worker process that has already exited (unit test of the restart policy)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def poll(self) -> int:
        return 1


def test_a_crash_loop_stops_the_supervisor_with_one_log_line(caplog):
    from server.workers.supervisor import SupervisorConfig, WorkerSupervisor

    config = SupervisorConfig(workers=2, host="127.0.0.1", port=0, max_restarts=3, restart_window_s=60,
                              backoff_s=(0.0, 0.0))
    supervisor = WorkerSupervisor(config, [])
    pids = iter(range(10_000, 10_100))
    supervisor._spawn = lambda worker: setattr(worker, "process", _DeadProcess(next(pids))) or \
        setattr(worker, "restart_at", None)
    for worker in supervisor.workers:
        supervisor._spawn(worker)
    rounds = 0
    while supervisor._reap_and_restart():  # every restarted worker dies again at once
        rounds += 1
        assert rounds < 10
    assert len(supervisor._deaths) == 4  # max_restarts + 1
    assert [r.message for r in caplog.records if "crash loop" in r.message]
