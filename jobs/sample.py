"""``sample``: pick each role's images from its dataset (seeded, disjoint) into uint8 HDF5 shards."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from jobs.artifacts import SAMPLE_INDEX, SAMPLE_MANIFEST, victim_split
from pipeline.config import ATTACKED_ROLES, ROLES, SampleConfig
from pipeline.dag import Resources, Step, Task
from pipeline.data.sampling import choose, file_checksums, from_manifest, make_manifest, read_manifest
from pipeline.data.shards import write_shard
from pipeline.data.sources import SOURCES, Item, Listing
from pipeline.errors import PipelineError
from pipeline.schema import suggest
from pipeline.store import sha256_file


def splits_of(sample: SampleConfig, dataset: str) -> list[tuple[str, int]]:
    """The (split, count) pairs drawn from one dataset, in the fixed order that keeps them disjoint."""
    roles = [(role, getattr(sample.roles, role)) for role in ROLES]
    splits = [(role, cfg.count) for role, cfg in roles if cfg.dataset == dataset]
    splits += [(victim_split(role), cfg.victim_count) for role, cfg in roles
               if cfg.dataset == dataset and role in ATTACKED_ROLES and cfg.victim_count > 0]
    return splits


def dataset_root(name: str, sample: SampleConfig) -> Path:
    dataset = sample.datasets[name]
    if dataset.source not in SOURCES:
        raise PipelineError(f"config key 'sample.datasets.{name}.source': unknown source "
                            f"{dataset.source!r}{suggest(dataset.source, SOURCES)}")
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
        config = {"dataset": name, **asdict(dataset), "root": str(dataset_root(name, sample)),
                  "seed": sample.seed, "image_size": sample.image_size, "shard_size": sample.shard_size,
                  "splits": splits_of(sample, name)}
        if dataset.manifest:  # the manifest's content, not its path, decides the images
            config["manifest_sha256"] = sha256_file(Path(dataset.manifest)) if Path(dataset.manifest).is_file() \
                else "missing"
        out.append(Task("sample", name, config))
    return out


def run(ctx, task: Task) -> None:
    c = task.config
    source, root, splits = SOURCES[c["source"]], Path(c["root"]), [tuple(s) for s in c["splits"]]
    if c["classes"] is not None and not source.labelled:
        raise PipelineError(f"config key 'sample.datasets.{c['dataset']}.classes': source {c['source']} has no labels")
    if c["manifest"]:
        manifest = read_manifest(Path(c["manifest"]))
        chosen = from_manifest(manifest, Path(c["manifest"]), root, splits)
        classes, checksums = manifest.get("classes"), manifest["files"]
    else:
        listing = source.list(root, c["classes"])
        excluded = set(c["exclude"])
        listing = Listing([it for it in listing.items if it.file not in excluded], listing.classes)
        chosen = choose(listing, splits, c["seed"], f"dataset {c['dataset']} ({root})")
        classes = listing.classes
        checksums = file_checksums(root, [it for items in chosen.values() for it in items])
    index = {}
    for split, items in chosen.items():
        index[split] = {"count": len(items), "shards": _write_split(ctx.out, split, source, root, items, c)}
    manifest = make_manifest(c["dataset"], c["source"], c["seed"], classes, chosen, checksums)
    (ctx.out / SAMPLE_MANIFEST).write_text(json.dumps(manifest, indent=1))
    (ctx.out / SAMPLE_INDEX).write_text(json.dumps({"classes": classes, "splits": index}, indent=1))
    _export(manifest, Path(ctx.config.sample.manifest_dir) / f"{c['dataset']}.json")
    ctx.summary.update({"splits": {s: v["count"] for s, v in index.items()},
                        "classes": len(classes) if classes else 0})


def _write_split(out: Path, split: str, source, root: Path, items: list[Item], c: dict) -> list[dict]:
    shards = []
    (out / split).mkdir()
    images = source.load(root, items, c["image_size"])
    for number, start in enumerate(range(0, len(items), c["shard_size"])):
        part = items[start:start + c["shard_size"]]
        name = f"{split}/shard-{number:05d}.h5"
        write_shard(out / name, {
            "images": np.stack([next(images) for _ in part]),
            "labels": np.array([it.label for it in part], dtype=np.int64),
            "ids": np.array([it.id for it in part], dtype=str),
        }, {"split": split, "dataset": c["dataset"], "start": start})
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
