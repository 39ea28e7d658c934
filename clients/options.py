"""How a client reaches the server: target, deadline, retries, credentials, channel settings.

One frozen `ClientOptions` is shared by the sync client, the asyncio client, `recserve query`
and the load harness, so all of them connect the same way. Retries are deliberately narrow:
only UNAVAILABLE (the request did not get a server to answer it) is retried, with exponential
backoff and jitter, and all attempts share one deadline.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc

DEFAULT_TARGET = "localhost:50051"
# Fixed by design: other codes mean the server saw the request (or the caller erred).
RETRYABLE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE})
# An attempt with less time than this left is not worth sending.
_MIN_ATTEMPT_S = 0.001


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter, on UNAVAILABLE only."""

    max_attempts: int = 4
    """Attempts in all, the first included; 1 disables retries."""
    initial_backoff_s: float = 0.05
    """Pause before the first retry (before jitter)."""
    max_backoff_s: float = 1.0
    """Upper bound of any pause."""
    multiplier: float = 2.0
    """Growth of the pause from one retry to the next."""
    jitter: float = 0.5
    """Share of each pause drawn at random (0 = none, 1 = full jitter), so callers spread out."""

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError("jitter must be within 0..1")

    def backoff_s(self, retry_number: int, rng: random.Random | None = None) -> float:
        """Pause before retry `retry_number` (1 = first retry)."""
        ceiling = min(self.max_backoff_s, self.initial_backoff_s * self.multiplier ** (retry_number - 1))
        draw = (rng or random).random()
        return ceiling * (1.0 - self.jitter * draw)


NO_RETRY = RetryPolicy(max_attempts=1)


class AttemptBudget:
    """Attempts and time left for one logical call; every retry shares the call's deadline."""

    def __init__(self, policy: RetryPolicy, deadline_s: float, *, idempotent: bool = True,
                 rng: random.Random | None = None) -> None:
        self.policy = policy
        self.idempotent = idempotent
        self.attempts = 0
        self._expires = time.monotonic() + deadline_s
        self._rng = rng

    def next_timeout_s(self) -> float:
        """Count an attempt and return the time it may take."""
        self.attempts += 1
        return max(self._expires - time.monotonic(), _MIN_ATTEMPT_S)

    def pause_before_retry(self, code: grpc.StatusCode | None) -> float | None:
        """Seconds to wait before retrying after `code`, or None when the error must be raised."""
        if code not in RETRYABLE_CODES or not self.idempotent:
            return None
        if self.attempts >= self.policy.max_attempts:
            return None
        pause = self.policy.backoff_s(self.attempts, self._rng)
        if self._expires - time.monotonic() - pause < _MIN_ATTEMPT_S:
            return None
        return pause


