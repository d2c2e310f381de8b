"""Live training progress: the file a real training writes after each epoch, found where
``Store.workdir`` puts a task's scratch, and the line ``pipeline status`` makes of it."""

from __future__ import annotations

import contextlib
import json

import pytest
import torch

from pipeline import progress as progress_module
from pipeline.config import load_config
from pipeline.dag import build_plan
from pipeline.losses import LossParams, bind_loss
from pipeline.models import ConvVAE
from pipeline.progress import PROGRESS, ProgressFile, describe, duration, status_lines
from pipeline.store import Store
from pipeline.training import NOT_LOSSES, TrainSpec, train

pytestmark = pytest.mark.unit


class Stop(Exception):
    """Ends a training after some epoch, as a kill would (its checkpoint stays)."""


def _train(work, epochs: int, stop_after: int | None = None) -> ProgressFile:
    torch.manual_seed(0)
    model = ConvVAE((3, 8, 8), [8, 4], kernel=3)
    images = (torch.rand(32, 3, 8, 8) * 255).to(torch.uint8)
    progress = ProgressFile(work, epochs)

    def after_epoch(row):
        progress(row)
        if stop_after is not None and row["epoch"] + 1 == stop_after:
            raise Stop

    spec = TrainSpec(epochs=epochs, batch_size=16, lr=1e-3, milestones=[])
    loss = bind_loss("vae", {"model": model}, LossParams(1e-3, "sum"))
    with contextlib.suppress(Stop):
        train(
            {"model": model},
            loss,
            {"x": images},
            spec,
            work / "checkpoint.pt",
            torch.device("cpu"),
            after_epoch=after_epoch,
        )
    return progress


def test_a_training_writes_its_progress_where_status_finds_it(tmp_path):
    store = Store(tmp_path / "artifacts")
    plan = build_plan(load_config("smoke"), store, ["train-cae"])
    task = next(p for p in plan.tasks if p.task.step == "train-cae")
    work = store.workdir(task.task.step, task.key)
    _train(work, epochs=4, stop_after=2)
    record = json.loads((work / PROGRESS).read_text())
    assert (record["epoch"], record["epochs"]) == (2, 4) and record["eta_s"] > 0
    assert {"total", "recon", "kl", "lr", "steps"} <= set(record["row"])
    (line,) = status_lines(store, [task], now=record["updated"] + 1)
    assert line.startswith(f"  {task.task.id}: epoch 2/4  ") and "total " in line and " ETA " in line
    assert "lr " not in line and "steps " not in line  # not losses
    assert [p.name for p in work.iterdir() if p.name.startswith(".")] == []  # written atomically: no leftovers

    resumed = _train(work, epochs=4)  # the stop came before epoch 2's checkpoint: it resumes at epoch 2
    assert resumed.first == 1 and json.loads((work / PROGRESS).read_text())["epoch"] == 4


def test_the_status_line_shows_held_out_figures_and_says_when_a_task_stopped_writing():
    record = {
        "epoch": 7,
        "epochs": 30,
        "row": {"epoch": 6, "lr": 0.03, "steps": 12, "total": 1.5, "kl": 0.25, "heldout_psnr": 21.25, "clipped": 1.0},
        "seconds_per_epoch": 10.0,
        "eta_s": 230.0,
        "updated": 1000.0,
        "host": "node7",
    }
    assert describe(record, now=1030.0) == (
        "epoch 7/30  total 1.5  kl 0.25  heldout_psnr 21.25  ETA 3m20s (updated 30s ago on node7)"
    )
    assert describe(record, now=1000.0 + 3 * 3600).endswith("no update for 3h00m on node7: stopped?")


@pytest.mark.parametrize(
    "seconds, text",
    [(0, "0s"), (59.2, "1m00s"), (60, "1m00s"), (3599, "59m59s"), (7500, "2h05m"), (3 * 86400 + 4 * 3600, "3d04h")],
)
def test_durations(seconds, text):
    assert duration(seconds) == text


def test_status_knows_the_trainers_non_loss_columns_without_importing_torch():
    assert progress_module._NOT_LOSSES == NOT_LOSSES
