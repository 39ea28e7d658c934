"""What a newcomer meets first: --version, one-line errors with exit 2, metrics that say what runs."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import urllib.request

import pytest

from clients.cli import main
from clients.options import ClientOptions, InvalidOption
from clients.query import fell_back_to_popular
from clients.results import Recommendation, ScoredItem


def serve(bundle, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "clients.cli", "serve", "--bundle", str(bundle), "--host", "127.0.0.1",
         "--metrics-port", "-1", "--read-only", *args],
        capture_output=True, text=True, timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})})


def one_line_error(done: subprocess.CompletedProcess, fragment: str) -> None:
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if "error" in line.lower()]
    assert len(lines) == 1 and fragment in lines[0], done.stderr
    assert "Traceback" not in done.stderr and "never awaited" not in done.stderr, done.stderr


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("recserve ")


def test_a_bad_setting_is_one_line_and_exit_2(small_bundle):
    done = serve(small_bundle, "--port", "0", env={"RECSERVE_BATCHER_MAX_BATCH_SIZE": "lots"})
    one_line_error(done, "RECSERVE_BATCHER_MAX_BATCH_SIZE")


def test_a_busy_port_is_one_line_and_exit_2(small_bundle):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        done = serve(small_bundle, "--port", str(taken.getsockname()[1]))
    one_line_error(done, "cannot listen on 127.0.0.1")


def test_wait_for_ready_must_be_a_boolean():
    with pytest.raises(InvalidOption, match="RECSERVE_CLIENT_WAIT_FOR_READY"):
        ClientOptions.from_env({"RECSERVE_CLIENT_WAIT_FOR_READY": "maybe"})
    assert ClientOptions.from_env({"RECSERVE_CLIENT_WAIT_FOR_READY": "off"}).wait_for_ready is False
    assert ClientOptions.from_env({"RECSERVE_CLIENT_WAIT_FOR_READY": "TRUE"}).wait_for_ready is True


async def test_metrics_export_process_platform_and_build_info(running_server):
    server, _, _ = running_server
    body = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics").read().decode()
    assert "process_cpu_seconds_total" in body and "python_info{" in body
    build = [line for line in body.splitlines() if line.startswith("recserve_build_info{")]
    assert len(build) == 1 and f'bundle_version="{server.state.version}"' in build[0], build
    model = build[0].split('model="')[1].split('"')[0]
    assert model and "/" not in model  # a name, not a build machine's path
    # warm-up inference went through no gRPC call: nothing is counted as served yet
    assert 'recserve_requests_total{' not in body


def test_query_says_when_it_fell_back_to_popular_items():
    def result(*sources):
        items = [ScoredItem(f"i{n}", "t", 1.0, 0.0, sources=s) for n, s in enumerate(sources)]
        return Recommendation(items=items, bundle_version="v", timings=None, latency_s=0.0)

    assert fell_back_to_popular(result(("popular",), ("popular", "trending")))
    assert not fell_back_to_popular(result(("popular",), ("content", "popular")))
    assert not fell_back_to_popular(result((), ()))  # a server that does not name sources


@pytest.mark.parametrize("version", ["v1alpha", "v1"])
async def test_reflection_answers_v1_and_v1alpha(running_server, version):
    from grpc_reflection.v1alpha import reflection_pb2

    _, _, channel = running_server
    call = channel.stream_stream(f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
                                 request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
                                 response_deserializer=reflection_pb2.ServerReflectionResponse.FromString)
    stream = call(iter([reflection_pb2.ServerReflectionRequest(list_services=""),
                        reflection_pb2.ServerReflectionRequest(file_containing_symbol="recserve.v1.Recommender")]))
    replies = [reply async for reply in stream]
    names = {s.name for s in replies[0].list_services_response.service}
    assert {"recserve.v1.Recommender", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"} <= names
    assert replies[1].file_descriptor_response.file_descriptor_proto  # the API can be described
