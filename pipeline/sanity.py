"""Is a trained model trained? Its PSNR on held-out images of its own training domain, beside what
an output that ignores its input scores there: the per-pixel mean image of the training images (the
floor), and the mean image of each held-out image's own class (a second, stronger reference that
knows the label). A model within ``NOT_TRAINED_DB`` of the floor has learned next to nothing,
whatever its tables say."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import torch
from torch import Tensor, nn

from pipeline.losses import OUTPUTS, target_of
from pipeline.metrics import psnr
from pipeline.training import to_float
from pipeline.victims import predict

#: a model whose held-out PSNR is less than this many dB above the mean-image floor is "not trained"
NOT_TRAINED_DB = 1.0
#: an epoch index past any warm-up: held-out objectives are always the full ones
AFTER_WARMUP = 1 << 30


def held_out_count(n: int, fraction: float) -> int:
    """How many of ``n`` training images to hold out: ``fraction`` of them, at least one when there
    is anything to hold out, and never all."""
    if fraction <= 0 or n < 2:
        return 0
    return int(min(n - 1, max(1, round(fraction * n))))


def not_trained(held_out: Mapping[str, float]) -> bool | None:
    """Whether a model's held-out PSNR (``objective``) is within ``NOT_TRAINED_DB`` of its floor
    (``mean_image``); None when nothing was held out."""
    if not held_out.get("n"):
        return None
    return bool(held_out["objective"] < held_out["mean_image"] + NOT_TRAINED_DB)


def reference_images(
    train_target: Tensor, train_labels: np.ndarray | None, held_labels: np.ndarray | None
) -> dict[str, Tensor | None]:
    """The per-pixel mean image of the training targets, and per held-out image the mean image of the
    training targets of its class (None without labels for every image, or a held-out class unseen
    in training)."""
    images = to_float(train_target, torch.device("cpu"))
    references: dict[str, Tensor | None] = {"mean_image": images.mean(0, keepdim=True), "class_mean": None}
    if train_labels is None or held_labels is None or (train_labels < 0).any() or (held_labels < 0).any():
        return references
    classes = {int(c): images[torch.from_numpy(train_labels == c)].mean(0) for c in np.unique(train_labels)}
    if all(int(c) in classes for c in held_labels):
        references["class_mean"] = torch.stack([classes[int(c)] for c in held_labels])
    return references


@torch.no_grad()
def held_out_psnr(
    loss: str,
    models: Mapping[str, nn.Module],
    held_out: Mapping[str, Tensor],
    references: Mapping[str, Tensor | None],
    device: torch.device,
    batch_size: int = 256,
) -> dict[str, float]:
    """Mean per-image PSNR, on ``held_out`` (``x``, maybe ``target``), of each output the loss's model
    is checked on (``pipeline.losses.OUTPUTS``), and of each reference image of ``reference_images``
    (``mean_image``, ``class_mean``) against the same targets; ``n``: how many images."""
    for model in models.values():
        model.eval()
    n = len(held_out["x"])
    if n == 0:
        return {"n": 0}
    scores: dict[str, list[np.ndarray]] = {}
    for start in range(0, n, batch_size):
        batch = {k: to_float(v[start : start + batch_size], device) for k, v in held_out.items()}
        for name, (output, reference) in OUTPUTS[loss](models, batch).items():
            scores.setdefault(name, []).append(psnr(output.clamp(0, 1).cpu(), reference.cpu()))
        target = target_of(batch).cpu()
        for name, image in references.items():
            if image is not None:
                image = image if len(image) == 1 else image[start : start + batch_size]
                scores.setdefault(name, []).append(psnr(image.expand_as(target), target))
    return {"n": n, **{name: float(np.concatenate(parts).mean()) for name, parts in scores.items()}}


class HeldOut:
    """Measures a model on held-out attacked images ``x`` whose clean originals are ``clean`` (and
    its training target, if not ``x``, is ``target``): the loss's terms in eval mode (latent means,
    no warm-up), the PSNR of each output the loss is checked on (``pipeline.losses.OUTPUTS``), the
    PSNR of the recovered image against ``x`` and against the clean original, and the victim's
    recovery accuracy (its prediction on the recovered image equals the one on the clean original)
    over all images and over those the attack flipped: the convergence study's measurements."""

    def __init__(
        self,
        loss_name: str,
        x: Tensor,
        clean: Tensor,
        victim: nn.Module,
        device: torch.device,
        target: Tensor | None = None,
        batch_size: int = 256,
    ) -> None:
        self.loss_name, self.x, self.clean, self.target, self.device = loss_name, x, clean, target, device
        self.victim, self.batch_size = victim, batch_size
        self.clean_pred = predict(victim, clean, device)
        self.flipped = predict(victim, x, device) != self.clean_pred

    def references(self, recovered: Callable[[Tensor], Tensor]) -> dict[str, float]:
        """Recovery accuracy of a fixed defence (e.g. the identity, the CAE alone) on these images."""
        return self._accuracy(self._recover(recovered))

    @torch.no_grad()
    def __call__(
        self, models: Mapping[str, nn.Module], loss: Callable, recover: Callable[[Tensor], Tensor]
    ) -> dict[str, float]:
        for model in models.values():
            model.eval()
        sums: dict[str, float] = {}
        scores: dict[str, list[np.ndarray]] = {}
        for start in range(0, len(self.x), self.batch_size):
            rows = slice(start, start + self.batch_size)
            batch = {
                "x": self.x[rows].to(self.device),
                **({"target": self.target[rows].to(self.device)} if self.target is not None else {}),
            }
            for name, value in loss(batch, AFTER_WARMUP).items():
                sums[name] = sums.get(name, 0.0) + float(value) * len(batch["x"])
            for name, (output, reference) in OUTPUTS[self.loss_name](models, batch).items():
                scores.setdefault(f"psnr_{name}", []).append(psnr(output.clamp(0, 1).cpu(), reference.cpu()))
        recovered = self._recover(recover)
        return {
            **{f"heldout_{k}": v / len(self.x) for k, v in sums.items()},
            **{k: float(np.concatenate(v).mean()) for k, v in scores.items()},
            "psnr_recovered_input": float(psnr(recovered, self.x).mean()),
            "psnr_recovered_clean": float(psnr(recovered, self.clean).mean()),
            **self._accuracy(recovered),
        }

    @torch.no_grad()
    def _recover(self, recover: Callable[[Tensor], Tensor]) -> Tensor:
        return torch.cat(
            [
                recover(self.x[i : i + self.batch_size].to(self.device)).clamp(0, 1).cpu()
                for i in range(0, len(self.x), self.batch_size)
            ]
        )

    def _accuracy(self, recovered: Tensor) -> dict[str, float]:
        correct = (predict(self.victim, recovered, self.device) == self.clean_pred).float()
        flipped = correct[self.flipped]
        return {
            "recovery_accuracy": float(correct.mean()),
            "recovery_accuracy_flipped": float(flipped.mean()) if len(flipped) else float("nan"),
            "n": len(correct),
            "n_flipped": len(flipped),
        }
