"""``evaluate``: one task per (method, training attack, test set) on the ``test`` role.

Per image it records the victim's predictions (clean, input, recovered), recovery accuracy,
label accuracy, the pixel recovery rate at tolerance τ, PSNR and SSIM against the clean image,
and the reconstruction error used as an attack-detection score (``per_image.csv``), plus the first
few images for figures (``examples.h5``).

Methods trained per attack (``MethodSpec.training``) are evaluated with the model of attack a on a
(Table II, seen), on the attack b whose seeded random partner is a (Table III, unseen), and on
clean images (the Clean column and the detection negatives); learned methods once per training
seed, and for each of their rows (``aae.variants``, ``cae.variants``). Methods that read no trained
model are also evaluated against each ``victim.noise_seeds`` victim (on its own attacks), for the
spread of their rows over victims.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from jobs.artifacts import (
    CLEAN,
    EXAMPLES,
    PER_IMAGE,
    VictimPin,
    adversarial_refs,
    eval_task_id,
    load_model,
    load_victim,
    read_adversarial,
    row_id,
    seeded,
    split_shards,
    train_task_id,
    unseen_pairs,
    victim_task_parts,
)
from jobs.variants import Variant, ablation_seeds, variants
from pipeline.dag import UNKEYED, Ref, Resources, Step, Task, TaskRecord
from pipeline.data.shards import write_shard
from pipeline.execute import Context
from pipeline.methods import METHODS, MethodSpec


@dataclass(frozen=True)
class EvaluateTask(TaskRecord):
    """One table row's method, trained on ``train_attack`` (if trained per attack), on one test set."""

    method: str
    row: str
    train_attack: str | None
    test: str  # an attack, or ``CLEAN``
    point: str | None  # the ablation point; None: a table row
    seed: int | None  # the training seed of a learned method
    victim_seed: int | None  # one of ``victim.noise_seeds``; None: the test role's own victim
    params: dict[str, Any] | None  # ``evaluate.params.<method>``
    tolerance: float
    batch_size: int
    keep_images: int
    victim: VictimPin
    variant: str | None = field(default=None, metadata=UNKEYED)  # the ``aae``/``cae.variants`` entry of the row
    shards: tuple[str, ...] = field(default=(), metadata=UNKEYED)  # the inputs holding the attacked test images


def tasks(cfg: Mapping[str, Any], upstream: Mapping[str, Sequence[Task]]) -> list[Task]:
    ev, attacks, seeds = cfg["evaluate"], cfg["attack"].names, cfg["seeds"]
    dataset = cfg["sample"].roles.test.dataset
    pairs = unseen_pairs(attacks, ev.unseen_seed)
    shards = adversarial_refs(upstream["attack"])

    def task(
        spec: MethodSpec,
        variant: Variant,
        train: str | None,
        test: str,
        seed: int | None,
        noise_seed: int | None = None,
    ) -> Task:
        row = row_id(spec.name, variant.row)
        victim, victim_inputs = victim_task_parts("test", cfg["victim"].test, noise_seed)
        inputs = {"clean": Ref("sample", dataset), **victim_inputs}
        if spec.uses_cae:
            assert seed is not None  # a learned method is evaluated once per training seed
            inputs["cae"] = Ref("train-cae", seeded(variant.cae_id, seed))
        if spec.training:
            assert train is not None and seed is not None  # a trained method: per training attack and seed
            inputs["model"] = Ref("train-aae", train_task_id(row, train, variant.point, seed))
        attacked = shards[("test", test, noise_seed)] if test != CLEAN else {}
        inputs.update(attacked)
        params = getattr(ev.params, spec.name, None)
        record = EvaluateTask(
            spec.name,
            row,
            train,
            test,
            variant.point,
            seed,
            noise_seed,
            asdict(params) if params is not None else None,
            ev.tolerance,
            ev.batch_size,
            ev.keep_images,
            victim,
            variant.row,
            tuple(attacked),
        )
        return Task(
            "evaluate",
            eval_task_id(row, train, test, variant.point, seed, noise_seed),
            record,
            inputs,
            group=variant.group,
        )

    out = []
    all_variants = variants(cfg, ablations=True)
    for spec in (METHODS[m] for m in ev.methods):
        for variant in all_variants:
            if variant.point is not None or not spec.has_row(variant.family, variant.row):
                continue
            for seed in seeds if spec.learned else [None]:
                if spec.per_attack:
                    for train in attacks:
                        tests = [CLEAN, train] + [b for b in attacks if pairs[b] == train and b != train]
                        out += [task(spec, variant, train, test, seed) for test in tests]
                else:
                    out += [
                        task(spec, variant, None, test, seed, noise)
                        for test in [CLEAN, *attacks]
                        for noise in [None, *(cfg["victim"].noise_seeds if not spec.learned else [])]
                    ]
    ablation_attacks = [a for a in cfg["ablation"].attacks if a in attacks]
    for spec in (METHODS[m] for m in ev.methods if METHODS[m].variants):
        out += [
            task(spec, variant, a, a, seed)
            for variant in all_variants
            if variant.point is not None
            for a in ablation_attacks
            for seed in ablation_seeds(cfg)
        ]
    return out


