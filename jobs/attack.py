"""``attack``: one task per (role, attack, shard) writes adversarial images, predictions and norms."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np

from jobs.artifacts import ADVERSARIAL, attack_task_id, load_victim, shard_ranges, split_shards, victim_task_parts
from pipeline.config import ATTACKED_ROLES, AttackConfig
from pipeline.dag import Ref, Resources, Step, Task
from pipeline.data.shards import write_shard
from pipeline.errors import PipelineError


def tasks(cfg: Mapping[str, Any], upstream: Mapping[str, Sequence[Task]]) -> list[Task]:
    attack_cfg: AttackConfig = cfg["attack"]
    out = []
    for role in ATTACKED_ROLES:
        role_cfg = getattr(cfg["sample"].roles, role)
        for noise_seed in [None, *(cfg["victim"].noise_seeds if role == "test" else [])]:
            victim_config, victim_inputs = victim_task_parts(role, getattr(cfg["victim"], role), noise_seed)
            for name in attack_cfg.names:
                for start, stop in shard_ranges(role_cfg.count, name, attack_cfg):
                    config = {"role": role, "attack": name, "params": asdict(getattr(attack_cfg.params, name)),
                              "start": start, "stop": stop, "batch_size": attack_cfg.batch_size,
                              "seed": attack_cfg.seed, "labels": attack_cfg.labels,
                              "storage_dtype": attack_cfg.storage_dtype, "victim_seed": noise_seed, **victim_config}
                    out.append(Task("attack", attack_task_id(role, name, start, noise_seed), config,
                                    {"clean": Ref("sample", role_cfg.dataset), **victim_inputs}))
    return out


def run(ctx, task: Task) -> None:
    import torch

    from pipeline.attacks.catalog import build_attack
    from pipeline.device import derived_seed, select_device
    from pipeline.victims import predict

    c = task.config
    device = select_device(ctx.config.runtime)
    victim = load_victim(ctx.inputs, c["victim"], device)
    rows = split_shards(ctx.input("clean"), c["role"]).read(c["start"], c["stop"], ["images", "labels"])
    clean = torch.from_numpy(rows["images"]).float() / 255
    true_labels = torch.from_numpy(rows["labels"])
    clean_pred = predict(victim, clean, device)
    if c["labels"] == "true" and bool((true_labels < 0).any()):
        raise PipelineError(f"attack.labels is 'true' but role {c['role']} has no labels")
    labels = clean_pred if c["labels"] == "victim" else true_labels
    attack = build_attack(c["attack"], victim, c["params"])
    dtype = getattr(torch, c["storage_dtype"])
    stored, raw_pred = [], []
    started = time.perf_counter()
    for lo in range(0, len(clean), c["batch_size"]):
        hi = min(lo + c["batch_size"], len(clean))
        torch.manual_seed(derived_seed(c["seed"], c["role"], c["attack"], c["start"] + lo))
        adv = attack(clean[lo:hi].to(device), labels[lo:hi].to(device)).detach()
        if not bool(torch.isfinite(adv).all()):
            raise PipelineError(f"attack {c['attack']} returned NaN/inf on {c['role']} rows "
                                f"{c['start'] + lo}:{c['start'] + hi}; nothing was published")
        stored.append(adv.clamp(0, 1).to(dtype).cpu())
        if dtype != torch.float32:  # a lossy round trip: keep the predictions from before it too
            raw_pred.append(predict(victim, adv, device))
    seconds = time.perf_counter() - started
    adv_images = torch.cat(stored)
    adv_pred = predict(victim, adv_images.float(), device)
    raw_pred = raw_pred or [adv_pred]
    delta = (adv_images.float() - clean).flatten(1)
    success, success_raw = adv_pred != labels, torch.cat(raw_pred) != labels
    write_shard(ctx.out / ADVERSARIAL, {
        "images": adv_images.numpy(),
        "rows": np.arange(c["start"], c["stop"], dtype=np.int64),
        "attack_labels": labels.numpy(),
        "true_labels": true_labels.numpy(),
        "clean_pred": clean_pred.numpy(),
        "adv_pred": adv_pred.numpy(),
        "success": success.numpy(),
        "linf": delta.abs().amax(1).numpy(),
        "l2": delta.norm(dim=1).numpy(),
    }, {"role": c["role"], "attack": c["attack"]})
    ctx.summary.update({
        "n": len(clean), "success": float(success.float().mean()),
        "success_before_storage": float(success_raw.float().mean()),
        "linf": float(delta.abs().amax(1).mean()), "l2": float(delta.norm(dim=1).mean()),
        "images_per_s": len(clean) / seconds, "device": str(device),
    })


def report(done: list[tuple[Task, dict]]) -> list[str]:
    """Per (role, attack): images, success rate, mean norms, throughput over the finished shards."""
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for task, summary in done:
        groups[(task.config["role"], task.config["attack"])].append(summary)
    lines = []
    for (role, name), items in sorted(groups.items()):
        n = sum(s["n"] for s in items)
        mean = {k: sum(s[k] * s["n"] for s in items) / n for k in ("success", "success_before_storage", "linf", "l2")}
        rate = n / sum(s["n"] / s["images_per_s"] for s in items)
        lines.append(f"  {role:<10} {name:<9} {len(items):>3} shard(s) {n:>6} images  success {mean['success']:.3f} "
                     f"(before storage {mean['success_before_storage']:.3f})  Linf {mean['linf']:.4f}  "
                     f"L2 {mean['l2']:.3f}  {rate:.1f} img/s")
    return lines


STEP = Step(
    name="attack",
    version=2,
    needs=("sample", "train-victim"),
    reads=("attack", "victim", "sample"),
    resources=Resources(cpus=4, gpus=1, mem="16G", time="04:00:00"),
    tasks=tasks,
    run=run,
    report=report,
    description="adversarial shards per (role, attack, shard), with predictions, success and norms",
)
