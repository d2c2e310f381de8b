"""1-D convolutional VAEs of the paper (CAE, AAE) and the image ↔ sequence layouts they read.

An image B×C×H×W is turned into a sequence B×channels×length by a layout, encoded by stride-1
1-D convolutions that keep the length, and decoded back to an image in [0, 1].
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

ImageShape = tuple[int, int, int]


@dataclass(frozen=True)
class Layout:
    """How an image C×H×W becomes a sequence channels×length, and back (exact inverses)."""

    shape: Callable[[ImageShape], tuple[int, int]]
    to_sequence: Callable[[Tensor], Tensor]
    from_sequence: Callable[[Tensor, ImageShape], Tensor]


def _rows_to_sequence(x: Tensor) -> Tensor:
    b, c, h, w = x.shape
    return x.permute(0, 1, 3, 2).reshape(b, c * w, h)


def _rows_from_sequence(s: Tensor, image_shape: ImageShape) -> Tensor:
    c, h, w = image_shape
    return s.reshape(s.shape[0], c, w, h).permute(0, 1, 3, 2)


LAYOUTS: dict[str, Layout] = {
    # H positions, each the 3·W values of one row (channel-major).
    "rows": Layout(
        shape=lambda s: (s[0] * s[2], s[1]),
        to_sequence=_rows_to_sequence,
        from_sequence=_rows_from_sequence,
    ),
    # H·W positions (raster order), each the C values of one pixel.
    "pixels": Layout(
        shape=lambda s: (s[0], s[1] * s[2]),
        to_sequence=lambda x: x.flatten(2),
        from_sequence=lambda s, shape: s.reshape(s.shape[0], *shape),
    ),
}


def _conv(c_in: int, c_out: int, kernel: int) -> nn.Conv1d:
    return nn.Conv1d(c_in, c_out, kernel, stride=1, padding=kernel // 2)


class ConvVAE(nn.Module):
    """VAE of 1-D convs: encoder channels→widths[0]→…→widths[-2] then mean/log-variance heads
    widths[-2]→widths[-1]; decoder mirrored, ending in a sigmoid (output in [0, 1])."""

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        widths: Sequence[int],
        kernel: int = 7,
        layout: str = "rows",
    ) -> None:
        super().__init__()
        widths = list(widths)
        if len(widths) < 2:
            raise ValueError(f"widths needs at least 2 entries, got {widths}")
        if any(not isinstance(w, int) or w <= 0 for w in widths):
            raise ValueError(f"widths must be positive integers, got {widths}")
        if not isinstance(kernel, int) or kernel <= 0 or kernel % 2 == 0:
            raise ValueError(f"kernel must be a positive odd integer, got {kernel}")
        if layout not in LAYOUTS:
            raise ValueError(f"unknown layout {layout!r}; known: {sorted(LAYOUTS)}")
        if len(image_shape) != 3 or any(not isinstance(d, int) or d <= 0 for d in image_shape):
            raise ValueError(f"image_shape must be three positive integers C,H,W, got {image_shape}")
        self.image_shape: ImageShape = tuple(image_shape)  # type: ignore[assignment]
        self.layout = layout
        self._layout = LAYOUTS[layout]
        channels, _ = self._layout.shape(self.image_shape)

        trunk = [channels, *widths[:-1]]
        self.encoder = nn.Sequential(*(m for a, b in zip(trunk, trunk[1:]) for m in (_conv(a, b, kernel), nn.ReLU())))
        self.mu_head = _conv(widths[-2], widths[-1], kernel)
        self.logvar_head = _conv(widths[-2], widths[-1], kernel)

        up = [*reversed(widths), channels]
        layers: list[nn.Module] = []
        for a, b in zip(up, up[1:]):
            layers += [_conv(a, b, kernel), nn.ReLU()]
        layers[-1] = nn.Sigmoid()
        self.decoder = nn.Sequential(*layers)

    def encode(self, x_img: Tensor) -> tuple[Tensor, Tensor]:
        """Image B×C×H×W → (mean, log-variance), each B×latent×length."""
        h = self.encoder(self._layout.to_sequence(x_img))
        return self.mu_head(h), self.logvar_head(h)

    def decode(self, z: Tensor) -> Tensor:
        """Latent B×latent×length → image B×C×H×W in [0, 1]."""
        return self._layout.from_sequence(self.decoder(z), self.image_shape)

    def sample(self, mu: Tensor, logvar: Tensor) -> Tensor:
        """Reparameterised latent mu + eps·σ in training mode; mu in eval mode."""
        if not self.training:
            return mu
        return mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)

    def forward(self, x_img: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Image → (reconstruction, mu, logvar, z)."""
        mu, logvar = self.encode(x_img)
        z = self.sample(mu, logvar)
        return self.decode(z), mu, logvar, z