def _test_images(ctx: Context, task: EvaluateTask) -> dict[str, np.ndarray]:
    """Inputs (clean or adversarial), their clean originals, rows and labels."""
    clean_split = split_shards(ctx.input("clean"), "test")
    if task.test == CLEAN:
        rows = clean_split.read(0, len(clean_split), ["images", "labels"])
        images = rows["images"].astype(np.float32) / 255
        return {"inputs": images, "clean": images, "rows": np.arange(len(images)), "labels": rows["labels"]}
    adversarial = read_adversarial(ctx.inputs, shards=task.shards)
    original = clean_split.take(adversarial["rows"], ["images", "labels"])
    return {
        "inputs": adversarial["images"].astype(np.float32),
        "clean": original["images"].astype(np.float32) / 255,
        "rows": adversarial["rows"],
        "labels": original["labels"],
    }


def run(ctx: Context, task: EvaluateTask) -> None:
    import pandas as pd
    import torch

    from pipeline import metrics
    from pipeline.device import select_device
    from pipeline.victims import predict

    spec = METHODS[task.method]
    device = select_device(ctx.config.runtime)
    victim = load_victim(ctx.inputs, task.victim, device)
    models: dict[str, Any] = {
        name: load_model(ctx.input(name), device) for name in ("cae", "model") if name in ctx.inputs
    }
    params = None
    if spec.params:
        assert task.params is not None  # ``evaluate.params`` has a section for every method with parameters
        params = spec.params(**task.params)
    recover = spec.recover(models, params)
    data = _test_images(ctx, task)
    inputs, clean = torch.from_numpy(data["inputs"]), torch.from_numpy(data["clean"])
    with torch.no_grad():
        recovered = torch.cat(
            [
                recover(inputs[i : i + task.batch_size].to(device)).clamp(0, 1).cpu()
                for i in range(0, len(inputs), task.batch_size)
            ]
        )
    clean_pred, input_pred, recovered_pred = (predict(victim, x, device).numpy() for x in (clean, inputs, recovered))
    labels = data["labels"]
    table = pd.DataFrame(
        {
            "row": data["rows"],
            "label": labels,
            "clean_pred": clean_pred,
            "input_pred": input_pred,
            "recovered_pred": recovered_pred,
            "recovery_accuracy": (recovered_pred == clean_pred).astype(float),
            "label_accuracy": np.where(labels >= 0, (recovered_pred == labels).astype(float), np.nan),
            "pixel_rate": metrics.pixel_recovery_rate(recovered, clean, task.tolerance),
            "psnr": metrics.psnr(recovered, clean),
            "ssim": metrics.ssim(recovered, clean),
            "detection_score": metrics.reconstruction_error(recovered, inputs),
        }
    )
    table.to_csv(ctx.out / PER_IMAGE, index=False, float_format="%.6g")
    keep = slice(0, task.keep_images)
    write_shard(
        ctx.out / EXAMPLES,
        {
            "rows": data["rows"][keep],
            "clean": clean[keep].numpy(),
            "inputs": inputs[keep].numpy(),
            "recovered": recovered[keep].numpy(),
        },
    )
    ctx.summary.update(
        {
            "n": len(table),
            **{
                k: float(table[k].mean()) for k in ("recovery_accuracy", "label_accuracy", "pixel_rate", "psnr", "ssim")
            },
        }
    )


STEP = Step(
    name="evaluate",
    version=4,
    needs=("sample", "train-victim", "attack", "train-cae", "train-aae"),
    reads=("evaluate", "attack", "victim", "sample", "cae", "aae", "ablation", "seeds"),
    resources=Resources(cpus=4, gpus=1, mem="16G", time="02:00:00"),
    small=True,
    tasks=tasks,
    run=run,
    description="per (method, training attack, test set): per-image recovery metrics",
)
