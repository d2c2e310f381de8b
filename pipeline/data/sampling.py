"""Seeded, disjoint sampling of a dataset's images into named splits, and the manifest that pins them.

A manifest lists, per split, the chosen items and the sha256 of every source file they come from.
Given a manifest, sampling takes exactly its items and refuses files whose checksum changed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.data.sources import Item, Listing
from pipeline.errors import PipelineError
from pipeline.store import sha256_file

MANIFEST_FORMAT = 1


def choose(listing: Listing, splits: Sequence[tuple[str, int]], seed: int, what: str) -> dict[str, list[Item]]:
    """One seeded permutation of the items, cut into consecutive, disjoint splits."""
    needed = sum(count for _, count in splits)
    if needed > len(listing.items):
        wanted = " + ".join(f"{name} {count}" for name, count in splits)
        raise PipelineError(f"{what} has {len(listing.items)} images, the roles need {needed} ({wanted})")
    order = np.random.default_rng(seed).permutation(len(listing.items))
    chosen, start = {}, 0
    for name, count in splits:
        chosen[name] = [listing.items[i] for i in order[start : start + count]]
        start += count
    return chosen


def safe_relative(file: str, where: str) -> str:
    """A manifest path must stay inside the dataset root."""
    path = Path(file)
    if not file or path.is_absolute() or ".." in path.parts:
        raise PipelineError(f"{where}: entry {file!r} points outside the dataset root")
    return file


def file_checksums(root: Path, items: Sequence[Item]) -> dict[str, str]:
    return {file: sha256_file(root / file) for file in sorted({item.file for item in items})}


def make_manifest(
    dataset: str,
    source: str,
    seed: int,
    classes: list[str] | None,
    chosen: dict[str, list[Item]],
    checksums: dict[str, str],
) -> dict[str, Any]:
    return {
        "format": MANIFEST_FORMAT,
        "dataset": dataset,
        "source": source,
        "seed": seed,
        "classes": classes,
        "files": checksums,
        "splits": {
            name: [{"id": it.id, "file": it.file, "label": it.label} for it in items] for name, items in chosen.items()
        },
    }


def read_manifest(path: Path) -> dict[str, Any]:
    """A dataset manifest, checked against its format: every field that sampling reads has its type."""
    try:
        manifest = json.loads(Path(path).read_text())
    except OSError as err:
        raise PipelineError(f"cannot read manifest {path}: {err.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise PipelineError(f"manifest {path} is not valid JSON: {err}") from None
    _check_manifest(manifest, path)
    return manifest


def _check_manifest(manifest: Any, path: Path) -> None:
    def wrong(where: str, value: Any, what: str) -> PipelineError:
        return PipelineError(f"manifest {path}: {where} must be {what}, not {_shown(value)}")

    if not isinstance(manifest, dict):
        raise wrong("the top level", manifest, "an object")
    for key in ("format", "files", "splits"):
        if key not in manifest:
            raise PipelineError(f"manifest {path} has no key {key!r}")
    if manifest["format"] != MANIFEST_FORMAT:
        raise wrong("'format'", manifest["format"], str(MANIFEST_FORMAT))
    classes = manifest.get("classes")
    if classes is not None and not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)):
        raise wrong("'classes'", classes, "null or a list of class names")
    if not isinstance(manifest["files"], dict):
        raise wrong("'files'", manifest["files"], "an object of file -> sha256")
    for file, digest in manifest["files"].items():
        if not (isinstance(digest, str) and _SHA256.fullmatch(digest)):
            raise wrong(f"'files.{file}'", digest, "a sha256 (64 hex digits)")
    if not isinstance(manifest["splits"], dict):
        raise wrong("'splits'", manifest["splits"], "an object of split -> entries")
    for split, entries in manifest["splits"].items():
        if not isinstance(entries, list):
            raise wrong(f"'splits.{split}'", entries, "a list of entries")
        for i, entry in enumerate(entries):
            where = f"splits.{split}[{i}]"
            if not isinstance(entry, dict):
                raise wrong(f"'{where}'", entry, "an object with id, file and label")
            for key, kind, what in _ENTRY:
                value = entry.get(key)
                if not isinstance(value, kind) or isinstance(value, bool):
                    raise wrong(f"'{where}.{key}'", value, what)


_SHA256 = re.compile(r"[0-9a-f]{64}")
_ENTRY = (("id", str, "text"), ("file", str, "a path relative to the dataset root"), ("label", int, "an integer"))


def _shown(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else f"{text[:37]}..."


def from_manifest(
    manifest: dict[str, Any], path: Path, root: Path, splits: Sequence[tuple[str, int]]
) -> dict[str, list[Item]]:
    """The items a manifest lists, after checking paths, counts and the sha256 of every file."""
    chosen = {}
    for name, count in splits:
        entries = manifest["splits"].get(name)
        if entries is None:
            raise PipelineError(f"manifest {path} has no split {name!r}")
        if len(entries) != count:
            raise PipelineError(f"manifest {path} lists {len(entries)} images for {name}, the config asks {count}")
        chosen[name] = [Item(e["id"], safe_relative(e["file"], f"manifest {path}"), int(e["label"])) for e in entries]
    for file, expected in manifest["files"].items():
        target = root / safe_relative(file, f"manifest {path}")
        if not target.is_file():
            raise PipelineError(f"manifest {path}: file {target} does not exist")
        if sha256_file(target) != expected:
            raise PipelineError(f"manifest {path}: checksum mismatch for {target}")
    listed = set(manifest["files"])
    for items in chosen.values():
        for item in items:
            if item.file not in listed:
                raise PipelineError(f"manifest {path}: {item.file} has no checksum entry")
    return chosen
