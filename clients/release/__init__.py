"""`recserve release`: the export-and-deploy step for CI pipelines (docs/RELEASE.md).

export (verification gate) -> build -> quality vs the published release on a held-out probe ->
publish a new version directory + switch `current` -> with --target: reload, wait, smoke test,
roll back on failure. Heavy parts (export/, the client) are imported when the command runs.
"""

from clients.release.cli import add_arguments, run

__all__ = ["add_arguments", "run"]
