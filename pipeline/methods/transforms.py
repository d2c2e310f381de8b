"""Input transformations that need no training: no defence, JPEG, bit-depth reduction, median filter.

Each maps a batch B x C x H x W in [0, 1] to a batch of the same shape in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from pipeline.methods import MethodSpec
from pipeline.schema import bounded


def jpeg(x, quality: int):
    """JPEG compression and decompression of each image (Pillow, 4:2:0 chroma subsampling)."""
    import io

    import numpy as np
    import torch
    from PIL import Image

    out = []
    for image in (x.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy():
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
        out.append(np.asarray(Image.open(buffer).convert("RGB")))
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float().div(255).to(x.device)


def bit_depth(x, bits: int):
    """Feature squeezing: quantise each channel to ``bits`` bits (Xu et al., 2018)."""
    import torch

    levels = 2**bits - 1
    return torch.round(x.clamp(0, 1) * levels) / levels


def median(x, kernel: int):
    """A ``kernel`` x ``kernel`` median filter per channel (reflecting borders)."""
    import torch
    from scipy.ndimage import median_filter

    filtered = median_filter(x.cpu().numpy(), size=(1, 1, kernel, kernel), mode="reflect")
    return torch.from_numpy(filtered).to(x.device)


@dataclass
class JPEGParams:
    quality: int = bounded(75, lo=1, hi=100)


@dataclass
class BitDepthParams:
    bits: int = bounded(4, lo=1, hi=8)


@dataclass
class MedianParams:
    kernel: int = bounded(3, lo=1)


IDENTITY = MethodSpec("identity", "Identity (no defence)", "none", lambda models, p: lambda x: x)
JPEG = MethodSpec("jpeg", "JPEG", "transform", lambda models, p: partial(jpeg, quality=p.quality), JPEGParams)
BIT_DEPTH = MethodSpec(
    "bit_depth", "Bit-depth reduction", "transform", lambda models, p: partial(bit_depth, bits=p.bits), BitDepthParams
)
MEDIAN = MethodSpec(
    "median", "Median filter", "transform", lambda models, p: partial(median, kernel=p.kernel), MedianParams
)
