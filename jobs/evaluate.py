"""``evaluate``: one task per (method, training attack, test set) on the ``test`` role.

Per image it records the victim's predictions (clean, input, recovered), recovery accuracy,
label accuracy, the pixel recovery rate at tolerance τ, PSNR and SSIM against the clean image,
and the reconstruction error used as an attack-detection score (``per_image.csv``), plus the first
few images for figures (``examples.h5``).

Trained methods are evaluated with the model of attack a on a (Table II, seen), on the attack b
whose seeded random partner is a (Table III, unseen), and on clean images (the Clean column and
the detection negatives).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from jobs._io import load_role_victim, split_shards, victim_task_parts
from jobs._training import load_model
from jobs._variants import aae_task_id, cae_task_id, variants
from jobs.train_aae import adversarial_refs
from pipeline.dag import Ref, Resources, Step, Task
from pipeline.data.shards import read_shard, write_shard
from pipeline.methods import METHODS

CLEAN = "clean"


def unseen_pairs(attacks: Sequence[str], seed: int) -> dict[str, str]:
    """For each test attack, the training attack of the unseen protocol: a seeded random other one."""
    rng = np.random.default_rng(seed)
    pairs = {}
    for test in attacks:
        others = [a for a in attacks if a != test]
        pairs[test] = others[int(rng.integers(len(others)))] if others else test
    return pairs


def _model_refs(method: str, train: str | None, variant, main) -> dict[str, Ref]:
    spec = METHODS[method]
    refs = {}
    if "cae" in spec.models:
        refs["cae"] = Ref("train-cae", cae_task_id(variant, main))
    if "aae" in spec.models:
        refs["aae"] = Ref("train-aae", aae_task_id(spec.trained_as, train, variant))
    if "model" in spec.models:
        refs["model"] = Ref("train-aae", aae_task_id(spec.trained_as, train, variant))
    return refs


def tasks(cfg: Mapping[str, Any], upstream: Mapping[str, Sequence[Task]]) -> list[Task]:
    ev, attacks = cfg["evaluate"], cfg["attack"].names
    victim_config, victim_inputs = victim_task_parts("test", cfg["victim"].test)
    dataset = cfg["sample"].roles.test.dataset
    pairs = unseen_pairs(attacks, ev.unseen_seed)
    all_variants = variants(cfg, ablations=True)
    main = all_variants[0]
    shards = adversarial_refs(upstream["attack"])

    def task(method: str, train: str | None, test: str, variant) -> Task:
        spec = METHODS[method]
        inputs = {"clean": Ref("sample", dataset), **victim_inputs, **_model_refs(method, train, variant, main)}
        if test != CLEAN:
            inputs.update(shards[("test", test)])
        config = {"method": method, "train_attack": train, "test": test, "variant": variant.name,
                  "tolerance": ev.tolerance, "batch_size": ev.batch_size, "keep_images": ev.keep_images,
                  **{p: getattr(ev, p) for p in spec.params}, **victim_config}
        suffix = "" if variant is main else f"/{variant.name}"
        return Task("evaluate", f"{method}/{train or '-'}/{test}{suffix}", config, inputs,
                    group="main" if variant is main else "ablations")

    out = []
    for method in ev.methods:
        if METHODS[method].per_attack:
            for train in attacks:
                tests = [CLEAN, train] + [b for b in attacks if pairs[b] == train and b != train]
                out += [task(method, train, test, main) for test in tests]
        else:
            out += [task(method, None, test, main) for test in [CLEAN, *attacks]]
    ablation_attacks = [a for a in cfg["ablation"].attacks if a in attacks]
    for variant in all_variants[1:]:
        out += [task("ours", a, a, variant) for a in ablation_attacks]
    return out


def _test_images(ctx, test: str) -> dict[str, np.ndarray]:
    """Inputs (clean or adversarial), their clean originals, rows and labels."""
    clean_split = split_shards(ctx.input("clean"), "test")
    if test == CLEAN:
        rows = clean_split.read(0, len(clean_split), ["images", "labels"])
        images = rows["images"].astype(np.float32) / 255
        return {"inputs": images, "clean": images, "rows": np.arange(len(images)), "labels": rows["labels"]}
    shards = [read_shard(a.file("adv.h5"), ["images", "rows"]) for a in ctx.inputs_named("adv-")]
    row_index = np.concatenate([s["rows"] for s in shards])
    lo, hi = int(row_index.min()), int(row_index.max()) + 1
    original = clean_split.read(lo, hi, ["images", "labels"])
    return {"inputs": np.concatenate([s["images"] for s in shards]).astype(np.float32),
            "clean": original["images"][row_index - lo].astype(np.float32) / 255,
            "rows": row_index, "labels": original["labels"][row_index - lo]}


def run(ctx, task: Task) -> None:
    import pandas as pd
    import torch

    from pipeline import metrics
    from pipeline.device import select_device
    from pipeline.recovery import RECOVERERS
    from pipeline.victims import predict

    c = task.config
    device = select_device(ctx.config.runtime)
    victim = load_role_victim(ctx, c["victim"], device)
    models = {name: load_model(ctx.input(name), device) for name in METHODS[c["method"]].models}
    recover = RECOVERERS[c["method"]](models, c)
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
    table.to_csv(ctx.out / "per_image.csv", index=False, float_format="%.6g")
    keep = slice(0, c["keep_images"])
    write_shard(ctx.out / "examples.h5", {"rows": data["rows"][keep], "clean": clean[keep].numpy(),
                                          "inputs": inputs[keep].numpy(), "recovered": recovered[keep].numpy()})
    ctx.summary.update({"n": len(table), **{k: float(table[k].mean()) for k in (
        "recovery_accuracy", "label_accuracy", "pixel_rate", "psnr", "ssim")}})


STEP = Step(
    name="evaluate",
    version=1,
    needs=("sample", "train-victim", "attack", "train-cae", "train-aae"),
    reads=("evaluate", "attack", "victim", "sample", "cae", "aae", "ablation"),
    resources=Resources(cpus=4, gpus=1, mem="16G", time="02:00:00"),
    small=True,
    tasks=tasks,
    run=run,
    description="per (method, training attack, test set): per-image recovery metrics",
)
