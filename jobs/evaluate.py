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
from dataclasses import asdict
from typing import Any

import numpy as np

from jobs.artifacts import CLEAN, EXAMPLES, PER_IMAGE, adversarial_refs, eval_task_id, load_model, load_victim, \
    read_adversarial, row_id, seeded, split_shards, train_task_id, unseen_pairs, victim_task_parts
from jobs.variants import Variant, ablation_seeds, variants
from pipeline.dag import Ref, Resources, Step, Task
from pipeline.data.shards import write_shard
from pipeline.methods import METHODS, MethodSpec


def tasks(cfg: Mapping[str, Any], upstream: Mapping[str, Sequence[Task]]) -> list[Task]:
    ev, attacks, seeds = cfg["evaluate"], cfg["attack"].names, cfg["seeds"]
    dataset = cfg["sample"].roles.test.dataset
    pairs = unseen_pairs(attacks, ev.unseen_seed)
    shards = adversarial_refs(upstream["attack"])

    def task(spec: MethodSpec, variant: Variant, train: str | None, test: str, seed: int | None,
             noise_seed: int | None = None) -> Task:
        row = row_id(spec.name, variant.row)
        victim_config, victim_inputs = victim_task_parts("test", cfg["victim"].test, noise_seed)
        inputs = {"clean": Ref("sample", dataset), **victim_inputs}
        if spec.uses_cae:
            inputs["cae"] = Ref("train-cae", seeded(variant.cae_id, seed))
        if spec.training:
            inputs["model"] = Ref("train-aae", train_task_id(row, train, variant.point, seed))
        if test != CLEAN:
            inputs.update(shards[("test", test, noise_seed)])
        params = getattr(ev.params, spec.name, None)
        config = {"method": spec.name, "row": row, "train_attack": train, "test": test, "point": variant.point,
                  "seed": seed, "victim_seed": noise_seed, "params": asdict(params) if params is not None else None,
                  "tolerance": ev.tolerance, "batch_size": ev.batch_size, "keep_images": ev.keep_images,
                  **victim_config}
        return Task("evaluate", eval_task_id(row, train, test, variant.point, seed, noise_seed), config, inputs,
                    group=variant.group)

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
                    out += [task(spec, variant, None, test, seed, noise) for test in [CLEAN, *attacks]
                            for noise in [None, *(cfg["victim"].noise_seeds if not spec.learned else [])]]
    ablation_attacks = [a for a in cfg["ablation"].attacks if a in attacks]
    for spec in (METHODS[m] for m in ev.methods if METHODS[m].variants):
        out += [task(spec, variant, a, a, seed) for variant in all_variants if variant.point is not None
                for a in ablation_attacks for seed in ablation_seeds(cfg)]
    return out


def _test_images(ctx, test: str) -> dict[str, np.ndarray]:
    """Inputs (clean or adversarial), their clean originals, rows and labels."""
    clean_split = split_shards(ctx.input("clean"), "test")
    if test == CLEAN:
        rows = clean_split.read(0, len(clean_split), ["images", "labels"])
        images = rows["images"].astype(np.float32) / 255
        return {"inputs": images, "clean": images, "rows": np.arange(len(images)), "labels": rows["labels"]}
    adversarial = read_adversarial(ctx.inputs)
    original = clean_split.take(adversarial["rows"], ["images", "labels"])
    return {"inputs": adversarial["images"].astype(np.float32),
            "clean": original["images"].astype(np.float32) / 255,
            "rows": adversarial["rows"], "labels": original["labels"]}


def run(ctx, task: Task) -> None:
    import pandas as pd
    import torch

    from pipeline import metrics
    from pipeline.device import select_device
    from pipeline.victims import predict

    c = task.config
    spec = METHODS[c["method"]]
    device = select_device(ctx.config.runtime)
    victim = load_victim(ctx.inputs, c["victim"], device)
    models = {name: load_model(ctx.input(name), device) for name in ("cae", "model") if name in ctx.inputs}
    recover = spec.recover(models, spec.params(**c["params"]) if spec.params else None)
    data = _test_images(ctx, c["test"])
    inputs, clean = torch.from_numpy(data["inputs"]), torch.from_numpy(data["clean"])
    with torch.no_grad():
        recovered = torch.cat([recover(inputs[i:i + c["batch_size"]].to(device)).clamp(0, 1).cpu()
                               for i in range(0, len(inputs), c["batch_size"])])
    clean_pred, input_pred, recovered_pred = (predict(victim, x, device).numpy() for x in (clean, inputs, recovered))
    labels = data["labels"]
    table = pd.DataFrame({
        "row": data["rows"], "label": labels, "clean_pred": clean_pred, "input_pred": input_pred,
        "recovered_pred": recovered_pred,
        "recovery_accuracy": (recovered_pred == clean_pred).astype(float),
        "label_accuracy": np.where(labels >= 0, (recovered_pred == labels).astype(float), np.nan),
        "pixel_rate": metrics.pixel_recovery_rate(recovered, clean, c["tolerance"]),
        "psnr": metrics.psnr(recovered, clean),
        "ssim": metrics.ssim(recovered, clean),
        "detection_score": metrics.reconstruction_error(recovered, inputs),
    })
    table.to_csv(ctx.out / PER_IMAGE, index=False, float_format="%.6g")
    keep = slice(0, c["keep_images"])
    write_shard(ctx.out / EXAMPLES, {"rows": data["rows"][keep], "clean": clean[keep].numpy(),
                                     "inputs": inputs[keep].numpy(), "recovered": recovered[keep].numpy()})
    ctx.summary.update({"n": len(table), **{k: float(table[k].mean()) for k in (
        "recovery_accuracy", "label_accuracy", "pixel_rate", "psnr", "ssim")}})


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
