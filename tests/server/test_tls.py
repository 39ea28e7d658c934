"""TLS and mutual TLS on the gRPC port of a real server, certificates made in the test.

Plaintext and unknown clients are refused at the handshake; certificates rotate without a
restart (new handshakes use the new files; a half-written pair is ignored).
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
from pathlib import Path

import grpc
import pytest

from clients.aio_client import AsyncRecommenderClient
from clients.errors import Unavailable
from clients.options import ClientOptions, RetryPolicy
from protos import recommender_pb2 as pb
from protos import recommender_pb2_grpc as pb_grpc
from server.service.app import AllConfigs, ServerConfig, create_server
from server.service.tls import CertificateFiles
from tests.server.tls_support import Authority, TlsFiles, peer_common_name, server_files, write_pair

NO_RETRY = RetryPolicy(max_attempts=1)


@pytest.fixture(scope="module")
def authority() -> Authority:
    return Authority.create("recserve test CA")


@pytest.fixture(scope="module")
def stranger() -> Authority:
    return Authority.create("some other CA")


async def serve(bundle: Path, **server) -> tuple:
    return await create_server(bundle, "127.0.0.1:0",
                               AllConfigs(server=ServerConfig(metrics_port=-1, **server)))


def secure_stub(port: int, ca: Path, client: tuple[bytes, bytes] | None = None):
    key, chain = (client[1], client[0]) if client else (None, None)
    creds = grpc.ssl_channel_credentials(ca.read_bytes(), private_key=key, certificate_chain=chain)
    channel = grpc.aio.secure_channel(f"127.0.0.1:{port}", creds)
    return channel, pb_grpc.RecommenderStub(channel)


async def info_code(stub) -> grpc.StatusCode:
    try:
        await stub.GetInfo(pb.GetInfoRequest(), timeout=5)
        return grpc.StatusCode.OK
    except grpc.aio.AioRpcError as exc:
        return exc.code()


def served_common_name(port: int, ca: Path, client: tuple[Path, Path] | None = None) -> str:
    """The CN of the certificate the server presents in a fresh handshake."""
    context = ssl.create_default_context(cafile=str(ca))
    context.set_alpn_protocols(["h2"])
    if client:
        context.load_cert_chain(*client)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            return peer_common_name(ssl.DER_cert_to_PEM_cert(tls.getpeercert(binary_form=True)).encode())


async def test_a_tls_port_serves_tls_clients_and_refuses_plaintext(small_bundle, authority, tmp_path):
    files = server_files(tmp_path, authority)
    server, port = await serve(small_bundle, tls_cert=str(files.cert), tls_key=str(files.key))
    try:
        channel, stub = secure_stub(port, files.ca)
        async with channel:
            assert (await stub.GetInfo(pb.GetInfoRequest(), timeout=5)).bundle_version
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as plain:
            assert await info_code(pb_grpc.RecommenderStub(plain)) == grpc.StatusCode.UNAVAILABLE
        # the project's own client, configured for TLS, works against it
        options = ClientOptions(target=f"127.0.0.1:{port}", tls_root_cert=str(files.ca), retry=NO_RETRY)
        async with AsyncRecommenderClient(options=options) as client:
            assert len((await client.recommend("glass lantern", k=3)).items) == 3
    finally:
        await server.stop()


async def test_mutual_tls_refuses_clients_without_a_certificate_from_the_client_ca(
        small_bundle, authority, stranger, tmp_path):
    files = server_files(tmp_path, authority)
    server, port = await serve(small_bundle, tls_cert=str(files.cert), tls_key=str(files.key),
                               tls_client_ca=str(files.ca))
    try:
        trusted = authority.issue("shop-frontend", server=False)
        channel, stub = secure_stub(port, files.ca, trusted)
        async with channel:
            assert await info_code(stub) == grpc.StatusCode.OK
        for client in (None, stranger.issue("shop-frontend", server=False)):
            channel, stub = secure_stub(port, files.ca, client)
            async with channel:
                assert await info_code(stub) == grpc.StatusCode.UNAVAILABLE
        cert, key = write_pair(tmp_path / "client", "trusted", trusted)
        options = ClientOptions(target=f"127.0.0.1:{port}", tls_root_cert=str(files.ca),
                                tls_client_cert=str(cert), tls_client_key=str(key), retry=NO_RETRY)
        async with AsyncRecommenderClient(options=options) as client:
            assert (await client.info()).bundle_version
        options = options.replace(tls_client_cert=None, tls_client_key=None)
        async with AsyncRecommenderClient(options=options) as client:
            with pytest.raises(Unavailable):
                await client.info()
    finally:
        await server.stop()


def replace_files(files: TlsFiles, pair: tuple[bytes, bytes]) -> None:
    """Rotate as an operator would: write new files beside, rename over the old ones."""
    for target, data in ((files.cert, pair[0]), (files.key, pair[1])):
        staged = target.with_suffix(".new")
        staged.write_bytes(data)
        os.replace(staged, target)


async def test_certificates_rotate_without_a_restart(small_bundle, authority, tmp_path):
    files = server_files(tmp_path, authority, common_name="first-server-cert")
    server, port = await serve(small_bundle, tls_cert=str(files.cert), tls_key=str(files.key))
    try:
        assert await asyncio.to_thread(served_common_name, port, files.ca) == "first-server-cert"
        channel, stub = secure_stub(port, files.ca)  # a connection open across the rotation
        await stub.GetInfo(pb.GetInfoRequest(), timeout=5)

        replace_files(files, authority.issue("second-server-cert", server=True))
        assert await asyncio.to_thread(served_common_name, port, files.ca) == "second-server-cert"
        assert await info_code(stub) == grpc.StatusCode.OK  # the open connection keeps working
        await channel.close()

        # a half-written rotation (a key that does not match the certificate) is not used
        files.key.write_bytes(authority.issue("unrelated", server=True)[1])
        assert await asyncio.to_thread(served_common_name, port, files.ca) == "second-server-cert"
    finally:
        await server.stop()


def test_sighup_rereads_certificates_even_when_the_files_look_unchanged(authority, tmp_path):
    files = server_files(tmp_path, authority)
    certificates = CertificateFiles(str(files.cert), str(files.key))
    assert certificates.fetch() is None  # nothing changed: keep the current configuration
    certificates.request_reload()  # what `recserve serve` does on SIGHUP
    assert isinstance(certificates.fetch(), grpc.ServerCertificateConfiguration)
    assert certificates.fetch() is None


def test_unusable_certificate_files_fail_at_start_without_the_key(authority, tmp_path):
    from export.errors import InvalidInput

    files = server_files(tmp_path, authority)
    files.key.write_bytes(authority.issue("other", server=True)[1])
    with pytest.raises(InvalidInput, match="TLS certificate"):
        CertificateFiles(str(files.cert), str(files.key))
    with pytest.raises(InvalidInput, match="both"):
        CertificateFiles(str(files.cert), "")
