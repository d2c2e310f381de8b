"""``train-cae``: the clean-image VAE (eq. 1) on the ``cae_train`` role; one task per CAE variant."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from jobs._training import report, train_and_save
from jobs.artifacts import image_shape, read_split, seeded
from jobs.variants import variants
from pipeline.dag import Ref, Resources, Step, Task


def tasks(cfg: Mapping[str, Any], upstream: Mapping[str, Sequence[Task]]) -> list[Task]:
    """One CAE per training seed, and one per CAE setting of the ablations (first seed only)."""
    dataset = cfg["sample"].roles.cae_train.dataset
    settings = {v.cae_id: v.cae for v in variants(cfg, ablations=True)}
    return [Task("train-cae", seeded(cae_id, seed),
                 {"cae": cae, "seed": seed, "image_shape": image_shape(cfg["sample"])},
                 {"data": Ref("sample", dataset)}, group="main" if cae_id == "main" else "ablations")
            for cae_id, cae in settings.items() for seed in (cfg["seeds"] if cae_id == "main" else cfg["seeds"][:1])]


def run(ctx, task: Task) -> None:
    c = task.config
    images = read_split(ctx.input("data"), "cae_train")["images"]
    train_and_save(ctx, "vae", c["cae"], c["seed"], tuple(c["image_shape"]), {"x": images})


STEP = Step(
    name="train-cae",
    version=3,
    needs=("sample",),
    reads=("cae", "aae", "ablation", "sample", "seeds"),
    resources=Resources(cpus=8, gpus=1, mem="32G", time="24:00:00"),
    tasks=tasks,
    run=run,
    report=report,
    checkpointable=True,
    description="the clean-image autoencoder (CAE), eq. 1",
)
