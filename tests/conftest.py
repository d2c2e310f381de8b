"""Shared fixtures: tiny real datasets in every source format, written by the tests themselves.

The images are crops of the photos that ship inside scikit-image's wheel, saved as real JPEG/PNG
files, CIFAR-10 pickle batches and idx files, so every reader runs on real image bytes.
"""

from __future__ import annotations

import gzip
import hashlib
import pickle
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from pipeline.kernels import pin

PHOTOS = ("astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg")
REPO = Path(__file__).resolve().parents[1]

# The pipeline's default CPU kernels for everything torch computes in the test process, before any test
# imports torch: a task executed in this process checks that torch computes with them (pipeline/kernels.py).
pin("auto")


def _changed_files() -> dict[str, str] | None:
    """Files of the checkout that differ from HEAD or are untracked (ignored ones aside), each with
    a hash of its content; None outside a git checkout."""
    try:
        listed = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "-z", "--untracked-files=all"],
            capture_output=True,
            check=True,
        ).stdout.split(b"\0")
    except (OSError, subprocess.CalledProcessError):
        return None
    paths = [entry[3:].decode() for entry in listed if len(entry) > 3]
    return {
        path: hashlib.sha256((REPO / path).read_bytes()).hexdigest() if (REPO / path).is_file() else "gone"
        for path in paths
    }


@pytest.fixture(scope="session", autouse=True)
def _checkout_stays_clean():
    """No test writes into the checkout (data manifests, results, ...): after the session, no file
    of it is changed or new that was not so before (commits made meanwhile do not count)."""
    before = _changed_files()
    yield
    after = _changed_files()
    if before is not None and after is not None:
        written = sorted(path for path, digest in after.items() if before.get(path) != digest)
        assert not written, f"the tests wrote into the checkout {REPO}: {', '.join(written)}"


def photo_crops(count: int, size: int, seed: int = 0) -> list[np.ndarray]:
    """``count`` real RGB crops (size x size x 3, uint8) of scikit-image's photos."""
    import skimage

    root = Path(skimage.__file__).parent / "data"
    photos = [np.asarray(Image.open(root / name).convert("RGB")) for name in PHOTOS]
    rng = np.random.default_rng(seed)
    crops = []
    for i in range(count):
        photo = photos[i % len(photos)]
        side = int(rng.integers(size, min(photo.shape[:2]) // 2))
        top, left = (int(rng.integers(0, photo.shape[k] - side)) for k in (0, 1))
        crop = Image.fromarray(photo[top : top + side, left : left + side]).resize((size, size))
        crops.append(np.asarray(crop))
    return crops


@pytest.fixture
def jpeg_dir(tmp_path: Path) -> Path:
    """A flat directory of 24 JPEGs (a COCO-like source)."""
    root = tmp_path / "coco"
    root.mkdir()
    for i, crop in enumerate(photo_crops(24, 48)):
        Image.fromarray(crop).save(root / f"{i:012d}.jpg", quality=90)
    return root


@pytest.fixture
def class_tree(tmp_path: Path) -> Path:
    """A class-folder tree (ImageNet-R-like): 3 classes x 12 PNG/JPEG images."""
    root = tmp_path / "imagenet-r"
    for c, name in enumerate(("n01443537", "n01484850", "n01494475")):
        (root / name).mkdir(parents=True)
        for i, crop in enumerate(photo_crops(12, 40, seed=c + 1)):
            suffix = "png" if i % 2 else "jpg"
            Image.fromarray(crop).save(root / name / f"art_{i}.{suffix}")
    return root


def write_cifar_batch(path: Path, count: int, seed: int, keys: tuple[str, ...] = ("data", "labels")) -> None:
    crops = photo_crops(count, 32, seed=seed)
    batch = {b"batch_label": b"test batch", b"filenames": [f"img_{i}.png".encode() for i in range(count)]}
    if "data" in keys:
        batch[b"data"] = np.stack([c.transpose(2, 0, 1).reshape(-1) for c in crops]).astype(np.uint8)
    if "labels" in keys:
        batch[b"labels"] = [i % 10 for i in range(count)]
    with open(path, "wb") as handle:
        pickle.dump(batch, handle, protocol=2)


@pytest.fixture
def cifar_dir(tmp_path: Path) -> Path:
    """``cifar-10-batches-py`` with two real-format pickle batches of 30 images."""
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    write_cifar_batch(root / "data_batch_1", 30, seed=3)
    write_cifar_batch(root / "test_batch", 30, seed=4)
    return root


@pytest.fixture
def idx_dir(tmp_path: Path) -> Path:
    """Fashion-MNIST-format idx files (gzip) holding 40 grey crops with labels."""
    root = tmp_path / "fashion"
    root.mkdir()
    for split, count in (("train", 30), ("t10k", 10)):
        grey = np.stack([c.mean(axis=2).astype(np.uint8)[:28, :28] for c in photo_crops(count, 28)])
        header = bytes([0, 0, 8, 3]) + b"".join(int(d).to_bytes(4, "big") for d in grey.shape)
        with gzip.open(root / f"{split}-images-idx3-ubyte.gz", "wb") as handle:
            handle.write(header + grey.tobytes())
        labels = np.arange(count, dtype=np.uint8) % 10
        with gzip.open(root / f"{split}-labels-idx1-ubyte.gz", "wb") as handle:
            handle.write(bytes([0, 0, 8, 1]) + count.to_bytes(4, "big") + labels.tobytes())
    return root


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[..., Path]:
    """Write a YAML config extending a built-in one with the given overrides; returns its path."""

    def write(data: dict, extends: str = "smoke", name: str = "test") -> Path:
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump({"extends": extends, **data}))
        return path

    return write


@pytest.fixture
def cli(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess]:
    """Run ``pipeline --artifacts <tmp>/artifacts ...`` in a subprocess, in ``tmp_path``."""

    def run(*args: str, artifacts: Path | None = None, check: bool = False) -> subprocess.CompletedProcess:
        root = artifacts or tmp_path / "artifacts"
        result = subprocess.run(
            [sys.executable, "-m", "pipeline.cli", "--artifacts", str(root), *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=900,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"pipeline {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result

    return run


@pytest.fixture(scope="session")
def photo_victim():
    """A small_cnn victim trained to tell four photos apart from 16x16 crops: (model, images, labels)."""
    import torch

    from pipeline.victims import small_cnn, train_classifier

    crops = np.ascontiguousarray(np.stack([c.transpose(2, 0, 1) for c in photo_crops(320, 16, seed=11)]))
    labels = torch.arange(320) % len(PHOTOS)
    images = torch.from_numpy(crops)
    torch.manual_seed(0)  # the initial weights too: the victim is the same on every machine run
    model = small_cnn(len(PHOTOS))
    train_classifier(
        model, images[64:], labels[64:], epochs=6, batch_size=32, lr=0.05, seed=0, device=torch.device("cpu")
    )
    return model.eval(), images[:64].float() / 255, labels[:64]
