"""The seven attacks by name, all as torchattacks ``Attack`` objects with one interface.

Where torchattacks 3.5.1 misbehaves, it is worked around here and only here:

- JSMA is a targeted attack; in untargeted use torchattacks aims at ``(label + 1) % 10``, which
  is wrong for any other number of classes. We always run it in targeted mode with a target rule
  that works for any number of classes (``runner_up`` by default, or ``next``).
- JSMA builds its Jacobian on the CPU and copies it to the model's device on every iteration; on a
  GPU we allocate it on the device instead (same values).
- JSMA calls ``.view`` on the images and fails on non-contiguous tensors; we pass contiguous ones.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torchattacks
from torch import Tensor, nn

from pipeline.attacks.params import ATTACK_PARAMS
from pipeline.attacks.ssah import SSAH
from pipeline.errors import PipelineError


class _JSMA(torchattacks.JSMA):
    """torchattacks' JSMA with its Jacobian on the model's device, safe for non-contiguous inputs."""

    def forward(self, images: Tensor, labels: Tensor) -> Tensor:
        return super().forward(images.contiguous(), labels)

    def compute_jacobian(self, image: Tensor) -> Tensor:
        image = image.clone().detach().requires_grad_(True)
        output = self.get_logits(image)[0]
        rows = [torch.autograd.grad(output[k], image, retain_graph=k + 1 < len(output))[0].flatten()
                for k in range(len(output))]
        return torch.stack(rows)


def jsma_targets(rule: str, model: nn.Module, num_classes: int) -> Callable[[Tensor, Tensor], Tensor]:
    """Target classes for untargeted JSMA: the runner-up class, or the next class index."""

    def runner_up(images: Tensor, labels: Tensor) -> Tensor:
        with torch.no_grad():
            logits = model(images).clone()
        logits[torch.arange(len(labels)), labels] = float("-inf")
        return logits.argmax(1)

    def next_class(images: Tensor, labels: Tensor) -> Tensor:
        return (labels + 1) % num_classes

    return {"runner_up": runner_up, "next": next_class}[rule]


def _jsma(model: nn.Module, p: Any, num_classes: int) -> torchattacks.Attack:
    attack = _JSMA(model, theta=p.theta, gamma=p.gamma)
    attack.set_mode_targeted_by_function(jsma_targets(p.target, model, num_classes), quiet=True)
    return attack


BUILDERS: dict[str, Callable[[nn.Module, Any, int], torchattacks.Attack]] = {
    "fgsm": lambda m, p, n: torchattacks.FGSM(m, eps=p.eps),
    "pgd": lambda m, p, n: torchattacks.PGD(m, eps=p.eps, alpha=p.alpha, steps=p.steps,
                                            random_start=p.random_start),
    "ssah": lambda m, p, n: SSAH(m, steps=p.steps, alpha=p.alpha, m=p.m, sim_weight=p.sim_weight,
                                 lambda_lf=p.lambda_lf),
    "deepfool": lambda m, p, n: torchattacks.DeepFool(m, steps=p.steps, overshoot=p.overshoot),
    "bim": lambda m, p, n: torchattacks.BIM(m, eps=p.eps, alpha=p.alpha, steps=p.steps),
    "cw": lambda m, p, n: torchattacks.CW(m, c=p.c, kappa=p.kappa, steps=p.steps, lr=p.lr),
    "jsma": _jsma,
}
assert set(BUILDERS) == set(ATTACK_PARAMS)


def build_attack(name: str, model: nn.Module, params: Any, num_classes: int) -> torchattacks.Attack:
    """An attack on ``model`` with its parameters (a dataclass of ``ATTACK_PARAMS[name]`` or a dict)."""
    if name not in BUILDERS:
        raise PipelineError(f"unknown attack {name!r} (known: {', '.join(BUILDERS)})")
    if isinstance(params, dict):
        params = ATTACK_PARAMS[name](**params)
    return BUILDERS[name](model, params, num_classes)

