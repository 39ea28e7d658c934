"""Scoped credentials: which caller may call which RPC.

Three scopes: `read` (Recommend, RecommendBatch, Embed, GetInfo), `write` (UpsertItems,
DeleteItems, RecordInteractions) and `admin` (Reload). A caller proves who it is with a
bearer token (`authorization: Bearer <token>` metadata) or, on a mutual-TLS port, with its
client certificate, whose common name can be mapped to scopes. A token has exactly the
scopes listed for it (a writer that also reads lists both).

Tokens are kept only as sha256 digests and every presented token is compared with every
stored digest in constant time, so timing tells nothing about which prefix matched.
Several tokens may share a scope: rotate by adding the new token, moving clients over,
then removing the old one (the tokens file is re-read on SIGHUP).

Missing or unknown credentials -> Unauthenticated; known but without the scope ->
PermissionDenied. Health and reflection are separate services and are never checked here.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from export.errors import InvalidInput
from server.errors import PermissionDenied, Unauthenticated


class Scope(str, enum.Enum):
    READ = "read"
    WRITE = "write"
    ADMIN = "admin"


ALL_SCOPES = frozenset(Scope)

METHOD_SCOPE: dict[str, Scope] = {
    "Recommend": Scope.READ,
    "RecommendBatch": Scope.READ,
    "Embed": Scope.READ,
    "GetInfo": Scope.READ,
    "UpsertItems": Scope.WRITE,
    "DeleteItems": Scope.WRITE,
    "RecordInteractions": Scope.WRITE,
    "Reload": Scope.ADMIN,
}

_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


# ---- the tokens file --------------------------------------------------------------------------

class _TokenEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = ""
    """Who holds the token (for operators; never the secret)."""
    scopes: list[Scope] = Field(min_length=1)
    """What the token may do."""
    sha256: str = Field(pattern=_SHA256_HEX.pattern)
    """Hex sha256 of the token: the file holds no secret (`printf %s "$TOKEN" | sha256sum`)."""


class _CertificateEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    common_name: str = Field(min_length=1)
    """CN of a client certificate signed by the configured client CA."""
    scopes: list[Scope] = Field(min_length=1)
    """What a caller presenting that certificate may do."""


class _TokensFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    token: list[_TokenEntry] = []
    certificate: list[_CertificateEntry] = []


@dataclass(frozen=True)
class StoredToken:
    digest: bytes
    scopes: frozenset[Scope]
    name: str = ""


@dataclass(frozen=True)
class Credentials:
    """Every token digest and certificate subject the server accepts, with their scopes."""

    tokens: tuple[StoredToken, ...] = ()
    subjects: Mapping[str, frozenset[Scope]] = field(default_factory=dict)

    @property
    def configured(self) -> bool:
        return bool(self.tokens or self.subjects)

    def merged(self, other: Credentials) -> Credentials:
        subjects = dict(self.subjects)
        for name, scopes in other.subjects.items():
            subjects[name] = subjects.get(name, frozenset()) | scopes
        return Credentials(self.tokens + other.tokens, subjects)


def read_tokens_file(path: str | Path) -> Credentials:
    """Credentials from a TOML file of [[token]] and [[certificate]] tables (docs/SECURITY.md)."""
    try:
        with open(path, "rb") as fh:
            parsed = _TokensFile.model_validate(tomllib.load(fh))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise InvalidInput(f"cannot read tokens file {path}: {exc}") from None
    except ValidationError as exc:
        raise InvalidInput(f"tokens file {path}: {exc}") from None
    tokens = tuple(StoredToken(bytes.fromhex(t.sha256), frozenset(t.scopes), t.name) for t in parsed.token)
    subjects: dict[str, frozenset[Scope]] = {}
    for cert in parsed.certificate:
        subjects[cert.common_name] = subjects.get(cert.common_name, frozenset()) | frozenset(cert.scopes)
    return Credentials(tokens, subjects)


def parse_token_list(text: str) -> Credentials:
    """`scope+scope:TOKEN` or `scope:sha256:HEX` entries separated by spaces or commas (env var)."""
    tokens = []
    for number, entry in enumerate(re.split(r"[\s,]+", text.strip()) if text.strip() else (), 1):
        scopes_text, sep, secret = entry.partition(":")
        try:
            scopes = frozenset(Scope(s) for s in scopes_text.split("+"))
        except ValueError:
            scopes = frozenset()
        if not sep or not secret or not scopes:
            # never echo the entry: it holds a secret
            raise InvalidInput(f"token entry {number} is not `scope[+scope]:TOKEN` with scopes "
                               f"from {sorted(s.value for s in Scope)}")
        if secret.startswith("sha256:") and _SHA256_HEX.match(secret[7:]):
            digest = bytes.fromhex(secret[7:])
        else:
            digest = token_digest(secret)
        tokens.append(StoredToken(digest, scopes, f"entry {number}"))
    return Credentials(tuple(tokens))


# ---- deciding a call --------------------------------------------------------------------------

def bearer_token(metadata: Iterable[tuple[str, str | bytes]]) -> str | None:
    for key, value in metadata or ():
        if key == "authorization":
            text = value.decode() if isinstance(value, bytes) else value
            scheme, _, token = text.partition(" ")
            return token.strip() if scheme.lower() == "bearer" else ""
    return None


def certificate_common_name(auth_context: Mapping[str, list[bytes]]) -> str | None:
    """CN of the verified peer certificate (gRPC fills it in only after a mutual-TLS handshake)."""
    names = (auth_context or {}).get("x509_common_name") or ()
    return names[0].decode() if names else None


@dataclass(frozen=True)
class OpenAccess:
    """Who may call what when no credentials are configured."""

    mutual_tls: bool
    """A verified client certificate is the credential: every scope."""
    protected_message: str | None
    """Set when write and admin calls are refused (non-loopback address, no credentials)."""


class Authorizer:
    def __init__(self, credentials: Credentials, access: OpenAccess) -> None:
        self.credentials = credentials
        self.access = access

    def scopes_of_token(self, token: str) -> frozenset[Scope] | None:
        """The scopes of a valid token, None for an unknown one (checks every digest: constant time)."""
        presented = token_digest(token)
        found: frozenset[Scope] | None = None
        for stored in self.credentials.tokens:
            if hmac.compare_digest(presented, stored.digest):
                found = stored.scopes if found is None else found | stored.scopes
        return found

    def authorize(self, method: str, metadata, auth_context) -> None:
        """Raise Unauthenticated or PermissionDenied unless the caller may call `method`."""
        needed = METHOD_SCOPE[method]
        granted = self._granted(metadata, auth_context)
        if needed not in granted:
            if self.access.protected_message and not self.credentials.configured:
                raise PermissionDenied(self.access.protected_message)
            hint = "" if bearer_token(metadata) is not None else " (no bearer token was sent)"
            raise PermissionDenied(f"{method} needs the '{needed.value}' scope, which these "
                                   f"credentials do not have{hint}")

    def _granted(self, metadata, auth_context) -> frozenset[Scope]:
        if not self.credentials.configured:
            if self.access.mutual_tls or not self.access.protected_message:
                return ALL_SCOPES
            return frozenset({Scope.READ})
        token = bearer_token(metadata)
        granted: frozenset[Scope] = frozenset()
        if token is not None:
            scopes = self.scopes_of_token(token) if token else None
            if scopes is None:
                raise Unauthenticated("invalid bearer token")
            granted = scopes
        subject = certificate_common_name(auth_context)
        if subject is not None:
            granted = granted | self.credentials.subjects.get(subject, frozenset())
        elif token is None:
            raise Unauthenticated("missing credentials: send `authorization: Bearer <token>` metadata")
        return granted
