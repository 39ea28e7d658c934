"""The Ray Serve application: replicas of the recserve engine behind Ray's gRPC proxy.

The proxy registers the unchanged recserve.v1.Recommender service (plus grpc.health.v1 and
reflection), so clients, `recserve query` and `recserve loadtest` work against it as they
are. The proxy calls a thin ingress deployment (server/ray_serve/ingress.py) that forwards
each call through a DeploymentHandle to an engine replica with room (max_ongoing_requests);
Ray queues at most max_queued_requests more and the rest are refused with RESOURCE_EXHAUSTED.
A read whose replica dies is retried on another, a write gets UNAVAILABLE (the proxy alone
would answer INTERNAL). Ray restarts a replica whose health check fails and replaces replicas
one by one when the bundle changes (a new deployment version: old replicas serve until the
new ones are up).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from pydantic import Field

from export.settings import RecserveSettings, settings_config
from server.live.log_sharing import LogSharing
from server.live.service import live_directory, lock_live_directory
from server.service.app import AllConfigs

APP_NAME = "recserve"
SERVICER_FUNCTIONS = [
    "protos.recommender_pb2_grpc.add_RecommenderServicer_to_server",
    "grpc_health.v1.health_pb2_grpc.add_HealthServicer_to_server",
]


class RayServeConfig(RecserveSettings):
    model_config = settings_config("ray_serve")

    replicas: int = 1
    """Fixed number of replicas (ignored when autoscale_max > 0)."""
    autoscale_min: int = 1
    """Fewest replicas when autoscaling."""
    autoscale_max: int = 0
    """Most replicas when autoscaling; 0 = a fixed `replicas` count."""
    target_ongoing_requests: float = 16.0
    """Autoscaling target of in-flight calls per replica (the batcher wants several at once)."""
    max_ongoing_requests: int = 64
    """Calls one replica works on at once; more wait in Ray's queue."""
    max_queued_requests: int = 256
    """Calls Ray queues for the deployment before answering RESOURCE_EXHAUSTED at once."""
    replica_cpus: float = 1.0
    """CPUs Ray reserves per replica (fractions share cores, as on a test machine)."""
    replica_gpus: float = 0.0
    """GPUs Ray reserves per replica (1 = one device each; ONNX Runtime then picks CUDA)."""
    port: int = 9000
    """Port of Ray Serve's gRPC proxy (fixed once Serve has started on the cluster)."""
    http_port: int = 8000
    """Port of Ray Serve's HTTP proxy, which starts with it (recserve serves nothing over HTTP)."""
    single_host: bool = True
    """Every replica runs on this host: they share the live directory (writes on). False
    (a multi-host cluster): replicas are read-only, the log would need a shared service."""
    ingress_replicas: int = Field(1, ge=0)
    """Replicas of the forwarding ingress (no CPU reserved: it only awaits the engine). 0: the
    proxy calls the engine replicas directly, faster, but a call in flight on a replica that
    dies comes back INTERNAL instead of being retried (docs/SCALING.md)."""
    request_timeout_s: float = 30.0
    """End-to-end limit the proxy puts on a call (Ray does not forward client deadlines)."""


def deployment_options(config: RayServeConfig) -> dict[str, Any]:
    options: dict[str, Any] = {
        "max_ongoing_requests": config.max_ongoing_requests,
        "max_queued_requests": config.max_queued_requests,
        "ray_actor_options": {"num_cpus": config.replica_cpus, "num_gpus": config.replica_gpus},
        "health_check_period_s": 2.0,
    }
    if config.autoscale_max > 0:
        options["num_replicas"] = "auto"
        options["autoscaling_config"] = {
            "min_replicas": config.autoscale_min, "max_replicas": config.autoscale_max,
            "target_ongoing_requests": config.target_ongoing_requests,
        }
    else:
        options["num_replicas"] = config.replicas
    return options


def ingress_options(config: RayServeConfig) -> dict[str, Any]:
    """The ingress holds every call the engine replicas work on or Ray queues for them, so
    that the refusal at capacity is the engine deployment's (RESOURCE_EXHAUSTED at once)."""
    most_replicas = max(config.replicas, config.autoscale_max)
    calls = config.max_ongoing_requests * most_replicas + config.max_queued_requests
    return {"num_replicas": config.ingress_replicas, "ray_actor_options": {"num_cpus": 0},
            "max_ongoing_requests": calls + 1}


def live_writes(configs: AllConfigs, config: RayServeConfig) -> bool:
    """Live writes need a fixed replica count (each replica is one applier of one log) and
    `single_host`: the log is a local directory every replica opens."""
    return configs.live.enabled and config.single_host and config.autoscale_max == 0


def replica_configs(bundle_path: str | Path, configs: AllConfigs, config: RayServeConfig) -> AllConfigs:
    """What each replica's engine runs with: its private port on loopback, no metrics port of
    its own, ONNX Runtime threads = its CPUs, and the one shared live directory (or read-only)."""
    runtime = configs.runtime
    if runtime.intra_op_threads == 0:
        runtime = runtime.model_copy(update={"intra_op_threads": max(1, int(config.replica_cpus))})
    live = configs.live.model_copy(update={"enabled": False})
    if live_writes(configs, config):
        live = configs.live.model_copy(update={
            "directory": str(live_directory(Path(bundle_path).resolve(), configs.live).resolve())})
    return replace(
        configs, runtime=runtime, live=live,
        server=configs.server.model_copy(update={"host": "127.0.0.1", "metrics_port": -1}))


def build_app(bundle_path: str | Path, configs: AllConfigs, config: RayServeConfig):
    """The application; its arguments (bundle path, configs) make up the deployment version."""
    from ray import serve

    from server.ray_serve.ingress import RecommenderIngress
    from server.ray_serve.replica import RecommenderReplica

    engine = serve.deployment(RecommenderReplica, name="Recommender", **deployment_options(config))
    engine_app = engine.bind(str(Path(bundle_path).resolve()),
                             replica_configs(bundle_path, configs, config), config.replicas)
    if config.ingress_replicas == 0:
        return engine_app
    return serve.deployment(RecommenderIngress, name="Ingress", **ingress_options(config)).bind(engine_app)


def deploy(bundle_path: str | Path, configs: AllConfigs, config: RayServeConfig) -> tuple[int, Any]:
    """Start Serve's gRPC proxy on the connected Ray cluster and (re)deploy. Returns the port
    and the live directory's lock (None when read-only): hold it while the deployment serves,
    as the `--workers` supervisor holds it for its workers.

    Deploying again with another bundle is Ray Serve's rolling update."""
    from ray import serve
    from ray.serve.config import gRPCOptions

    lock = None  # one replica locks the directory itself, as a lone `recserve serve` does
    if live_writes(configs, config) and config.replicas > 1:
        directory = Path(replica_configs(bundle_path, configs, config).live.directory)
        lock = lock_live_directory(directory, LogSharing(0, 1))
    serve.start(
        http_options={"host": "127.0.0.1", "port": config.http_port},
        grpc_options=gRPCOptions(port=config.port, grpc_servicer_functions=SERVICER_FUNCTIONS,
                                 request_timeout_s=config.request_timeout_s, enable_reflection=True))
    # A routed app (route_prefix set) is what the gRPC proxy sends calls to when the caller
    # names no `application` in its metadata: unchanged clients need that.
    serve.run(build_app(bundle_path, configs, config), name=APP_NAME, route_prefix="/")
    return config.port, lock
