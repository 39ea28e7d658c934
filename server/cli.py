"""`recserve serve`: serve a bundle (or the default one) until SIGTERM/SIGINT; SIGHUP reloads it."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import socket

from export.runtime import RuntimeConfig
from export.settings import load_settings
from pydantic import ValidationError
from server.batching.batcher import BatcherConfig
from server.engine import RankingConfig
from server.live.config import LiveConfig
from server.errors import BindFailed, ConfigError
from server.live.log_sharing import LogSharing
from server.requests import LimitsConfig
from server.retrieval.retriever import RetrievalConfig
from server.service.app import AllConfigs, RecserveServer, ServerConfig
from server.admission_proxy import ProxiedPort
from server.workers.identity import supervisor_proxy_address, worker_prefix
from server.workers.announce import announce_ready, announce_reload_failed, reload_target
from server.workers.supervisor import SupervisorConfig, auto_workers


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bundle", help="bundle directory (default: build/serve the demo bundle)")
    parser.add_argument("--host", help="interface to bind (default 0.0.0.0)")
    parser.add_argument("--port", type=int, help="gRPC port (default 50051; 0 = any free port)")
    parser.add_argument("--metrics-port", type=int, help="Prometheus port (default 9464; -1 = off)")
    parser.add_argument("--config", help="TOML config file with [server], [batcher], [runtime], ... tables")
    parser.add_argument("--provider", choices=["auto", "tensorrt", "cuda", "cpu"], help="execution provider")
    parser.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads (0 = usable CPUs)")
    parser.add_argument("--live-dir", help="write-ahead log and snapshots of live writes "
                        "(default: live/ beside the bundle directory)")
    parser.add_argument("--read-only", action="store_true", default=None,
                        help="refuse live writes (UpsertItems, DeleteItems, RecordInteractions)")
    security = parser.add_argument_group("security (docs/SECURITY.md)")
    security.add_argument("--tls-cert", help="PEM certificate chain: the gRPC port speaks TLS only")
    security.add_argument("--tls-key", help="PEM private key of --tls-cert")
    security.add_argument("--tls-client-ca", help="PEM CA: clients must present a certificate it signed")
    security.add_argument("--tokens-file", help="TOML file of scoped tokens (sha256) and certificate "
                          "subjects; tokens never go on the command line (or RECSERVE_SERVER_TOKENS)")
    security.add_argument("--insecure", action="store_true", default=None,
                          help="on a non-loopback address without credentials, accept writes and Reload anyway")
    security.add_argument("--release-dir", help="publish directory Reload may load from "
                          "(`current` or a version name); default: Reload over the API is off")
    security.add_argument("--metrics-host", help="interface of the Prometheus port (default: --host)")
    security.add_argument("--no-reflection", dest="reflection", action="store_false", default=None,
                          help="do not serve gRPC server reflection")
    parser.add_argument("--workers", default="1",
                        help="serving processes sharing the port: a number or `auto` (usable CPUs); "
                        "default 1 (docs/WORKERS.md)")
    parser.add_argument("--inference", choices=["auto", "local", "shared"], default="auto",
                        help="where the encoder runs: a session per worker (local), or one inference "
                        "process for all workers (shared); auto = shared on a GPU (docs/WORKERS.md)")
    parser.add_argument("--admission-proxy", action="store_true", default=None,
                        help="HAProxy on the port refuses calls beyond the bound at once, off the serving "
                        "core (plaintext, one worker; docs/OVERLOAD.md)")
    parser.add_argument("--log-level", default="INFO")


def configs_from_args(args: argparse.Namespace) -> AllConfigs:
    """Every component config; a bad RECSERVE_* or config-file value is one ConfigError line."""
    try:
        return _configs(args)
    except ValidationError as exc:
        raise ConfigError(_explain(exc)) from None


def _explain(exc: ValidationError) -> str:
    first = exc.errors()[0]
    field = ".".join(str(part) for part in first["loc"])
    section = exc.title.lower()
    return (f"bad setting [{section}] {field} (RECSERVE_{section.upper()}_{field.upper()} or --config): "
            f"{first['msg']}, got {first.get('input')!r}")


def _configs(args: argparse.Namespace) -> AllConfigs:
    cfg = args.config
    return AllConfigs(
        server=load_settings(ServerConfig, cfg, host=args.host, port=args.port,
                             metrics_port=args.metrics_port, tls_cert=args.tls_cert, tls_key=args.tls_key,
                             tls_client_ca=args.tls_client_ca, tokens_file=args.tokens_file,
                             insecure=args.insecure, release_dir=args.release_dir,
                             metrics_host=args.metrics_host, reflection=args.reflection,
                             admission_proxy=args.admission_proxy),
        runtime=load_settings(RuntimeConfig, cfg, provider=args.provider, intra_op_threads=args.threads),
        batcher=load_settings(BatcherConfig, cfg),
        retrieval=load_settings(RetrievalConfig, cfg),
        ranking=load_settings(RankingConfig, cfg),
        limits=load_settings(LimitsConfig, cfg),
        live=load_settings(LiveConfig, cfg, directory=args.live_dir,
                           enabled=False if args.read_only else None),
    )


log = logging.getLogger(__name__)


async def serve(bundle: str, configs: AllConfigs) -> int:
    server = RecserveServer(configs)
    loop = asyncio.get_running_loop()
    stopping: list[asyncio.Task] = []
    starting: list[asyncio.Task] = []

    def on_signal(signame: str) -> None:
        if starting and not starting[0].done():  # still loading: stop cleanly, never say "serving"
            log.info("%s during start-up: stopping", signame)
            starting[0].cancel()
            return
        log.info("%s: draining", signame)
        if not stopping:
            stopping.append(loop.create_task(server.drain_and_stop()))

    async def reload() -> None:
        try:
            outcome = await server.reload(reload_target())  # None: the configured path
            log.info("SIGHUP: now serving %s (was %s; %d live writes replayed)",
                     outcome.bundle_version, outcome.previous_version, outcome.replayed_writes)
            announce_ready(outcome.bundle_version)
        except Exception as exc:  # noqa: BLE001 - the old bundle keeps serving; say why
            log.error("SIGHUP: %s", exc)
            announce_reload_failed(str(exc))

    reloads: set[asyncio.Task] = set()  # keep a reference until each task is done

    def on_hangup() -> None:
        try:  # new certificates and tokens file first: they need no bundle
            server.security.reload()
        except Exception as exc:  # noqa: BLE001 - keep the credentials in use; say why
            log.error("SIGHUP: credentials not reloaded: %s", exc)
        if server.ready and not stopping:
            task = loop.create_task(reload())
            reloads.add(task)
            task.add_done_callback(reloads.discard)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig.name)
    loop.add_signal_handler(signal.SIGHUP, on_hangup)
    behind = supervisor_proxy_address()  # a --workers worker: the supervisor runs the proxy
    front = ProxiedPort(configs) if configs.server.admission_proxy and behind is None else None
    starting.append(loop.create_task(
        server.start(bundle, *front.addresses()) if front else server.start(bundle, None, behind)))
    try:
        port = await starting[0]
        if front is not None:
            port = await front.open(server)
    except asyncio.CancelledError:  # start() already stopped what it had started
        print("recserve: stopped during start-up", flush=True)
        return 0
    except BaseException:
        if front is not None:
            front.close()
        await server.stop(grace=0)
        raise
    live = f"; live writes in {server.live.directory}" if server.live is not None else "; read-only"
    print(f"{worker_prefix()}: serving bundle {server.state.version} on {configs.server.host}:{port}"
          f" (metrics on :{server.metrics_port}{live})", flush=True)
    announce_ready(server.state.version)  # to the supervisor, when this is one of its workers
    try:
        await server.wait_for_termination()
        if stopping:
            await stopping[0]
    finally:
        if front is not None:  # after the drain: calls through the proxy were answered
            front.close()
    return 0 if front is None or not front.failed else 1


def check_port_free(host: str, port: int) -> None:
    """BindFailed (one line) for a busy port before gRPC core logs its own multi-line complaint."""
    if port == 0:
        return
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # like gRPC: TIME_WAIT is fine
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise BindFailed(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    configs = configs_from_args(args)
    bundle = args.bundle  # without --bundle the console script passes the default one (clients/cli.py)
    if not bundle:
        raise SystemExit("recserve serve: --bundle is required")
    workers = auto_workers() if str(args.workers) == "auto" else int(args.workers)
    if workers < 1:
        raise SystemExit("recserve serve: --workers takes a number >= 1 or `auto`")
    if configs.server.admission_proxy:
        ProxiedPort.check(configs)
    if workers > 1:
        shared = shared_inference(args.inference, configs.runtime)
        return supervise(args, bundle, configs, workers, shared)
    if args.inference == "shared" and not configs.runtime.inference_socket:
        raise SystemExit("recserve serve: --inference shared feeds several workers; use --workers 2 or more")
    if not LogSharing.from_env().shared:  # a supervisor's worker shares the port on purpose
        check_port_free(configs.server.host, configs.server.port)
    return asyncio.run(serve(bundle, configs))


def shared_inference(choice: str, runtime: RuntimeConfig) -> bool:
    """--inference: auto shares one inference process when the encoder would run on a GPU."""
    if choice != "auto" or runtime.inference_socket:  # a supervisor's worker: already decided
        return choice == "shared" and not runtime.inference_socket
    import onnxruntime as ort

    gpu = {"CUDAExecutionProvider", "TensorrtExecutionProvider"} & set(ort.get_available_providers())
    return bool(gpu) and runtime.provider != "cpu"


def supervise(args: argparse.Namespace, bundle: str, configs: AllConfigs, workers: int,
              shared: bool = False) -> int:
    """`--workers N`: N serving processes on one port (server/workers/supervisor.py)."""
    import sys

    from server.live.service import live_directory

    argv = sys.argv[sys.argv.index("serve") + 1:] + ["--bundle", bundle]
    server = configs.server
    config = SupervisorConfig(
        workers=workers, host=server.host, port=server.port,
        metrics_host=getattr(server, "metrics_host", "") or server.host, metrics_port=server.metrics_port,
        live_dir=live_directory(bundle, configs.live) if configs.live.enabled else None,
        shared_inference=shared,
        admission_limit=server.concurrency_limit(configs.batcher) if server.admission_proxy else 0)
    # exec, not call: the supervisor then holds ~20 MB instead of this process's imports (same pid)
    import dataclasses
    import json
    import os

    fields = {k: (str(v) if isinstance(v, os.PathLike) else v) for k, v in dataclasses.asdict(config).items()}
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", "server.workers",
                              json.dumps({"config": fields, "argv": argv, "log_level": args.log_level})])
