"""Scoped credentials over real gRPC: read / write / admin tokens, certificate subjects, rotation.

Missing or unknown credentials are UNAUTHENTICATED, known credentials without the scope are
PERMISSION_DENIED; health and reflection stay open.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from clients.aio_client import AsyncRecommenderClient
from clients.errors import PermissionDenied, Unauthenticated
from clients.options import ClientOptions, RetryPolicy
from export.errors import InvalidInput
from export.settings import load_settings
from protos import recommender_pb2 as pb
from protos import recommender_pb2_grpc as pb_grpc
from server.live.config import LiveConfig
from server.service.app import AllConfigs, ServerConfig, create_server
from server.service.auth import parse_token_list
from tests.server.tls_support import Authority, server_files

READER, WRITER, OPERATOR, OLD_READER = "reader-token-1", "writer-token-1", "operator-token-1", "old-reader"
OK = grpc.StatusCode.OK


def sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def tokens_file(folder: Path, tokens: dict[str, list[str]], certificates: dict[str, list[str]] = {}) -> Path:
    lines = []
    for token, scopes in tokens.items():
        lines += ["[[token]]", f'name = "holder of {token[:3]}"', f"scopes = {scopes!r}".replace("'", '"'),
                  f'sha256 = "{sha(token)}"', ""]
    for name, scopes in certificates.items():
        lines += ["[[certificate]]", f'common_name = "{name}"', f"scopes = {scopes!r}".replace("'", '"'), ""]
    path = folder / "tokens.toml"
    path.write_text("\n".join(lines))
    return path


async def start(bundle: Path, tmp_path: Path, **server):
    configs = AllConfigs(server=ServerConfig(metrics_port=-1, **server),
                         live=LiveConfig(directory=str(tmp_path / "live")))
    return await create_server(bundle, "127.0.0.1:0", configs)


async def code_of(call, request, token: str | None = None, scheme: str = "Bearer") -> grpc.StatusCode:
    metadata = (("authorization", f"{scheme} {token}"),) if token is not None else ()
    try:
        await call(request, metadata=metadata, timeout=10)
        return OK
    except grpc.aio.AioRpcError as exc:
        return exc.code()


UPSERT = pb.UpsertItemsRequest(items=[pb.Item(item_id="AUTH1", title="auth lantern", text="glass")])
RELOAD_NOTHING = pb.ReloadRequest(bundle_path="v404")  # passes auth, then NOT_FOUND: no reload runs


@pytest.fixture
async def scoped_server(small_bundle, tmp_path):
    path = tokens_file(tmp_path, {READER: ["read"], OLD_READER: ["read"], WRITER: ["write"],
                                  OPERATOR: ["read", "admin"]})
    (tmp_path / "releases").mkdir()
    server, port = await start(small_bundle, tmp_path, tokens_file=str(path),
                               release_dir=str(tmp_path / "releases"))
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield server, port, channel, pb_grpc.RecommenderStub(channel), path
    finally:
        await channel.close()
        await server.stop()


async def test_each_scope_reaches_only_its_methods(scoped_server):
    _, _, _, stub, _ = scoped_server
    info, recommend = stub.GetInfo, stub.Recommend
    query = pb.RecommendRequest(query="glass lantern", k=3)
    assert await code_of(info, pb.GetInfoRequest(), READER) == OK
    assert await code_of(recommend, query, READER) == OK
    assert await code_of(stub.UpsertItems, UPSERT, READER) == grpc.StatusCode.PERMISSION_DENIED
    assert await code_of(stub.Reload, RELOAD_NOTHING, READER) == grpc.StatusCode.PERMISSION_DENIED

    assert await code_of(stub.UpsertItems, UPSERT, WRITER) == OK
    assert await code_of(stub.DeleteItems, pb.DeleteItemsRequest(item_ids=["AUTH1"]), WRITER) == OK
    assert await code_of(stub.Reload, RELOAD_NOTHING, WRITER) == grpc.StatusCode.PERMISSION_DENIED
    assert await code_of(info, pb.GetInfoRequest(), WRITER) == grpc.StatusCode.PERMISSION_DENIED

    assert await code_of(stub.Reload, RELOAD_NOTHING, OPERATOR) == grpc.StatusCode.NOT_FOUND
    assert await code_of(stub.UpsertItems, UPSERT, OPERATOR) == grpc.StatusCode.PERMISSION_DENIED


async def test_missing_or_unknown_credentials_are_unauthenticated(scoped_server):
    _, _, _, stub, _ = scoped_server
    for token, scheme in ((None, "Bearer"), ("not-a-token", "Bearer"), ("", "Bearer"), (READER, "Basic"),
                          (READER + "x", "Bearer"), (sha(READER), "Bearer")):
        for call, request in ((stub.GetInfo, pb.GetInfoRequest()), (stub.UpsertItems, UPSERT),
                              (stub.Reload, RELOAD_NOTHING)):
            assert await code_of(call, request, token, scheme) == grpc.StatusCode.UNAUTHENTICATED, (token, scheme)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.UpsertItems(UPSERT, metadata=(("authorization", f"Bearer {READER}"),))
    assert "'write' scope" in refused.value.details()


async def test_health_and_reflection_need_no_credentials(scoped_server, small_bundle, tmp_path):
    _, port, channel, _, path = scoped_server
    health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    services = await list_services(channel)
    assert "recserve.v1.Recommender" in services

    hidden, hidden_port = await start(small_bundle, tmp_path / "hidden", tokens_file=str(path), reflection=False)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{hidden_port}") as other:
            with pytest.raises(grpc.aio.AioRpcError) as off:
                await list_services(other)
            assert off.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        await hidden.stop()


async def list_services(channel) -> set[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    async for response in stub.ServerReflectionInfo(iter([request]), timeout=5):
        return {s.name for s in response.list_services_response.service}
    return set()


async def test_tokens_rotate_by_editing_the_file_and_sighup(scoped_server):
    server, _, _, stub, path = scoped_server
    assert await code_of(stub.GetInfo, pb.GetInfoRequest(), OLD_READER) == OK
    tokens_file(path.parent, {READER: ["read"], "new-reader": ["read"]})  # the old token is retired
    server.security.reload()  # what SIGHUP does in `recserve serve`
    assert await code_of(stub.GetInfo, pb.GetInfoRequest(), OLD_READER) == grpc.StatusCode.UNAUTHENTICATED
    assert await code_of(stub.GetInfo, pb.GetInfoRequest(), "new-reader") == OK
    assert await code_of(stub.GetInfo, pb.GetInfoRequest(), READER) == OK
    path.write_text("[[token]]\nscopes = ['read']\nsha256 = 'not-hex'\n")  # a broken edit
    with pytest.raises(InvalidInput, match="tokens file"):
        server.security.reload()
    assert await code_of(stub.GetInfo, pb.GetInfoRequest(), READER) == OK  # the old set stays in use


async def test_the_python_client_sends_its_token_and_maps_the_refusals(scoped_server):
    _, port, _, _, _ = scoped_server
    options = ClientOptions(target=f"127.0.0.1:{port}", auth_token=READER, retry=RetryPolicy(max_attempts=1))
    async with AsyncRecommenderClient(options=options) as client:
        assert len((await client.recommend("glass lantern", k=2)).items) == 2
        with pytest.raises(PermissionDenied):
            await client.reload("current")
    async with AsyncRecommenderClient(options=options.replace(auth_token="wrong")) as client:
        with pytest.raises(Unauthenticated):
            await client.info()


async def test_certificate_subjects_map_to_scopes_on_a_mutual_tls_port(small_bundle, tmp_path):
    authority = Authority.create("scopes CA")
    files = server_files(tmp_path / "tls", authority)
    path = tokens_file(tmp_path, {WRITER: ["write"]}, certificates={"release-pipeline": ["read", "admin"]})
    server, port = await start(small_bundle, tmp_path, tokens_file=str(path), tls_cert=str(files.cert),
                               tls_key=str(files.key), tls_client_ca=str(files.ca), release_dir=str(tmp_path))

    def stub_for(common_name: str):
        cert, key = authority.issue(common_name, server=False)
        creds = grpc.ssl_channel_credentials(files.ca.read_bytes(), private_key=key, certificate_chain=cert)
        channel = grpc.aio.secure_channel(f"127.0.0.1:{port}", creds)
        return channel, pb_grpc.RecommenderStub(channel)

    try:
        channel, pipeline = stub_for("release-pipeline")
        async with channel:
            assert await code_of(pipeline.GetInfo, pb.GetInfoRequest()) == OK
            assert await code_of(pipeline.Reload, RELOAD_NOTHING) == grpc.StatusCode.NOT_FOUND  # admin: allowed
            assert await code_of(pipeline.UpsertItems, UPSERT) == grpc.StatusCode.PERMISSION_DENIED
            assert await code_of(pipeline.UpsertItems, UPSERT, WRITER) == OK  # certificate + token: both
        channel, unknown = stub_for("someone-else")
        async with channel:
            assert await code_of(unknown.GetInfo, pb.GetInfoRequest()) == grpc.StatusCode.PERMISSION_DENIED
            assert await code_of(unknown.Reload, RELOAD_NOTHING, WRITER) == grpc.StatusCode.PERMISSION_DENIED
            assert await code_of(unknown.UpsertItems, UPSERT, WRITER) == OK
            assert await code_of(unknown.UpsertItems, UPSERT, "forged") == grpc.StatusCode.UNAUTHENTICATED
    finally:
        await server.stop()


async def test_tokens_from_the_environment_and_the_single_legacy_token(small_bundle, tmp_path, monkeypatch):
    monkeypatch.setenv("RECSERVE_SERVER_TOKENS", f"read:{READER} read+write:{WRITER}")
    config = load_settings(ServerConfig, None, metrics_port=-1, auth_token="everything", release_dir=str(tmp_path))
    server, port = await create_server(small_bundle, "127.0.0.1:0", AllConfigs(
        server=config, live=LiveConfig(directory=str(tmp_path / "live"))))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.RecommenderStub(channel)
            assert await code_of(stub.UpsertItems, UPSERT, READER) == grpc.StatusCode.PERMISSION_DENIED
            assert await code_of(stub.UpsertItems, UPSERT, WRITER) == OK
            assert await code_of(stub.GetInfo, pb.GetInfoRequest(), WRITER) == OK
            assert await code_of(stub.Reload, RELOAD_NOTHING, WRITER) == grpc.StatusCode.PERMISSION_DENIED
            assert await code_of(stub.Reload, RELOAD_NOTHING, "everything") == grpc.StatusCode.NOT_FOUND
            assert await code_of(stub.UpsertItems, UPSERT, "everything") == OK
    finally:
        await server.stop()


def test_a_malformed_token_entry_is_refused_without_echoing_it():
    with pytest.raises(InvalidInput) as refused:
        parse_token_list("read:fine superuser:s3cret-value")
    assert "entry 2" in str(refused.value) and "s3cret" not in str(refused.value)
    hashed = parse_token_list(f"write:sha256:{sha('abc')}")
    assert hashed.tokens[0].digest == hashlib.sha256(b"abc").digest()
