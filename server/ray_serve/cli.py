"""`recserve serve-ray`: deploy a bundle as Ray Serve replicas behind Ray's gRPC proxy.

Without --address a local Ray is started and this command keeps it up until SIGINT/SIGTERM.
With --address (a running cluster, e.g. KubeRay) it deploys and returns; running it again
with another --bundle is a rolling update (old replicas serve until the new ones are up).
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading

from export.errors import InvalidInput
from export.settings import load_settings

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from server.cli import add_arguments as add_serve_arguments

    add_serve_arguments(parser)  # the engine's own options, exactly as `recserve serve`
    scale = parser.add_mutually_exclusive_group()
    scale.add_argument("--replicas", type=int, help="fixed number of replicas (default 1)")
    scale.add_argument("--autoscale", metavar="MIN:MAX",
                       help="autoscale between MIN and MAX replicas on ongoing requests per replica")
    parser.add_argument("--replica-cpus", type=float, help="CPUs reserved per replica (default 1)")
    parser.add_argument("--replica-gpus", type=float, help="GPUs reserved per replica (default 0)")
    parser.add_argument("--http-port", type=int, help="Ray Serve's HTTP proxy port (default 8000)")
    parser.add_argument("--ingress-replicas", type=int,
                        help="replicas of the ingress that retries reads a dead replica lost "
                             "(default 1; 0 = the proxy calls the engine directly: faster, "
                             "such calls come back INTERNAL)")
    parser.add_argument("--address", help="Ray cluster to deploy to (default: start a local Ray)")


def _autoscale(value: str | None) -> tuple[int | None, int | None]:
    if value is None:
        return None, None
    try:
        low, high = (int(part) for part in value.split(":"))
    except ValueError:
        raise InvalidInput(f"--autoscale wants MIN:MAX, got {value!r}") from None
    if not 0 <= low <= high or high < 1:
        raise InvalidInput(f"--autoscale {value}: need 0 <= MIN <= MAX and MAX >= 1")
    return low, high


def run(args: argparse.Namespace) -> int:
    import ray

    from server.cli import configs_from_args
    from server.ray_serve.app import RayServeConfig, deploy

    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.bundle:
        raise InvalidInput("serve-ray needs --bundle DIR (a path every Ray node can read)")
    low, high = _autoscale(args.autoscale)
    config = load_settings(RayServeConfig, args.config, replicas=args.replicas, autoscale_min=low,
                           autoscale_max=high, replica_cpus=args.replica_cpus,
                           replica_gpus=args.replica_gpus, port=args.port, http_port=args.http_port,
                           ingress_replicas=args.ingress_replicas,
                           single_host=False if args.address else None)
    ray.init(address=args.address, log_to_driver=False)
    port, live_lock = deploy(args.bundle, configs_from_args(args), config)
    log.info("recserve on Ray Serve: gRPC on port %d", port)
    print(f"serving {args.bundle} on Ray Serve, gRPC port {port}", flush=True)
    if args.address:
        return 0  # the cluster keeps serving; this was a (rolling) deployment
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    from ray import serve

    serve.shutdown()
    ray.shutdown()
    if live_lock is not None:
        live_lock.close()
    return 0
