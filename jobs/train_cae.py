"""``train-cae``: the clean-image VAE (eq. 1) on the ``cae_train`` role; one task per CAE variant."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from jobs._training import train_and_save
from jobs.artifacts import cae_task_id, image_shape, read_split
from jobs.variants import variants
from pipeline.dag import Ref, Resources, Step, Task


def tasks(cfg: Mapping[str, Any], upstream: Mapping[str, Sequence[Task]]) -> list[Task]:
    dataset = cfg["sample"].roles.cae_train.dataset
    all_variants = variants(cfg, ablations=True)
    out, seen = [], set()
    for variant in all_variants:
        task_id = cae_task_id(variant, all_variants[0])
        if task_id in seen:
            continue
        seen.add(task_id)
        out.append(Task("train-cae", task_id, {"cae": variant.cae, "image_shape": image_shape(cfg["sample"])},
                        {"data": Ref("sample", dataset)}, group="main" if task_id == "main" else "ablations"))
    return out


def run(ctx, task: Task) -> None:
    images = read_split(ctx.input("data"), "cae_train")["images"]
    train_and_save(ctx, "vae", task.config["cae"], tuple(task.config["image_shape"]), {"x": images})


STEP = Step(
    name="train-cae",
    version=1,
    needs=("sample",),
    reads=("cae", "aae", "ablation", "sample"),
    resources=Resources(cpus=8, gpus=1, mem="32G", time="24:00:00"),
    tasks=tasks,
    run=run,
    checkpointable=True,
    description="the clean-image autoencoder (CAE), eq. 1",
)
