"""Which bundle a Reload call may load: a release in the configured release directory, only.

The release directory is the publish directory of `recserve release` (clients/release/
publish.py): releases v1, v2, ... and a `current` pointer. A Reload names a release
(`current`, `v3`), never a path. The name is resolved once, here: the result must be a
directory directly inside the release directory (`current -> v3` is fine; a link to
`../elsewhere` or `/home/x` is refused), and no link inside the bundle may lead out of the
release directory. The resolved real path is what gets loaded, so swapping the pointer
after the check changes nothing.

Messages never contain a filesystem path: a caller must not learn what exists on the
server. `scrub` takes paths out of a failed load's message too.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from server.errors import InvalidRequest, NotFound, PermissionDenied

CURRENT = "current"
_RELEASE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_ABSOLUTE_PATH = re.compile(r"(?<![\w.>])/[^\s:;,'\"]+")  # not right after a placeholder


@dataclass(frozen=True)
class ResolvedRelease:
    name: str
    """The release as the caller named it (safe to echo: it passed the name check)."""
    path: str
    """Real path of the release directory (never shown to the caller)."""


class ReleaseDirectory:
    def __init__(self, root: str) -> None:
        self.configured = bool(root)
        self.root = os.path.realpath(root) if root else ""

    def resolve(self, name: str) -> ResolvedRelease:
        """The release `name` ('' = current) as a real path inside the release directory."""
        if not self.configured:
            raise PermissionDenied("Reload over the API is off on this server: start it with "
                                   "--release-dir (the publish directory of `recserve release`)")
        name = name or CURRENT
        if not _RELEASE_NAME.fullmatch(name):
            raise InvalidRequest("Reload takes the name of a release in the server's release "
                                 f"directory ('{CURRENT}' or a version such as v3), not a path")
        candidate = os.path.join(self.root, name)
        if not os.path.lexists(candidate):
            raise NotFound(f"no release {name!r} in the release directory")
        real = os.path.realpath(candidate)
        if os.path.dirname(real) != self.root:
            raise PermissionDenied(f"release {name!r} leads out of the release directory")
        if not os.path.isdir(real):
            raise NotFound(f"release {name!r} is not a directory")
        self._refuse_links_out(name, real)
        return ResolvedRelease(name, real)

    def _refuse_links_out(self, name: str, real: str) -> None:
        inside = self.root + os.sep
        for folder, dirs, files in os.walk(real):
            for entry in dirs + files:
                path = os.path.join(folder, entry)
                if os.path.islink(path) and not os.path.realpath(path).startswith(inside):
                    raise PermissionDenied(f"release {name!r} contains a link that leads out of "
                                           f"the release directory")

    def scrub(self, message: str, release: ResolvedRelease) -> str:
        """`message` with the release's path and any other absolute path taken out."""
        message = message.replace(release.path, f"<release {release.name}>")
        message = message.replace(self.root, "<release dir>")
        return _ABSOLUTE_PATH.sub("<path>", message)
