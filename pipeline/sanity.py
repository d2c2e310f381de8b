"""Is a trained model trained? Its PSNR on held-out images of its own training domain, beside a
constant image's (the training images' mean colour): a model near the constant image has learned
next to nothing, whatever its tables say."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import Tensor, nn

from pipeline.losses import OUTPUTS, target_of
from pipeline.metrics import psnr
from pipeline.training import to_float


def held_out_count(n: int, fraction: float) -> int:
    """How many of ``n`` training images to hold out: ``fraction`` of them, at least one when there
    is anything to hold out, and never all."""
    if fraction <= 0 or n < 2:
        return 0
    return int(min(n - 1, max(1, round(fraction * n))))


@torch.no_grad()
def held_out_psnr(loss: str, models: Mapping[str, nn.Module], held_out: Mapping[str, Tensor],
                  train_target: Tensor, device: torch.device, batch_size: int = 256) -> dict[str, float]:
    """Mean per-image PSNR, on ``held_out`` (``x``, maybe ``target``), of each output the loss's model
    is checked on (``pipeline.losses.OUTPUTS``), and of the constant image of ``train_target``'s mean
    colour against the same references (``constant``); ``n``: how many images."""
    for model in models.values():
        model.eval()
    n = len(held_out["x"])
    if n == 0:
        return {"n": 0}
    colour = to_float(train_target, torch.device("cpu")).mean(dim=(0, 2, 3))
    scores: dict[str, list[np.ndarray]] = {}
    for start in range(0, n, batch_size):
        batch = {k: to_float(v[start:start + batch_size], device) for k, v in held_out.items()}
        outputs = OUTPUTS[loss](models, batch)
        for name, (output, reference) in outputs.items():
            scores.setdefault(name, []).append(psnr(output.clamp(0, 1).cpu(), reference.cpu()))
        reference = target_of(batch).cpu()
        scores.setdefault("constant", []).append(psnr(colour.view(1, -1, 1, 1).expand_as(reference), reference))
    return {"n": n, **{name: float(np.concatenate(parts).mean()) for name, parts in scores.items()}}
