"""TLS and mutual TLS on the gRPC port, with certificates that rotate without a restart.

gRPC asks `CertificateFiles.fetch` before every new TLS handshake (dynamic server
credentials). The files are re-read when their size, mtime or inode changed, or after
`request_reload()` (SIGHUP); connections already open keep the certificate they started
with. A half-written pair (a key that does not match the certificate, an unparsable CA)
is refused and the previous certificates stay in use, so a rotation never takes the port
down.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path

import grpc

from export.errors import InvalidInput

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedCertificates:
    config: grpc.ServerCertificateConfiguration
    fingerprint: tuple


def _fingerprint(paths: list[Path]) -> tuple:
    stats = [p.stat() for p in paths]
    return tuple((s.st_ino, s.st_size, s.st_mtime_ns) for s in stats)


def _check_pair(cert: Path, key: Path, client_ca: Path | None) -> None:
    """Raise ssl.SSLError/OSError unless the key matches the certificate and the CA parses."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    if client_ca is not None:
        context.load_verify_locations(cafile=client_ca)


class CertificateFiles:
    """The server certificate, its key and (for mutual TLS) the client CA, kept current."""

    def __init__(self, cert: str, key: str, client_ca: str = "") -> None:
        if not cert or not key:
            raise InvalidInput("TLS needs both a certificate (tls_cert) and its key (tls_key)")
        self.cert, self.key = Path(cert), Path(key)
        self.client_ca = Path(client_ca) if client_ca else None
        self._lock = threading.Lock()
        self._reload_requested = False
        self._refused: tuple | None = None  # fingerprint of files already found unusable
        try:
            self._current = self._load()
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise InvalidInput(f"cannot use the TLS certificate files: {exc}") from None

    @property
    def mutual(self) -> bool:
        """Clients must present a certificate signed by the client CA."""
        return self.client_ca is not None

    def _paths(self) -> list[Path]:
        return [self.cert, self.key] + ([self.client_ca] if self.client_ca else [])

    def _load(self) -> LoadedCertificates:
        fingerprint = _fingerprint(self._paths())
        _check_pair(self.cert, self.key, self.client_ca)
        pair = [(self.key.read_bytes(), self.cert.read_bytes())]
        root = self.client_ca.read_bytes() if self.client_ca else None
        return LoadedCertificates(grpc.ssl_server_certificate_configuration(pair, root), fingerprint)

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(self._current.config, self.fetch,
                                                   require_client_authentication=self.mutual)

    def request_reload(self) -> None:
        """Re-read the files before the next handshake even if they look unchanged (SIGHUP)."""
        with self._lock:
            self._reload_requested = True
            self._refused = None

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """Called by gRPC before each handshake: new certificates, or None to keep the current ones."""
        try:
            with self._lock:
                fingerprint = _fingerprint(self._paths())
                if not self._reload_requested and fingerprint in (self._current.fingerprint, self._refused):
                    return None
                self._reload_requested = False
                try:
                    loaded = self._load()
                except (OSError, ssl.SSLError, ValueError) as exc:
                    self._refused = fingerprint
                    log.warning("TLS certificate files changed but cannot be used (%s); "
                                "keeping the previous certificates", exc)
                    return None
                self._current, self._refused = loaded, None
                log.info("TLS certificates reloaded from %s", os.fspath(self.cert))
                return loaded.config
        except Exception:  # noqa: BLE001 - never fail a handshake because a file is missing mid-rotation
            log.exception("TLS certificate check failed; keeping the previous certificates")
            return None
