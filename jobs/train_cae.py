"""``train-cae``: the clean-image VAE (eq. 1) on the ``cae_train`` role; one task per CAE variant."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from jobs._training import report, train_and_save
from jobs.artifacts import image_shape, init_seed, read_split, row_id, seeded
from jobs.variants import ablation_seeds, variants
from pipeline.dag import Ref, Resources, Step, Task, TaskRecord
from pipeline.execute import Context


@dataclass(frozen=True)
class TrainCAETask(TaskRecord):
    """One CAE: a setting of the ``cae`` section (as a dict, ``cae.variants`` included) and a training seed."""

    row: str  # ``cae``, or a ``cae.variants`` row
    cae: dict[str, Any]
    seed: int
    image_shape: tuple[int, int, int]


def tasks(cfg: Mapping[str, Any], upstream: Mapping[str, Sequence[Task]]) -> list[Task]:
    """One CAE per training seed and CAE setting (``main``, ``cae.variants``, the ablations' CAE
    settings); ablation settings only for the ablations' seeds. The main CAE also for the seeds of
    the convergence study and the ablations beyond the config's (in their groups)."""
    dataset = cfg["sample"].roles.cae_train.dataset
    settings: dict[str, Any] = {}
    for v in variants(cfg, ablations=True):  # main and the rows come before the ablation points
        settings.setdefault(v.cae_id, v)
    return [
        Task(
            "train-cae",
            seeded(cae_id, seed),
            TrainCAETask(row_id("cae", v.row if v.family == "cae" else None), v.cae, seed, image_shape(cfg["sample"])),
            {"data": Ref("sample", dataset)},
            group=group,
        )
        for cae_id, v in settings.items()
        for seed, group in _seeds(cfg, cae_id, v).items()
    ]


def _seeds(cfg: Mapping[str, Any], cae_id: str, v: Any) -> dict[int, str]:
    """The training seeds of one CAE setting, each with the group whose target trains it."""
    if v.point is not None:
        return dict.fromkeys(ablation_seeds(cfg), v.group)
    seeds = dict.fromkeys(cfg["seeds"], v.group)
    if cae_id == "main":
        for group, extra in (("convergence", cfg["convergence"].seeds or []), ("ablations", ablation_seeds(cfg))):
            seeds.update({seed: group for seed in extra if seed not in seeds})
    return seeds


def run(ctx: Context, task: TrainCAETask) -> None:
    rows = read_split(ctx.input("data"), "cae_train", ["images", "labels"])
    train_and_save(
        ctx,
        "vae",
        task.cae,
        task.seed,
        init_seed(task.row, "clean", task.seed),
        task.image_shape,
        {"x": rows["images"]},
        rows["labels"],
    )


STEP = Step(
    name="train-cae",
    version=4,
    needs=("sample",),
    reads=("cae", "aae", "ablation", "convergence", "sample", "seeds"),
    resources=Resources(cpus=8, gpus=1, mem="32G", time="24:00:00"),
    tasks=tasks,
    run=run,
    report=report,
    checkpointable=True,
    description="the clean-image autoencoder (CAE), eq. 1",
)
