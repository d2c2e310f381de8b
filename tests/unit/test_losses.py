"""Unit tests for pipeline.losses: eqs. 1, 5, 6 by hand, the frozen CAE, warm-up switching."""

from __future__ import annotations

import math

import pytest
import torch

from pipeline.losses import (
    LOSSES,
    CycleParams,
    LossParams,
    aae_loss,
    bind_loss,
    freeze,
    kl_standard_normal,
    sse,
    vae_loss,
)
from pipeline.models import ConvVAE

pytestmark = pytest.mark.unit

SHAPE = (3, 4, 4)
PAPER = {"reduction": "sum", "anchor_weight": 0.0, "warmup_target": "cycle"}  # the aae section's defaults


def _pair():
    torch.manual_seed(0)
    return ConvVAE(SHAPE, [6, 5, 2], kernel=3), ConvVAE(SHAPE, [7, 2], kernel=3)


def test_sse_sums_per_image_and_averages_over_batch():
    a = torch.tensor([[[1.0, 2.0]], [[0.0, 0.0]]])
    b = torch.tensor([[[0.0, 0.0]], [[3.0, 0.0]]])
    assert sse(a, b, "sum").item() == pytest.approx(((1 + 4) + 9) / 2)


def test_kl_matches_closed_form():
    mu = torch.tensor([[0.5, -1.0], [0.0, 0.0]])
    logvar = torch.tensor([[math.log(2.0), 0.0], [0.0, math.log(0.5)]])
    # KL(N(m, s²) || N(0, 1)) = (s² + m² − 1 − ln s²) / 2 per element
    per = lambda m, v: (v + m * m - 1 - math.log(v)) / 2  # noqa: E731
    expected = ((per(0.5, 2.0) + per(-1.0, 1.0)) + (per(0.0, 1.0) + per(0.0, 0.5))) / 2
    assert kl_standard_normal(mu, logvar, "sum").item() == pytest.approx(expected, rel=1e-6)
    assert kl_standard_normal(torch.zeros(3, 4), torch.zeros(3, 4), "sum").item() == 0


def test_cae_and_vae_loss_terms_by_hand():
    cae, _ = _pair()
    cae.eval()
    x, target = torch.rand(2, *SHAPE), torch.rand(2, *SHAPE)
    mu, logvar = cae.encode(x)
    recon = cae.decode(mu)
    kl = (-0.5 * (1 + logvar - mu**2 - logvar.exp())).sum((1, 2)).mean()
    t = vae_loss(cae, x, x, 0.01, "sum")  # eq. 1
    assert torch.allclose(t["recon"], ((x - recon) ** 2).sum((1, 2, 3)).mean())
    assert torch.allclose(t["kl"], kl)
    assert torch.allclose(t["total"], t["recon"] + 0.01 * kl)
    t = vae_loss(cae, x, target, 0.5, "sum")
    assert torch.allclose(t["recon"], ((target - recon) ** 2).sum((1, 2, 3)).mean())
    assert torch.allclose(t["total"], t["recon"] + 0.5 * kl)


def test_aae_loss_terms_by_hand():
    aae, cae = _pair()
    aae.eval(), freeze(cae)
    x = torch.rand(3, *SHAPE)
    mu, logvar = aae.encode(x)
    z_hat = cae.encode(cae.decode(mu))[0]
    x_hat = aae.decode(z_hat)
    recon_x = ((x - x_hat) ** 2).sum((1, 2, 3)).mean()
    recon_z = ((mu - z_hat) ** 2).sum((1, 2)).mean()
    kl = (-0.5 * (1 + logvar - mu**2 - logvar.exp())).sum((1, 2)).mean()
    t = aae_loss(aae, cae, x, 0.1, warmup=False, **PAPER)
    for name, value in {"recon_x": recon_x, "recon_z": recon_z, "kl": kl}.items():
        assert torch.allclose(t[name], value), name
    assert torch.allclose(t["total"], 0.1 * kl + recon_x + recon_z)
    assert torch.equal(t["paper"], t["total"])
    assert torch.equal(aae_loss(aae, cae, x, 0.1, warmup=True, **PAPER)["total"], t["recon_x"])


