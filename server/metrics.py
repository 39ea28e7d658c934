"""Prometheus metrics of the serving path (one registry per server, so tests can run several)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, PlatformCollector
from prometheus_client import ProcessCollector

# Microsecond-scale stages up to whole seconds.
_LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)


class ServerMetrics:
    """All recserve metrics, registered on their own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        if registry is None:  # a private registry gets what the default one has: process_*, python_info
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)
        self.build_info = Gauge(
            "recserve_build_info", "1 for the served build: recserve version, bundle version, model name",
            ["version", "bundle_version", "model"], registry=r)
        self.requests = Counter(
            "recserve_requests", "RPCs handled, by method and status code", ["method", "code"], registry=r)
        self.request_latency = Histogram(
            "recserve_request_seconds", "End-to-end RPC latency", ["method"],
            buckets=_LATENCY_BUCKETS, registry=r)
        self.stage_latency = Histogram(
            "recserve_stage_seconds", "Latency of one serving stage", ["stage"],
            buckets=_LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram(
            "recserve_batch_size", "Texts per inference batch",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=r)
        self.batch_tokens = Histogram(
            "recserve_batch_padded_tokens", "Padded tokens per inference batch",
            buckets=(16, 64, 256, 512, 1024, 2048, 4096, 8192, 16384), registry=r)
        self.padding_waste = Histogram(
            "recserve_batch_padding_waste_ratio", "Share of padded tokens that are padding",
            buckets=(0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0), registry=r)
        self.queue_depth = Gauge(
            "recserve_queue_depth", "Texts admitted and waiting for inference", registry=r)
        self.cache_lookups = Counter(
            "recserve_embedding_cache_lookups", "Query-embedding cache lookups", ["result"], registry=r)
        self.rejected = Counter(
            "recserve_rejected", "Requests refused before inference", ["reason"], registry=r)
        self.index_size = Gauge(
            "recserve_index_items", "Items in the served index", ["state"], registry=r)
        self.backend_healthy = Gauge(
            "recserve_backend_healthy", "1 when the inference backend is healthy", registry=r)

    def set_build(self, version: str, bundle_version: str, model: str) -> None:
        """recserve_build_info{version,bundle_version,model} = 1 for what serves now (only)."""
        self.build_info.clear()
        self.build_info.labels(version, bundle_version, model).set(1)
