"""The convergence study's schedule, plateau criterion and held-out measurements."""

from __future__ import annotations

import pytest
import torch

from pipeline.convergence import eval_steps, plateaued
from pipeline.losses import CycleParams, LossParams, bind_loss, freeze
from pipeline.models import ConvVAE, recover
from pipeline.sanity import HeldOut
from pipeline.victims import small_cnn

pytestmark = pytest.mark.unit


def test_measurements_double_up_to_the_budget():
    assert eval_steps(250, 9000) == [250, 500, 1000, 2000, 4000, 8000, 9000]
    assert eval_steps(10, 40) == [10, 20, 40] and eval_steps(50, 40) == [40]


def test_a_run_may_take_its_own_budget_and_the_others_keep_the_study_s():
    from pipeline.config import load_config
    from pipeline.dag import build_plan
    from pipeline.store import Store

    plan = build_plan(load_config("matched"), Store("/nonexistent"), ["convergence"])
    budgets = {
        p.task.config["run"]: (p.task.config["steps"], p.task.config["eval_steps"][-1])
        for p in plan.tasks
        if p.task.step == "train-convergence"
    }
    assert budgets["as_written_b256"] == (1125, 1125) and budgets["as_written"] == (9000, 9000)


def test_a_run_has_plateaued_when_its_last_doubling_gained_less_than_the_threshold():
    assert not plateaued({1000: 40.0}, 0.02)  # one measurement says nothing
    assert plateaued({1000: 40.0, 2000: 39.5}, 0.02)  # 1.25% lower
    assert not plateaued({1000: 40.0, 2000: 30.0}, 0.02)
    assert plateaued({1000: 40.0, 2000: 41.0}, 0.02)  # rising: no longer falling
    assert not plateaued({250: 100.0, 500: 60.0, 1000: 50.0, 1200: 49.9}, 0.02)  # 1200 against 500


def test_held_out_measures_the_objective_psnrs_and_recovery_of_the_victim():
    torch.manual_seed(0)
    shape = (3, 8, 8)
    clean = torch.rand(6, *shape)
    x = (clean + 0.05 * torch.randn_like(clean)).clamp(0, 1)
    aae, cae = ConvVAE(shape, [8, 4], kernel=3), freeze(ConvVAE(shape, [6, 4], kernel=3))
    models = {"model": aae, "cae": cae}
    victim = small_cnn(3).eval()
    measure = HeldOut("aae", x, clean, victim, torch.device("cpu"))
    loss = bind_loss("aae", models, LossParams(1e-3, "sum", CycleParams(10, "cycle", 0.0)))
    out = measure(models, loss, lambda batch: recover(aae, cae, batch))
    assert out["heldout_total"] == pytest.approx(out["heldout_paper"])  # never the warm-up's term
    assert out["heldout_recon_x"] > 0 and out["n"] == 6 and 0 <= out["recovery_accuracy"] <= 1
    assert {"psnr_objective", "psnr_recovered", "psnr_recovered_input", "psnr_recovered_clean"} <= set(out)
    assert out["psnr_recovered"] == pytest.approx(out["psnr_recovered_input"])
    assert measure.references(lambda batch: batch)["recovery_accuracy"] == pytest.approx(
        1 - out["n_flipped"] / 6
    )  # doing nothing keeps exactly the images the noise did not flip
