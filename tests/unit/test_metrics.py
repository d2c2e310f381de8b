"""Unit tests for pipeline.metrics on images and scores whose answers are known by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pipeline.metrics import auroc, bootstrap_interval, pixel_recovery_rate, psnr, reconstruction_error, ssim

pytestmark = pytest.mark.unit


def test_psnr_by_hand_and_capped_for_identical_images():
    clean = torch.zeros(2, 3, 4, 4)
    off = clean.clone()
    off[0] += 0.1  # mse 0.01 -> 20 dB
    off[1, 0, 0, 0] = 1.0  # one of 48 values off by 1: mse 1/48
    assert psnr(off, clean) == pytest.approx([20.0, 10 * math.log10(48)], abs=1e-4)
    assert psnr(clean, clean) == pytest.approx([100.0, 100.0])


def test_pixel_rate_needs_every_channel_within_the_tolerance():
    clean = torch.full((1, 3, 2, 2), 0.5)
    recovered = clean.clone()
    recovered[0, 2, 0, 0] += 0.06  # one channel of pixel (0, 0) beyond τ = 0.05
    recovered[0, :, 1, 1] += 0.04  # every channel of pixel (1, 1) within it
    assert pixel_recovery_rate(recovered, clean, 0.05) == pytest.approx([0.75])
    assert pixel_recovery_rate(recovered, clean, 0.1) == pytest.approx([1.0])


def test_ssim_is_one_for_identical_images_and_lower_for_noise():
    rng = np.random.default_rng(0)
    clean = torch.from_numpy(rng.random((2, 3, 16, 16), dtype=np.float32))
    noisy = (clean + 0.2 * torch.from_numpy(rng.standard_normal((2, 3, 16, 16)).astype(np.float32))).clamp(0, 1)
    assert ssim(clean, clean) == pytest.approx([1.0, 1.0])
    assert (ssim(noisy, clean) < 0.9).all()
    assert ssim(clean[:, :, :5, :5], clean[:, :, :5, :5]) == pytest.approx([1.0, 1.0])  # window shrinks to 5


def test_reconstruction_error_is_the_summed_squared_difference():
    a, b = torch.zeros(1, 3, 2, 2), torch.full((1, 3, 2, 2), 0.5)
    assert reconstruction_error(b, a) == pytest.approx([12 * 0.25])


def test_auroc_counts_ties_half_and_matches_pairwise_counting():
    assert auroc([0, 1], [2, 3]) == 1.0 and auroc([2, 3], [0, 1]) == 0.0
    assert auroc([1, 1], [1, 1]) == 0.5
    assert auroc([0, 1], [1, 2]) == pytest.approx(0.875)  # pairs: 1>0, 1=1 (half), 2>0, 2>1
    rng = np.random.default_rng(1)
    neg, pos = rng.integers(0, 5, 40), rng.integers(1, 6, 30)  # many ties
    pairs = np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg])
    assert auroc(neg, pos) == pytest.approx(pairs)
    assert math.isnan(auroc([], [1.0]))


def test_bootstrap_interval_brackets_the_mean_is_seeded_and_skips_nan():
    values = np.r_[np.random.default_rng(2).normal(10, 1, 200), np.nan]
    low, high = bootstrap_interval(values, 500, seed=3)
    assert low < np.nanmean(values) < high and high - low < 0.5  # ~4 standard errors of 1/sqrt(200)
    assert bootstrap_interval(values, 500, seed=3) == (low, high)
    assert bootstrap_interval(np.full(5, 7.0), 100, seed=0) == (7.0, 7.0)
    assert all(math.isnan(v) for v in bootstrap_interval(np.array([np.nan]), 100, seed=0))
