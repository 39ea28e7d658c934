"""The door: every Recommender call passes here before any recserve code runs.

A server interceptor (grpc.aio runs interceptors before its own concurrency limiter and
before the request is parsed), so it sees every call that reaches Python:
- admission: at most `limit` calls in flight; beyond that RESOURCE_EXHAUSTED at once, before
  the request is parsed or any work is queued (health checks and reflection are never refused);
- malformed requests (bytes that do not parse, invalid UTF-8) become INVALID_ARGUMENT with a
  short message, logged at most once per interval instead of a traceback per call;
- in flight: the drain waits for exactly these calls;
- metrics: every call is counted once with its final code, CANCELLED included.

What cannot be counted here: calls gRPC core refuses before Python sees them (a request over
max_message_bytes, streams refused after shutdown began, connections that never complete).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Awaitable, Callable

import grpc

from protos import SERVICE_NAME
from server.metrics import ServerMetrics

log = logging.getLogger(__name__)

_PREFIX = f"/{SERVICE_NAME}/"
MALFORMED_MESSAGE = "the request message could not be parsed (not a valid protobuf message or not UTF-8)"
OVERLOADED_MESSAGE = "server is at capacity; retry with backoff"


class Malformed:
    """Stands in for a request whose bytes did not parse (the deserializer never raises)."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


def tolerant(deserializer: Callable[[bytes], object] | None) -> Callable[[bytes], object]:
    """A deserializer that returns Malformed instead of raising (grpc.aio would answer UNKNOWN
    with the exception's class name and log a traceback for every such call)."""

    def parse(raw: bytes):
        try:
            return deserializer(raw) if deserializer is not None else raw
        except Exception as exc:  # noqa: BLE001 - any parse failure is the caller's bad bytes
            return Malformed(type(exc).__name__)

    return parse


class RateLimitedLog:
    """One warning per interval at most, with how many were suppressed since the last one."""

    def __init__(self, interval_s: float = 10.0) -> None:
        self.interval_s = interval_s
        self._last = float("-inf")
        self._suppressed = 0

    def warning(self, message: str, *args) -> None:
        now = time.monotonic()
        if now - self._last < self.interval_s:
            self._suppressed += 1
            return
        suppressed, self._suppressed, self._last = self._suppressed, 0, now
        log.warning(message + " (%d more since the last report)", *args, suppressed)


class InFlightCalls:
    """Calls admitted at the door and not yet answered, so a drain can wait for them."""

    def __init__(self) -> None:
        self.count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def enter(self) -> None:
        self.count += 1
        self._idle.clear()

    def leave(self) -> None:
        self.count -= 1
        if self.count == 0:
            self._idle.set()

    async def wait_idle(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False


Behavior = Callable[[object, grpc.aio.ServicerContext], Awaitable[object]]


class CallDoor(grpc.aio.ServerInterceptor):
    """Admission, malformed-request handling, in-flight tracking and call metrics."""

    def __init__(self, limit: int, metrics: ServerMetrics, malformed_log_interval_s: float = 10.0) -> None:
        if limit < 1:
            raise ValueError(f"the door needs a positive concurrency limit, got {limit}")
        self.limit = limit
        self.metrics = metrics
        self.in_flight = InFlightCalls()
        self.malformed_log = RateLimitedLog(malformed_log_interval_s)
        self._handlers: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(self, continuation, handler_call_details):
        method = handler_call_details.method
        guarded = self._handlers.get(method)
        if guarded is not None:
            return guarded
        handler = await continuation(handler_call_details)
        if handler is None or not method.startswith(_PREFIX) or handler.unary_unary is None:
            return handler  # health, reflection, unknown methods: not ours to bound
        guarded = grpc.unary_unary_rpc_method_handler(
            self._guard(method[len(_PREFIX):], handler.unary_unary),
            request_deserializer=tolerant(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )
        self._handlers[method] = guarded
        return guarded

    def _guard(self, method: str, behavior: Behavior) -> Behavior:
        requests, latency, rejected = self.metrics.requests, self.metrics.request_latency, self.metrics.rejected
        ok_count, seconds = requests.labels(method, "OK"), latency.labels(method)

        def record(code: str, started: float) -> None:
            (ok_count if code == "OK" else requests.labels(method, code)).inc()
            seconds.observe(time.perf_counter() - started)

        async def guarded(request, context: grpc.aio.ServicerContext):
            started = time.perf_counter()
            if self.in_flight.count >= self.limit:
                rejected.labels("door").inc()
                context.set_code(grpc.StatusCode.RESOURCE_EXHAUSTED)
                context.set_details(OVERLOADED_MESSAGE)
                record("RESOURCE_EXHAUSTED", started)
                return None
            if isinstance(request, Malformed):
                self.malformed_log.warning("%s: unparseable request (%s)", method, request.reason)
                context.set_code(grpc.StatusCode.INVALID_ARGUMENT)
                context.set_details(MALFORMED_MESSAGE)
                record("INVALID_ARGUMENT", started)
                return None
            self.in_flight.enter()
            code = "UNKNOWN"
            try:
                response = await behavior(request, context)
                status = context.code()
                code = "OK" if status is None else status.name
                return response
            except asyncio.CancelledError:  # the caller went away (or its deadline passed)
                code = "CANCELLED"
                raise
            finally:
                self.in_flight.leave()
                record(code, started)

        return guarded
