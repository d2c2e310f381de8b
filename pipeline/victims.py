"""Victim classifiers: a registry of architectures for small inputs, training and loading.

Every victim takes images in [0, 1] (normalisation is inside), returns logits, and exposes
``features(x)``: the globally pooled penultimate features (what SSAH attacks).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import torchvision
from torch import Tensor, nn
from torch.nn import functional as F
from tqdm import tqdm

from pipeline.errors import PipelineError

_MEAN, _STD = 0.5, 0.25


class Victim(nn.Module):
    """A classifier ``body`` (image -> pooled features) with a linear ``head``."""

    def __init__(self, body: nn.Module, width: int, num_classes: int):
        super().__init__()
        self.body = body
        self.head = nn.Linear(width, num_classes)

    def features(self, x: Tensor) -> Tensor:
        return self.body((x - _MEAN) / _STD)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def _block(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def small_cnn(num_classes: int) -> Victim:
    """Three conv stages (16-32-64 channels), global average pooling, a linear head."""
    body = nn.Sequential(
        *_block(3, 16),
        *_block(16, 16),
        nn.MaxPool2d(2),
        *_block(16, 32),
        *_block(32, 32),
        nn.MaxPool2d(2),
        *_block(32, 64),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )
    return Victim(body, 64, num_classes)


def _small_input_resnet(factory: Callable[..., torchvision.models.ResNet]) -> Callable[[int], Victim]:
    """A torchvision ResNet with a 3x3 stride-1 stem and no max-pool, as usual for 32x32 inputs."""

    def build(num_classes: int) -> Victim:
        net = factory(weights=None)
        net.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
        width = net.fc.in_features
        net.fc = nn.Identity()
        return Victim(net, width, num_classes)

    return build


ARCHITECTURES: dict[str, Callable[[int], Victim]] = {
    "small_cnn": small_cnn,
    "resnet18": _small_input_resnet(torchvision.models.resnet18),
    "resnet34": _small_input_resnet(torchvision.models.resnet34),
}


def build_victim(arch: str, num_classes: int) -> Victim:
    if arch not in ARCHITECTURES:
        raise PipelineError(f"unknown victim architecture {arch!r} (known: {', '.join(ARCHITECTURES)})")
    return ARCHITECTURES[arch](num_classes)


def load_victim(arch: str, num_classes: int, path: Path, device: torch.device) -> Victim:
    """A victim from a state-dict file (``weights_only``), in eval mode; mismatches fail naming the file."""
    model = build_victim(arch, num_classes)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise PipelineError(f"victim weights file {path} does not exist") from None
    except Exception as err:  # torch raises many types for unreadable or unsafe files
        raise PipelineError(
            f"victim weights file {path} cannot be loaded safely: {(str(err).splitlines() or [type(err).__name__])[0]}"
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise PipelineError(f"victim weights file {path} is not a state dict of tensors")
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise PipelineError(
            f"victim weights file {path} does not fit architecture {arch} with "
            f"{num_classes} classes: {str(err).splitlines()[1].strip()}"
        ) from None
    return model.to(device).eval()


def _augment(x: Tensor, generator: torch.Generator) -> Tensor:
    """Random 4-pixel-padded crops and horizontal flips (the standard small-image augmentation)."""
    n, _, h, w = x.shape
    padded = F.pad(x, (4, 4, 4, 4), mode="reflect")
    dy, dx = torch.randint(0, 9, (2,), generator=generator).tolist()
    x = padded[:, :, dy : dy + h, dx : dx + w]
    flip = torch.rand(n, generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def train_classifier(
    model: Victim,
    images: Tensor,
    labels: Tensor,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    device: torch.device,
    progress: bool = False,
) -> list[dict[str, float]]:
    """SGD (momentum 0.9, weight decay 5e-4, cosine lr) with augmentation; images uint8 N x 3 x S x S."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model.to(device).train()
    optimiser = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    steps = epochs * ((len(images) + batch_size - 1) // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr, total_steps=steps, pct_start=0.15)
    history = []
    for epoch in tqdm(range(epochs), desc="victim", disable=not progress):
        order = torch.randperm(len(images), generator=generator)
        total, correct, loss_sum = 0, 0, 0.0
        for start in range(0, len(images), batch_size):
            index = order[start : start + batch_size]
            x = _augment(images[index].float() / 255, generator).to(device)
            y = labels[index].to(device)
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            total += len(y)
            correct += int((logits.argmax(1) == y).sum())
            loss_sum += float(loss.detach()) * len(y)
        history.append({"epoch": epoch + 1, "loss": loss_sum / total, "train_accuracy": correct / total})
    model.eval()
    return history


@torch.no_grad()
def predict(model: nn.Module, images: Tensor, device: torch.device, batch_size: int = 512) -> Tensor:
    """Class predictions for float images in [0, 1] (or uint8), on the CPU."""
    out = []
    for start in range(0, len(images), batch_size):
        x = images[start : start + batch_size]
        x = x.float() / 255 if x.dtype == torch.uint8 else x.float()
        out.append(model(x.to(device)).argmax(1).cpu())
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long)
