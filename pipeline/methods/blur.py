"""A Gaussian blur of the input: an input-transformation defence (not in the paper), and the
worked example of README, "Extending": this file is all it takes to add a table row."""

from __future__ import annotations

import math
from dataclasses import dataclass

from pipeline.methods import MethodSpec
from pipeline.schema import bounded


@dataclass
class BlurParams:
    sigma: float = bounded(0.8, lo=0.01)  # standard deviation in pixels; the kernel spans ±3σ


def gaussian_blur(x, sigma: float):
    """Separable Gaussian blur of each channel, borders replicated; output in [0, 1]."""
    import torch
    from torch.nn import functional as F

    radius = max(1, math.ceil(3 * sigma))
    taps = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-(taps**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    channels = x.shape[1]
    out = F.pad(x, (radius, radius, radius, radius), mode="replicate")
    out = F.conv2d(out, kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1), groups=channels)
    out = F.conv2d(out, kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1), groups=channels)
    return out.clamp(0, 1)


BLUR = MethodSpec(
    "blur", "Gaussian blur", "transform", lambda models, p: lambda x: gaussian_blur(x, p.sigma), BlurParams
)
