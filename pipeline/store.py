"""Content-addressed artifact store: ``<root>/<step>/<key>/`` published by one atomic rename.

A directory is an artifact only when its ``MANIFEST.json`` exists; it is written last, inside the
temporary directory, before the rename. Readers verify sizes (cheap) or sha256 (``full=True``).
"""

from __future__ import annotations

import builtins  # Store.list shadows list in its class body
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import PipelineError

MANIFEST = "MANIFEST.json"
_HASH_CHUNK = 1 << 20
# sha256 this process computed per (path, inode, size, mtime): a published file is never rewritten in place,
# so a worker that reads the same input for many tasks hashes it once; any change to the file is a new entry
_HASHED: dict[tuple[str, int, int, int], str] = {}


def artifact_key(step: str, version: int, config: Mapping[str, Any], inputs: Mapping[str, str]) -> str:
    """Hash of the step, its version, the config values it reads and the keys of its inputs."""
    blob = json.dumps(
        {"step": step, "version": version, "config": config, "inputs": inputs},
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def sha256_file(path: Path, sync: bool = False) -> str:
    """sha256 of a file; with ``sync``, also flush it to disk (before publishing)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_HASH_CHUNK), b""):
            digest.update(chunk)
        if sync:
            os.fsync(handle.fileno())
    return digest.hexdigest()


def _hashed(path: Path, stat: os.stat_result) -> str:
    """sha256 of a published file, computed once per process while the file stays as it was."""
    seen = (str(path), stat.st_ino, stat.st_size, stat.st_mtime_ns)
    if seen not in _HASHED:
        _HASHED[seen] = sha256_file(path)
    return _HASHED[seen]


def default_root(option: str | None) -> Path:
    """``--artifacts DIR``, else ``$PIPELINE_ARTIFACTS``, else ``./artifacts``."""
    return Path(option or os.environ.get("PIPELINE_ARTIFACTS") or "artifacts").absolute()


@dataclass(frozen=True)
class Artifact:
    """A published, complete artifact."""

    step: str
    key: str
    path: Path
    manifest: dict[str, Any]

    def file(self, name: str) -> Path:
        """Path of one of the artifact's files; fails if it is not listed in the manifest."""
        if name not in self.manifest["files"]:
            raise PipelineError(f"artifact {self.path} has no file {name!r}")
        return self.path / name

    @property
    def summary(self) -> dict[str, Any]:
        return self.manifest.get("summary", {})

    def verify(self, full: bool = False) -> None:
        """Check every listed file exists with its size (and sha256 when ``full``)."""
        for name, meta in self.manifest["files"].items():
            path = self.path / name
            try:
                stat = path.stat()
            except FileNotFoundError:
                raise PipelineError(f"artifact file missing: {path}") from None
            if stat.st_size != meta["size"]:
                raise PipelineError(f"artifact file {path} has {stat.st_size} bytes, its manifest says {meta['size']}")
            if full and _hashed(path, stat) != meta["sha256"]:
                raise PipelineError(f"artifact file {path} does not match the sha256 in its manifest")


class Store:
    """The artifact root: publishing, reading, locking and per-task scratch space."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def path(self, step: str, key: str) -> Path:
        return self.root / step / key

    def is_complete(self, step: str, key: str) -> bool:
        return (self.path(step, key) / MANIFEST).is_file()

    def open(self, step: str, key: str, full: bool = False) -> Artifact:
        """Read and verify a published artifact."""
        path = self.path(step, key)
        try:
            manifest = json.loads((path / MANIFEST).read_text())
        except FileNotFoundError:
            raise PipelineError(f"artifact {step}/{key} is not complete (no {path / MANIFEST})") from None
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise PipelineError(f"artifact manifest {path / MANIFEST} is corrupt") from None
        _check_manifest(manifest, path / MANIFEST)
        artifact = Artifact(step, key, path, manifest)
        artifact.verify(full=full)
        return artifact

    def list(self, step: str) -> list[Artifact]:
        """All complete artifacts of a step (those with a manifest), unverified, newest first; one
        whose manifest cannot be read is listed with an empty one, so ``open`` reports it."""
        found = []
        for manifest in (self.root / step).glob(f"*/{MANIFEST}"):
            try:
                data = json.loads(manifest.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError, OSError):
                data = {}
            data = data if isinstance(data, dict) else {}
            found.append(Artifact(step, manifest.parent.name, manifest.parent, data))
        return sorted(found, key=lambda a: str(a.manifest.get("finished", "")), reverse=True)

    def steps(self) -> builtins.list[str]:
        return (
            sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
            if self.root.is_dir()
            else []
        )

    def workdir(self, step: str, key: str) -> Path:
        """Scratch space that survives a killed task (checkpoints); removed after publishing."""
        path = self.root / step / f".work-{key}"
        path.mkdir(parents=True, exist_ok=True)
        return path

    @contextlib.contextmanager
    def lock(self, step: str, key: str, wait: bool = True) -> Iterator[bool]:
        """Exclusive lock per artifact, so two runners never build the same one at once; with
        ``wait=False``, yields False at once instead of waiting when another process holds it."""
        lock_dir = self.root / ".locks"
        lock_dir.mkdir(parents=True, exist_ok=True)
        with open(lock_dir / f"{step}-{key}.lock", "w") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def staging(self, step: str, key: str) -> Iterator[Path]:
        """A fresh temporary directory beside the final one; removed unless it was published."""
        tmp = self.root / step / f".tmp-{key}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir(parents=True)
        try:
            yield tmp
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def publish(self, tmp: Path, step: str, key: str, manifest: dict[str, Any]) -> Artifact:
        """Checksum the files in ``tmp``, write the manifest, rename into place (replacing any old one)."""
        files = {}
        for path in sorted(p for p in tmp.rglob("*") if p.is_file()):
            files[str(path.relative_to(tmp))] = {"sha256": sha256_file(path, sync=True), "size": path.stat().st_size}
        manifest = {**manifest, "step": step, "key": key, "files": files}
        _write_json_durably(tmp / MANIFEST, manifest)
        final = self.path(step, key)
        old = None
        if final.exists():
            old = final.with_name(f".old-{key}-{uuid.uuid4().hex[:8]}")
            os.rename(final, old)
        os.rename(tmp, final)
        _fsync_dir(final.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        shutil.rmtree(self.root / step / f".work-{key}", ignore_errors=True)
        return Artifact(step, key, final, manifest)

    def remove(self, step: str, key: str) -> None:
        path = self.path(step, key)
        if path.exists():
            trash = path.with_name(f".old-{key}-{uuid.uuid4().hex[:8]}")
            os.rename(path, trash)
            shutil.rmtree(trash)

    def sweep(self, max_age_s: float = 0.0) -> builtins.list[Path]:
        """Remove what killed runs left behind (older than ``max_age_s``): staging directories,
        replaced artifacts, and the scratch directories of artifacts that did get published. A
        directory whose task is running now (its artifact lock is held) is left alone."""
        removed = []
        now = time.time()
        for pattern in ("*/.tmp-*", "*/.old-*", "*/.work-*"):
            for path in self.root.glob(pattern):
                step, key = path.parent.name, path.name.split("-")[1]
                if pattern == "*/.work-*" and not self.is_complete(step, key):
                    continue  # a checkpoint to resume from
                with contextlib.suppress(FileNotFoundError), self.lock(step, key, wait=False) as free:
                    if free and now - path.stat().st_mtime >= max_age_s:
                        shutil.rmtree(path, ignore_errors=True)
                        removed.append(path)
        return removed


_SHA256 = re.compile(r"[0-9a-f]{64}")


def _check_manifest(manifest: Any, path: Path) -> None:
    """A manifest has the file list that ``verify`` reads: name -> ``{"size": bytes, "sha256": hex}``,
    and the mappings readers take apart (``summary``, ``config``); anything else names the file."""
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise PipelineError(f"artifact manifest {path} is corrupt (no file list)")
    for name, meta in manifest["files"].items():
        if not isinstance(meta, dict):
            raise PipelineError(f"artifact manifest {path} is corrupt (file entry {name!r} is not an object)")
        size, digest = meta.get("size"), meta.get("sha256")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise PipelineError(f"artifact manifest {path} is corrupt (file entry {name!r} has no valid 'size')")
        if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
            raise PipelineError(f"artifact manifest {path} is corrupt (file entry {name!r} has no valid 'sha256')")
    for field in ("summary", "config"):
        if not isinstance(manifest.get(field, {}), dict):
            raise PipelineError(f"artifact manifest {path} is corrupt ({field!r} is not an object)")


def _write_json_durably(path: Path, data: Any) -> None:
    with open(path, "w") as handle:
        json.dump(data, handle, indent=1, sort_keys=True, default=str)
        handle.flush()
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
