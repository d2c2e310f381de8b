"""Training a recovery model inside a step: data in memory, resumable, with curves in the artifact."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from jobs.artifacts import HISTORY, save_model


def train_and_save(ctx, loss: str, section: Mapping[str, Any], image_shape: tuple[int, int, int],
                   data: Mapping[str, np.ndarray], frozen: Mapping[str, Any] | None = None) -> None:
    """Train a recovery network of ``section`` (``arch``, ``optim``, ``lambda_kl``, ...) with loss
    ``loss`` on ``data`` (``x``, maybe ``target``), the ``frozen`` models (e.g. the CAE) feeding the
    loss; write the model, ``history.csv`` and ``losses.png`` into ``ctx.out``."""
    import torch

    from pipeline.device import select_device
    from pipeline.losses import LossParams, bind_loss
    from pipeline.models import build_model, count_parameters
    from pipeline.training import TrainSpec, plot_history, train, write_history_csv

    device = select_device(ctx.config.runtime)
    torch.manual_seed(section["optim"]["seed"])  # the initial weights, so a rerun gives the same bytes
    model = build_model(image_shape, section["arch"])
    models = {"model": model, **{name: m.to(device) for name, m in (frozen or {}).items()}}
    params = LossParams(lambda_kl=section["lambda_kl"], warmup_epochs=section.get("warmup_epochs", 0))
    spec = TrainSpec(**section["optim"])
    tensors = {name: torch.from_numpy(array) for name, array in data.items()}
    started = time.perf_counter()
    history = train({"model": model}, bind_loss(loss, models, params), tensors, spec,
                    ctx.work / "checkpoint.pt", device, progress=ctx.progress)
    seconds = time.perf_counter() - started
    save_model(ctx.out, model, image_shape, section["arch"])
    write_history_csv(history, ctx.out / HISTORY)
    plot_history(history, ctx.out / "losses.png", milestones=spec.milestones)
    first, last = history[0], history[-1]
    ctx.summary.update({
        "epochs": len(history), "images": len(tensors["x"]), "parameters": count_parameters(model),
        "first_total": first["total"], "final_total": last["total"],
        "final": {k: v for k, v in last.items() if k not in ("epoch", "lr")},
        "images_per_s_this_run": len(tensors["x"]) * max(1, len(history)) / seconds if seconds else None,
        "device": str(device),
    })
