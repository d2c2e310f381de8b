"""``train/cae`` and ``train/aae``: ``pipeline.training.train`` against a bare loop, on the step's own setup."""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from jobs import artifacts
from pipeline.dag import Planned
from pipeline.methods import METHODS
from pipeline.tools.bench.core import (
    Bench,
    Result,
    build_upstream,
    full_plan,
    inputs_of,
    interleave,
    ratio_row,
    representative,
)

if TYPE_CHECKING:
    from jobs._training import Setup

TRAIN_MIN_IMAGES = 2048  # images per timed training run (whole epochs, at least one)


#: what each training step passes to ``jobs._training.setup`` from its task config: the loss and the
#: section that holds the model, optimiser and loss settings (the CAE always trains eq. 1, ``vae``)
SETUP_ARGUMENTS: dict[str, Callable[[Mapping[str, Any]], tuple[str, dict[str, Any]]]] = {
    "train-cae": lambda c: ("vae", c["cae"]),
    "train-aae": lambda c: (c["loss"], c["aae"]),
}


@dataclass
class TrainCase:
    """One training task as its step sets it up: the rows it trains on (its held-out rows left out),
    in memory as the step holds them, and the frozen models its loss reads."""

    planned: Planned
    data: Tensor  # uint8 clean images, or adversarial images in their storage dtype
    frozen: dict[str, nn.Module]

    @classmethod
    def of(cls, planned: Planned, images: np.ndarray, frozen: dict[str, nn.Module]) -> TrainCase:
        """The case of ``planned`` on all the images its step reads, split as the step splits them
        (``jobs._training.split``)."""
        from jobs._training import split

        _, section = SETUP_ARGUMENTS[planned.task.step](planned.task.config)
        trained, _ = split({"x": images}, section["holdout"])
        return cls(planned, trained["x"], frozen)

    @property
    def section(self) -> dict[str, Any]:
        return SETUP_ARGUMENTS[self.planned.task.step](self.planned.task.config)[1]

    def setup(self, device: torch.device) -> Setup:
        """The model, loss and optimiser settings the step trains (``jobs._training.setup``), past
        the AAE's warm-up (the full eq. 5-6 objective); weights seeded by 0."""
        from jobs._training import setup

        loss, section = SETUP_ARGUMENTS[self.planned.task.step](self.planned.task.config)
        section = {**section, "warmup_epochs": 0} if "warmup_epochs" in section else section
        shape = tuple(self.planned.task.config["image_shape"])
        return setup(loss, section, 0, shape, self.frozen, device, len(self.data))


def stamped(loss: Callable) -> tuple[Callable, list[float]]:
    """``loss`` that records the time of every call (a call starts a training step)."""
    calls: list[float] = []

    def wrapped(batch: dict[str, Tensor], epoch: int) -> dict[str, Tensor]:
        calls.append(time.perf_counter())
        return loss(batch, epoch)

    return wrapped, calls


def train_epochs(n: int) -> int:
    return max(1, math.ceil(TRAIN_MIN_IMAGES / n))


def timed_images(case: TrainCase) -> int:
    """Images trained on after the first step, in one timed run."""
    return train_epochs(len(case.data)) * len(case.data) - min(case.section["optim"]["batch_size"], len(case.data))


def train_ours(case: TrainCase, device: torch.device, workdir: Path, final_save_only: bool = False) -> float:
    """Seconds of ``pipeline.training.train`` after its first step, with the configured checkpoints
    (or, with ``final_save_only``, only the one a run saves when it ends)."""
    from pipeline.training import train

    run = case.setup(device)
    loss, calls = stamped(run.loss)
    epochs = train_epochs(len(case.data))
    spec = replace(run.spec, epochs=epochs, checkpoint_every=epochs if final_save_only else run.spec.checkpoint_every)
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        train({"model": run.model}, loss, {"x": case.data}, spec, Path(tmp) / artifacts.CHECKPOINT, device)
        return time.perf_counter() - calls[1]


