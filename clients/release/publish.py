"""The publish directory: immutable release directories v1, v2, ... and an atomic `current` pointer.

    <publish-dir>/
        v1/ v2/ ...       bundles exactly as built, never modified (a server verifies checksums)
        current -> v2     relative symlink; servers started on <publish-dir>/current follow it
        releases.jsonl    one JSON line per release attempt: published, refused, rolled back
        .release.lock     held while a release runs: one release at a time
        .staging-*/       a running release's work space, removed when it ends
        live/             a server's write-ahead log, when it serves <publish-dir>/current

Release names are never reused: a release that was rolled back keeps its directory (for
inspection) and the next one takes the next number. `current` is switched by creating a new
symlink under a temporary name and renaming it over the old one: rename(2) replaces it
atomically, so a reader sees the old target or the new one, never no pointer.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from clients.release.outcome import BadInput, ReleaseInProgress
from export.bundle import fsync_dir  # stdlib-only module: keeps the release import light

POINTER = "current"
HISTORY = "releases.jsonl"
LOCK = ".release.lock"
STAGING_PREFIX = ".staging-"
_RELEASE_NAME = re.compile(r"^v([1-9][0-9]*)$")


@dataclass(frozen=True)
class PublishedRelease:
    name: str
    path: Path
    bundle_version: str


class PublishDir:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(os.path.abspath(root))

    @classmethod
    def open(cls, root: str | Path) -> PublishDir:
        """The publish directory at root, created if missing; BadInput if unusable."""
        publish = cls(root)
        try:
            publish.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BadInput(f"cannot create publish directory {publish.root}: {exc.strerror}") from exc
        if not os.access(publish.root, os.W_OK):
            raise BadInput(f"publish directory {publish.root} is not writable")
        pointer = publish.root / POINTER
        if pointer.exists() and not pointer.is_symlink():
            raise BadInput(f"{pointer} exists and is not a symlink: not a recserve publish directory")
        return publish

    # ---- reading ------------------------------------------------------------------------

    def release_names(self) -> list[str]:
        """Published release directories, oldest first."""
        names = [p.name for p in self.root.iterdir() if p.is_dir() and _RELEASE_NAME.match(p.name)]
        return sorted(names, key=lambda name: int(name[1:]))

    def next_name(self) -> str:
        names = self.release_names()
        return f"v{int(names[-1][1:]) + 1 if names else 1}"

    def release(self, name: str) -> PublishedRelease:
        path = self.root / name
        try:
            manifest = json.loads((path / "manifest.json").read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise BadInput(f"release {path} has no readable manifest: {exc}") from exc
        return PublishedRelease(name, path, str(manifest.get("version", "")))

    def current_name(self) -> str | None:
        """The release `current` points to, None when there is no pointer yet."""
        pointer = self.root / POINTER
        if not pointer.is_symlink():
            return None
        target = os.readlink(pointer)
        if not _RELEASE_NAME.match(target) or not (self.root / target).is_dir():
            raise BadInput(f"{pointer} points to {target!r}, not to a release directory here")
        return target

    def current(self) -> PublishedRelease | None:
        name = self.current_name()
        return self.release(name) if name else None

    # ---- writing ------------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the release lock (refuses at once when another release holds it)."""
        with open(self.root / LOCK, "a+") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ReleaseInProgress(f"another release is running in {self.root}") from None
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def staging(self) -> Iterator[Path]:
        """A work directory on the publish directory's file system (so publishing is a rename)."""
        path = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=self.root))
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    def publish(self, built_bundle: Path) -> PublishedRelease:
        """Move a built bundle in as the next release (does not switch `current`)."""
        name = self.next_name()
        # The build's temporary directory is private (0700); a published release is readable
        # by a server running as another user, as any directory made with the umask would be.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(built_bundle, 0o777 & ~umask)
        os.rename(built_bundle, self.root / name)  # fails rather than overwrite a release
        fsync_dir(self.root)
        return self.release(name)

    def switch(self, name: str | None) -> None:
        """Point `current` at release `name` atomically (None removes the pointer)."""
        pointer = self.root / POINTER
        if name is None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(pointer)
        else:
            if not (self.root / name).is_dir():
                raise BadInput(f"no release {name} in {self.root}")
            temporary = self.root / f".{POINTER}.tmp-{os.getpid()}"
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            os.symlink(name, temporary)  # relative: the directory may be mounted elsewhere
            os.replace(temporary, pointer)
        fsync_dir(self.root)

    def record(self, entry: dict) -> None:
        """Append one release attempt to releases.jsonl (durable before returning)."""
        entry = {"at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), **entry}
        with open(self.root / HISTORY, "a") as fh:
            fh.write(json.dumps(entry, sort_keys=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def history(self) -> list[dict]:
        path = self.root / HISTORY
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
