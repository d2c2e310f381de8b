"""``attack``: one task per (role, attack, shard) writes adversarial images, predictions and norms."""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from jobs.artifacts import (
    ADVERSARIAL,
    VictimPin,
    attack_task_id,
    load_victim,
    shard_ranges,
    split_shards,
    victim_task_parts,
)
from pipeline.config import ATTACKED_ROLES, AttackConfig
from pipeline.dag import Ref, Resources, Step, Task, TaskRecord, record_of
from pipeline.data.shards import ShardWriter
from pipeline.errors import PipelineError
from pipeline.execute import Context

#: the codec of the adversarial images (``pipeline.data.shards.CODECS``): version 2 switched to zstd
SHARD_CODEC = "zstd"


@dataclass(frozen=True)
class AttackTask(TaskRecord):
    """Rows ``[start, stop)`` of a role attacked by one attack (``attack`` section) against one victim."""

    role: str
    attack: str
    params: dict[str, Any]  # ``attack.params.<attack>``
    start: int
    stop: int
    batch_size: int
    seed: int
    labels: str
    storage_dtype: str
    victim_seed: int | None  # one of ``victim.noise_seeds``; None: the role's own victim
    victim: VictimPin


def tasks(cfg: Mapping[str, Any], upstream: Mapping[str, Sequence[Task]]) -> list[Task]:
    attack_cfg: AttackConfig = cfg["attack"]
    out = []
    for role in ATTACKED_ROLES:
        role_cfg = getattr(cfg["sample"].roles, role)
        for noise_seed in [None, *(cfg["victim"].noise_seeds if role == "test" else [])]:
            victim, victim_inputs = victim_task_parts(role, getattr(cfg["victim"], role), noise_seed)
            for name in attack_cfg.names:
                for start, stop in shard_ranges(role_cfg.count, name, attack_cfg):
                    record = AttackTask(
                        role,
                        name,
                        asdict(getattr(attack_cfg.params, name)),
                        start,
                        stop,
                        attack_cfg.batch_size,
                        attack_cfg.seed,
                        attack_cfg.labels,
                        attack_cfg.storage_dtype,
                        noise_seed,
                        victim,
                    )
                    out.append(
                        Task(
                            "attack",
                            attack_task_id(role, name, start, noise_seed),
                            record,
                            {"clean": Ref("sample", role_cfg.dataset), **victim_inputs},
                        )
                    )
    return out


def run(ctx: Context, task: AttackTask) -> None:
    import torch

    from pipeline.attacks.catalog import build_attack
    from pipeline.device import derived_seed, select_device
    from pipeline.victims import predict

    phases: dict[str, float] = {}
    device = select_device(ctx.config.runtime)
    with timed(phases, "load victim"):
        victim = load_victim(ctx.inputs, task.victim, device)
    with timed(phases, "read shard"):
        rows = split_shards(ctx.input("clean"), task.role).read(task.start, task.stop, ["images", "labels"])
        clean = torch.from_numpy(rows["images"]).float() / 255
        true_labels = torch.from_numpy(rows["labels"])
    with timed(phases, "predict"):
        clean_pred = predict(victim, clean, device)
    if task.labels == "true" and bool((true_labels < 0).any()):
        raise PipelineError(f"attack.labels is 'true' but role {task.role} has no labels")
    labels = clean_pred if task.labels == "victim" else true_labels
    attack = build_attack(task.attack, victim, task.params)
    dtype = getattr(torch, task.storage_dtype)
    stored, raw_pred = [], []
    # each batch's images are compressed and written in the background while the next one is attacked
    with ShardWriter(ctx.out / ADVERSARIAL, len(clean), SHARD_CODEC) as shard:
        for lo in range(0, len(clean), task.batch_size):
            hi = min(lo + task.batch_size, len(clean))
            with timed(phases, "attack"):
                torch.manual_seed(derived_seed(task.seed, task.role, task.attack, task.start + lo))
                adv = attack(clean[lo:hi].to(device), labels[lo:hi].to(device)).detach()
                # one float64 sum, not an element-wise test: NaN or inf anywhere makes it non-finite
                if not bool(torch.isfinite(adv.sum(dtype=torch.float64))):
                    raise PipelineError(
                        f"attack {task.attack} returned NaN/inf on {task.role} rows "
                        f"{task.start + lo}:{task.start + hi}; nothing was published"
                    )
                stored.append(adv.clamp(0, 1).to(dtype).cpu())
            shard.append("images", stored[-1].numpy())
            if dtype != torch.float32:  # a lossy round trip: keep the predictions from before it too
                with timed(phases, "predict"):
                    raw_pred.append(predict(victim, adv, device))
        adv_images = torch.cat(stored)
        with timed(phases, "predict"):
            adv_pred = predict(victim, adv_images.float(), device)
        raw_pred = raw_pred or [adv_pred]
        delta = (adv_images.float() - clean).flatten(1)
        linf, l2 = delta.abs().amax(1), delta.norm(dim=1)
        success, success_raw = adv_pred != labels, torch.cat(raw_pred) != labels
        with timed(phases, "hdf5 write (not overlapped)"):
            shard.finish(
                {
                    "rows": np.arange(task.start, task.stop, dtype=np.int64),
                    "attack_labels": labels.numpy(),
                    "true_labels": true_labels.numpy(),
                    "clean_pred": clean_pred.numpy(),
                    "adv_pred": adv_pred.numpy(),
                    "success": success.numpy(),
                    "linf": linf.numpy(),
                    "l2": l2.numpy(),
                },
                {"role": task.role, "attack": task.attack},
            )
    ctx.summary.update(
        {
            "n": len(clean),
            "success": float(success.float().mean()),
            "success_before_storage": float(success_raw.float().mean()),
            "linf": float(linf.mean()),
            "l2": float(l2.mean()),
            "images_per_s": len(clean) / phases["attack"],
            "device": str(device),
            "seconds": {name: round(seconds, 4) for name, seconds in phases.items()},
        }
    )


@contextlib.contextmanager
def timed(into: dict[str, float], name: str) -> Iterator[None]:
    """Add the seconds the block took to ``into[name]``."""
    start = time.perf_counter()
    try:
        yield
    finally:
        into[name] = into.get(name, 0.0) + time.perf_counter() - start


def report(done: list[tuple[Task, dict]]) -> list[str]:
    """Per (role, attack): images, success rate, mean norms, throughput over the finished shards."""
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for task, summary in done:
        record = record_of(task, AttackTask)
        groups[(record.role, record.attack)].append(summary)
    lines = []
    for (role, name), items in sorted(groups.items()):
        n = sum(s["n"] for s in items)
        mean = {k: sum(s[k] * s["n"] for s in items) / n for k in ("success", "success_before_storage", "linf", "l2")}
        rate = n / sum(s["n"] / s["images_per_s"] for s in items)
        lines.append(
            f"  {role:<10} {name:<9} {len(items):>3} shard(s) {n:>6} images  success {mean['success']:.3f} "
            f"(before storage {mean['success_before_storage']:.3f})  Linf {mean['linf']:.4f}  "
            f"L2 {mean['l2']:.3f}  {rate:.1f} img/s"
        )
    return lines


STEP = Step(
    name="attack",
    version=3,
    needs=("sample", "train-victim"),
    reads=("attack", "victim", "sample"),
    resources=Resources(cpus=4, gpus=1, mem="16G", time="04:00:00"),
    tasks=tasks,
    run=run,
    report=report,
    description="adversarial shards per (role, attack, shard), with predictions, success and norms",
)
