"""The artifact store: keys, atomic publishing, verification."""

import json
import multiprocessing
import os
import signal
import time

import pytest

from pipeline.errors import PipelineError
from pipeline.store import MANIFEST, Store, artifact_key

pytestmark = pytest.mark.unit


def test_key_depends_on_everything_it_hashes():
    base = artifact_key("s", 1, {"a": 1}, {"in": "k"})
    assert base == artifact_key("s", 1, {"a": 1}, {"in": "k"})
    assert (
        len(
            {
                base,
                artifact_key("t", 1, {"a": 1}, {"in": "k"}),
                artifact_key("s", 2, {"a": 1}, {"in": "k"}),
                artifact_key("s", 1, {"a": 2}, {"in": "k"}),
                artifact_key("s", 1, {"a": 1}, {"in": "j"}),
            }
        )
        == 5
    )


def test_publish_writes_manifest_with_checksums(tmp_path):
    store = Store(tmp_path)
    with store.staging("step", "abc") as tmp:
        (tmp / "sub").mkdir()
        (tmp / "sub" / "x.bin").write_bytes(b"hello")
        store.publish(tmp, "step", "abc", {"summary": {"n": 1}})
    artifact = store.open("step", "abc", full=True)
    meta = artifact.manifest["files"]["sub/x.bin"]
    assert meta["size"] == 5 and meta["sha256"].startswith("2cf24dba")
    assert artifact.summary == {"n": 1}
    assert not list((tmp_path / "step").glob(".tmp-*"))


def test_failed_write_publishes_nothing(tmp_path):
    store = Store(tmp_path)
    with pytest.raises(RuntimeError), store.staging("step", "abc") as tmp:
        (tmp / "half.bin").write_bytes(b"x")
        raise RuntimeError("killed")
    assert not store.is_complete("step", "abc")
    assert list((tmp_path / "step").iterdir()) == []


def _write_slowly(root: str) -> None:
    store = Store(root)
    with store.staging("step", "abc") as tmp:
        (tmp / "a.bin").write_bytes(b"a" * 1000)
        time.sleep(60)
        store.publish(tmp, "step", "abc", {})


def test_write_killed_midway_publishes_nothing(tmp_path):
    process = multiprocessing.get_context("spawn").Process(target=_write_slowly, args=(str(tmp_path),))
    process.start()
    deadline = time.time() + 30
    while not list((tmp_path / "step").glob(".tmp-*/a.bin")) and time.time() < deadline:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.join()
    store = Store(tmp_path)
    assert not store.is_complete("step", "abc")
    with pytest.raises(PipelineError, match="not complete"):
        store.open("step", "abc")
    assert store.sweep() and not list((tmp_path / "step").iterdir())


def test_verification_catches_truncation_and_corruption(tmp_path):
    store = Store(tmp_path)
    with store.staging("step", "k") as tmp:
        (tmp / "data.bin").write_bytes(b"0123456789")
        store.publish(tmp, "step", "k", {})
    path = tmp_path / "step" / "k" / "data.bin"
    store.open("step", "k", full=True)  # hashed once in this process ...
    mtime = path.stat().st_mtime_ns
    path.write_bytes(b"0123456780")  # same size, different bytes
    os.utime(path, ns=(mtime + 1, mtime + 1))  # ... and a rewrite as quick as the clock's grain is still seen
    store.open("step", "k")  # cheap check passes
    with pytest.raises(PipelineError, match="does not match the sha256"):
        store.open("step", "k", full=True)
    path.write_bytes(b"01234")
    with pytest.raises(PipelineError, match="has 5 bytes, its manifest says 10"):
        store.open("step", "k")
    path.unlink()
    with pytest.raises(PipelineError, match="artifact file missing"):
        store.open("step", "k")
    (tmp_path / "step" / "k" / MANIFEST).write_text("{not json")
    with pytest.raises(PipelineError, match="manifest .* is corrupt"):
        store.open("step", "k")


def test_republish_replaces_the_old_artifact(tmp_path):
    store = Store(tmp_path)
    for content in (b"old", b"new!"):
        with store.staging("step", "k") as tmp:
            (tmp / "f").write_bytes(content)
            store.publish(tmp, "step", "k", {})
    assert (tmp_path / "step" / "k" / "f").read_bytes() == b"new!"
    assert json.loads((tmp_path / "step" / "k" / MANIFEST).read_text())["files"]["f"]["size"] == 4
    assert sorted(p.name for p in (tmp_path / "step").iterdir()) == ["k"]
