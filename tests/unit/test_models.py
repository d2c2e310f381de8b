"""Unit tests for pipeline.models: layouts, ConvVAE shapes and modes, the paper's architectures."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pipeline.models import LAYOUTS, ConvVAE, build_model, count_parameters, describe, recover

pytestmark = pytest.mark.unit

PAPER_CAE = [512, 256, 128, 64]
PAPER_AAE = [512, 400, 300, 200, 100, 64]


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_layouts_round_trip_exactly(layout):
    x = torch.rand(2, 3, 5, 7)
    seq = LAYOUTS[layout].to_sequence(x)
    assert tuple(seq.shape[1:]) == LAYOUTS[layout].shape((3, 5, 7))
    assert torch.equal(LAYOUTS[layout].from_sequence(seq, (3, 5, 7)), x)


def test_rows_layout_puts_one_image_row_per_position():
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)
    seq = LAYOUTS["rows"].to_sequence(x)
    assert seq.shape == (2, 15, 4)
    # position r holds row r of every colour channel, channel-major
    assert torch.equal(seq[1, :, 2], x[1, :, 2, :].reshape(-1))


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_shapes_and_output_range(layout):
    torch.manual_seed(0)
    model = ConvVAE((3, 6, 4), [8, 5, 3], kernel=3, layout=layout)
    x = torch.rand(2, 3, 6, 4)
    recon, mu, logvar, z = model(x)
    length = LAYOUTS[layout].shape((3, 6, 4))[1]
    assert recon.shape == x.shape
    assert mu.shape == logvar.shape == z.shape == (2, 3, length)
    assert recon.min() >= 0 and recon.max() <= 1
    assert model.decode(mu).shape == x.shape


def test_eval_mode_z_is_mu_and_training_mode_samples():
    torch.manual_seed(0)
    model = ConvVAE((3, 4, 4), [6, 2], kernel=3)
    x = torch.rand(3, 3, 4, 4)
    _, mu, _, z = model.eval()(x)
    assert torch.equal(z, mu)
    _, mu, _, z = model.train()(x)
    assert not torch.allclose(z, mu)


def _convs(seq: nn.Module) -> list[tuple[int, int, int]]:
    return [(m.in_channels, m.out_channels, m.kernel_size[0]) for m in seq.modules() if isinstance(m, nn.Conv1d)]


@pytest.mark.parametrize("widths", [PAPER_CAE, PAPER_AAE], ids=["cae", "aae"])
def test_paper_architectures(widths):
    model = ConvVAE((3, 32, 32), widths)  # rows: 96 channels, 32 positions
    trunk = _convs(model.encoder)
    head = (model.mu_head.in_channels, model.mu_head.out_channels, model.mu_head.kernel_size[0])
    chain = [96, *widths]
    assert trunk + [head] == [(a, b, 7) for a, b in zip(chain, chain[1:])]
    assert len(trunk) + 1 == len(widths)  # encoder is len(widths) convs deep
    assert _convs(model.decoder) == [(b, a, 7) for a, b in reversed(list(zip(chain, chain[1:])))]
    assert all(m.padding == (3,) and m.stride == (1,) for m in model.modules() if isinstance(m, nn.Conv1d))
    assert isinstance(model.decoder[-1], nn.Sigmoid)
    # conv params: k·in·out + out per layer, two heads, mirrored decoder
    conv = lambda a, b: 7 * a * b + b  # noqa: E731
    expected = (
        sum(conv(a, b) for a, b in zip(chain[:-1], chain[1:-1]))
        + 2 * conv(*chain[-2:])
        + sum(conv(b, a) for a, b in zip(chain, chain[1:]))
    )
    assert count_parameters(model) == expected
    assert f"parameters: {expected:,d}" in describe(model)


@pytest.mark.parametrize(
    "kwargs, bad",
    [
        ({"widths": [8]}, "[8]"),
        ({"widths": [8, 0]}, "[8, 0]"),
        ({"widths": [8, 4], "kernel": 4}, "4"),
        ({"widths": [8, 4], "layout": "columns"}, "columns"),
    ],
)
def test_bad_arguments_name_the_value(kwargs, bad):
    with pytest.raises(ValueError, match=bad.replace("[", r"\[").replace("]", r"\]")):
        ConvVAE((3, 4, 4), **kwargs)


def test_build_model_reads_an_arch_section_and_rejects_unknown_keys():
    model = build_model((3, 4, 4), {"widths": [6, 2], "kernel": 3, "layout": "pixels"})
    assert isinstance(model, ConvVAE) and model.layout == "pixels"
    with pytest.raises(ValueError, match="depth"):
        build_model((3, 4, 4), {"widths": [6, 2], "depth": 3})


def test_recover_is_cae_decoder_of_aae_mean():
    torch.manual_seed(0)
    aae = ConvVAE((3, 4, 4), [6, 5, 2], kernel=3).train()
    cae = ConvVAE((3, 4, 4), [7, 2], kernel=3).train()
    x = torch.rand(2, 3, 4, 4)
    out = recover(aae, cae, x)
    assert torch.equal(
        out,
        cae.decoder(aae.mu_head(aae.encoder(x.permute(0, 1, 3, 2).reshape(2, 12, 4))))
        .reshape(2, 3, 4, 4)
        .permute(0, 1, 3, 2),
    )
    assert torch.equal(out, recover(aae, cae, x))  # no sampling, even in training mode
