"""Typed errors of the serving path. server/service/status_map.py maps each to a gRPC code."""

from __future__ import annotations

from export.errors import RecserveError


class InvalidRequest(RecserveError):
    """The request breaks the API's rules (missing fields, limits, unknown ids)."""


class Overloaded(RecserveError):
    """Admission refused: the queue is full. The caller should back off and retry."""


class NotReady(RecserveError):
    """No bundle is loaded and warmed up yet, or the server is draining."""


class Unavailable(RecserveError):
    """The inference backend is unhealthy (a failed batch, a dead worker)."""


class DeadlineExceeded(RecserveError):
    """The request's deadline passed before it could be answered."""


class NotFound(RecserveError):
    """A named entity (user, bundle path) does not exist."""


class Unauthenticated(RecserveError):
    """Missing or wrong credentials."""


class PermissionDenied(RecserveError):
    """Valid credentials without the scope this call needs (or protected mode refuses it)."""


class WritesDisabled(RecserveError):
    """This server serves its bundle read-only and refuses live writes."""


class InferenceFailed(RecserveError):
    """The encoder failed on this request's batch (the request fails, the server stays up)."""


class BindFailed(RecserveError):
    """The server cannot listen on its configured address (port in use, address not local)."""


class ConfigError(RecserveError):
    """A setting (RECSERVE_* variable, config file, flag) has a value that cannot be used."""
