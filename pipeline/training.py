"""Resumable SGD trainer over in-memory tensors, plus its history as CSV and a plot.

A run killed at any point and started again with the same arguments continues from its last
checkpoint and ends with the same weights and history, bit for bit on CPU, as a run never stopped.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import math
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor, nn
from tqdm.auto import tqdm

from pipeline.errors import PipelineError

LossFn = Callable[[Mapping[str, Tensor], int], Mapping[str, Tensor]]
#: called after each epoch with its history row; what it returns joins the row (kept in checkpoints)
AfterEpoch = Callable[[dict[str, Any]], Mapping[str, Any] | None]

# Spec fields that may differ between a run and its resumption.
_RESUMABLE_CHANGES = {"epochs", "checkpoint_every", "compile"}


class CheckpointError(PipelineError, RuntimeError):
    """A checkpoint file that cannot be read or does not fit the run resuming from it."""


class TrainingDiverged(PipelineError, RuntimeError):
    """A loss term became NaN or infinite; raised before the optimiser step."""

    def __init__(self, epoch: int, term: str, value: float, checkpoint: Path | None = None) -> None:
        kept = (
            "the last checkpoint is left as it was"
            if checkpoint is None
            else f"the last checkpoint ({checkpoint}) is left as it was"
        )
        super().__init__(f"training diverged at epoch {epoch}: loss term {term!r} is {value}; {kept}")
        self.epoch = epoch
        self.term = term


#: optimiser by ``TrainSpec.kind``: the paper's SGD with momentum, or Adam (not in the paper)
OPTIMIZERS: dict[str, Callable[[list[Tensor], Any], torch.optim.Optimizer]] = {
    "sgd": lambda params, s: torch.optim.SGD(params, lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay),
    "adam": lambda params, s: torch.optim.Adam(params, lr=s.lr, weight_decay=s.weight_decay),
}


@dataclass
class TrainSpec:
    """Optimisation settings: ``kind`` (SGD with momentum, or Adam) with weight decay, lr × gamma at
    each milestone epoch, the global gradient norm clipped at ``clip_grad_norm`` (None: no
    clipping); a checkpoint every ``checkpoint_every`` epochs; opt-in mixed precision and compile."""

    epochs: int
    kind: str = "sgd"
    batch_size: int = 256
    lr: float = 0.03
    momentum: float = 0.9
    weight_decay: float = 1e-4
    milestones: list[int] = field(default_factory=lambda: [500, 1000])
    gamma: float = 0.1
    clip_grad_norm: float | None = None
    checkpoint_every: int = 1
    seed: int = 0
    amp: bool = False
    compile: bool = False

    def __post_init__(self) -> None:
        self.milestones = [int(m) for m in self.milestones]
        for name in ("batch_size", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.epochs < 0:
            raise ValueError(f"epochs must be non-negative, got {self.epochs}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if list(self.milestones) != sorted(self.milestones):
            raise ValueError(f"milestones must be increasing, got {self.milestones}")
        if self.kind not in OPTIMIZERS:
            raise ValueError(f"unknown optimiser {self.kind!r}; known: {sorted(OPTIMIZERS)}")


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A generator that depends only on (seed, epoch), so every run shuffles an epoch alike."""
    state = np.random.SeedSequence([seed, epoch]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


def to_float(t: Tensor, device: torch.device) -> Tensor:
    """A batch on ``device`` as float32 in [0, 1] (uint8 is divided by 255)."""
    t = t.to(device, non_blocking=True)
    return t.float().div_(255) if t.dtype == torch.uint8 else t.float()


def _batches(
    data: Mapping[str, Tensor], spec: TrainSpec, epoch: int, device: torch.device
) -> Iterator[dict[str, Tensor]]:
    n = len(next(iter(data.values())))
    order = torch.randperm(n, generator=_epoch_generator(spec.seed, epoch))
    for start in range(0, n, spec.batch_size):
        idx = order[start : start + spec.batch_size]
        yield {k: to_float(t[idx.to(t.device)], device) for k, t in data.items()}


def _rng_state(device: torch.device) -> dict[str, Tensor]:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: Mapping[str, Tensor], device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


# Checkpoints end with this trailer and the sha256 (hex) of the bytes before it; torch.load ignores it.
_SEAL = b"\0pipeline-checkpoint-sha256:"


def _save_atomic(obj: Any, path: Path) -> None:
    """Write ``obj`` and its sha256 to a temporary file beside ``path``, fsync it, then rename it
    over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    body = buffer.getbuffer()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:  # a plain write: a full disk raises OSError(ENOSPC)
            f.write(body)
            f.write(_SEAL + hashlib.sha256(body).hexdigest().encode())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e.strerror}") from e
    body, seal, digest = raw.rpartition(_SEAL)
    if not seal or hashlib.sha256(body).hexdigest().encode() != digest:
        raise CheckpointError(
            f"checkpoint {path} is corrupt or truncated (its sha256 does not match); delete it to train from the start"
        )
    try:
        state = torch.load(io.BytesIO(body), map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several kinds for truncated or foreign files
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CheckpointError(f"cannot read checkpoint {path}: {first}") from e
    missing = {"epochs_done", "spec", "models", "optimizer", "scheduler", "scaler", "history", "rng"}
    if not isinstance(state, dict) or missing - set(state):
        raise CheckpointError(f"checkpoint {path} is not a training checkpoint of this trainer")
    return state


def _check_spec(saved: Mapping[str, Any], spec: TrainSpec, path: Path) -> None:
    now = asdict(spec)
    changed = sorted(k for k in now if k not in _RESUMABLE_CHANGES and saved.get(k) != now[k])
    if changed:
        diffs = ", ".join(f"{k}: {saved.get(k)!r} -> {now[k]!r}" for k in changed)
        raise CheckpointError(f"checkpoint {path} was written with different settings ({diffs})")


#: history columns that are not loss terms: the epoch, its lr, its optimiser steps, the fraction of
#: them whose gradient norm was clipped
NOT_LOSSES = ("epoch", "lr", "steps", "clipped")


def train(
    trainable: dict[str, nn.Module],
    loss_fn: LossFn,
    data: dict[str, Tensor],
    spec: TrainSpec,
    checkpoint: Path,
    device: torch.device,
    progress: bool = False,
    after_epoch: AfterEpoch | None = None,
) -> list[dict]:
    """Train ``trainable`` (moved to ``device``) by minimising ``loss_fn(batch, epoch)["total"]``
    over shuffled batches of ``data`` (all tensors share their first dimension; uint8 means
    0–255). Modules the loss uses but does not train must already be on ``device``.
    Resumes from ``checkpoint`` if it exists; returns one history row per epoch:
    {"epoch" (from 0), "lr", "steps" (optimiser steps in the epoch), the epoch mean of every loss
    term, and with clipping "clipped": the fraction of the epoch's steps whose gradient norm was
    above ``clip_grad_norm``}, plus what ``after_epoch(row)`` returns (e.g. held-out measurements;
    it may put the models in eval mode: each epoch starts by putting the trained ones back)."""
    checkpoint = Path(checkpoint)
    sizes = {k: len(t) for k, t in data.items()}
    if not sizes or min(sizes.values()) == 0 or len(set(sizes.values())) != 1:
        raise ValueError(f"data must be non-empty tensors of equal length, got sizes {sizes}")

    params: list[Tensor] = []
    for model in trainable.values():
        model.to(device)
        params += [p for p in model.parameters() if p.requires_grad]
    optimizer = OPTIMIZERS[spec.kind](params, spec)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, spec.milestones, spec.gamma)
    scaler = torch.amp.GradScaler(device.type, enabled=spec.amp and device.type == "cuda")
    amp_dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    compute = torch.compile(loss_fn) if spec.compile else loss_fn

    history: list[dict] = []
    start = 0
    if checkpoint.exists():
        state = _load_checkpoint(checkpoint)
        _check_spec(state["spec"], spec, checkpoint)
        if set(state["models"]) != set(trainable):
            raise CheckpointError(
                f"checkpoint {checkpoint} holds models {sorted(state['models'])}, not {sorted(trainable)}"
            )
        try:
            for name, model in trainable.items():
                model.load_state_dict(state["models"][name])
            optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as e:
            raise CheckpointError(f"checkpoint {checkpoint} does not fit these models: {e}") from e
        scheduler.load_state_dict(state["scheduler"])
        if state["scaler"]:
            scaler.load_state_dict(state["scaler"])
        _set_rng_state(state["rng"], device)
        history, start = state["history"], state["epochs_done"]
    else:
        torch.manual_seed(spec.seed)

    def save(epochs_done: int) -> None:
        _save_atomic(
            {
                "epochs_done": epochs_done,
                "spec": asdict(spec),
                "models": {k: m.state_dict() for k, m in trainable.items()},
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "history": history,
                "rng": _rng_state(device),
            },
            checkpoint,
        )

    with tqdm(
        total=spec.epochs, initial=min(start, spec.epochs), disable=not progress, desc="train", unit="epoch"
    ) as bar:
        for epoch in range(start, spec.epochs):
            for model in trainable.values():
                model.train()
            lr = optimizer.param_groups[0]["lr"]
            names: list[str] = []
            sums: Tensor | None = None
            count = clipped = steps = 0
            for batch in _batches(data, spec, epoch, device):
                with torch.autocast(device.type, dtype=amp_dtype, enabled=spec.amp):
                    terms = compute(batch, epoch)
                names = list(terms)
                values = torch.stack([t.detach().float() for t in terms.values()])
                if not torch.isfinite(values).all():
                    bad = next(i for i, v in enumerate(values.tolist()) if not math.isfinite(v))
                    raise TrainingDiverged(
                        epoch, names[bad], values[bad].item(), checkpoint if checkpoint.exists() else None
                    )
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(terms["total"]).backward()
                if spec.clip_grad_norm is not None:
                    scaler.unscale_(optimizer)
                    norm = torch.nn.utils.clip_grad_norm_(params, spec.clip_grad_norm)
                    clipped += int(norm > spec.clip_grad_norm)
                scaler.step(optimizer)
                scaler.update()
                n = len(next(iter(batch.values())))
                sums = values.double() * n if sums is None else sums + values.double() * n
                count += n
                steps += 1
            scheduler.step()
            assert sums is not None
            means = (sums / count).tolist()
            row = {
                "epoch": epoch,
                "lr": lr,
                "steps": steps,
                **dict(zip(names, means)),
                **({"clipped": clipped / steps} if spec.clip_grad_norm is not None else {}),
            }
            history.append({**row, **(after_epoch(row) or {})} if after_epoch is not None else row)
            bar.set_postfix(total=f"{history[-1].get('total', float('nan')):.4g}")
            bar.update()
            if (epoch + 1) % spec.checkpoint_every == 0 or epoch + 1 == spec.epochs:
                save(epoch + 1)
    return history


def write_history_csv(history: Sequence[Mapping[str, Any]], path: Path) -> None:
    """One row per epoch; columns in order of first appearance."""
    columns = list(dict.fromkeys(k for row in history for k in row))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(history)


def plot_history(history: Sequence[Mapping[str, Any]], path: Path, milestones: Sequence[int] = ()) -> None:
    """Loss terms against epoch on a log scale, dashed lines at the lr milestones. The PNG bytes
    depend only on the arguments."""
    terms = list(dict.fromkeys(k for row in history for k in row if k not in NOT_LOSSES))
    fig = Figure(figsize=(6, 4), dpi=100)
    ax = fig.add_subplot()
    for term in terms:
        rows = [r for r in history if term in r]
        ax.plot([r["epoch"] for r in rows], [r[term] for r in rows], label=term)
    for m in milestones:
        ax.axvline(m, color="grey", linestyle="--", linewidth=0.8)
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (per image)")
    if terms:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, format="png", metadata={"Software": None})
