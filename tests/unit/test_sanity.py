"""The "is it trained?" floors: the per-pixel mean image and the class-mean image on held-out images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.metrics import psnr
from pipeline.models import ConvVAE
from pipeline.sanity import NOT_TRAINED_DB, held_out_count, held_out_psnr, not_trained, reference_images

pytestmark = pytest.mark.unit


def _two_classes(n: int) -> tuple[torch.Tensor, np.ndarray]:
    """uint8 images of two classes: class 0 dark with a bright left half, class 1 the mirror image."""
    labels = np.arange(n) % 2
    images = torch.full((n, 3, 8, 8), 40, dtype=torch.uint8)
    for i, c in enumerate(labels):
        images[i, :, :, (0 if c == 0 else 4) : (4 if c == 0 else 8)] = 200
    return images, labels


def test_reference_images_are_the_mean_and_the_class_means_of_the_training_targets():
    images, labels = _two_classes(10)
    refs = reference_images(images, labels, np.array([1, 0, 1]))
    assert refs["mean_image"].shape == (1, 3, 8, 8)
    assert torch.allclose(refs["mean_image"], images.float().div(255).mean(0, keepdim=True))
    assert torch.equal(refs["class_mean"], images[[1, 0, 1]].float() / 255)  # each class is one image here
    assert reference_images(images, None, None)["class_mean"] is None
    assert reference_images(images, labels - 1, np.array([0]))["class_mean"] is None  # unlabelled (-1)


def test_a_model_that_ignores_its_input_is_not_trained_and_the_class_mean_scores_higher():
    images, labels = _two_classes(12)
    model = ConvVAE((3, 8, 8), [8, 4], kernel=3)
    refs = reference_images(images[:8], labels[:8], labels[8:])
    held = held_out_psnr("vae", {"model": model}, {"x": images[8:]}, refs, torch.device("cpu"))
    assert held["n"] == 4 and held["class_mean"] > held["mean_image"] + 10  # exact class images: the cap
    mean_image = float(psnr(refs["mean_image"].expand(4, -1, -1, -1), images[8:].float() / 255).mean())
    assert held["mean_image"] == pytest.approx(mean_image)
    assert not_trained(held)  # an untrained network is far from reproducing them
    assert not_trained({**held, "objective": held["mean_image"] + NOT_TRAINED_DB + 0.1}) is False
    assert not_trained({"n": 0}) is None


def test_held_out_count_keeps_at_least_one_and_never_all():
    assert [held_out_count(n, 0.05) for n in (0, 1, 2, 10, 100)] == [0, 0, 1, 1, 5]
    assert held_out_count(10, 0.0) == 0 and held_out_count(3, 0.5) == 2
