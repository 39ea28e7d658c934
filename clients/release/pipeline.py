"""The release, step by step: export -> verification gate -> build -> quality against the
published release -> publish + switch `current` -> (with a target) deploy, or roll back.

Everything before publishing happens in a staging directory inside the publish directory, so
a release that stops early leaves no release directory and never moves `current`. Every
attempt that got the release lock is appended to releases.jsonl with its outcome.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from clients.release.deploy import Deployer, DeployTimeouts, SmokeTest
from clients.release.outcome import (BadInput, DeployFailed, QualityRefused, ReleaseError,
                                     RollbackFailed, VerificationRefused)
from clients.release.probe import DEFAULT_PROBE_USERS
from clients.release.publish import PublishDir, PublishedRelease
from clients.release.quality import DEFAULT_K, DEFAULT_MAX_REGRESSION, QualityVerdict

SMOKE_QUERIES = 3


@dataclass(frozen=True)
class ReleaseRequest:
    model: str
    """Encoder folder (sentence-transformers / Hugging Face) or 'default'."""
    catalog: Path
    interactions: Path | None
    publish_dir: Path
    target: str | None = None
    """host:port of a server to deploy to; None = publish only."""
    client_options: Any = None
    """clients.options.ClientOptions for the target (auth, TLS, deadline)."""
    force: bool = False
    max_regression: float = DEFAULT_MAX_REGRESSION
    probe_users: int = DEFAULT_PROBE_USERS
    probe_seed: int = 0
    precision: str | None = None
    config_file: Path | None = None
    """TOML with [export], [verification] and [build] tables."""
    catalog_columns: str | None = None
    interaction_columns: str | None = None
    timeouts: DeployTimeouts = field(default_factory=DeployTimeouts)
    progress: bool = True


def _check_inputs(request: ReleaseRequest) -> None:
    for name, path in (("--catalog", request.catalog), ("--interactions", request.interactions)):
        if path is not None and not Path(path).is_file():
            raise BadInput(f"{name} {path}: no such file")
    if request.model != "default" and not Path(request.model).is_dir():
        raise BadInput(f"--model {request.model}: no such folder (or 'default')")
    if not 0.0 <= request.max_regression <= 1.0:
        raise BadInput(f"--max-regression must be within 0..1, got {request.max_regression}")
    if request.probe_users < 1:
        raise BadInput(f"--probe-users must be positive, got {request.probe_users}")


def export_step(request: ReleaseRequest, out: Path, console: Console) -> Path:
    """The verified encoder at out; VerificationRefused when it fails the gate."""
    from pydantic import ValidationError

    from export.encoder_export import ExportConfig, export_encoder, one_line
    from export.errors import BundleError, InvalidInput, VerificationFailed
    from export.settings import load_settings
    from export.verification import VerificationGate

    console.rule("1/5 export and verify the encoder")
    try:
        config = load_settings(ExportConfig, request.config_file, precision=request.precision)
        gate = load_settings(VerificationGate, request.config_file)
        export_encoder(request.model, out, config, gate, console=console)
    except ValidationError as exc:
        raise BadInput(one_line(exc)) from exc
    except VerificationFailed as exc:
        raise VerificationRefused(str(exc)) from exc
    except (InvalidInput, BundleError) as exc:
        raise BadInput(str(exc)) from exc
    return out


def build_step(request: ReleaseRequest, encoder: Path, out: Path, console: Console) -> dict:
    from pydantic import ValidationError

    from export.build import BuildConfig, build_bundle
    from export.catalog import CatalogColumns, InteractionColumns
    from export.encoder_export import one_line
    from export.errors import BundleError, InvalidInput
    from export.settings import load_settings

    console.rule("2/5 build the bundle")
    try:
        manifest = build_bundle(
            encoder, request.catalog, request.interactions, out,
            config=load_settings(BuildConfig, request.config_file),
            catalog_columns=CatalogColumns.parse(request.catalog_columns),
            interaction_columns=InteractionColumns.parse(request.interaction_columns),
            progress=request.progress)
    except ValidationError as exc:
        raise BadInput(one_line(exc)) from exc
    except (InvalidInput, BundleError) as exc:
        raise BadInput(str(exc)) from exc
    console.print(f"bundle {manifest['version']}: {manifest['items']['count']:,} items, index "
                  f"recall@10 {manifest['index']['recall_at_10']:.3f}")
    return manifest


def _catalog_titles(bundle: Path) -> tuple[list[str], list[str]]:
    from export.bundle import ITEMS_DB
    from export.item_store import ItemStore

    with ItemStore.open(bundle / ITEMS_DB, readonly=True) as store:
        catalog = store.catalog()
    return catalog.item_ids, catalog.titles


def quality_step(request: ReleaseRequest, bundle: Path, current: PublishedRelease | None,
                 console: Console) -> QualityVerdict | None:
    """Candidate vs current on the held-out probe; None when there is no probe to use."""
    from export.catalog import InteractionColumns
    from export.errors import BundleError, InvalidInput

    from clients.release.probe import read_probe
    from clients.release.quality import measure_bundle

    console.rule("3/5 compare retrieval quality")
    if request.interactions is None:
        console.print("[yellow]quality comparison skipped: no --interactions to hold a probe out of")
        return None
    item_ids, _ = _catalog_titles(bundle)
    with console.status("held-out probe and recall@10"):
        try:
            probe = read_probe(request.interactions, set(item_ids),
                               columns=InteractionColumns.parse(request.interaction_columns),
                               users=request.probe_users, seed=request.probe_seed)
        except InvalidInput as exc:
            raise BadInput(str(exc)) from exc
        if not probe.cases:
            console.print("[yellow]quality comparison skipped: no user in --interactions has an "
                          "item to hold out")
            return None
        candidate = measure_bundle(bundle, probe, DEFAULT_K)
        measured_current = None
        if current is not None:
            try:
                measured_current = measure_bundle(current.path, probe, DEFAULT_K)
            except BundleError as exc:
                if not request.force:
                    raise BadInput(f"the published release {current.name} cannot be measured "
                                   f"({exc}); --force publishes without comparing") from exc
                console.print(f"[yellow]--force: {current.name} not compared: {exc}")
    verdict = QualityVerdict(candidate, measured_current,
                             current.name if measured_current else None,
                             request.max_regression, probe.describe())
    console.print(verdict.summary())
    return verdict


def _smoke_test_for(bundle: Path, seed: int) -> SmokeTest:
    """A few titles of the new catalog, picked with a fixed seed, as Recommend queries."""
    _, titles = _catalog_titles(bundle)
    named = [t for t in titles if t.strip()] or ["gift"]
    picks = np.random.default_rng(seed).choice(len(named), size=min(SMOKE_QUERIES, len(named)),
                                               replace=False)
    return SmokeTest(tuple(named[i] for i in sorted(picks)), k=min(DEFAULT_K, len(titles)))


class Release:
    """One run of `recserve release`; `run()` returns the summary or raises a ReleaseError."""

    def __init__(self, request: ReleaseRequest, console: Console | None = None) -> None:
        self.request = request
        self.console = console or Console(stderr=True)
        self.summary: dict[str, Any] = {
            "model": request.model, "catalog": str(request.catalog),
            "interactions": str(request.interactions) if request.interactions else None,
            "target": request.target, "forced": request.force,
        }

    def run(self) -> dict[str, Any]:
        _check_inputs(self.request)
        publish = PublishDir.open(self.request.publish_dir)
        with publish.lock():
            try:
                self._run(publish)
            except ReleaseError as exc:
                self.summary.update(status=exc.status, error=str(exc), **exc.details)
                publish.record(self.summary)
                raise
            publish.record(self.summary)
            return self.summary

    def _run(self, publish: PublishDir) -> None:
        request, console = self.request, self.console
        client = self._connect() if request.target else None
        try:
            served_before = self._served_version(client) if client else None
            previous = publish.current()
            self.summary["previous"] = previous.name if previous else None
            with publish.staging() as staging:
                encoder = export_step(request, staging / "encoder", console)
                manifest = build_step(request, encoder, staging / "bundle", console)
                self.summary["bundle_version"] = manifest["version"]
                verdict = quality_step(request, staging / "bundle", previous, console)
                self.summary["quality"] = verdict.to_record() if verdict else None
                if verdict is not None and verdict.worse:
                    if not request.force:
                        raise QualityRefused(f"refused: {verdict.summary()}; --force publishes anyway")
                    console.print("[yellow]--force: publishing a release that measured worse")
                smoke = _smoke_test_for(staging / "bundle", request.probe_seed)
                console.rule("4/5 publish")
                release = publish.publish(staging / "bundle")
            publish.switch(release.name)
            self.summary.update(release=release.name, path=str(release.path), current=release.name,
                                status="published")
            console.print(f"published {release.name} ({release.bundle_version}); "
                          f"{publish.root / 'current'} -> {release.name}")
            if client is not None:
                console.rule("5/5 deploy")
                self._deploy(client, publish, release, previous, served_before, smoke)
        finally:
            if client is not None:
                client.close()

    def _connect(self):
        from clients.client import RecommenderClient
        from clients.options import ClientOptions

        options = self.request.client_options or ClientOptions()
        return RecommenderClient(options=options.replace(target=self.request.target))

    def _served_version(self, client) -> str:
        """Pre-flight: a target that does not answer fails the release before any work."""
        from clients.errors import RecommenderError

        try:
            version = client.info().bundle_version
        except RecommenderError as exc:
            raise BadInput(f"--target {self.request.target} does not answer GetInfo: {exc}") from None
        self.summary["served_before"] = version
        return version

    def _deploy(self, client, publish: PublishDir, release: PublishedRelease,
                previous: PublishedRelease | None, served_before: str, smoke: SmokeTest) -> None:
        request = self.request
        deployer = Deployer(client, request.timeouts, self.console)
        try:
            deployer.deploy(release.bundle_version, smoke)
        except BaseException as exc:  # any failure, even an interrupt, puts the old release back
            reason = str(exc) if isinstance(exc, DeployFailed) else f"{type(exc).__name__}: {exc}"
            self.console.print(f"[red]deploy of {release.name} failed: {reason}; rolling back")
            try:
                served = deployer.rollback(publish, previous, served_before)
            except Exception as failed:  # RollbackFailed, or anything unforeseen: report the state
                raise RollbackFailed(f"deploy of {release.name} failed ({reason}) and rolling back "
                                     f"failed: {failed}", details=self._state(publish, deployer)) from exc
            back_to = previous.name if previous else "no release"
            raise DeployFailed(f"deploy of {release.name} failed ({reason}); rolled back: current -> "
                               f"{back_to}, server serving {served}",
                               details=self._state(publish, deployer)) from exc
        self.summary.update(status="deployed", served_version=release.bundle_version)

    @staticmethod
    def _state(publish: PublishDir, deployer: Deployer) -> dict[str, Any]:
        """Where the pointer and the server are now, as far as they can be read."""
        state: dict[str, Any] = {}
        try:
            state["current"] = publish.current_name()
        except (BadInput, OSError) as exc:
            state["current"] = f"unreadable: {exc}"
        try:
            state["served_version"] = deployer.served_version()
        except Exception as exc:  # reporting only: the server may be down
            state["served_version"] = f"unknown: {exc}"
        return state
