"""Unit tests for pipeline.training: learning, exact resumption, divergence, bad checkpoints."""

from __future__ import annotations

import csv

import pytest
import torch
import torch.nn.functional as F

from pipeline.losses import CycleParams, LossParams, bind_loss, freeze, sse
from pipeline.models import ConvVAE, recover
from pipeline.training import (
    CheckpointError,
    TrainingDiverged,
    TrainSpec,
    plot_history,
    train,
    write_history_csv,
)

pytestmark = pytest.mark.unit

SHAPE = (3, 8, 8)
CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: one thread is fastest and keeps timings steady on a shared machine."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def smooth_images(n: int, seed: int = 0) -> torch.Tensor:
    """uint8 images with real structure: random 3×3 colour fields upsampled bilinearly."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 3, 3, generator=g)
    return (F.interpolate(coarse, size=SHAPE[1:], mode="bilinear", align_corners=True) * 255).to(torch.uint8)


def cae_setup(seed: int = 0):
    torch.manual_seed(seed)
    cae = ConvVAE(SHAPE, [16, 8], kernel=3)
    return {"cae": cae}, bind_loss("vae", {"model": cae}, LossParams(lambda_kl=1e-3, reduction="sum"))


def aae_setup(seed: int = 0):
    """An AAE over a frozen CAE, warm-up for the first epoch: exercises sampling and switching."""
    torch.manual_seed(100)
    cae = freeze(ConvVAE(SHAPE, [16, 8], kernel=3))
    torch.manual_seed(seed)
    aae = ConvVAE(SHAPE, [16, 12, 8], kernel=3)
    params = LossParams(1e-3, "sum", CycleParams(1, "cycle", 0.0))
    return {"aae": aae}, bind_loss("aae", {"model": aae, "cae": cae}, params)


def spec(epochs: int, **kw) -> TrainSpec:
    return TrainSpec(epochs=epochs, **{"batch_size": 24, "lr": 0.002, "milestones": [3], **kw})


def weights(models):
    return {f"{n}.{k}": v.clone() for n, m in models.items() for k, v in m.state_dict().items()}


def assert_same(a, b):
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]


def test_training_learns_more_than_the_mean_image_and_steps_lr(tmp_path):
    x = smooth_images(96)
    xf = x.float() / 255
    mean_image_sse = sse(xf.mean(0, keepdim=True).expand_as(xf), xf, "sum").item()
    torch.manual_seed(0)
    cae = ConvVAE(SHAPE, [64, 16], kernel=3)
    history = train(
        {"cae": cae},
        bind_loss("vae", {"model": cae}, LossParams(1e-3, "sum")),
        {"x": x},
        spec(12, batch_size=8, lr=0.01, milestones=[8]),
        tmp_path / "ck.pt",
        CPU,
    )
    assert [r["epoch"] for r in history] == list(range(12))
    assert set(history[0]) == {"epoch", "lr", "steps", "recon", "kl", "total"}
    assert history[0]["steps"] == len(x) // 8
    assert history[0]["total"] > mean_image_sse
    assert history[-1]["total"] < 0.75 * mean_image_sse
    with torch.no_grad():
        assert sse(recover(cae, cae, xf), xf, "sum") < 0.75 * mean_image_sse
    assert [r["lr"] for r in history[7:9]] == pytest.approx([0.01, 0.001])


def test_uint8_data_is_scaled_to_unit_range(tmp_path):
    u8 = smooth_images(40)
    runs = []
    for i, x in enumerate([u8, u8.float() / 255]):
        models, loss = cae_setup()
        runs.append(train(models, loss, {"x": x}, spec(2), tmp_path / f"{i}.pt", CPU))
    assert runs[0] == runs[1]


def test_resume_after_stop_is_bit_identical(tmp_path):
    data = {"x": smooth_images(60)}  # 60 = 2 full batches + a partial one
    models, loss = aae_setup()
    straight = train(models, loss, data, spec(4), tmp_path / "a.pt", CPU)
    expected = weights(models)

    models, loss = aae_setup()
    assert len(train(models, loss, data, spec(2), tmp_path / "b.pt", CPU)) == 2
    models, loss = aae_setup(seed=7)  # a fresh process: different init, state comes from the file
    resumed = train(models, loss, data, spec(4), tmp_path / "b.pt", CPU)
    assert resumed == straight
    assert_same(weights(models), expected)
    # a finished run started again only loads its result
    models, loss = aae_setup(seed=8)
    assert train(models, loss, data, spec(4), tmp_path / "b.pt", CPU) == straight
    assert_same(weights(models), expected)


def test_resume_after_kill_mid_epoch_is_bit_identical(tmp_path):
    data = {"x": smooth_images(60)}
    models, loss = aae_setup()
    straight = train(models, loss, data, spec(4, checkpoint_every=2), tmp_path / "a.pt", CPU)
    expected = weights(models)

    models, loss = aae_setup()
    calls = 0

    def killed(batch, epoch):
        nonlocal calls
        calls += 1
        if calls == 8:  # second batch of epoch 2 (3 batches per epoch)
            raise KeyboardInterrupt
        return loss(batch, epoch)

    with pytest.raises(KeyboardInterrupt):
        train(models, killed, data, spec(4, checkpoint_every=2), tmp_path / "b.pt", CPU)
    assert torch.load(tmp_path / "b.pt", weights_only=True)["epochs_done"] == 2
    models, loss = aae_setup(seed=7)
    assert train(models, loss, data, spec(4, checkpoint_every=2), tmp_path / "b.pt", CPU) == straight
    assert_same(weights(models), expected)
    assert not list(tmp_path.glob(".*.tmp"))


def test_nan_raises_before_step_and_keeps_last_checkpoint(tmp_path):
    data = {"x": smooth_images(48)}
    models, loss = cae_setup()

    def poisoned(batch, epoch):
        terms = loss(batch, epoch)
        if epoch == 2:
            terms["kl"] = terms["kl"] * float("nan")
        return terms

    ck = tmp_path / "ck.pt"
    with pytest.raises(TrainingDiverged, match=r"epoch 2.*'kl'") as err:
        train(models, poisoned, data, spec(4), ck, CPU)
    assert (err.value.epoch, err.value.term) == (2, "kl")
    saved = torch.load(ck, weights_only=True)
    assert saved["epochs_done"] == 2 and len(saved["history"]) == 2
    # the failing batch was the first of epoch 2, so no step was taken since the checkpoint
    assert_same(weights(models), {f"cae.{k}": v for k, v in saved["models"]["cae"].items()})


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_unreadable_checkpoint_names_the_file(tmp_path, damage):
    data = {"x": smooth_images(24)}
    ck = tmp_path / "ck.pt"
    models, loss = cae_setup()
    train(models, loss, data, spec(1), ck, CPU)
    raw = ck.read_bytes()
    ck.write_bytes(raw[: len(raw) // 2] if damage == "truncate" else b"not a checkpoint" * 10)
    models, loss = cae_setup()
    with pytest.raises(CheckpointError, match=str(ck)):
        train(models, loss, data, spec(2), ck, CPU)


def test_checkpoint_from_other_settings_or_models_is_refused(tmp_path):
    data = {"x": smooth_images(24)}
    ck = tmp_path / "ck.pt"
    models, loss = cae_setup()
    train(models, loss, data, spec(1), ck, CPU)
    with pytest.raises(CheckpointError, match=r"lr: 0\.002 -> 0\.01"):
        train(models, loss, data, spec(2, lr=0.01), ck, CPU)
    other = {"cae": ConvVAE(SHAPE, [16, 4], kernel=3)}
    with pytest.raises(CheckpointError, match="does not fit"):
        train(other, bind_loss("vae", {"model": other["cae"]}, LossParams(1e-3, "sum")), data, spec(2), ck, CPU)


def test_history_csv_and_deterministic_plot(tmp_path):
    history = [{"epoch": e, "lr": 0.03, "recon": 10.0 / (e + 1), "kl": 0.5 + e} for e in range(6)]
    write_history_csv(history, tmp_path / "h.csv")
    with open(tmp_path / "h.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["epoch", "lr", "recon", "kl"]
    assert [float(r["recon"]) for r in rows] == [r["recon"] for r in history]
    plot_history(history, tmp_path / "a.png", milestones=[2, 4])
    plot_history(history, tmp_path / "b.png", milestones=[2, 4])
    plot_history(history, tmp_path / "c.png")
    a = (tmp_path / "a.png").read_bytes()
    assert a[:8] == b"\x89PNG\r\n\x1a\n"
    assert a == (tmp_path / "b.png").read_bytes() != (tmp_path / "c.png").read_bytes()


def test_after_epoch_adds_to_each_row_and_survives_a_resume(tmp_path):
    data = {"x": smooth_images(40)}

    def measure(row):
        return {"measured": float(row["epoch"]) * 2}

    models, loss = aae_setup()
    straight = train(models, loss, data, spec(3), tmp_path / "a.pt", CPU, after_epoch=measure)
    assert [r["measured"] for r in straight] == [0.0, 2.0, 4.0]
    models, loss = aae_setup()
    train(models, loss, data, spec(2), tmp_path / "b.pt", CPU, after_epoch=measure)
    models, loss = aae_setup(seed=7)
    assert train(models, loss, data, spec(3), tmp_path / "b.pt", CPU, after_epoch=measure) == straight
