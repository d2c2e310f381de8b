"""``pipeline bench`` times what the training steps train: for every training task of the smoke and
matched configs (every AAE variant, baseline and CAE setting), bench's case sets up the same loss with
the same parameters, the same network and the same optimiser schedule as the step itself."""

from __future__ import annotations

import dataclasses
import inspect
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import jobs._training
from pipeline.config import load_config
from pipeline.dag import Planned
from pipeline.losses import freeze
from pipeline.models import build_model
from pipeline.store import Store
from pipeline.tools.bench.core import full_plan
from pipeline.tools.bench.train import SETUP_ARGUMENTS, TrainCase, reads_cae

IMAGES = 1000  # several batches, so the held-out rows change the steps per epoch


class SetUp(Exception):
    """Raised by the spy once the step has set up its training: nothing is trained."""

    def __init__(self, setup: jobs._training.Setup) -> None:
        self.setup = setup


def bound(loss) -> dict:
    """What ``pipeline.losses.bind_loss`` bound: the loss function, its parameters, the models' names."""
    bound = inspect.getclosurevars(loss).nonlocals
    return {"loss": bound["loss"], "params": bound["params"], "models": sorted(bound["models"])}


def step_setup(planned: Planned, images: np.ndarray, frozen: dict, config, monkeypatch) -> jobs._training.Setup:
    """The setup the step's own ``run`` builds for ``planned`` on ``images`` (its reads replaced)."""
    import jobs.train_aae
    import jobs.train_cae

    real = jobs._training.setup

    def spy(*args, **kwargs):
        raise SetUp(real(*args, **kwargs))

    labels = np.zeros(len(images), dtype=np.int64)
    adversarial = {"x": images, "clean": images, "rows": np.arange(len(images)), "labels": labels}
    with monkeypatch.context() as m:
        m.setattr(jobs._training, "setup", spy)
        m.setattr(jobs.train_cae, "read_split", lambda *a, **k: {"images": images, "labels": labels})
        m.setattr(jobs.train_aae, "training_data", lambda ctx, *task: (adversarial, frozen))
        with pytest.raises(SetUp) as caught:
            planned.step.run(SimpleNamespace(config=config, input=lambda name: None), planned.task.record)
    return caught.value.setup


def cases(plan) -> list[Planned]:
    """One training task per distinct setup (step, loss, section)."""
    out: dict[str, Planned] = {}
    for planned in plan.tasks:
        if planned.task.step in SETUP_ARGUMENTS:
            loss, section = SETUP_ARGUMENTS[planned.task.step](planned.task.config)
            out.setdefault(json.dumps([planned.task.step, loss, section], sort_keys=True, default=str), planned)
    return list(out.values())


@pytest.mark.parametrize("config_name", ["smoke", "matched"])
def test_bench_trains_the_loss_network_and_schedule_of_every_training_task(config_name, tmp_path, monkeypatch):
    config = load_config(config_name)
    plan = full_plan(config, Store(tmp_path))
    by_ref = {(p.task.step, p.key): p for p in plan.tasks}
    trained = cases(plan)
    aae_rows = {p.task.config["row"] for p in plan.tasks if p.task.step == "train-aae" and reads_cae(p)}
    assert {p.task.config["row"] for p in trained if p.task.step == "train-aae" and reads_cae(p)} == aae_rows
    assert len(aae_rows) > 1 and any(p.task.step == "train-cae" for p in trained)
    for planned in trained:
        shape = tuple(planned.task.config["image_shape"])
        images = np.random.default_rng(0).integers(0, 256, (IMAGES, *shape), dtype=np.uint8)
        frozen = {}
        if "cae" in planned.inputs:
            cae_task = by_ref[planned.inputs["cae"]].task
            frozen["cae"] = freeze(build_model(shape, cae_task.config["cae"]["arch"]))
        ours = step_setup(planned, images, frozen, config, monkeypatch)
        bench = TrainCase.of(planned, images, frozen).setup(torch.device("cpu"))
        label = planned.label
        step_loss, bench_loss = bound(ours.loss), bound(bench.loss)
        # bench times the objective after the AAE's warm-up: every other parameter is the step's
        params = step_loss["params"]
        if params.cycle is not None:
            step_loss["params"] = dataclasses.replace(params, cycle=dataclasses.replace(params.cycle, warmup_epochs=0))
        assert bench_loss == step_loss, label
        assert dataclasses.replace(bench.spec, seed=ours.spec.seed) == ours.spec, label
        assert type(bench.model) is type(ours.model), label
        assert {k: v.shape for k, v in bench.model.state_dict().items()} == {
            k: v.shape for k, v in ours.model.state_dict().items()
        }, label
        assert bench.init == ours.init, label