def train_bare(case: TrainCase, device: torch.device) -> float:
    """Seconds after the first step of a plain loop: float tensors in memory, shuffled batches, the
    same loss, SGD with momentum, weight decay and lr milestones, gradient clipping as configured."""
    run = case.setup(device)
    spec, model = run.spec, run.model.to(device).train()
    loss, calls = stamped(run.loss)
    x = case.data.to(device).float()
    x = x / 255 if case.data.dtype == torch.uint8 else x
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay)
    schedule = torch.optim.lr_scheduler.MultiStepLR(optimizer, spec.milestones, spec.gamma)
    for epoch in range(train_epochs(len(x))):
        for idx in torch.randperm(len(x)).split(spec.batch_size):
            terms = loss({"x": x[idx]}, epoch)
            optimizer.zero_grad(set_to_none=True)
            terms["total"].backward()
            if spec.clip_grad_norm is not None:
                nn.utils.clip_grad_norm_(params, spec.clip_grad_norm)
            optimizer.step()
        schedule.step()
    return time.perf_counter() - calls[1]


def train_planned(bench: Bench, kind: str) -> Planned:
    """The task that trains model ``kind``: train-cae's main task, or the first AAE of train-aae."""
    plan = full_plan(bench.config, bench.store)
    if kind == "cae":
        return representative(plan, "train-cae")
    return representative(plan, "train-aae", reads_cae)


def reads_cae(planned: Planned) -> bool:
    """Whether the task trains the paper's AAE (or a variant): a method that reads the frozen CAE."""
    training = METHODS[planned.task.config["method"]].training
    return training is not None and training.with_cae


def cae_case(bench: Bench) -> TrainCase:
    """The train-cae task's model and clean uint8 images, as the step loads them."""
    planned = train_planned(bench, "cae")
    build_upstream(bench, bench.config, planned)
    images = artifacts.read_split(inputs_of(bench, planned)["data"], "cae_train")["images"]
    return TrainCase.of(planned, images, {})


def aae_case(bench: Bench) -> TrainCase:
    """The first train-aae task of the AAE: its adversarial shards as stored, and the frozen CAE."""
    from pipeline.losses import freeze

    planned = train_planned(bench, "aae")
    build_upstream(bench, bench.config, planned)
    inputs = inputs_of(bench, planned)
    images = artifacts.read_adversarial(inputs, ["images"])["images"]
    return TrainCase.of(planned, images, {"cae": freeze(artifacts.load_model(inputs["cae"], bench.device))})


def train_case(bench: Bench, kind: str) -> TrainCase:
    """The case of model ``kind`` (cae, aae), loaded once."""
    key = f"case/{kind}"
    if key not in bench.cache:
        bench.cache[key] = {"cae": cae_case, "aae": aae_case}[kind](bench)
    return bench.cache[key]


def train_rates(bench: Bench, kind: str) -> tuple[float, float, float]:
    """Median images/s of ours, of the bare loop, and of ours saving only one checkpoint at the end
    (measured once, then cached)."""
    key = f"rates/{kind}"
    if key not in bench.cache:
        case, device, work = train_case(bench, kind), bench.device, bench.store.root
        bench.log(
            f"bench: train/{kind}: {train_epochs(len(case.data))} epoch(s) of {len(case.data)} images "
            f"x {bench.repeat} on each of 3 sides"
        )
        train_bare(case, device)  # warm-up: one-time costs of this process stay out of all sides
        seconds = interleave(
            [
                lambda: train_ours(case, device, work),
                lambda: train_bare(case, device),
                lambda: train_ours(case, device, work, final_save_only=True),
            ],
            bench.repeat,
        )
        bench.cache[key] = tuple(timed_images(case) / s for s in seconds)
    return bench.cache[key]


def train_note(case: TrainCase, ours: float, bare: float, one_save: float) -> str:
    """What one timed run is, and what its periodic checkpoints cost."""
    epochs, every = train_epochs(len(case.data)), case.section["optim"]["checkpoint_every"]
    share = 1 - ours / one_save
    dtype = str(case.data.dtype).removeprefix("torch.")
    return (
        f"{epochs} ep x {len(case.data)} img {dtype}, first step excluded; checkpoints every {every} ep "
        f"cost {share:.0%} of ours (ratio with one final save: {one_save / bare:.2f})"
    )


def bench_train(bench: Bench, wants: Callable[[str], bool]) -> list[Result]:
    rows = []
    for kind in ("cae", "aae"):
        if wants(kind):
            ours, bare, one_save = train_rates(bench, kind)
            note = train_note(train_case(bench, kind), ours, bare, one_save)
            note += "; CAE frozen, post-warm-up loss" if kind == "aae" else ""
            rows.append(ratio_row(f"train/{kind}", "img/s", ours, bare, note))
    return rows
