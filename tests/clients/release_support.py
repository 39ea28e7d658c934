"""Helpers for the release tests: a small real data sample and a real server in a thread.

The release step is blocking code (it uses the sync client), so the real asyncio server runs
on its own event loop in a background thread, as a deployed server would run in its own
process.
"""

from __future__ import annotations

import asyncio
import csv
import json
import random
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

N_ITEMS = 400


@dataclass(frozen=True)
class ReleaseData:
    catalog: Path
    interactions: Path
    scrambled_catalog: Path
    """The same items with their titles shuffled among them: embeddings no longer describe
    the items, so held-out retrieval falls to chance (a broken catalog export)."""


def make_release_data(out: Path) -> ReleaseData:
    from export.demo import demo_catalog_path, demo_interactions_path
    from tests.server.conftest import _take_sample

    catalog, interactions = _take_sample(Path(demo_catalog_path()), Path(demo_interactions_path()),
                                         out, n_items=N_ITEMS)
    with open(catalog, newline="") as fh:
        reader = csv.DictReader(fh)
        rows, fields = list(reader), reader.fieldnames
    titles = [row["title"] for row in rows]
    random.Random(0).shuffle(titles)
    scrambled = out / "scrambled_catalog.csv"
    with open(scrambled, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows({**row, "title": title} for row, title in zip(rows, titles))
    return ReleaseData(catalog, interactions, scrambled)


def build_release_bundle(encoder_dir: Path, catalog: Path, interactions: Path, out: Path) -> Path:
    from export.build import build_bundle

    build_bundle(encoder_dir, catalog, interactions, out, progress=False)
    return out


def copy_encoder_step(encoder_dir: Path):
    """A stand-in for export_step that copies an already exported encoder (saves the export)."""
    def export_step(request, out, console):
        shutil.copytree(encoder_dir, out)
        return out
    return export_step


class ServerThread:
    """server.service.app.create_server on 127.0.0.1:0, running in a background thread."""

    def __init__(self, bundle_path: Path, live_dir: Path, release_dir: Path | None = None) -> None:
        self.bundle_path, self.live_dir = bundle_path, live_dir
        self.release_dir = release_dir  # the publish directory Reload resolves names in
        self.port = 0
        self.server = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), daemon=True)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> ServerThread:
        self._thread.start()
        if not self._ready.wait(120):
            raise RuntimeError("server did not start within 120 s")
        if self._error is not None:
            raise self._error
        return self

    async def _serve(self) -> None:
        from server.live.config import LiveConfig
        from server.service.app import AllConfigs, ServerConfig, create_server

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        configs = AllConfigs(server=ServerConfig(metrics_port=-1, release_dir=str(self.release_dir or "")),
                             live=LiveConfig(directory=str(self.live_dir)))
        try:
            self.server, self.port = await create_server(self.bundle_path, "127.0.0.1:0", configs)
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        await self._stop.wait()
        await self.server.stop()

    def stop(self) -> None:
        if self.server is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)


def bundle_version(bundle_dir: Path) -> str:
    return json.loads((Path(bundle_dir) / "manifest.json").read_text())["version"]


def last_json_line(text: str) -> dict:
    """The release's JSON outcome: the last line of its stdout."""
    return json.loads(text.strip().splitlines()[-1])
