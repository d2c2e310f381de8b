"""``train-aae``: per training attack, the AAE (eqs. 2-6, CAE frozen) and the trained baselines.

Models: ``aae`` (ours), ``plain_ae`` (an AE with the AAE's configuration on the adversarial images
alone, the paper's Fig. 7 baseline) and ``paired_dae`` (a supervised denoiser adversarial -> clean on
the pairs we generated: an upper reference the paper's method does not need). Ablation variants
train only ``aae``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from jobs._io import split_shards
from jobs._training import image_shape, load_model, train_and_save
from jobs._variants import aae_task_id, cae_task_id, variants
from pipeline.dag import Ref, Resources, Step, Task
from pipeline.data.shards import read_shard


def adversarial_refs(attack_tasks: Sequence[Task]) -> dict[tuple[str, str], dict[str, Ref]]:
    """Per (role, attack): inputs ``adv-<start>`` naming every shard of that attack on that role."""
    refs: dict[tuple[str, str], dict[str, Ref]] = {}
    for t in attack_tasks:
        refs.setdefault((t.config["role"], t.config["attack"]), {})[f"adv-{t.config['start']:06d}"] = \
            Ref("attack", t.id)
    return refs


def tasks(cfg: Mapping[str, Any], upstream: Mapping[str, Sequence[Task]]) -> list[Task]:
    shape = image_shape(cfg["sample"])
    all_variants = variants(cfg, ablations=True)
    main = all_variants[0]
    shards = adversarial_refs(upstream["attack"])
    out = []
    for variant in all_variants:
        models = ["aae", *cfg["aae"].baselines] if variant is main else ["aae"]
        attacks = cfg["attack"].names if variant is main else \
            [a for a in cfg["ablation"].attacks if a in cfg["attack"].names]
        section = {k: v for k, v in variant.aae.items() if k != "baselines"}
        for model in models:
            for attack in attacks:
                inputs = dict(shards[("aae_train", attack)])
                if model == "aae":
                    inputs["cae"] = Ref("train-cae", cae_task_id(variant, main))
                    config_section = section
                else:
                    config_section = {k: v for k, v in section.items() if k != "warmup_epochs"}
                if model == "paired_dae":
                    inputs["clean"] = Ref("sample", cfg["sample"].roles.aae_train.dataset)
                out.append(Task("train-aae", aae_task_id(model, attack, variant),
                                {"model": model, "attack": attack, "aae": config_section, "image_shape": shape},
                                inputs, group="main" if variant is main else "ablations"))
    return out


def run(ctx, task: Task) -> None:
    shards = [read_shard(a.file("adv.h5"), ["images", "rows"]) for a in ctx.inputs_named("adv-")]
    data = {"x": np.concatenate([s["images"] for s in shards])}
    frozen = {}
    if "cae" in ctx.inputs:
        from pipeline.device import select_device
        from pipeline.losses import freeze

        frozen["cae"] = freeze(load_model(ctx.input("cae"), select_device(ctx.config.runtime)))
    if "clean" in ctx.inputs:
        clean = split_shards(ctx.input("clean"), "aae_train")
        data["target"] = np.concatenate([clean.read(int(s["rows"][0]), int(s["rows"][-1]) + 1, ["images"])["images"]
                                         for s in shards])
    train_and_save(ctx, task.config["model"], task.config["aae"], tuple(task.config["image_shape"]), data, frozen)


STEP = Step(
    name="train-aae",
    version=1,
    needs=("sample", "attack", "train-cae"),
    reads=("aae", "cae", "attack", "ablation", "sample"),
    resources=Resources(cpus=8, gpus=1, mem="32G", time="48:00:00"),
    tasks=tasks,
    run=run,
    checkpointable=True,
    description="per training attack: the AAE with the CAE frozen, and the trained baselines",
)
