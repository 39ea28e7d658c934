"""Typed errors the clients raise: one class per status code a caller reacts to differently.

They subclass `grpc.RpcError` and keep its `code()` / `details()` methods, so code written
against raw stubs (`except grpc.RpcError`) keeps working.
"""

from __future__ import annotations

import grpc


class RecommenderError(grpc.RpcError):
    """A call failed with a gRPC status; `attempts` counts the tries made (retries included)."""

    def __init__(self, code: grpc.StatusCode, details: str, *, method: str, attempts: int = 1) -> None:
        super().__init__(f"{method}: {code.name}: {details}")
        self._code = code
        self._details = details
        self.method = method
        self.attempts = attempts

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def __str__(self) -> str:
        tries = f" (after {self.attempts} attempts)" if self.attempts > 1 else ""
        return f"{self.method} failed with {self._code.name}: {self._details}{tries}"


class Unavailable(RecommenderError):
    """No server answered (down, draining, unreachable), even after retries."""


class DeadlineExceeded(RecommenderError):
    """The call's deadline passed before an answer came."""


class Overloaded(RecommenderError):
    """RESOURCE_EXHAUSTED: the server's admission queue is full; back off and try later."""


class InvalidArgument(RecommenderError):
    """The request broke a limit or named nothing to recommend for."""


class NotFound(RecommenderError):
    """An unknown user, item or bundle."""


class Unauthenticated(RecommenderError):
    """Missing or wrong credentials."""


class PermissionDenied(RecommenderError):
    """The credentials may not call this method."""


class FailedPrecondition(RecommenderError):
    """The server is not in a state to do this (for example a reload already running)."""


_BY_CODE: dict[grpc.StatusCode, type[RecommenderError]] = {
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.RESOURCE_EXHAUSTED: Overloaded,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
}


def error_from_rpc(exc: grpc.RpcError, *, method: str, attempts: int) -> RecommenderError:
    """The typed error for a failed call (RpcError raised by a stub)."""
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = exc.details() if hasattr(exc, "details") else str(exc)
    code = code or grpc.StatusCode.UNKNOWN
    return _BY_CODE.get(code, RecommenderError)(code, details or "", method=method, attempts=attempts)
