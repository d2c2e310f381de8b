"""Recovery methods by name: ours, the trained baselines and the input-transformation defences.

A method is built from the trained models it needs (see ``pipeline.methods``) and its config
values, and maps a batch of images in [0, 1] to recovered images in [0, 1].
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from PIL import Image
from scipy.ndimage import median_filter
from torch import Tensor, nn

from pipeline.methods import METHODS
from pipeline.models import recover

Recover = Callable[[Tensor], Tensor]


def jpeg(x: Tensor, quality: int) -> Tensor:
    """JPEG compression and decompression of each image (Pillow, 4:2:0 chroma subsampling)."""
    out = []
    for image in (x.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy():
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
        out.append(np.asarray(Image.open(buffer).convert("RGB")))
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float().div(255).to(x.device)


def bit_depth(x: Tensor, bits: int) -> Tensor:
    """Feature squeezing: quantise each channel to ``bits`` bits (Xu et al., 2018)."""
    levels = 2 ** bits - 1
    return torch.round(x.clamp(0, 1) * levels) / levels


def median(x: Tensor, kernel: int) -> Tensor:
    """A ``kernel`` x ``kernel`` median filter per channel (reflecting borders)."""
    filtered = median_filter(x.cpu().numpy(), size=(1, 1, kernel, kernel), mode="reflect")
    return torch.from_numpy(filtered).to(x.device)


def _autoencode(model: nn.Module) -> Recover:
    return lambda x: model.decode(model.encode(x)[0])


#: method name -> builder from (its trained models, its evaluate config values) to a recovery function
RECOVERERS: dict[str, Callable[[Mapping[str, nn.Module], Mapping[str, Any]], Recover]] = {
    "ours": lambda m, c: lambda x: recover(m["aae"], m["cae"], x),
    "identity": lambda m, c: lambda x: x,
    "jpeg": lambda m, c: lambda x: jpeg(x, c["jpeg_quality"]),
    "bit_depth": lambda m, c: lambda x: bit_depth(x, c["bit_depth"]),
    "median": lambda m, c: lambda x: median(x, c["median_kernel"]),
    "cae": lambda m, c: _autoencode(m["cae"]),  # MagNet-style reformer: the CAE alone
    "plain_ae": lambda m, c: _autoencode(m["model"]),
    "paired_dae": lambda m, c: _autoencode(m["model"]),
}
assert set(RECOVERERS) == set(METHODS)
