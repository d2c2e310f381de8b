"""``train-aae``: per training attack and training seed, the model of every trained method (see
``pipeline.methods``): the AAE of the paper (eqs. 2-6, CAE frozen), its ``aae.variants`` and the
trained baselines. Ablation points train, for ``ablation.seeds``, the methods whose spec has
``variants``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from jobs._training import report, train_and_save
from jobs.artifacts import (
    adversarial_refs,
    image_shape,
    init_seed,
    load_model,
    read_adversarial,
    row_id,
    seeded,
    split_shards,
    train_task_id,
)
from jobs.variants import ablation_seeds, variants
from pipeline.dag import UNKEYED, Ref, Resources, Step, Task, TaskRecord
from pipeline.execute import Context
from pipeline.methods import METHODS


@dataclass(frozen=True)
class TrainAAETask(TaskRecord):
    """One trained method's model (a table row, maybe at an ablation point) for one training attack and seed."""

    method: str
    row: str
    loss: str  # of ``pipeline.losses.LOSSES``
    target: str  # ``input`` or ``clean`` (``pipeline.methods.Training``)
    attack: str
    seed: int
    aae: dict[str, Any]  # the ``aae`` values that determine the model (``Training.section``)
    image_shape: tuple[int, int, int]
    shards: tuple[str, ...] = field(default=(), metadata=UNKEYED)  # the inputs holding the adversarial images


def tasks(cfg: Mapping[str, Any], upstream: Mapping[str, Sequence[Task]]) -> list[Task]:
    shape = image_shape(cfg["sample"])
    shards = adversarial_refs(upstream["attack"])
    trained = [METHODS[m] for m in cfg["evaluate"].methods if METHODS[m].training]
    ablation_attacks = [a for a in cfg["ablation"].attacks if a in cfg["attack"].names]
    out = []
    for variant in (v for v in variants(cfg, ablations=True) if v.family == "aae"):
        main = variant.row is None and variant.point is None
        specs = trained if main else [s for s in trained if s.variants]
        attacks, seeds = (
            (cfg["attack"].names, cfg["seeds"]) if variant.point is None else (ablation_attacks, ablation_seeds(cfg))
        )
        for spec in specs:
            training = spec.require_training()
            for attack in attacks:
                for seed in seeds:
                    inputs = dict(shards[("aae_train", attack, None)])
                    inputs["clean"] = Ref("sample", cfg["sample"].roles.aae_train.dataset)
                    if training.reads_cae:
                        inputs["cae"] = Ref("train-cae", seeded(variant.cae_id, seed))
                    record = TrainAAETask(
                        spec.name,
                        row_id(spec.name, variant.row),
                        training.loss,
                        training.target,
                        attack,
                        seed,
                        training.section(variant.aae, variant.cae),
                        shape,
                        tuple(shards[("aae_train", attack, None)]),
                    )
                    out.append(
                        Task(
                            "train-aae",
                            train_task_id(record.row, attack, variant.point, seed),
                            record,
                            inputs,
                            group=variant.group,
                        )
                    )
    return out


def training_data(ctx: Context, shards: Sequence[str]) -> tuple[dict, dict]:
    """The adversarial images of a task's inputs ``shards`` (``x``) with their clean originals, row for row
    (``clean``), rows and labels; and the frozen models it reads (the CAE, if any)."""
    adversarial = read_adversarial(ctx.inputs, shards=shards)
    original = split_shards(ctx.input("clean"), "aae_train").take(adversarial["rows"], ["images", "labels"])
    data = {
        "x": adversarial["images"],
        "clean": original["images"],
        "rows": adversarial["rows"],
        "labels": original["labels"],
    }
    frozen = {}
    if "cae" in ctx.inputs:
        from pipeline.device import select_device
        from pipeline.losses import freeze

        frozen["cae"] = freeze(load_model(ctx.input("cae"), select_device(ctx.config.runtime)))
    return data, frozen


def run(ctx: Context, task: TrainAAETask) -> None:
    data, frozen = training_data(ctx, task.shards)
    images = {"x": data["x"], **({"target": data["clean"]} if task.target == "clean" else {})}
    train_and_save(
        ctx,
        task.loss,
        task.aae,
        task.seed,
        init_seed(task.row, task.attack, task.seed),
        task.image_shape,
        images,
        data["labels"],
        frozen,
    )


STEP = Step(
    name="train-aae",
    version=5,
    needs=("sample", "attack", "train-cae"),
    reads=("aae", "cae", "attack", "evaluate", "ablation", "sample", "seeds"),
    resources=Resources(cpus=8, gpus=1, mem="32G", time="48:00:00"),
    tasks=tasks,
    run=run,
    report=report,
    checkpointable=True,
    description="per training attack: the model of every trained method (the AAE with the CAE frozen, baselines)",
)
