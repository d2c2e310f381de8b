"""Recovery method specs: the registry, and each input transformation on images with known answers."""

from __future__ import annotations

from dataclasses import fields

import numpy as np
import pytest
import torch

from pipeline.config import load_config
from pipeline.methods import KINDS, METHODS, MethodSpec
from pipeline.methods.blur import gaussian_blur
from pipeline.methods.learned import autoencode
from pipeline.methods.transforms import bit_depth, jpeg, median
from pipeline.models import ConvVAE, recover

pytestmark = pytest.mark.unit


def test_registry_orders_rows_by_kind_and_every_spec_is_complete():
    specs = list(METHODS.values())
    assert [KINDS.index(s.kind) for s in specs] == sorted(KINDS.index(s.kind) for s in specs)
    assert specs[0].name == "ours" and METHODS["identity"].kind == "none"
    for spec in specs:
        assert spec.title and callable(spec.recover)
        assert spec.per_attack == (spec.training is not None)
    assert load_config("paper").evaluate.methods == list(METHODS)  # every method is a row by default


def test_a_spec_with_an_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="kind 'magic'"):
        MethodSpec("x", "X", "magic", lambda models, p: None)


def test_training_section_drops_what_only_the_cae_cycle_reads():
    aae = {"arch": {"widths": [8, 4]}, "optim": {}, "lambda_kl": 1e-3, "warmup_epochs": 5, "init": "random"}
    cae = {"arch": {"widths": [6, 4]}}
    assert "warmup_epochs" in METHODS["ours"].training.section(aae, cae)
    assert METHODS["plain_ae"].training.section(aae, cae) == {
        "arch": {"widths": [8, 4]},
        "optim": {},
        "lambda_kl": 1e-3,
    }
    # started from the CAE: its architecture and weights, whatever aae.arch and aae.init say
    assert METHODS["paired_dae_cae"].training.section(aae, cae) == {
        "arch": {"widths": [6, 4]},
        "optim": {},
        "lambda_kl": 1e-3,
        "init": "cae",
    }
    assert METHODS["paired_dae_cae"].training.reads_cae and not METHODS["paired_dae"].training.reads_cae


@pytest.mark.parametrize("name", [n for n, s in METHODS.items() if s.params])
def test_method_parameters_are_config_values(name):
    params = getattr(
        load_config("smoke", [f"evaluate.params.{name}.{fields(METHODS[name].params)[0].name}=3"]).evaluate.params, name
    )
    assert getattr(params, fields(params)[0].name) == 3


def test_identity_and_bit_depth_by_hand():
    x = torch.tensor([0.0, 0.1, 0.49, 0.5, 0.97, 1.2]).view(1, 1, 2, 3)
    assert torch.equal(METHODS["identity"].recover({}, None)(x), x)
    assert bit_depth(x, 1).flatten().tolist() == [0, 0, 0, 0, 1, 1]  # round half to even at 0.5
    assert bit_depth(x, 2).flatten().tolist() == pytest.approx([0, 0, 1 / 3, 2 / 3, 1, 1])


def test_median_removes_an_impulse_and_keeps_a_flat_image():
    flat = torch.full((1, 3, 5, 5), 0.25)
    spiked = flat.clone()
    spiked[0, 1, 2, 2] = 1.0
    assert torch.equal(median(spiked, 3), flat)
    assert torch.equal(METHODS["median"].recover({}, METHODS["median"].params())(flat), flat)


def test_jpeg_keeps_a_flat_grey_image_and_blurs_a_checkerboard():
    grey = torch.full((1, 3, 16, 16), 128 / 255)
    assert torch.allclose(jpeg(grey, 75), grey, atol=1 / 255)
    board = torch.from_numpy(np.indices((16, 16)).sum(0) % 2).float().expand(1, 3, 16, 16)
    out = jpeg(board, 10)
    assert out.shape == board.shape and float(out.min()) >= 0 and float(out.max()) <= 1
    assert float((out - board).abs().mean()) > 0.03  # quality 10 loses much of the highest frequency


def test_gaussian_blur_keeps_constants_and_mean_and_spreads_an_impulse():
    flat = torch.full((2, 3, 8, 8), 0.4)
    assert torch.allclose(gaussian_blur(flat, 1.0), flat, atol=1e-6)
    impulse = torch.zeros(1, 1, 9, 9)
    impulse[0, 0, 4, 4] = 1.0
    out = gaussian_blur(impulse, 1.0)
    assert float(out.sum()) == pytest.approx(1.0, abs=1e-5)  # far from the border nothing is lost
    assert float(out[0, 0, 4, 4]) == pytest.approx(1 / (2 * np.pi), rel=0.05)  # peak of a 2-D Gaussian, σ = 1
    assert torch.allclose(out[0, 0], out[0, 0].T, atol=1e-7)


def test_learned_methods_recover_through_their_models():
    torch.manual_seed(0)
    cae, aae = ConvVAE((3, 4, 4), [6, 2], kernel=3).eval(), ConvVAE((3, 4, 4), [5, 2], kernel=3).eval()
    x = torch.rand(2, 3, 4, 4)
    models = {"cae": cae, "model": aae}
    assert torch.equal(METHODS["ours"].recover(models, None)(x), recover(aae, cae, x))
    assert torch.equal(METHODS["cae"].recover(models, None)(x), autoencode(cae)(x))
    assert torch.equal(METHODS["plain_ae"].recover(models, None)(x), aae.decode(aae.encode(x)[0]))
