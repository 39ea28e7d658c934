"""Typed errors of the release stage (export, build, bundle loading).

Serving-side errors (Overloaded, NotReady, ...) live in server/errors.py and derive from
the same base, so one table in the gRPC layer can map all of them.
"""

from __future__ import annotations


class RecserveError(Exception):
    """Base of every error recserve raises on purpose; the message is safe to show a user."""


class InvalidInput(RecserveError):
    """A file, folder or argument given by the user is missing, malformed or unusable."""


class BundleError(RecserveError):
    """A bundle is incomplete, tampered with (checksum mismatch) or of an unknown format."""


class VerificationFailed(RecserveError):
    """An exported model disagrees with the fp32 reference beyond the configured gate."""
