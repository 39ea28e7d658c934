"""The publish directory: release names, the atomic `current` pointer, the lock, the history."""

from __future__ import annotations

import json
import os
import threading

import pytest

from clients.release.outcome import BadInput, ReleaseInProgress
from clients.release.publish import PublishDir


def fake_bundle(parent, name: str, version: str):
    """A directory with a manifest, standing in for a built bundle (publishing only moves it)."""
    path = parent / name
    path.mkdir(parents=True)
    os.chmod(path, 0o700)  # as BundleWriter's mkdtemp leaves it
    (path / "manifest.json").write_text(json.dumps({"version": version}))
    return path


def test_releases_are_numbered_in_order_and_names_never_reused(tmp_path):
    publish = PublishDir.open(tmp_path / "pub")
    assert publish.release_names() == [] and publish.next_name() == "v1" and publish.current() is None
    for n in range(1, 12):
        release = publish.publish(fake_bundle(tmp_path / "built", f"b{n}", f"ver{n}"))
        assert (release.name, release.bundle_version) == (f"v{n}", f"ver{n}")
    # numeric, not lexical, order: v10 comes after v9
    assert publish.release_names() == [f"v{n}" for n in range(1, 12)]
    (tmp_path / "pub" / "live").mkdir()  # a server's WAL folder is not a release
    publish.switch("v3")  # rolling back does not free v4..v11
    assert publish.next_name() == "v12"


def test_published_release_is_readable_by_others(tmp_path):
    publish = PublishDir.open(tmp_path / "pub")
    release = publish.publish(fake_bundle(tmp_path, "built", "x"))
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(release.path).st_mode & 0o777 == 0o777 & ~umask


def test_switch_moves_a_relative_pointer_and_can_remove_it(tmp_path):
    publish = PublishDir.open(tmp_path / "pub")
    for n in (1, 2):
        publish.publish(fake_bundle(tmp_path, f"b{n}", f"ver{n}"))
    publish.switch("v1")
    assert os.readlink(tmp_path / "pub" / "current") == "v1"
    publish.switch("v2")
    assert publish.current().bundle_version == "ver2"
    moved = tmp_path / "moved"
    os.rename(tmp_path / "pub", moved)  # relative: still valid where the directory is mounted
    assert PublishDir(moved).current().bundle_version == "ver2"
    PublishDir(moved).switch(None)
    assert PublishDir(moved).current() is None
    with pytest.raises(BadInput, match="no release v9"):
        PublishDir(moved).switch("v9")


def test_a_reader_never_sees_the_pointer_missing_while_it_is_switched(tmp_path):
    publish = PublishDir.open(tmp_path / "pub")
    for n in (1, 2):
        publish.publish(fake_bundle(tmp_path, f"b{n}", f"ver{n}"))
    publish.switch("v1")
    pointer = tmp_path / "pub" / "current"
    stop, seen, missing = threading.Event(), set(), []

    def read() -> None:
        while not stop.is_set():
            try:
                seen.add((pointer / "manifest.json").read_text())
            except FileNotFoundError as exc:
                missing.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    for i in range(300):
        publish.switch("v2" if i % 2 == 0 else "v1")
    stop.set()
    reader.join()
    assert missing == [] and len(seen) == 2
    assert not [p for p in (tmp_path / "pub").iterdir() if ".tmp-" in p.name]


def test_a_pointer_that_is_not_a_release_is_refused(tmp_path):
    root = tmp_path / "pub"
    root.mkdir()
    os.symlink("/etc", root / "current")
    with pytest.raises(BadInput, match="not to a release directory"):
        PublishDir.open(root).current()
    (root / "current").unlink()
    (root / "current").mkdir()
    with pytest.raises(BadInput, match="not a symlink"):
        PublishDir.open(root)


def test_one_release_at_a_time(tmp_path):
    publish = PublishDir.open(tmp_path / "pub")
    with publish.lock():
        with pytest.raises(ReleaseInProgress, match="another release"):
            with PublishDir(tmp_path / "pub").lock():
                pass
    with publish.lock():  # released on exit
        pass


def test_staging_is_removed_and_history_is_appended(tmp_path):
    publish = PublishDir.open(tmp_path / "pub")
    with pytest.raises(RuntimeError):
        with publish.staging() as staging:
            (staging / "half-built").write_text("x")
            raise RuntimeError("build failed")
    assert [p.name for p in (tmp_path / "pub").iterdir()] == []
    publish.record({"release": "v1", "status": "published"})
    publish.record({"release": None, "status": "quality_refused"})
    history = publish.history()
    assert [h["status"] for h in history] == ["published", "quality_refused"]
    assert all("at" in h for h in history)
