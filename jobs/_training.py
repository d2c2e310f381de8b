"""Training a recovery model inside a step: data in memory, resumable, checked on held-out images,
with curves in the artifact. ``setup`` is what every training step (and ``pipeline bench``) computes
on, so they all train the same model with the same loss."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from jobs.artifacts import CHECKPOINT, HISTORY, save_model
from pipeline.dag import Task
from pipeline.execute import Context


def _init_from_cae(model, frozen: Mapping[str, Any]) -> dict[str, Any]:
    from pipeline.models import copy_matching

    copied, total = copy_matching(model, frozen["cae"])
    return {"from": "cae", "parameters_copied": copied, "parameters": total}


#: how a model's weights start (``aae.init``): seeded at random, or from the frozen CAE where shapes agree
INITS = {"random": lambda model, frozen: {"from": "random"}, "cae": _init_from_cae}


@dataclass
class Setup:
    """A model ready to train: the network, the models its loss reads (it and the frozen CAE), the
    loss as ``training.train`` calls it, the optimisation settings and how the weights started."""

    model: Any
    models: dict[str, Any]
    loss: Any
    spec: Any
    init: dict[str, Any]


def setup(
    loss: str,
    section: Mapping[str, Any],
    seed: int,
    image_shape: tuple[int, int, int],
    frozen: Mapping[str, Any],
    device,
    images: int,
) -> Setup:
    """The network of ``section`` (``arch``, ``optim``, ``loss``, ``lambda_kl``; ``init`` for a model
    that may start from the CAE; ``warmup_epochs``, ``warmup_target`` and ``anchor_weight`` for one
    trained through it: ``pipeline.methods.Training.section``), its weights seeded by ``seed`` (then
    maybe copied from the CAE), on ``device`` with the ``frozen`` models; loss ``loss`` with the
    section's parameters; the schedule for ``images`` training images (``pipeline.config.schedule``)."""
    import torch

    from pipeline.config import schedule
    from pipeline.losses import CycleParams, LossParams, bind_loss
    from pipeline.models import build_model
    from pipeline.training import TrainSpec

    frozen = {name: m.to(device) for name, m in frozen.items()}
    torch.manual_seed(seed)  # the initial weights, so a rerun gives the same bytes
    model = build_model(image_shape, section["arch"])
    start = INITS[section["init"]] if "init" in section else INITS["random"]  # no ``init``: never from the CAE
    init = start(model, frozen)
    through_cae = "anchor_weight" in section
    optim, warmup = schedule(section["optim"], section["warmup_epochs"] if through_cae else 0, images)
    cycle = CycleParams(warmup, section["warmup_target"], section["anchor_weight"]) if through_cae else None
    params = LossParams(section["lambda_kl"], section["loss"]["reduction"], cycle)
    models = {"model": model, **frozen}
    return Setup(model, models, bind_loss(loss, models, params), TrainSpec(**optim, seed=seed), init)


def split(data: Mapping[str, np.ndarray], holdout: float) -> tuple[dict[str, Any], dict[str, Any]]:
    """Tensors of ``data`` split into training rows and the last ``holdout`` fraction, held out."""
    import torch

    from pipeline.sanity import held_out_count

    tensors = {name: torch.from_numpy(array) for name, array in data.items()}
    n = len(tensors["x"])
    n_train = n - held_out_count(n, holdout)
    return {k: v[:n_train] for k, v in tensors.items()}, {k: v[n_train:] for k, v in tensors.items()}


def train_and_save(
    ctx: Context,
    loss: str,
    section: Mapping[str, Any],
    seed: int,
    start: int,
    image_shape: tuple[int, int, int],
    data: Mapping[str, np.ndarray],
    labels: np.ndarray | None = None,
    frozen: Mapping[str, Any] | None = None,
) -> None:
    """Train the model of ``setup`` for training seed ``seed`` from the seed ``start`` (see
    ``jobs.artifacts.init_seed``) on ``data`` (``x``, maybe ``target``), ``labels`` the class of
    each row (for the class-mean reference), the ``frozen`` models (the CAE) feeding the loss. The
    last ``holdout`` fraction of the images is left out of training and measured afterwards against
    the mean-image floor (summary ``heldout``, ``not_trained``). Writes the model, ``history.csv``
    and ``losses.png``."""
    from pipeline.device import select_device
    from pipeline.progress import ProgressFile
    from pipeline.sanity import held_out_psnr, not_trained, reference_images
    from pipeline.training import NOT_LOSSES, plot_history, train, write_history_csv

    device = select_device(ctx.config.runtime)
    train_data, held_data = split(data, section["holdout"])
    n_train = len(train_data["x"])
    run = setup(loss, section, start, image_shape, frozen or {}, device, n_train)
    started = time.perf_counter()
    history = train(
        {"model": run.model},
        run.loss,
        train_data,
        run.spec,
        ctx.work / CHECKPOINT,
        device,
        progress=ctx.progress,
        after_epoch=ProgressFile(ctx.work, run.spec.epochs),
    )
    seconds = time.perf_counter() - started
    references = reference_images(
        train_data.get("target", train_data["x"]),
        None if labels is None else labels[:n_train],
        None if labels is None else labels[n_train:],
    )
    held_out = held_out_psnr(loss, run.models, held_data, references, device)
    save_model(ctx.out, run.model, image_shape, section["arch"])
    write_history_csv(history, ctx.out / HISTORY)
    plot_history(history, ctx.out / "losses.png", milestones=run.spec.milestones)
    first, last = history[0], history[-1]
    ctx.summary.update(
        {
            "epochs": len(history),
            "steps": sum(row["steps"] for row in history),
            "images": n_train,
            "seed": seed,
            "first_total": first["total"],
            "final_total": last["total"],
            "final": {k: v for k, v in last.items() if k not in NOT_LOSSES},
            "heldout": held_out,
            "not_trained": not_trained(held_out),
            "init": run.init,
            "clipped": sum(row["clipped"] for row in history) / len(history) if "clipped" in last else None,
            "images_per_s_this_run": n_train * max(1, len(history)) / seconds if seconds else None,
            "device": str(device),
        }
    )


def report(done: list[tuple[Task, dict]]) -> list[str]:
    """``pipeline status`` lines: each model's held-out PSNR in its own domain beside the mean image's."""
    lines = []
    for task, summary in done:
        held = summary.get("heldout", {})
        if not held.get("n"):
            lines.append(f"  {task.id:<34} {summary.get('epochs', '?')} epochs, nothing held out")
            continue
        extra = f", D_CAE(E_AAE(x)) {held['recovered']:5.1f} dB" if "recovered" in held else ""
        flag = "  NOT TRAINED" if summary.get("not_trained") else ""
        lines.append(
            f"  {task.id:<34} held-out PSNR {held['objective']:5.1f} dB (mean image "
            f"{held['mean_image']:5.1f} dB{extra}) on {held['n']} images, {summary['steps']} steps{flag}"
        )
    return lines
