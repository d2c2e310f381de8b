"""The disk filling up during writes.

The artifact root lives on a small file system that the test fills up to a few KiB short of full.
Which file system: a tmpfs mounted for the test (root may mount one in this sandbox); failing that,
a loop-mounted ext4 image; failing that, no file system at all but ``RLIMIT_FSIZE`` set in the
pipeline process, so any write past the limit fails with EFBIG (SIGXFSZ ignored). The summary table
names the one used; ``FAULTS_DISK=loop`` or ``FAULTS_DISK=rlimit`` skips the ones before it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults._harness import check, digests, leftovers, ok, pipeline

pytestmark = pytest.mark.faults

SIZE_MIB = 16
FREE_KIB = (4, 40, 120, 260, 600)  # left free before each run: each fails at a different write


def _mount(directory: Path, image: Path) -> str | None:
    """Mount a small file system on ``directory``; returns what was mounted, or None."""
    directory.mkdir()
    force = os.environ.get("FAULTS_DISK")  # tmpfs, loop or rlimit: try only that one (and what follows)
    tmpfs = (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={SIZE_MIB}m", "tmpfs", str(directory)], capture_output=True
        )
        if force in (None, "tmpfs")
        else None
    )
    if tmpfs is not None and tmpfs.returncode == 0:
        return "tmpfs"
    if force == "rlimit":
        return None
    made = subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "0", str(image), f"{SIZE_MIB}M"], capture_output=True)
    if (
        made.returncode == 0
        and subprocess.run(["mount", "-o", "loop", str(image), str(directory)], capture_output=True).returncode == 0
    ):
        return "loop ext4"
    return None


@pytest.fixture
def small_fs(tmp_path) -> Iterator[tuple[Path, str | None]]:
    directory = tmp_path / "small"
    kind = _mount(directory, tmp_path / "fs.img")
    try:
        yield directory, kind
    finally:
        if kind is not None:
            subprocess.run(["umount", "-l", str(directory)], capture_output=True)


def _fill(directory: Path, leave_kib: int) -> Path:
    """Write a filler file that leaves about ``leave_kib`` KiB free."""
    filler = directory / "filler"
    stat = os.statvfs(directory)
    free = stat.f_bavail * stat.f_frsize
    size = max(0, free - leave_kib * 1024)
    with open(filler, "wb") as handle, contextlib.suppress(OSError):
        while size > 0:
            chunk = min(size, 1 << 20)
            handle.write(b"\0" * chunk)
            size -= chunk
    return filler


def test_disk_full_during_writes_then_rerun(reference, tmp_path, small_fs, fault_log):
    directory, kind = small_fs
    dropped = ["attack", "train-aae"]  # HDF5 shards, checkpoints, models, plots and manifests get written
    config = str(reference.config)
    if kind is None:
        root = reference.clone(tmp_path / "artifacts", drop=dropped)
    else:
        root = reference.clone(directory / "artifacts", drop=dropped)
    levels = "/".join(map(str, FREE_KIB))
    for leave in FREE_KIB:
        before = digests(root)
        if kind is None:  # RLIMIT_FSIZE: no file may grow past ``leave`` KiB
            result = pipeline(tmp_path, root, "run", "all", "--config", config, fsize=leave * 1024)
        else:
            filler = _fill(directory, leave)
            result = pipeline(tmp_path, root, "run", "all", "--config", config)
            filler.unlink()
        found = check(root, before, reference.digests)
        lines = result.stderr.strip().splitlines()
        clear = result.returncode == 0 or (
            len(lines) == 1
            and lines[0].startswith("error: ")
            and ("full" in lines[0] or "No space left" in lines[0] or "too large" in lines[0])
        )
        staged = [p for p in leftovers(root) if "/.tmp-" in f"/{p}"]
        fault_log(
            f"disk full during a write ({kind or 'RLIMIT_FSIZE'})",
            survived=found.survived and clear and not staged,
            lost=len(found.lost),
            note=f"files limited to {levels} KiB"
            if kind is None
            else f"{SIZE_MIB} MiB, filled to {levels} KiB free before each run",
        )
        assert found.survived, found
        assert clear, result.stderr[-3000:]
        assert staged == [], "a failed task left its staging directory behind"

    ok(pipeline(tmp_path, root, "run", "all", "--config", config))  # space freed: the rerun completes
    ok(pipeline(tmp_path, root, "clean"))
    assert leftovers(root) == []
    assert digests(root) == reference.digests
    if kind is not None:
        shutil.rmtree(root)
