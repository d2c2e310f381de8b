"""Training a recovery model inside a step: data in memory, resumable, with curves in the artifact."""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np

from pipeline.errors import PipelineError


def train_and_save(ctx, kind: str, section: dict[str, Any], image_shape: tuple[int, int, int],
                   data: dict[str, np.ndarray], frozen: dict[str, Any] | None = None) -> None:
    """Train model ``kind`` with its loss on ``data`` (``x``, maybe ``target``), then write
    ``model.pt``, ``model.json``, ``history.csv`` and ``losses.png`` into ``ctx.out``."""
    import torch

    from pipeline.device import select_device
    from pipeline.losses import LossParams, bind_loss
    from pipeline.models import MODELS, count_parameters
    from pipeline.training import TrainSpec, plot_history, train, write_history_csv

    device = select_device(ctx.config.runtime)
    torch.manual_seed(section["optim"]["seed"])  # the initial weights, so a rerun gives the same bytes
    model = MODELS[kind](image_shape, section["arch"])
    models = {kind: model, **{name: m.to(device) for name, m in (frozen or {}).items()}}
    params = LossParams(lambda_kl=section["lambda_kl"], warmup_epochs=section.get("warmup_epochs", 0))
    spec = TrainSpec(**section["optim"])
    tensors = {name: torch.from_numpy(array) for name, array in data.items()}
    started = time.perf_counter()
    history = train({kind: model}, bind_loss(kind, models, params), tensors, spec,
                    ctx.work / "checkpoint.pt", device, progress=ctx.progress)
    seconds = time.perf_counter() - started
    torch.save({k: v.cpu() for k, v in model.state_dict().items()}, ctx.out / "model.pt")
    (ctx.out / "model.json").write_text(json.dumps(
        {"kind": kind, "image_shape": list(image_shape), "arch": section["arch"]}, indent=1))
    write_history_csv(history, ctx.out / "history.csv")
    plot_history(history, ctx.out / "losses.png", milestones=spec.milestones)
    first, last = history[0], history[-1]
    ctx.summary.update({
        "epochs": len(history), "images": len(tensors["x"]), "parameters": count_parameters(model),
        "first_total": first["total"], "final_total": last["total"],
        "final": {k: v for k, v in last.items() if k not in ("epoch", "lr")},
        "images_per_s_this_run": len(tensors["x"]) * max(1, len(history)) / seconds if seconds else None,
        "device": str(device),
    })


def load_model(artifact, device):
    """A trained recovery model from a train-cae / train-aae artifact, in eval mode."""
    import torch

    from pipeline.models import MODELS

    meta = json.loads(artifact.file("model.json").read_text())
    model = MODELS[meta["kind"]](tuple(meta["image_shape"]), meta["arch"])
    try:
        model.load_state_dict(torch.load(artifact.file("model.pt"), map_location="cpu", weights_only=True))
    except Exception as err:
        raise PipelineError(f"model file {artifact.file('model.pt')} cannot be loaded: {err}") from None
    return model.to(device).eval()


def image_shape(sample_cfg) -> tuple[int, int, int]:
    return (3, sample_cfg.image_size, sample_cfg.image_size)