def test_warmup_read_as_the_aaes_own_reconstruction():
    aae, cae = _pair()
    aae.eval(), freeze(cae)
    x = torch.rand(3, *SHAPE)
    own = ((x - aae.decode(aae.encode(x)[0])) ** 2).sum((1, 2, 3)).mean()
    warm = aae_loss(aae, cae, x, 0.1, warmup=True, **{**PAPER, "warmup_target": "self"})
    assert torch.allclose(warm["recon_self"], own) and torch.equal(warm["total"], warm["recon_self"])
    after = aae_loss(aae, cae, x, 0.1, warmup=False, **{**PAPER, "warmup_target": "self"})
    assert "recon_self" not in after and torch.equal(after["total"], after["paper"])
    # only the AAE's own encoder and decoder get gradients from it: the CAE is not on its path
    aae.train()
    aae_loss(aae, cae, x, 0.1, warmup=True, **{**PAPER, "warmup_target": "self"})["total"].backward()
    assert all(p.grad is not None for p in aae.parameters() if p.requires_grad)


def test_aae_training_mode_samples_z():
    aae, cae = _pair()
    freeze(cae)
    x = torch.rand(3, *SHAPE)
    eval_z = aae_loss(aae.eval(), cae, x, 0.1, warmup=False, **PAPER)["recon_z"]
    torch.manual_seed(1)
    assert not torch.allclose(aae_loss(aae.train(), cae, x, 0.1, warmup=False, **PAPER)["recon_z"], eval_z)


def test_frozen_cae_unchanged_while_gradients_flow_through_it():
    aae, cae = _pair()
    freeze(cae)
    assert not cae.training and not any(p.requires_grad for p in cae.parameters())
    before = {k: v.clone() for k, v in cae.state_dict().items()}
    x = torch.rand(4, *SHAPE)
    opt = torch.optim.SGD(aae.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    aae.train()
    # warm-up total = ||X_A − D_AAE(E_CAE(D_CAE(E_AAE(X_A))))||²: E_AAE reaches it only via the CAE
    aae_loss(aae, cae, x, 1e-3, warmup=True, **PAPER)["total"].backward()
    enc_grads = [p.grad for p in [*aae.encoder.parameters(), *aae.mu_head.parameters()]]
    assert all(g is not None and g.abs().sum() > 0 for g in enc_grads)
    assert all(p.grad is None for p in cae.parameters())
    opt.step()
    assert all(torch.equal(before[k], v) for k, v in cae.state_dict().items())

    # the same loss with the CAE cut off from E_AAE gives E_AAE no gradient at all
    aae.zero_grad()
    z = aae.sample(*aae.encode(x)).detach()
    ((x - aae.decode(cae.encode(cae.decode(z))[0])) ** 2).sum((1, 2, 3)).mean().backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in aae.encoder.parameters())


@pytest.mark.parametrize("epoch, warm", [(0, True), (2, True), (3, False), (10, False)])
def test_aae_warmup_switches_at_exactly_warmup_epochs(epoch, warm):
    aae, cae = _pair()
    aae.eval(), freeze(cae)
    loss = bind_loss("aae", {"model": aae, "cae": cae}, LossParams(0.1, "sum", CycleParams(3, "cycle", 0.0)))
    t = loss({"x": torch.rand(2, *SHAPE)}, epoch)
    full = 0.1 * t["kl"] + t["recon_x"] + t["recon_z"]
    assert torch.equal(t["total"], t["recon_x"]) == warm
    assert torch.allclose(t["total"], full) != warm


def test_registry_uniform_signature():
    aae, cae = _pair()
    models = {"model": aae.eval(), "cae": freeze(cae)}
    x, target = torch.rand(2, *SHAPE), torch.rand(2, *SHAPE)
    batch = {"x": x, "target": target}
    for name, loss in LOSSES.items():
        assert "total" in loss(models, LossParams(1e-3, "sum", CycleParams(0, "cycle", 0.0)), batch, 0), name
    # with a target the VAE loss reconstructs it (paired), without one the input (CAE, plain AE)
    assert torch.equal(
        LOSSES["vae"](models, LossParams(1e-3, "sum"), batch, 0)["total"],
        vae_loss(aae, x, target, 1e-3, "sum")["total"],
    )
    assert torch.equal(
        LOSSES["vae"](models, LossParams(1e-3, "sum"), {"x": x}, 0)["total"], vae_loss(aae, x, x, 1e-3, "sum")["total"]
    )
    with pytest.raises(ValueError, match="nope"):
        bind_loss("nope", models, LossParams(1e-3, "sum"))
