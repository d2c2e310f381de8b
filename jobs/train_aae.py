"""``train-aae``: per training attack and training seed, the model of every trained method (see
``pipeline.methods``): the AAE of the paper (eqs. 2-6, CAE frozen), its ``aae.variants`` and the
trained baselines. Ablation points train, for the first seed only, the methods whose spec has
``variants``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from jobs._training import report, train_and_save
from jobs.artifacts import adversarial_refs, image_shape, load_model, read_adversarial, row_id, seeded, \
    split_shards, train_task_id
from jobs.variants import variants
from pipeline.dag import Ref, Resources, Step, Task
from pipeline.methods import METHODS


def tasks(cfg: Mapping[str, Any], upstream: Mapping[str, Sequence[Task]]) -> list[Task]:
    shape = image_shape(cfg["sample"])
    shards = adversarial_refs(upstream["attack"])
    trained = [METHODS[m] for m in cfg["evaluate"].methods if METHODS[m].training]
    ablation_attacks = [a for a in cfg["ablation"].attacks if a in cfg["attack"].names]
    out = []
    for variant in variants(cfg, ablations=True):
        main = variant.row is None and variant.point is None
        specs = trained if main else [s for s in trained if s.variants]
        attacks, seeds = (cfg["attack"].names, cfg["seeds"]) if variant.point is None else \
            (ablation_attacks, cfg["seeds"][:1])
        for spec in specs:
            training = spec.training
            for attack in attacks:
                for seed in seeds:
                    inputs = dict(shards[("aae_train", attack)])
                    if training.with_cae:
                        inputs["cae"] = Ref("train-cae", seeded(variant.cae_id, seed))
                    if training.target == "clean":
                        inputs["clean"] = Ref("sample", cfg["sample"].roles.aae_train.dataset)
                    config = {"method": spec.name, "row": row_id(spec.name, variant.row), "loss": training.loss,
                              "target": training.target, "attack": attack, "seed": seed,
                              "aae": training.section(variant.aae), "image_shape": shape}
                    out.append(Task("train-aae", train_task_id(config["row"], attack, variant.point, seed), config,
                                    inputs, group=variant.group))
    return out


def run(ctx, task: Task) -> None:
    c = task.config
    adversarial = read_adversarial(ctx.inputs)
    data = {"x": adversarial["images"]}
    if c["target"] == "clean":  # the clean original of every adversarial image, row for row
        data["target"] = split_shards(ctx.input("clean"), "aae_train").take(adversarial["rows"], ["images"])["images"]
    frozen = {}
    if "cae" in ctx.inputs:
        from pipeline.device import select_device
        from pipeline.losses import freeze

        frozen["cae"] = freeze(load_model(ctx.input("cae"), select_device(ctx.config.runtime)))
    train_and_save(ctx, c["loss"], c["aae"], c["seed"], tuple(c["image_shape"]), data, frozen)


STEP = Step(
    name="train-aae",
    version=4,
    needs=("sample", "attack", "train-cae"),
    reads=("aae", "cae", "attack", "evaluate", "ablation", "sample", "seeds"),
    resources=Resources(cpus=8, gpus=1, mem="32G", time="48:00:00"),
    tasks=tasks,
    run=run,
    report=report,
    checkpointable=True,
    description="per training attack: the model of every trained method (the AAE with the CAE frozen, baselines)",
)
