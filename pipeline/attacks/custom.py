"""The attacks whose torchattacks 3.5.1 version we replace (same interface, ``Attack`` subclasses).

- JSMA is a targeted attack; in untargeted use torchattacks aims at ``(label + 1) % 10``, which
  is wrong for any other number of classes. ``TargetedJSMA`` always runs targeted, with a target
  rule that works for any number of classes (``runner_up`` by default, or ``next``).
- torchattacks' JSMA builds its Jacobian on the CPU and copies it to the model's device on every
  iteration; ours allocates it on the device (same values). It calls ``.view`` on the images and
  fails on non-contiguous tensors; ours passes contiguous ones. Its saliency map allocates a
  dozen N x N temporaries per iteration (N = 3,072 features at 32x32, one built in numpy as
  int64); ours computes the same map in place with three.
- torchattacks' DeepFool loops over images one at a time, with one backward pass per class per
  image and step (under 1 image/s on 2 CPU cores). ``BatchedDeepFool`` runs the same iteration
  for the whole batch at once: one backward pass per class per step. Per image the arithmetic is
  torchattacks' (tested to match).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torchattacks
from torch import Tensor, nn


class TargetedJSMA(torchattacks.JSMA):
    """torchattacks' JSMA, targeted at ``target`` (``runner_up`` or ``next``, see ``jsma_targets``),
    with its Jacobian on the model's device, a leaner saliency map (same values, same choice of
    pixels), safe for non-contiguous inputs."""

    def __init__(self, model: nn.Module, theta: float = 1.0, gamma: float = 0.1, target: str = "runner_up"):
        super().__init__(model, theta=theta, gamma=gamma)
        self.set_mode_targeted_by_function(jsma_targets(target, model), quiet=True)

    def forward(self, images: Tensor, labels: Tensor) -> Tensor:
        return super().forward(images.contiguous(), labels)

    @torch.no_grad()
    def saliency_map(
        self, jacobian: Tensor, target_label: Tensor, increasing: bool, search_space: Tensor, nb_features: int
    ) -> tuple[Tensor, Tensor]:
        outside = (search_space == 0).float().view(1, nb_features) * (2 if increasing else -2)
        target = jacobian[target_label].view(1, nb_features)
        others = jacobian.sum(0, keepdim=True) - target
        target = target - outside * target.abs().max()
        others = others + outside * others.abs().max()
        alpha = target.view(nb_features, 1) + target.view(1, nb_features)
        beta = others.view(nb_features, 1) + others.view(1, nb_features)
        mask = (alpha > 0) & (beta < 0) if increasing else (alpha < 0) & (beta > 0)
        mask.fill_diagonal_(False)
        saliency = alpha.mul_(beta.abs_()).mul_(mask)
        best = saliency.view(1, -1).argmax(1)
        p = torch.div(best, nb_features, rounding_mode="floor")
        return p, best - p * nb_features

    def compute_jacobian(self, image: Tensor) -> Tensor:
        image = image.clone().detach().requires_grad_(True)
        output = self.get_logits(image)[0]
        rows = [
            torch.autograd.grad(output[k], image, retain_graph=k + 1 < len(output))[0].flatten()
            for k in range(len(output))
        ]
        return torch.stack(rows)


class BatchedDeepFool(torchattacks.DeepFool):
    """torchattacks' DeepFool update, computed for all still-correct images of a batch together."""

    def forward(self, images: Tensor, labels: Tensor) -> Tensor:
        adv = images.clone().detach().to(self.device)
        labels = labels.to(self.device)
        active = torch.ones(len(adv), dtype=torch.bool, device=self.device)
        rows = torch.arange(len(adv), device=self.device)
        for _ in range(self.steps):
            index = rows[active]
            if len(index) == 0:
                break
            x = adv[index].clone().requires_grad_(True)
            logits = self.get_logits(x)
            y = labels[index]
            fooled = logits.argmax(1) != y
            grads = torch.stack(
                [
                    torch.autograd.grad(logits[:, k].sum(), x, retain_graph=k + 1 < logits.shape[1])[0]
                    for k in range(logits.shape[1])
                ],
                1,
            )  # B x K x C x H x W
            logits, pick = logits.detach(), torch.arange(len(index), device=self.device)
            f_prime = logits - logits[pick, y][:, None]
            w_prime = grads - grads[pick, y][:, None]
            norms = w_prime.flatten(2).norm(dim=2)
            value = f_prime.abs() / norms
            value[pick, y] = float("inf")  # only the other classes compete
            best = value.argmin(1)
            w_best = w_prime[pick, best]
            delta = (f_prime[pick, best].abs() / norms[pick, best] ** 2)[:, None, None, None] * w_best
            stepped = torch.clamp(x.detach() + (1 + self.overshoot) * delta, 0, 1)
            adv[index[~fooled]] = stepped[~fooled]
            active[index[fooled]] = False
        return adv.detach()


def jsma_targets(rule: str, model: nn.Module) -> Callable[[Tensor, Tensor], Tensor]:
    """Target classes for untargeted JSMA: the runner-up class, or the next class index."""

    def runner_up(images: Tensor, labels: Tensor) -> Tensor:
        with torch.no_grad():
            logits = model(images).clone()
        logits[torch.arange(len(labels)), labels] = float("-inf")
        return logits.argmax(1)

    def next_class(images: Tensor, labels: Tensor) -> Tensor:
        with torch.no_grad():
            classes = model(images[:1]).shape[1]
        return (labels + 1) % classes

    return {"runner_up": runner_up, "next": next_class}[rule]
