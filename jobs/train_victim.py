"""``train-victim``: one classifier per attacked role, trained on that role's disjoint victim split."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from jobs.artifacts import VICTIM_META, VICTIM_WEIGHTS, classes, split_shards, victim_split, victim_task_id
from pipeline.config import ATTACKED_ROLES
from pipeline.dag import Ref, Resources, Step, Task, TaskRecord
from pipeline.errors import PipelineError
from pipeline.execute import Context


@dataclass(frozen=True)
class TrainVictimTask(TaskRecord):
    """One role's victim: ``victim.<role>`` with its training seed."""

    role: str
    arch: str
    weights: str | None
    num_classes: int | None
    epochs: int
    batch_size: int
    lr: float
    val_fraction: float
    seed: int


def tasks(cfg: Mapping[str, Any], upstream: Mapping[str, Sequence[Task]]) -> list[Task]:
    """One victim per attacked role, and one per ``victim.noise_seeds`` for the test role."""
    out = []
    for role in ATTACKED_ROLES:
        victim = getattr(cfg["victim"], role)
        if victim.weights is None:
            dataset = getattr(cfg["sample"].roles, role).dataset
            noise = cfg["victim"].noise_seeds if role == "test" else []
            out += [
                Task(
                    "train-victim",
                    victim_task_id(role, s),
                    TrainVictimTask(
                        role,
                        victim.arch,
                        victim.weights,
                        victim.num_classes,
                        victim.epochs,
                        victim.batch_size,
                        victim.lr,
                        victim.val_fraction,
                        victim.seed if s is None else s,
                    ),
                    {"data": Ref("sample", dataset)},
                )
                for s in [None, *noise]
            ]
    return out


def run(ctx: Context, task: TrainVictimTask) -> None:
    import torch

    from pipeline.device import select_device
    from pipeline.victims import build_victim, train_classifier

    device = select_device(ctx.config.runtime)
    data = ctx.input("data")
    names = classes(data)
    if not names:
        raise PipelineError(f"victim for {task.role}: dataset {data.path} has no labels to train on")
    num_classes = task.num_classes or len(names)
    split = split_shards(data, victim_split(task.role))
    rows = split.read(0, len(split), ["images", "labels"])
    images, labels = torch.from_numpy(rows["images"]), torch.from_numpy(rows["labels"])
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(task.seed))
    n_val = int(round(task.val_fraction * len(images)))
    val, train = order[:n_val], order[n_val:]
    torch.manual_seed(task.seed)  # the initial weights, so a rerun gives the same bytes
    model = build_victim(task.arch, num_classes)
    history = train_classifier(
        model,
        images[train],
        labels[train],
        task.epochs,
        task.batch_size,
        task.lr,
        task.seed,
        device,
        progress=ctx.progress,
    )
    role_split = split_shards(data, task.role)
    attacked = role_split.read(0, len(role_split), ["images", "labels"])
    accuracy = {
        "val_accuracy": _accuracy(model, images[val], labels[val], device),
        "role_accuracy": _accuracy(
            model, torch.from_numpy(attacked["images"]), torch.from_numpy(attacked["labels"]), device
        ),
    }
    counts = torch.bincount(labels[val], minlength=num_classes).float()
    torch.save({k: v.cpu() for k, v in model.state_dict().items()}, ctx.out / VICTIM_WEIGHTS)
    meta = {"arch": task.arch, "num_classes": num_classes, "classes": names, "history": history, **accuracy}
    (ctx.out / VICTIM_META).write_text(json.dumps(meta, indent=1))
    ctx.summary.update(
        {
            **accuracy,
            "chance": 1 / num_classes,
            "majority": float(counts.max() / counts.sum()) if n_val else None,
            "train_accuracy": history[-1]["train_accuracy"],
            "n_train": len(train),
            "n_val": n_val,
        }
    )


def _accuracy(model, images, labels, device) -> float | None:
    from pipeline.victims import predict

    if len(images) == 0:
        return None
    return float((predict(model, images, device) == labels).float().mean())


STEP = Step(
    name="train-victim",
    version=1,
    needs=("sample",),
    reads=("victim", "sample"),
    resources=Resources(cpus=8, gpus=1, mem="32G", time="04:00:00"),
    tasks=tasks,
    run=run,
    description="the classifier attacked on each attacked role (skipped when weights are given)",
)
