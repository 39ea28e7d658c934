"""The gRPC port's security, put together from [server] settings: TLS, credentials, protected mode.

Protected mode (after Redis): a server listening on a non-loopback address with no
credentials (no tokens, no certificate subjects, no client CA) answers reads but refuses
write and admin calls, and says once at start-up how to configure credentials or pass
--insecure to accept the risk. TLS alone is not a credential: it proves the server to the
client, not the client to the server.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import TYPE_CHECKING

import grpc

from server.service.auth import Authorizer, Credentials, OpenAccess, parse_token_list, read_tokens_file
from server.service.tls import CertificateFiles

if TYPE_CHECKING:
    from server.service.app import ServerConfig

log = logging.getLogger(__name__)


def host_of(address: str) -> str:
    """The interface part of a gRPC listening address ('127.0.0.1:0' -> '127.0.0.1', unix -> loopback)."""
    if address.startswith(("unix:", "unix-abstract:")):
        return "127.0.0.1"
    return address[1:].partition("]")[0] if address.startswith("[") else address.rpartition(":")[0]


def is_loopback(address: str) -> bool:
    """True for 127.0.0.0/8, ::1, localhost and unix sockets: only this machine can connect."""
    if address.startswith(("unix:", "unix-abstract:")):
        return True
    host = host_of(address)
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name or wildcard: assume the network can reach it


def protected_mode_message(address: str) -> str:
    return (f"protected mode: {address} is reachable from the network and no credentials are "
            f"configured, so write and admin calls are refused (reads are served); configure "
            f"tokens (--tokens-file or RECSERVE_SERVER_TOKENS) or mutual TLS (--tls-client-ca), "
            f"bind a loopback address, or pass --insecure to accept the risk")


class ServerSecurity:
    def __init__(self, config: "ServerConfig") -> None:
        self.config = config
        self.certificates = (CertificateFiles(config.tls_cert, config.tls_key, config.tls_client_ca)
                             if config.tls_cert or config.tls_key or config.tls_client_ca else None)
        self.authorizer = Authorizer(self._credentials(), OpenAccess(self.mutual_tls, None))
        self.startup_warning: str | None = None
        self._address: str | None = None
        self.host = config.host

    @property
    def mutual_tls(self) -> bool:
        return self.certificates is not None and self.certificates.mutual

    def _credentials(self) -> Credentials:
        credentials = Credentials()
        if self.config.tokens_file:
            credentials = credentials.merged(read_tokens_file(self.config.tokens_file))
        if self.config.tokens:
            credentials = credentials.merged(parse_token_list(self.config.tokens))
        if self.config.auth_token:  # the single all-scope token of earlier versions
            credentials = credentials.merged(parse_token_list(f"read+write+admin:{self.config.auth_token}"))
        return credentials

    def bind(self, server: grpc.aio.Server, address: str, public_address: str | None = None) -> int:
        """Listen on `address` (TLS when certificates are configured) and decide protected mode.

        public_address: where callers really connect when a proxy forwards to `address` (a
        loopback port): protected mode is judged by it, not by the proxy's loopback hop."""
        if self.certificates is not None:
            port = server.add_secure_port(address, self.certificates.credentials())
        else:
            port = server.add_insecure_port(address)
        self._address = public_address or address
        self.host = host_of(self._address)  # the metrics endpoint binds the same interface by default
        self._decide_protected_mode()
        if self.startup_warning:
            log.warning("%s", self.startup_warning)
        return port

    def _decide_protected_mode(self) -> None:
        if self._address is None:
            return
        exposed = not is_loopback(self._address) and not self.config.insecure
        protected = exposed and not self.authorizer.credentials.configured and not self.mutual_tls
        self.startup_warning = protected_mode_message(self._address) if protected else None
        self.authorizer.access = OpenAccess(self.mutual_tls, self.startup_warning)

    def authorize(self, method: str, context: grpc.aio.ServicerContext) -> None:
        self.authorizer.authorize(method, context.invocation_metadata(), context.auth_context())

    def reload(self) -> None:
        """SIGHUP: re-read the tokens file now and the certificates before the next handshake."""
        if self.certificates is not None:
            self.certificates.request_reload()
        self.authorizer.credentials = self._credentials()
        self._decide_protected_mode()  # removing every token must not leave the port open
