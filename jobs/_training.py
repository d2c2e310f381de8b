"""Training a recovery model inside a step: data in memory, resumable, checked on held-out images,
with curves in the artifact."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from jobs.artifacts import HISTORY, save_model
from pipeline.dag import Task


def _init_from_cae(model, frozen: Mapping[str, Any]) -> dict[str, Any]:
    from pipeline.models import copy_matching

    copied, total = copy_matching(model, frozen["cae"])
    return {"from": "cae", "parameters_copied": copied, "parameters": total}


#: how a model's weights start (``aae.init``): seeded at random, or from the frozen CAE where shapes agree
INITS = {"random": lambda model, frozen: {"from": "random"}, "cae": _init_from_cae}


def train_and_save(ctx, loss: str, section: Mapping[str, Any], seed: int, image_shape: tuple[int, int, int],
                   data: Mapping[str, np.ndarray], frozen: Mapping[str, Any] | None = None) -> None:
    """Train a recovery network of ``section`` (``arch``, ``optim``, ``loss``, ``lambda_kl``,
    ``holdout``, maybe ``init``, ``warmup_epochs``, ``anchor_weight``) with loss ``loss`` on
    ``data`` (``x``, maybe ``target``) from training seed ``seed``, the ``frozen`` models (the
    CAE) feeding the loss. The last ``holdout`` fraction of the images is left out of training and
    measured afterwards (summary ``heldout``). Writes the model, ``history.csv`` and ``losses.png``."""
    import torch

    from pipeline.device import select_device
    from pipeline.losses import LossParams, bind_loss
    from pipeline.models import build_model
    from pipeline.progress import ProgressFile
    from pipeline.sanity import held_out_count, held_out_psnr
    from pipeline.training import NOT_LOSSES, TrainSpec, plot_history, train, write_history_csv

    device = select_device(ctx.config.runtime)
    frozen = {name: m.to(device) for name, m in (frozen or {}).items()}
    torch.manual_seed(seed)  # the initial weights, so a rerun gives the same bytes
    model = build_model(image_shape, section["arch"])
    init = INITS[section.get("init", "random")](model, frozen)
    params = LossParams(lambda_kl=section["lambda_kl"], warmup_epochs=section.get("warmup_epochs", 0),
                        reduction=section["loss"]["reduction"], anchor_weight=section.get("anchor_weight", 0.0))
    spec = TrainSpec(**section["optim"], seed=seed)
    tensors = {name: torch.from_numpy(array) for name, array in data.items()}
    n = len(tensors["x"])
    n_train = n - held_out_count(n, section["holdout"])
    train_data = {k: v[:n_train] for k, v in tensors.items()}
    models = {"model": model, **frozen}
    started = time.perf_counter()
    history = train({"model": model}, bind_loss(loss, models, params), train_data, spec,
                    ctx.work / "checkpoint.pt", device, progress=ctx.progress,
                    after_epoch=ProgressFile(ctx.work, spec.epochs))
    seconds = time.perf_counter() - started
    held_out = held_out_psnr(loss, models, {k: v[n_train:] for k, v in tensors.items()},
                             train_data.get("target", train_data["x"]), device)
    save_model(ctx.out, model, image_shape, section["arch"])
    write_history_csv(history, ctx.out / HISTORY)
    plot_history(history, ctx.out / "losses.png", milestones=spec.milestones)
    first, last = history[0], history[-1]
    batches = -(-n_train // spec.batch_size)
    ctx.summary.update({
        "epochs": len(history), "steps": len(history) * batches, "images": n_train, "seed": seed,
        "first_total": first["total"], "final_total": last["total"],
        "final": {k: v for k, v in last.items() if k not in NOT_LOSSES},
        "heldout": held_out, "init": init,
        "clipped": sum(row["clipped"] for row in history) / len(history) if "clipped" in last else None,
        "images_per_s_this_run": n_train * max(1, len(history)) / seconds if seconds else None,
        "device": str(device),
    })


def report(done: list[tuple[Task, dict]]) -> list[str]:
    """``pipeline status`` lines: each model's held-out PSNR in its own domain beside a constant image's."""
    lines = []
    for task, summary in done:
        held = summary.get("heldout", {})
        if not held.get("n"):
            lines.append(f"  {task.id:<34} {summary.get('epochs', '?')} epochs, nothing held out")
            continue
        extra = f", D_CAE(E_AAE(x)) {held['recovered']:5.1f} dB" if "recovered" in held else ""
        lines.append(f"  {task.id:<34} held-out PSNR {held['objective']:5.1f} dB (constant image "
                     f"{held['constant']:5.1f} dB{extra}) on {held['n']} images, {summary['steps']} steps")
    return lines
