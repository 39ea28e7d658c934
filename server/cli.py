"""`recserve serve`: serve a bundle (or the default one) until SIGTERM/SIGINT; SIGHUP reloads it."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from export.runtime import RuntimeConfig
from export.settings import load_settings
from server.batching.batcher import BatcherConfig
from server.engine import RankingConfig
from server.live.config import LiveConfig
from server.requests import LimitsConfig
from server.retrieval.retriever import RetrievalConfig
from server.service.app import AllConfigs, RecserveServer, ServerConfig
from server.workers.identity import worker_prefix
from server.workers.supervisor import SupervisorConfig, WorkerSupervisor, announce_ready, auto_workers


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
    parser.add_argument("--workers", default="1",
                        help="serving processes sharing the port: a number or `auto` (usable CPUs); "
                        "default 1 (docs/WORKERS.md)")
    parser.add_argument("--log-level", default="INFO")


def configs_from_args(args: argparse.Namespace) -> AllConfigs:
    cfg = args.config
    return AllConfigs(
        server=load_settings(ServerConfig, cfg, host=args.host, port=args.port,
                             metrics_port=args.metrics_port),
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

    def on_signal(signame: str) -> None:
        log.info("%s: draining", signame)
        if not stopping:
            stopping.append(loop.create_task(server.drain_and_stop()))

    async def reload() -> None:
        try:
            outcome = await server.reload()
            log.info("SIGHUP: now serving %s (was %s; %d live writes replayed)",
                     outcome.bundle_version, outcome.previous_version, outcome.replayed_writes)
        except Exception as exc:  # noqa: BLE001 - the old bundle keeps serving; say why
            log.error("SIGHUP: %s", exc)

    reloads: set[asyncio.Task] = set()  # keep a reference until each task is done

    def on_hangup() -> None:
        if server.state is not None and not stopping:
            task = loop.create_task(reload())
            reloads.add(task)
            task.add_done_callback(reloads.discard)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig.name)
    loop.add_signal_handler(signal.SIGHUP, on_hangup)
    port = await server.start(bundle)
    live = f"; live writes in {server.live.directory}" if server.live is not None else "; read-only"
    print(f"{worker_prefix()}: serving bundle {server.state.version} on {configs.server.host}:{port}"
          f" (metrics on :{server.metrics_port}{live})", flush=True)
    announce_ready(server.state.version)  # to the supervisor, when this is one of its workers
    await server.wait_for_termination()
    if stopping:
        await stopping[0]
    return 0


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    configs = configs_from_args(args)
    bundle = args.bundle
    if not bundle:
        from server.default_bundle import default_bundle_path

        bundle = str(default_bundle_path())
    workers = auto_workers() if str(args.workers) == "auto" else int(args.workers)
    if workers > 1:
        return supervise(args, bundle, configs, workers)
    return asyncio.run(serve(bundle, configs))


def supervise(args: argparse.Namespace, bundle: str, configs: AllConfigs, workers: int) -> int:
    """`--workers N`: N serving processes on one port (server/workers/supervisor.py)."""
    import sys

    from server.live.service import live_directory

    argv = sys.argv[sys.argv.index("serve") + 1:] + ["--bundle", bundle]
    server = configs.server
    config = SupervisorConfig(
        workers=workers, host=server.host, port=server.port,
        metrics_host=getattr(server, "metrics_host", "") or server.host, metrics_port=server.metrics_port,
        live_dir=live_directory(bundle, configs.live) if configs.live.enabled else None)
    return WorkerSupervisor(config, argv).run()
