"""How a release ends: one exit status per outcome a CI pipeline reacts to differently.

    0  released (published; with --target also serving and smoke-tested)
    2  bad input: a missing or unreadable file, a bad option, an unusable publish directory,
       an unreachable --target, or another release running; nothing was published
    3  the exported encoder failed the verification gate; nothing was published
    4  the candidate's retrieval quality is worse than the published release's beyond
       --max-regression; nothing was published (--force publishes anyway)
    5  deploying failed and was rolled back: `current` points to the previous release again
       and the server serves it (the failed release directory is kept for inspection)
    6  rolling back failed: the state of the pointer and of the server is reported
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_BAD_INPUT = 2
EXIT_VERIFICATION_FAILED = 3
EXIT_QUALITY_REFUSED = 4
EXIT_ROLLED_BACK = 5
EXIT_ROLLBACK_FAILED = 6


class ReleaseError(Exception):
    """A release that stopped; `status` goes into releases.jsonl, `exit_code` to the shell."""

    exit_code = 1
    status = "failed"

    def __init__(self, message: str, *, details: dict | None = None) -> None:
        super().__init__(message)
        self.details = details or {}


class BadInput(ReleaseError):
    exit_code = EXIT_BAD_INPUT
    status = "bad_input"


class ReleaseInProgress(BadInput):
    status = "locked"


class VerificationRefused(ReleaseError):
    exit_code = EXIT_VERIFICATION_FAILED
    status = "verification_failed"


class QualityRefused(ReleaseError):
    exit_code = EXIT_QUALITY_REFUSED
    status = "quality_refused"


class DeployFailed(ReleaseError):
    """The new release did not come up on the server (raised by deploy; rolled back after)."""

    exit_code = EXIT_ROLLED_BACK
    status = "rolled_back"


class RollbackFailed(ReleaseError):
    exit_code = EXIT_ROLLBACK_FAILED
    status = "rollback_failed"
