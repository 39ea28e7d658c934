"""One load-generator process: its own event loop and grpc.aio channel, phases on command.

Protocol over a multiprocessing Pipe (parent -> worker): ("phase", PhaseSpec) or ("stop",).
Worker -> parent: ("ready", info) once connected, ("records", arrays, cpu_s, error_details)
after each phase, ("error", text) if something broke. Calls are sent without retries: a load test
counts every UNAVAILABLE instead of hiding it.
"""

from __future__ import annotations

import asyncio
import os
import time
import traceback
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import numpy as np

from clients.loadtest.closed_loop import run_closed_loop
from clients.loadtest.open_loop import poisson_schedule, run_open_loop
from clients.loadtest.records import NO_TIMINGS, Recorder
from clients.options import ClientOptions, create_aio_channel
from protos import recommender_pb2 as pb
from protos import recommender_pb2_grpc as pb_grpc

UNKNOWN = grpc.StatusCode.UNKNOWN.value[0]
MAX_DISTINCT_DETAILS = 20


@dataclass(frozen=True)
class WorkerSetup:
    options: ClientOptions
    requests: list[bytes]
    """Serialized RecommendRequests of the workload."""
    weights: np.ndarray
    kinds: np.ndarray
    seed: int


@dataclass(frozen=True)
class PhaseSpec:
    """This worker's share of one phase."""

    mode: str
    """"open" or "closed"."""
    start_at: float
    """time.monotonic() instant at which every worker starts (system-wide clock on Linux)."""
    duration_s: float
    deadline_s: float
    rate: float = 0.0
    """Arrivals per second for this worker (open loop)."""
    concurrency: int = 0
    """Callers in this worker (closed loop)."""
    max_in_flight: int = 10_000


def worker_main(conn, setup: WorkerSetup, counters, slot: int) -> None:
    try:
        asyncio.run(_serve(conn, setup, counters, slot))
    except BaseException:  # the parent must hear about it rather than wait forever
        conn.send(("error", traceback.format_exc()))
        raise


async def _serve(conn, setup: WorkerSetup, counters, slot: int) -> None:
    # A private subchannel pool: each worker opens its own connection to the server.
    options = setup.options.replace(
        channel_options=setup.options.channel_options + (("grpc.use_local_subchannel_pool", 1),))
    channel = create_aio_channel(options)
    stub = pb_grpc.RecommenderStub(channel)
    requests = [pb.RecommendRequest.FromString(b) for b in setup.requests]
    metadata = options.call_metadata()
    rng = np.random.default_rng(setup.seed)
    connected = await _connect(channel, timeout_s=5.0)
    conn.send(("ready", {"pid": os.getpid(), "connected": connected}))
    loop = asyncio.get_running_loop()
    while True:
        message = await loop.run_in_executor(None, conn.recv)
        if message[0] == "stop":
            break
        spec: PhaseSpec = message[1]
        details: Counter = Counter()
        call = _recommend_call(stub, requests, metadata, spec.deadline_s, details)
        recorder = Recorder(spec.start_at, counters, slot)
        cpu_before = time.process_time()
        await _run_phase(spec, call, setup, rng, recorder)
        conn.send(("records", recorder.records().as_arrays(), time.process_time() - cpu_before,
                   dict(details)))
    await channel.close()


async def _connect(channel: grpc.aio.Channel, timeout_s: float) -> bool:
    try:
        await asyncio.wait_for(channel.channel_ready(), timeout_s)
        return True
    except asyncio.TimeoutError:
        return False


def _recommend_call(stub, requests, metadata, deadline_s: float, details: Counter):
    """The Recommend call; failures counted by (code, details) so the report can say why."""

    def failed(code: int, text: str) -> tuple[int, tuple[int, int, int, int, int]]:
        key = (code, text[:200])
        if key in details or len(details) < MAX_DISTINCT_DETAILS:
            details[key] += 1
        return code, NO_TIMINGS

    async def call(index: int) -> tuple[int, tuple[int, int, int, int, int]]:
        try:
            response = await stub.Recommend(requests[index], timeout=deadline_s, metadata=metadata)
        except grpc.aio.AioRpcError as exc:
            return failed(exc.code().value[0], exc.details() or "")
        except (grpc.RpcError, OSError) as exc:
            return failed(UNKNOWN, f"client-side: {exc!r}")
        t = response.timings
        return 0, (t.queue_us, t.encode_us, t.retrieve_us, t.rank_us, t.total_us)

    return call


async def _run_phase(spec: PhaseSpec, call, setup: WorkerSetup, rng: np.random.Generator,
                     recorder: Recorder) -> None:
    if spec.mode == "open":
        offsets = poisson_schedule(spec.rate, spec.duration_s, rng)
        picks = rng.choice(len(setup.weights), size=len(offsets), p=setup.weights)
        await run_open_loop(call, picks, setup.kinds, offsets=offsets, start_at=spec.start_at,
                            recorder=recorder, max_in_flight=spec.max_in_flight,
                            drain_s=spec.deadline_s + 1.0)
    elif spec.mode == "closed":
        await run_closed_loop(call, _endless_picks(rng, setup.weights), setup.kinds,
                              concurrency=spec.concurrency, start_at=spec.start_at,
                              duration_s=spec.duration_s, recorder=recorder)
    else:
        raise ValueError(f"unknown phase mode {spec.mode!r}")


def _endless_picks(rng: np.random.Generator, weights: np.ndarray) -> Iterator[int]:
    while True:
        yield from rng.choice(len(weights), size=4096, p=weights).tolist()
