"""The convergence study's science: at which steps a long training run is measured, what is measured
on held-out attacked images, and when its objective has stopped falling."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import torch
from torch import Tensor, nn

from pipeline.losses import OUTPUTS
from pipeline.metrics import psnr
from pipeline.victims import predict

#: an epoch index past any warm-up: held-out objectives are always the full ones
AFTER_WARMUP = 1 << 30


def eval_steps(first: int, last: int) -> list[int]:
    """``first``, ``2·first``, ``4·first``, ... below ``last``, then ``last``."""
    steps = []
    step = first
    while step < last:
        steps.append(step)
        step *= 2
    return [*steps, last]


def plateaued(values: Mapping[int, float], rel: float) -> bool:
    """Whether the objective measured at the last step s fell by less than ``rel`` (a fraction of
    its value) since the measurement at s/2 or the nearest one before it; False without two."""
    steps = sorted(values)
    if len(steps) < 2:
        return False
    last = steps[-1]
    before = max((s for s in steps[:-1] if s <= last // 2), default=steps[-2])
    return values[before] - values[last] < rel * abs(values[before])


class HeldOut:
    """Measures a model on held-out attacked images ``x`` whose clean originals are ``clean`` (and
    its training target, if not ``x``, is ``target``): the loss's terms in eval mode (latent means, no warm-up), the PSNR of each output the loss is checked
    on (``pipeline.losses.OUTPUTS``), the PSNR of the recovered image against ``x`` and against the
    clean original, and the victim's recovery accuracy (its prediction on the recovered image equals
    the one on the clean original) over all images and over those the attack flipped."""

    def __init__(self, loss_name: str, x: Tensor, clean: Tensor, victim: nn.Module, device: torch.device,
                 target: Tensor | None = None, batch_size: int = 256) -> None:
        self.loss_name, self.x, self.clean, self.target, self.device = loss_name, x, clean, target, device
        self.victim, self.batch_size = victim, batch_size
        self.clean_pred = predict(victim, clean, device)
        self.flipped = predict(victim, x, device) != self.clean_pred

    def references(self, recovered: Callable[[Tensor], Tensor]) -> dict[str, float]:
        """Recovery accuracy of a fixed defence (e.g. the identity, the CAE alone) on these images."""
        return self._accuracy(self._recover(recovered))

    @torch.no_grad()
    def __call__(self, models: Mapping[str, nn.Module], loss: Callable, recover: Callable[[Tensor], Tensor]
                 ) -> dict[str, float]:
        for model in models.values():
            model.eval()
        sums: dict[str, float] = {}
        scores: dict[str, list[np.ndarray]] = {}
        for start in range(0, len(self.x), self.batch_size):
            rows = slice(start, start + self.batch_size)
            batch = {"x": self.x[rows].to(self.device),
                     **({"target": self.target[rows].to(self.device)} if self.target is not None else {})}
            for name, value in loss(batch, AFTER_WARMUP).items():
                sums[name] = sums.get(name, 0.0) + float(value) * len(batch["x"])
            for name, (output, reference) in OUTPUTS[self.loss_name](models, batch).items():
                scores.setdefault(f"psnr_{name}", []).append(psnr(output.clamp(0, 1).cpu(), reference.cpu()))
        recovered = self._recover(recover)
        return {**{f"heldout_{k}": v / len(self.x) for k, v in sums.items()},
                **{k: float(np.concatenate(v).mean()) for k, v in scores.items()},
                "psnr_recovered_input": float(psnr(recovered, self.x).mean()),
                "psnr_recovered_clean": float(psnr(recovered, self.clean).mean()),
                **self._accuracy(recovered)}

    @torch.no_grad()
    def _recover(self, recover: Callable[[Tensor], Tensor]) -> Tensor:
        return torch.cat([recover(self.x[i:i + self.batch_size].to(self.device)).clamp(0, 1).cpu()
                          for i in range(0, len(self.x), self.batch_size)])

    def _accuracy(self, recovered: Tensor) -> dict[str, float]:
        correct = (predict(self.victim, recovered, self.device) == self.clean_pred).float()
        flipped = correct[self.flipped]
        return {"recovery_accuracy": float(correct.mean()),
                "recovery_accuracy_flipped": float(flipped.mean()) if len(flipped) else float("nan"),
                "n": len(correct), "n_flipped": len(flipped)}