def build_model(image_shape: ImageShape, arch: Mapping[str, Any]) -> ConvVAE:
    """The recovery network of an ``arch`` config section (``widths``, ``kernel``, ``layout``):
    the CAE, the AAE and every trained baseline are this network with their own sections."""
    unknown = set(arch) - {"widths", "kernel", "layout"}
    if unknown:
        raise ValueError(f"unknown architecture keys {sorted(unknown)}; known: widths, kernel, layout")
    if "widths" not in arch:
        raise ValueError("architecture needs 'widths'")
    return ConvVAE(image_shape, arch["widths"], arch.get("kernel", 7), arch.get("layout", "rows"))


def _convs(sequential: nn.Sequential) -> list[nn.Conv1d]:
    return [m for m in sequential if isinstance(m, nn.Conv1d)]


def copy_matching(dst: ConvVAE, src: ConvVAE) -> tuple[int, int]:
    """Start ``dst`` from ``src``'s weights where their shapes agree; returns (parameters copied, total).

    Layers are paired by position from the image's side: encoder convs from the input, decoder
    convs from the output, and the mean/log-variance heads with each other. A pair is copied (weight
    and bias) when its shapes are equal, so two networks of equal widths become copies, and of the
    paper's two ladders (512-256-128-64 and 512-400-300-200-100-64) the first encoder conv and the
    last decoder conv are copied.
    """
    pairs = [
        *zip(_convs(dst.encoder), _convs(src.encoder)),
        (dst.mu_head, src.mu_head),
        (dst.logvar_head, src.logvar_head),
        *zip(reversed(_convs(dst.decoder)), reversed(_convs(src.decoder))),
    ]
    copied = 0
    with torch.no_grad():
        for target, source in pairs:
            if target.weight.shape == source.weight.shape:
                assert target.bias is not None and source.bias is not None  # every layer here has a bias
                target.weight.copy_(source.weight)
                target.bias.copy_(source.bias)
                copied += target.weight.numel() + target.bias.numel()
    return copied, count_parameters(dst)


def count_parameters(model: nn.Module) -> int:
    """Number of parameter elements (trainable or not)."""
    return sum(p.numel() for p in model.parameters())


def describe(model: nn.Module) -> str:
    """Human-readable list of layers with their weight shapes, and the parameter count."""
    lines = [type(model).__name__]
    if isinstance(model, ConvVAE):
        channels, length = model._layout.shape(model.image_shape)
        latent = model.mu_head.out_channels
        lines[0] += (
            f" image {'x'.join(map(str, model.image_shape))}, layout {model.layout}:"
            f" sequence {channels}x{length}, latent {latent}x{length}"
        )
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if isinstance(weight, Tensor):
            shape = "x".join(map(str, weight.shape))
            n = sum(p.numel() for p in module.parameters(recurse=False))
            lines.append(f"  {name:<16} {type(module).__name__:<8} weight {shape:<14} {n:>10,d}")
    lines.append(f"parameters: {count_parameters(model):,d}")
    return "\n".join(lines)


def reconstruct(model: ConvVAE, x: Tensor) -> Tensor:
    """A model's own reconstruction D(E(x)), using the latent mean."""
    return model.decode(model.encode(x)[0])


def recover(aae: ConvVAE, cae: ConvVAE, x: Tensor) -> Tensor:
    """Test-time recovery D_CAE(E_AAE(x)), using the latent mean."""
    return cae.decode(aae.encode(x)[0])
