"""``sample``: pick each role's images from its dataset (seeded, disjoint) into uint8 HDF5 shards."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from jobs.artifacts import SAMPLE_INDEX, SAMPLE_MANIFEST, victim_split
from pipeline.config import ATTACKED_ROLES, ROLES, SampleConfig
from pipeline.dag import KEYED_UNLESS_NONE, Resources, Step, Task, TaskRecord
from pipeline.data.sampling import choose, file_checksums, from_manifest, make_manifest, read_manifest
from pipeline.data.shards import write_shard
from pipeline.data.sources import SOURCES, Item, Listing
from pipeline.errors import PipelineError
from pipeline.execute import Context
from pipeline.schema import suggest
from pipeline.store import sha256_file


@dataclass(frozen=True)
class SampleTask(TaskRecord):
    """One dataset's images for every split it serves (``sample.datasets.<dataset>`` and the roles)."""

    dataset: str
    source: str
    root: str
    manifest: str | None
    classes: list[str] | None
    exclude: list[str]
    seed: int
    image_size: int
    shard_size: int
    splits: list[tuple[str, int]]
    # the manifest's content, not its path, decides the images ("missing" when the file is not there)
    manifest_sha256: str | None = field(default=None, metadata=KEYED_UNLESS_NONE)


def splits_of(sample: SampleConfig, dataset: str) -> list[tuple[str, int]]:
    """The (split, count) pairs drawn from one dataset, in the fixed order that keeps them disjoint."""
    roles = [(role, getattr(sample.roles, role)) for role in ROLES]
    splits = [(role, cfg.count) for role, cfg in roles if cfg.dataset == dataset]
    splits += [
        (victim_split(role), cfg.victim_count)
        for role, cfg in roles
        if cfg.dataset == dataset and role in ATTACKED_ROLES and cfg.victim_count > 0
    ]
    return splits


def dataset_root(name: str, sample: SampleConfig) -> Path:
    dataset = sample.datasets[name]
    if dataset.source not in SOURCES:
        raise PipelineError(
            f"config key 'sample.datasets.{name}.source': unknown source "
            f"{dataset.source!r}{suggest(dataset.source, SOURCES)}"
        )
    root = dataset.root or SOURCES[dataset.source].default_root()
    if root is None:
        raise PipelineError(f"config key 'sample.datasets.{name}.root' is required for source {dataset.source}")
    return Path(root).expanduser().absolute()


def tasks(cfg: Mapping[str, Any], upstream: Mapping[str, Sequence[Task]]) -> list[Task]:
    sample: SampleConfig = cfg["sample"]
    used = sorted({getattr(sample.roles, role).dataset for role in ROLES})
    out = []
    for name in used:
        dataset = sample.datasets[name]
        digest = None
        if dataset.manifest:
            digest = sha256_file(Path(dataset.manifest)) if Path(dataset.manifest).is_file() else "missing"
        record = SampleTask(
            name,
            dataset.source,
            str(dataset_root(name, sample)),
            dataset.manifest,
            dataset.classes,
            dataset.exclude,
            sample.seed,
            sample.image_size,
            sample.shard_size,
            splits_of(sample, name),
            digest,
        )
        out.append(Task("sample", name, record))
    return out


def run(ctx: Context, task: SampleTask) -> None:
    source, root, splits = SOURCES[task.source], Path(task.root), [(split, count) for split, count in task.splits]
    if task.classes is not None and not source.labelled:
        raise PipelineError(f"config key 'sample.datasets.{task.dataset}.classes': source {task.source} has no labels")
    if task.manifest:
        manifest = read_manifest(Path(task.manifest))
        chosen = from_manifest(manifest, Path(task.manifest), root, splits)
        classes, checksums = manifest.get("classes"), manifest["files"]
    else:
        listing = source.list(root, task.classes)
        excluded = set(task.exclude)
        listing = Listing([it for it in listing.items if it.file not in excluded], listing.classes)
        chosen = choose(listing, splits, task.seed, f"dataset {task.dataset} ({root})")
        classes = listing.classes
        checksums = file_checksums(root, [it for items in chosen.values() for it in items])
    index = {}
    for split, items in chosen.items():
        index[split] = {"count": len(items), "shards": _write_split(ctx.out, split, source, root, items, task)}
    manifest = make_manifest(task.dataset, task.source, task.seed, classes, chosen, checksums)
    (ctx.out / SAMPLE_MANIFEST).write_text(json.dumps(manifest, indent=1))
    (ctx.out / SAMPLE_INDEX).write_text(json.dumps({"classes": classes, "splits": index}, indent=1))
    _export(manifest, Path(ctx.config.sample.manifest_dir) / f"{task.dataset}.json")
    ctx.summary.update({"splits": {s: v["count"] for s, v in index.items()}, "classes": len(classes) if classes else 0})


def _write_split(out: Path, split: str, source, root: Path, items: list[Item], task: SampleTask) -> list[dict]:
    shards = []
    (out / split).mkdir()
    images = source.load(root, items, task.image_size)
    for number, start in enumerate(range(0, len(items), task.shard_size)):
        part = items[start : start + task.shard_size]
        name = f"{split}/shard-{number:05d}.h5"
        write_shard(
            out / name,
            {
                "images": np.stack([next(images) for _ in part]),
                "labels": np.array([it.label for it in part], dtype=np.int64),
                "ids": np.array([it.id for it in part], dtype=str),
            },
            {"split": split, "dataset": task.dataset, "start": start},
        )
        shards.append({"file": name, "start": start, "count": len(part)})
    return shards


def _export(manifest: dict, path: Path) -> None:
    """Write a copy of the manifest where it is versioned (``data_manifests/``), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, path)


STEP = Step(
    name="sample",
    version=1,
    needs=(),
    reads=("sample",),
    resources=Resources(cpus=4, mem="16G", time="02:00:00"),
    tasks=tasks,
    run=run,
    description="seeded, disjoint image samples per role as uint8 HDF5 shards",
)