@dataclass(frozen=True)
class ClientOptions:
    """Everything needed to open a channel to a recserve server and call it."""

    target: str = DEFAULT_TARGET
    """host:port of the server."""
    deadline_s: float = 5.0
    """Default deadline of one call, retries included; each method accepts an override."""
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    """Retry policy for UNAVAILABLE."""
    auth_token: str | None = None
    """Sent as `authorization: Bearer <token>` on every call when set."""
    metadata: tuple[tuple[str, str], ...] = ()
    """Extra metadata (lower-case keys) sent on every call."""
    tls: bool = False
    """Use TLS even without the files below (system root certificates)."""
    tls_root_cert: str | None = None
    """PEM file of the CA that signed the server's certificate (implies TLS)."""
    tls_client_cert: str | None = None
    """PEM certificate presented to the server for mutual TLS (with tls_client_key)."""
    tls_client_key: str | None = None
    """PEM private key of tls_client_cert."""
    tls_server_name: str | None = None
    """Name checked against the server certificate instead of the target's host."""
    keepalive_time_s: float = 60.0
    """Ping an active connection after this long without traffic, to notice dead peers."""
    keepalive_timeout_s: float = 20.0
    """Close the connection when a keepalive ping is not answered in this time."""
    max_message_bytes: int = 16 * 1024 * 1024
    """Largest message sent or received (large Embed and RecommendBatch replies)."""
    wait_for_ready: bool = False
    """Wait for the connection to come up within the deadline instead of failing at once."""
    channel_options: tuple[tuple[str, object], ...] = ()
    """Raw gRPC channel arguments appended last (they win over the ones derived above)."""

    def __post_init__(self) -> None:
        if self.deadline_s <= 0:
            raise ValueError("deadline_s must be positive")
        if (self.tls_client_cert is None) != (self.tls_client_key is None):
            raise ValueError("tls_client_cert and tls_client_key go together")

    def replace(self, **changes: object) -> ClientOptions:
        return dataclasses.replace(self, **changes)

    @property
    def uses_tls(self) -> bool:
        return self.tls or self.tls_root_cert is not None or self.tls_client_cert is not None

    def call_metadata(self) -> tuple[tuple[str, str], ...]:
        auth = (("authorization", f"Bearer {self.auth_token}"),) if self.auth_token else ()
        return auth + tuple(self.metadata)

    def channel_arguments(self) -> list[tuple[str, object]]:
        args: list[tuple[str, object]] = [
            ("grpc.keepalive_time_ms", int(self.keepalive_time_s * 1000)),
            ("grpc.keepalive_timeout_ms", int(self.keepalive_timeout_s * 1000)),
            ("grpc.max_send_message_length", self.max_message_bytes),
            ("grpc.max_receive_message_length", self.max_message_bytes),
            ("grpc.primary_user_agent", "recserve-client"),
        ]
        if self.tls_server_name:
            args.append(("grpc.ssl_target_name_override", self.tls_server_name))
        return args + list(self.channel_options)

    def channel_credentials(self) -> grpc.ChannelCredentials | None:
        if not self.uses_tls:
            return None
        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.tls_root_cert),
            private_key=_read(self.tls_client_key),
            certificate_chain=_read(self.tls_client_cert),
        )

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: object) -> ClientOptions:
        """Options from RECSERVE_CLIENT_* variables (read when called), then `overrides`."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for f in dataclasses.fields(cls):
            raw = env.get(f"RECSERVE_CLIENT_{f.name.upper()}")
            if raw is None or f.name in ("retry", "metadata", "channel_options"):
                continue
            values[f.name] = _parse_env_value(f"RECSERVE_CLIENT_{f.name.upper()}", f.type, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


class InvalidOption(ValueError):
    """A RECSERVE_CLIENT_* value that does not parse; the message names the variable."""


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _parse_env_value(name: str, type_name: object, raw: str) -> object:
    text = str(type_name)
    value = raw.strip().lower()
    if text.startswith("bool"):
        if value not in _TRUE + _FALSE:  # `maybe` is a mistake, not False
            raise InvalidOption(f"{name}={raw!r}: expected one of {', '.join(_TRUE + _FALSE)}")
        return value in _TRUE
    try:
        if text.startswith("float"):
            return float(raw)
        if text.startswith("int"):
            return int(raw)
    except ValueError:
        raise InvalidOption(f"{name}={raw!r}: expected a number") from None
    return raw


def _read(path: str | None) -> bytes | None:
    return Path(path).read_bytes() if path else None


def create_channel(options: ClientOptions) -> grpc.Channel:
    """A sync channel; keep it for the client's lifetime so the connection is reused."""
    creds = options.channel_credentials()
    if creds is None:
        return grpc.insecure_channel(options.target, options=options.channel_arguments())
    return grpc.secure_channel(options.target, creds, options=options.channel_arguments())


def create_aio_channel(options: ClientOptions) -> grpc.aio.Channel:
    """An asyncio channel bound to the running event loop."""
    creds = options.channel_credentials()
    if creds is None:
        return grpc.aio.insecure_channel(options.target, options=options.channel_arguments())
    return grpc.aio.secure_channel(options.target, creds, options=options.channel_arguments())


def add_connection_arguments(parser: argparse.ArgumentParser, *, deadline_ms: float = 5000.0) -> None:
    """--target, --deadline-ms, auth and TLS flags shared by the client commands."""
    group = parser.add_argument_group("connection")
    group.add_argument("--target", default=None,
                       help=f"server host:port (default $RECSERVE_CLIENT_TARGET or {DEFAULT_TARGET})")
    group.add_argument("--deadline-ms", type=float, default=deadline_ms,
                       help="deadline of each call in milliseconds (default %(default)s)")
    group.add_argument("--auth-token", default=None,
                       help="bearer token sent as authorization metadata (or $RECSERVE_CLIENT_AUTH_TOKEN)")
    group.add_argument("--tls-root-cert", default=None, help="PEM CA certificate; enables TLS")
    group.add_argument("--tls-client-cert", default=None, help="PEM client certificate (mutual TLS)")
    group.add_argument("--tls-client-key", default=None, help="PEM client key (mutual TLS)")
    group.add_argument("--tls-server-name", default=None, help="expected name in the server certificate")


def options_from_args(args: argparse.Namespace, **overrides: object) -> ClientOptions:
    return ClientOptions.from_env(
        target=args.target,
        deadline_s=args.deadline_ms / 1000.0,
        auth_token=args.auth_token,
        tls_root_cert=args.tls_root_cert,
        tls_client_cert=args.tls_client_cert,
        tls_client_key=args.tls_client_key,
        tls_server_name=args.tls_server_name,
        **overrides,
    )
