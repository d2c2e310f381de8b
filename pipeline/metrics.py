"""Per-image recovery metrics, detection AUROC and bootstrap intervals (numpy / torch in, numpy out)."""

from __future__ import annotations

import numpy as np
import torch
from skimage.metrics import structural_similarity
from torch import Tensor


def pixel_recovery_rate(recovered: Tensor, clean: Tensor, tolerance: float) -> np.ndarray:
    """Per image: the fraction of pixels whose every channel is within ``tolerance`` of the clean image."""
    close = ((recovered - clean).abs() <= tolerance).all(dim=1)
    return close.flatten(1).float().mean(1).numpy()


def psnr(recovered: Tensor, clean: Tensor) -> np.ndarray:
    """Per-image PSNR in dB for images in [0, 1] (capped at 100 dB for identical images)."""
    mse = (recovered - clean).pow(2).flatten(1).mean(1).clamp_min(1e-10)
    return (10 * torch.log10(1 / mse)).numpy()


def ssim(recovered: Tensor, clean: Tensor) -> np.ndarray:
    """Per-image SSIM (scikit-image, Gaussian-free 7x7 windows, data range 1, channels averaged)."""
    rec, ref = recovered.double().numpy(), clean.double().numpy()
    window = min(7, rec.shape[-1] - (1 - rec.shape[-1] % 2))
    return np.array(
        [structural_similarity(a, b, data_range=1.0, channel_axis=0, win_size=window) for a, b in zip(rec, ref)]
    )


def reconstruction_error(recovered: Tensor, inputs: Tensor) -> np.ndarray:
    """Per-image squared error between a method's output and its input: the detection score."""
    return (recovered - inputs).pow(2).flatten(1).sum(1).numpy()


def auroc(negative: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of scores separating ``positive`` from ``negative`` (ties count half)."""
    negative, positive = np.asarray(negative, float), np.asarray(positive, float)
    if len(negative) == 0 or len(positive) == 0:
        return float("nan")
    scores = np.concatenate([negative, positive])
    order = scores.argsort(kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    # average ranks over ties
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_scores)) + 1]
    ends = np.r_[starts[1:], len(scores)]
    for lo, hi in zip(starts, ends):
        ranks[order[lo:hi]] = (lo + hi + 1) / 2
    u = ranks[len(negative) :].sum() - len(positive) * (len(positive) + 1) / 2
    return float(u / (len(negative) * len(positive)))


def bootstrap_interval(values: np.ndarray, resamples: int, seed: int, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values``."""
    values = np.asarray(values, float)
    values = values[~np.isnan(values)]
    if len(values) == 0 or resamples == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (resamples, len(values)))].mean(1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)
