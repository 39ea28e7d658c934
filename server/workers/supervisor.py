"""WorkerSupervisor: `recserve serve --workers N` runs N serving processes on one port.

One Python process is one GIL and one event loop (about 5k gRPC calls/s at best), so the
supervisor starts N ordinary `recserve serve` processes that all bind the same port with
SO_REUSEPORT (the kernel spreads connections over them). Each has its own event loop,
batcher and ONNX Runtime session (intra-op threads = usable CPUs / N); they share the
bundle's files through the page cache and one live log (server/live/log_sharing.py).

The supervisor:
- picks the port first (port 0: it binds a SO_REUSEPORT socket to reserve a free port, and
  holds it) and locks the live directory for all workers;
- waits until every worker says it serves, then prints the ready line;
- restarts a worker that dies, with exponential backoff; more than `max_restarts` deaths
  within `restart_window_s` is a crash loop: it says so in one log line and stops the server;
- forwards SIGTERM/SIGINT (every worker drains and exits 0) and SIGHUP (every worker reloads
  its bundle path); a Reload RPC served by one worker is passed on the same way, with the
  bundle that worker loaded written to a file the others read on that SIGHUP, and keeps
  each worker's served version in a status file, so that the Reload answers only once every
  worker serves it (server/workers/announce.py);
- serves one Prometheus scrape for all workers (prometheus_client multiprocess mode).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from export.cpus import usable_cpus
from server.live.log_sharing import ENV_COUNT, ENV_INDEX
from server.ports import address_of, reserve_port
from server.workers.announce import ENV_READY_FD, ENV_RELOAD_FILE, write_status
from server.workers.children import die_with_parent
from server.workers.identity import ENV_JOIN_LATE, ENV_PUBLIC_ADDRESS

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


@dataclass(frozen=True)
class SupervisorConfig:
    workers: int
    """Serving processes (>= 1)."""
    host: str
    """Interface every worker binds."""
    port: int
    """gRPC port (0: the supervisor picks a free one and passes it to every worker)."""
    metrics_host: str = "127.0.0.1"
    """Interface of the one Prometheus endpoint for all workers."""
    metrics_port: int = -1
    """Prometheus port of the supervisor (-1 = off, 0 = any free port)."""
    live_dir: Path | None = None
    """Live directory the supervisor locks for its workers (None: live writes off)."""
    threads_per_worker: int | None = None
    """ORT intra-op threads per worker (None: usable CPUs / workers, at least 1)."""
    start_timeout_s: float = 300.0
    """Longest wait for every worker to serve at start-up."""
    max_restarts: int = 5
    """Worker deaths tolerated within restart_window_s before the server stops (crash loop)."""
    restart_window_s: float = 60.0
    """Window of the crash-loop count."""
    backoff_s: tuple[float, float] = (0.5, 10.0)
    """First and longest pause before restarting a dead worker (doubling in between)."""
    drain_timeout_s: float = 60.0
    """After SIGTERM, how long workers may take to drain before they are killed."""
    shared_inference: bool = False
    """One inference process runs the encoder for every worker (server/inference/)."""
    admission_limit: int = 0
    """> 0: HAProxy on the port (server/admission_proxy.py), each worker on its own loopback
    port behind it, at most this many calls in flight per worker before it refuses."""


def auto_workers() -> int:
    """`--workers auto`: the usable CPUs (affinity and cgroup quota)."""
    return usable_cpus()


@dataclass
class _Worker:
    index: int
    process: subprocess.Popen | None = None
    ready: bool = False
    version: str | None = None  # the bundle version it last said it serves
    failed: str | None = None  # why it could not load the bundle of the last Reload RPC
    restart_at: float | None = None  # monotonic time of a scheduled restart
    deaths: list[float] = field(default_factory=list)


class WorkerSupervisor:
    def __init__(self, config: SupervisorConfig, worker_argv: list[str]) -> None:
        self.config = config
        self.worker_argv = worker_argv  # `recserve serve ...` arguments; port etc. are appended
        self.workers = [_Worker(i) for i in range(config.workers)]
        self.port: int | None = None
        self._stopping: str | None = None
        self._hangup = False
        self._deaths: list[float] = []
        self._ready_r, self._ready_w = os.pipe()
        os.set_blocking(self._ready_r, False)
        self._ready_buffer = b""
        self._reload_file: Path | None = None  # set by run(): where a Reload RPC's bundle path goes
        self._reload_token = ""  # the last Reload RPC passed on (workers.json says which)
        self.inference = None  # InferenceLauncher with shared_inference
        self.proxy = None  # AdmissionProxy with admission_limit
        self._public = ""  # host:port the proxy listens on
        self._worker_ports: list[socket.socket] = []  # each worker's loopback port, held
        self._registry = None  # the one Prometheus registry (the proxy's counters join it)

    # ---- the lifecycle ---------------------------------------------------------------------

    def run(self) -> int:
        # held from now on: the workers (or HAProxy) bind it with SO_REUSEPORT
        reserved = reserve_port(self.config.host, self.config.port)
        self.port = reserved.getsockname()[1]
        if self.config.admission_limit:
            self._public = address_of(self.config.host, reserved)
            self._worker_ports = [reserve_port("127.0.0.1", 0) for _ in self.workers]
        lock = self._lock_live_directory()
        metrics_dir = tempfile.mkdtemp(prefix="recserve-metrics-")
        os.environ[MULTIPROC_ENV] = metrics_dir  # before any worker starts
        self._reload_file = Path(tempfile.mkdtemp(prefix="recserve-reload-")) / "bundle_path"
        metrics_http = self._start_metrics(metrics_dir)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_hangup)
        try:
            if self.config.shared_inference:
                self._start_inference()
            for worker in self.workers:
                self._spawn(worker)
            code = self._supervise()
        finally:
            self._stop_all()
            if self.proxy is not None:  # after the drain: calls through it were answered
                self.proxy.stop()
            for sock in self._worker_ports:
                sock.close()
            if self.inference is not None:
                self.inference.stop()
            if metrics_http is not None:
                metrics_http.shutdown()
            shutil.rmtree(metrics_dir, ignore_errors=True)
            shutil.rmtree(self._reload_file.parent, ignore_errors=True)
            reserved.close()
            if lock is not None:
                lock.close()
        return code

    def _supervise(self) -> int:
        announced = False
        started = time.monotonic()
        while self._stopping is None:
            self._read_ready()
            if not announced and all(w.ready for w in self.workers):
                announced = True
                if self.config.admission_limit and not self._start_proxy():
                    return 1
                metrics = f"; metrics on :{self.metrics_port}" if self.metrics_port else ""
                print(f"recserve: serving bundle {self._version} on {self.config.host}:{self.port} "
                      f"({len(self.workers)} workers{metrics})", flush=True)
            if not announced and time.monotonic() - started > self.config.start_timeout_s:
                log.error("workers did not all serve within %.0fs: stopping", self.config.start_timeout_s)
                return 1
            if self._hangup:  # the operator's SIGHUP: every worker reloads its own path
                self._hangup = False
                self._reload_file.unlink(missing_ok=True)
                self._signal_all(signal.SIGHUP)
            if not self._reap_and_restart() or not self._proxy_running():
                return 1
            time.sleep(0.05)
        log.info("%s: draining %d workers", self._stopping, len(self.workers))
        return self._drain()

    # ---- workers ---------------------------------------------------------------------------

    def _spawn(self, worker: _Worker) -> None:
        threads = self.config.threads_per_worker or max(1, usable_cpus() // len(self.workers))
        if self.inference is not None:
            threads = 1  # the encoder runs in the inference process
        env = {**os.environ, ENV_INDEX: str(worker.index), ENV_COUNT: str(len(self.workers)),
               ENV_READY_FD: str(self._ready_w), ENV_RELOAD_FILE: str(self._reload_file or "")}
        env.setdefault("RECSERVE_RUNTIME_INTRA_OP_THREADS", str(threads))
        if worker.process is not None:  # a replacement: the others serve, join the port when ready
            env[ENV_JOIN_LATE] = "1"
        host, port = self.config.host, self.port
        if self._worker_ports:  # behind the proxy: its own loopback port, judged by the public one
            host, port = "127.0.0.1", self._worker_ports[worker.index].getsockname()[1]
            env[ENV_PUBLIC_ADDRESS] = self._public
        argv = [sys.executable, "-m", "clients.cli", "serve", *self.worker_argv,
                "--workers", "1", "--host", host, "--port", str(port), "--metrics-port", "-1"]
        if self._reload_file is not None and self._reload_file.exists():  # the others reloaded over the API: a replacement serves that
            argv += ["--bundle", self._reload_file.read_text()]
        worker.process = subprocess.Popen(argv, env=env, pass_fds=(self._ready_w,),
                                          preexec_fn=die_with_parent)
        worker.ready, worker.restart_at, worker.version = False, None, None
        self._write_status()
        log.info("worker %d started (pid %d, %d ORT threads)", worker.index, worker.process.pid, threads)

    def _read_ready(self) -> None:
        """Workers write `ready <index> <pid> <version>` whenever they serve a bundle,
        `reload <index> <pid> <token> <bundle path>` after a Reload RPC and
        `reload_failed <index> <pid> <reason>` when a reload kept their old bundle."""
        try:
            self._ready_buffer += os.read(self._ready_r, 4096)
        except BlockingIOError:
            return
        *lines, self._ready_buffer = self._ready_buffer.split(b"\n")
        for line in lines:
            parts = line.decode().split(" ", 3)
            if len(parts) < 4:
                continue
            kind, worker, value = parts[0], self.workers[int(parts[1])], parts[3]
            if worker.process is None or worker.process.pid != int(parts[2]):
                continue  # from a worker since replaced
            if kind == "ready":
                worker.ready, worker.version, worker.failed = True, value, None
                self._version = value
            elif kind == "reload_failed":
                worker.failed = value
            elif kind == "reload":
                token, _, bundle_path = value.partition(" ")
                self._pass_reload_on(worker.index, token, bundle_path)
            self._write_status()

    def _pass_reload_on(self, origin: int, token: str, bundle_path: str) -> None:
        """A worker served a Reload RPC: the others load the same bundle."""
        draft = self._reload_file.with_suffix(".tmp")
        draft.write_text(bundle_path)
        os.replace(draft, self._reload_file)  # whole or not at all
        self._reload_token = token
        log.info("worker %d reloaded over the API: the other workers follow", origin)
        for worker in self.workers:
            worker.failed = None
            if worker.index != origin and worker.process is not None and worker.process.poll() is None:
                worker.process.send_signal(signal.SIGHUP)

    def _write_status(self) -> None:
        if self._reload_file is not None:
            write_status(self._reload_file, self._reload_token, {
                w.index: {"pid": w.process.pid if w.process else None, "version": w.version,
                          "failed": w.failed} for w in self.workers})

    _version = "?"

    def _reap_and_restart(self) -> bool:
        """Restart dead workers (after their backoff) and the inference process; False on a crash loop."""
        now = time.monotonic()
        code = self.inference.exited() if self.inference is not None else None
        if code is not None:  # workers fail their batches until it answers again (health probes)
            self._deaths = [t for t in self._deaths if now - t < self.config.restart_window_s] + [now]
            if len(self._deaths) > self.config.max_restarts:
                log.error("crash loop: the inference process exited with %s: stopping the server", code)
                return False
            log.warning("the inference process exited with %s; restarting it", code)
            self.inference.start()
        for worker in self.workers:
            if worker.restart_at is not None:
                if now >= worker.restart_at:
                    self._spawn(worker)
                continue
            code = worker.process.poll() if worker.process is not None else None
            if code is None:
                continue
            self._mark_dead(worker.process.pid)
            worker.version = None
            self._write_status()
            self._deaths = [t for t in self._deaths if now - t < self.config.restart_window_s] + [now]
            if len(self._deaths) > self.config.max_restarts:
                log.error("crash loop: %d worker deaths within %.0fs (worker %d exited with %s): "
                          "stopping the server", len(self._deaths), self.config.restart_window_s,
                          worker.index, code)
                return False
            recent = [t for t in worker.deaths if now - t < self.config.restart_window_s]
            worker.deaths = recent + [now]
            first, longest = self.config.backoff_s
            pause = min(longest, first * 2 ** (len(worker.deaths) - 1))
            log.warning("worker %d (pid %d) exited with %s; restarting in %.1fs",
                        worker.index, worker.process.pid, code, pause)
            worker.ready, worker.restart_at = False, now + pause
        return True

    def _signal_all(self, sig: int) -> None:
        for worker in self.workers:
            if worker.process is not None and worker.process.poll() is None:
                worker.process.send_signal(sig)

    def _drain(self) -> int:
        self._signal_all(signal.SIGTERM)
        deadline = time.monotonic() + self.config.drain_timeout_s
        codes = []
        for worker in self.workers:
            if worker.process is None or worker.restart_at is not None:
                continue
            try:
                codes.append(worker.process.wait(timeout=max(0.1, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                log.error("worker %d did not drain in time: killed", worker.index)
                worker.process.kill()
                codes.append(worker.process.wait())
        return 0 if all(c == 0 for c in codes) else 1

    def _stop_all(self) -> None:
        for worker in self.workers:
            if worker.process is not None and worker.process.poll() is None:
                worker.process.kill()
                worker.process.wait()

    def _start_proxy(self) -> bool:
        from server.admission_proxy import AdmissionProxy, ProxyCounters, ProxyPlan

        backends = tuple(f"127.0.0.1:{s.getsockname()[1]}" for s in self._worker_ports)
        self.proxy = AdmissionProxy(ProxyPlan(self._public, backends, self.config.admission_limit))
        try:
            self.proxy.start()
        except (RuntimeError, OSError) as exc:
            log.error("the admission proxy did not start (%s): stopping", exc)
            return False
        if self._registry is not None:
            self._registry.register(ProxyCounters(self.proxy))
        return True

    def _proxy_running(self) -> bool:
        """Restart the proxy if it died; False (stop the server) if it cannot be."""
        return self.proxy is None or self.proxy.restart_if_exited()

    def _start_inference(self) -> None:
        from server.inference.launcher import ENV_SOCKET, InferenceLauncher

        self.inference = InferenceLauncher(self.config.threads_per_worker or usable_cpus())
        self.inference.start()
        os.environ[ENV_SOCKET] = self.inference.socket_path  # every worker's RuntimeConfig

    # ---- signals, live directory, metrics --------------------------------------------------

    def _on_stop(self, signum: int, _frame) -> None:
        self._stopping = signal.Signals(signum).name

    def _on_hangup(self, _signum: int, _frame) -> None:
        self._hangup = True

    def _lock_live_directory(self):
        if self.config.live_dir is None:
            return None
        from server.live.log_sharing import LogSharing
        from server.live.directory import lock_live_directory

        return lock_live_directory(self.config.live_dir, LogSharing())  # held for all workers

    metrics_port: int | None = None

    def _start_metrics(self, metrics_dir: str):
        if self.config.metrics_port < 0:
            return None
        from prometheus_client import CollectorRegistry, multiprocess, start_http_server

        registry = self._registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=metrics_dir)
        server, _ = start_http_server(self.config.metrics_port, addr=self.config.metrics_host,
                                      registry=registry)
        self.metrics_port = server.server_port
        return server

    @staticmethod
    def _mark_dead(pid: int) -> None:
        if os.environ.get(MULTIPROC_ENV):
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(pid)
