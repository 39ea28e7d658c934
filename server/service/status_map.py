"""The one table from domain errors to gRPC status codes.

A domain error's message is written for users and goes to the client; any other exception
becomes INTERNAL with a fixed message (details stay in the server log).
"""

from __future__ import annotations

import grpc

from export.errors import BundleError, InvalidInput, RecserveError
from server.errors import (
    DeadlineExceeded,
    InferenceFailed,
    InvalidRequest,
    NotFound,
    NotReady,
    Overloaded,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
    WritesDisabled,
)

STATUS_OF: dict[type[RecserveError], grpc.StatusCode] = {
    InvalidRequest: grpc.StatusCode.INVALID_ARGUMENT,
    InvalidInput: grpc.StatusCode.INVALID_ARGUMENT,
    Overloaded: grpc.StatusCode.RESOURCE_EXHAUSTED,
    NotReady: grpc.StatusCode.UNAVAILABLE,
    Unavailable: grpc.StatusCode.UNAVAILABLE,
    DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    NotFound: grpc.StatusCode.NOT_FOUND,
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    InferenceFailed: grpc.StatusCode.INTERNAL,
    BundleError: grpc.StatusCode.FAILED_PRECONDITION,
    WritesDisabled: grpc.StatusCode.FAILED_PRECONDITION,
}

INTERNAL_MESSAGE = "internal error"


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """(code, client-safe message) for any exception."""
    for klass in type(exc).__mro__:
        code = STATUS_OF.get(klass)
        if code is not None:
            return code, str(exc)
    return grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE
