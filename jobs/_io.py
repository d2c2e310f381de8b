"""Artifact formats shared by steps: clean splits from ``sample``, victims, adversarial shards."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline.config import VictimConfig
from pipeline.dag import Ref
from pipeline.data.shards import ShardSet
from pipeline.errors import PipelineError
from pipeline.store import Artifact, sha256_file


def split_shards(sample: Artifact, split: str) -> ShardSet:
    """The shards of one split of a ``sample`` artifact, readable as one array."""
    index = json.loads(sample.file("index.json").read_text())
    if split not in index["splits"]:
        raise PipelineError(f"sample artifact {sample.path} has no split {split!r}")
    shards = index["splits"][split]["shards"]
    return ShardSet([sample.file(s["file"]) for s in shards], [s["count"] for s in shards])


def classes(sample: Artifact) -> list[str] | None:
    return json.loads(sample.file("index.json").read_text())["classes"]


def victim_task_parts(role: str, victim: VictimConfig) -> tuple[dict[str, Any], dict[str, Ref]]:
    """Config values and inputs that pin a role's victim: its weights file, or its train-victim task."""
    if victim.weights is None:
        return {"victim": role}, {"victim": Ref("train-victim", role)}
    path = Path(victim.weights).expanduser().absolute()
    digest = sha256_file(path) if path.is_file() else "missing"
    return {"victim": {"arch": victim.arch, "num_classes": victim.num_classes, "weights": str(path),
                       "sha256": digest}}, {}


def load_role_victim(ctx, task_victim: Any, device):
    """The victim a task was planned with (see ``victim_task_parts``), in eval mode."""
    from pipeline.victims import load_victim

    if isinstance(task_victim, dict):
        return load_victim(task_victim["arch"], task_victim["num_classes"], Path(task_victim["weights"]), device)
    artifact = ctx.input("victim")
    meta = json.loads(artifact.file("victim.json").read_text())
    return load_victim(meta["arch"], meta["num_classes"], artifact.file("victim.pt"), device)


def export_tree(src: Path, dst: Path) -> None:
    """Replace directory ``dst`` by a copy of ``src`` (copied beside it, then swapped by renames)."""
    import os
    import shutil
    import uuid

    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    for stale in dst.parent.glob(f".{dst.name}.*-*"):  # left by a copy that was killed
        shutil.rmtree(stale, ignore_errors=True)
    tmp = dst.with_name(f".{dst.name}.tmp-{uuid.uuid4().hex[:8]}")
    shutil.copytree(src, tmp)
    old = dst.with_name(f".{dst.name}.old-{uuid.uuid4().hex[:8]}")
    if dst.exists():
        os.rename(dst, old)
    os.rename(tmp, dst)
    shutil.rmtree(old, ignore_errors=True)


def results_dir(template: str, config_name: str) -> Path:
    return Path(template.format(name=config_name))
