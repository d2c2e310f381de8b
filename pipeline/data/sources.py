"""Image sources by name. Each lists its items (stable ids, the file holding each, labels) and
decodes a selection of them into uint8 3 x S x S arrays.

- ``cifar10``: the python pickle batches exactly as the CIFAR-10 tarball ships them.
- ``coco``: a directory of images (e.g. ``train2017/``), unlabelled.
- ``imagenet_r`` / ``image_folder``: a class-folder tree; the label is the top-level folder.
- ``fashion_mnist``: the idx files (``*-ubyte.gz``) as Zalando ships them (Debian: dataset-fashion-mnist).
- ``photo_crops``: multi-scale crops of a few photos (default: the photos in scikit-image's wheel).
"""

from __future__ import annotations

import gzip
import math
import os
import pickle
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.data.images import EXTENSIONS, load_file, square
from pipeline.errors import PipelineError


@dataclass(frozen=True)
class Item:
    """One image of a source: ``id`` is unique and stable, ``file`` is relative to the root."""

    id: str
    file: str
    label: int = -1


@dataclass(frozen=True)
class Listing:
    items: list[Item]
    classes: list[str] | None  # label -> class name, None when unlabelled


class Source:
    """Base class: subclasses list items and decode them."""

    labelled = False

    def default_root(self) -> Path | None:
        return None

    def list(self, root: Path, classes: Sequence[str] | None) -> Listing:
        raise NotImplementedError

    def load(self, root: Path, items: Sequence[Item], size: int) -> Iterator[np.ndarray]:
        raise NotImplementedError


def _check_root(root: Path) -> None:
    if not root.is_dir():
        raise PipelineError(f"dataset directory {root} does not exist")


def _image_files(root: Path) -> list[str]:
    """Relative paths of the image files under ``root``; links to one file count once."""
    chosen: dict[str, str] = {}
    for folder, _, names in os.walk(root, followlinks=False):
        for name in names:
            if name.lower().endswith(EXTENSIONS):
                path = Path(folder) / name
                rel = str(path.relative_to(root))
                real = os.path.realpath(path)
                # prefer the real file over links to it, then the first path in sorted order
                best = chosen.get(real)
                if (
                    best is None
                    or (not path.is_symlink() and (root / best).is_symlink())
                    or (path.is_symlink() == (root / best).is_symlink() and rel < best)
                ):
                    chosen[real] = rel
    return sorted(chosen.values())


class ImageFiles(Source):
    """A directory tree of image files; labelled by top-level folder when ``labelled``."""

    def __init__(self, labelled: bool):
        self.labelled = labelled

    def list(self, root: Path, classes: Sequence[str] | None) -> Listing:
        _check_root(root)
        files = _image_files(root)
        if not self.labelled:
            return Listing([Item(f, f) for f in files], None)
        files = [f for f in files if "/" in f]
        names = sorted({f.split("/", 1)[0] for f in files})
        if classes is not None:
            missing = sorted(set(classes) - set(names))
            if missing:
                raise PipelineError(f"dataset {root} has no class folder(s) {', '.join(missing)}")
            names = list(classes)
        index = {name: i for i, name in enumerate(names)}
        items = [Item(f, f, index[f.split("/", 1)[0]]) for f in files if f.split("/", 1)[0] in index]
        return Listing(items, names)

    def load(self, root: Path, items: Sequence[Item], size: int) -> Iterator[np.ndarray]:
        for item in items:
            yield load_file(root / item.file, size)


class _Restricted(pickle.Unpickler):
    """Unpickles CIFAR batches (dicts of numpy arrays, lists, bytes) and nothing executable."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def read_cifar_batch(path: Path) -> dict:
    """One CIFAR-10 python batch, checked to hold ``data`` (N x 3072 uint8) and ``labels``."""
    try:
        with open(path, "rb") as handle:
            batch = _Restricted(handle, encoding="bytes").load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError) as err:
        raise PipelineError(f"cannot read CIFAR batch {path}: {err}") from None
    if not isinstance(batch, dict):
        raise PipelineError(f"CIFAR batch {path} is not a dict")
    batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
    for key in ("data", "labels"):
        if key not in batch:
            raise PipelineError(f"CIFAR batch {path} has no key {key!r} (keys: {', '.join(map(str, batch))})")
    data = np.asarray(batch["data"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise PipelineError(f"CIFAR batch {path}: 'data' must be N x 3072 uint8, not {data.dtype} {data.shape}")
    return {"data": data, "labels": _cifar_labels(batch["labels"], len(data), path)}


def _cifar_labels(labels: object, count: int, path: Path) -> np.ndarray:
    """``labels`` as ``count`` class indices 0-9, or one error naming the batch."""
    try:
        array = np.asarray(labels) if isinstance(labels, (list, tuple, np.ndarray)) else None
    except (ValueError, TypeError):  # ragged nesting
        array = None
    if array is None or array.ndim != 1 or len(array) != count or (count and array.dtype.kind not in "iu"):
        shown = f"{array.dtype} {array.shape}" if array is not None else type(labels).__name__
        raise PipelineError(f"CIFAR batch {path}: 'labels' must be {count} integers, one per image, not {shown}")
    if count and (array.min() < 0 or array.max() >= len(CifarBatches.CLASSES)):
        raise PipelineError(
            f"CIFAR batch {path}: 'labels' must lie in 0-{len(CifarBatches.CLASSES) - 1}, "
            f"found {array.min()}-{array.max()}"
        )
    return array.astype(np.int64)


class CifarBatches(Source):
    """``data_batch_1..5`` and ``test_batch`` of ``cifar-10-batches-py``."""

    labelled = True
    FILES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch")
    CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

    def list(self, root: Path, classes: Sequence[str] | None) -> Listing:
        _check_root(root)
        files = [f for f in self.FILES if (root / f).is_file()]
        if not files:
            raise PipelineError(f"dataset directory {root} has no CIFAR-10 batch files ({', '.join(self.FILES)})")
        items = []
        for name in files:
            labels = read_cifar_batch(root / name)["labels"]
            items += [Item(f"{name}:{i:05d}", name, int(label)) for i, label in enumerate(labels)]
        return _keep_classes(Listing(items, self.CLASSES), classes, root)

    def load(self, root: Path, items: Sequence[Item], size: int) -> Iterator[np.ndarray]:
        cache: dict[str, np.ndarray] = {}
        for item in items:
            if item.file not in cache:
                cache[item.file] = read_cifar_batch(root / item.file)["data"]
            row = cache[item.file][int(item.id.rsplit(":", 1)[1])]
            yield _resized(row.reshape(3, 32, 32), size)


def _resized(chw: np.ndarray, size: int) -> np.ndarray:
    if chw.shape[1:] == (size, size):
        return chw.copy()
    return square(Image.fromarray(chw.transpose(1, 2, 0)), size)


def _keep_classes(listing: Listing, classes: Sequence[str] | None, root: Path) -> Listing:
    if classes is None:
        return listing
    names = listing.classes or []
    missing = sorted(set(classes) - set(names))
    if missing:
        raise PipelineError(f"dataset {root} has no class(es) {', '.join(missing)} (has {', '.join(names)})")
    remap = {names.index(c): i for i, c in enumerate(classes)}
    items = [Item(it.id, it.file, remap[it.label]) for it in listing.items if it.label in remap]
    return Listing(items, list(classes))


def read_idx(path: Path) -> np.ndarray:
    """An idx file (MNIST format), gzip-compressed or not."""
    opener: Callable = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            raw = handle.read()
    except (OSError, EOFError) as err:
        raise PipelineError(f"cannot read idx file {path}: {err}") from None
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] != 0x08:
        raise PipelineError(f"{path} is not an unsigned-byte idx file")
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise PipelineError(f"idx file {path} is truncated inside its header")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != math.prod(shape):  # Python integers: a declared shape cannot overflow
        raise PipelineError(f"idx file {path} is truncated: {data.size} values for shape {shape}")
    return data.reshape(shape)


class FashionMnist(Source):
    """Fashion-MNIST (or MNIST) idx files: ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``."""

    labelled = True
    SPLITS = ("train", "t10k")
    CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"]

    def default_root(self) -> Path | None:
        return Path("/usr/share/datasets/fashion-mnist")

    def _file(self, root: Path, split: str, kind: str) -> Path:
        stem = f"{split}-{kind}-ubyte"
        for candidate in (root / f"{stem}.gz", root / stem):
            if candidate.is_file():
                return candidate
        raise PipelineError(f"dataset directory {root} has no {stem}.gz")

    def list(self, root: Path, classes: Sequence[str] | None) -> Listing:
        _check_root(root)
        items = []
        for split in self.SPLITS:
            labels_file = self._file(root, split, "labels-idx1")
            images_file = self._file(root, split, "images-idx3")
            labels = read_idx(labels_file)
            items += [Item(f"{split}:{i:05d}", images_file.name, int(label)) for i, label in enumerate(labels)]
        return _keep_classes(Listing(items, self.CLASSES), classes, root)

    def load(self, root: Path, items: Sequence[Item], size: int) -> Iterator[np.ndarray]:
        cache: dict[str, np.ndarray] = {}
        for item in items:
            if item.file not in cache:
                cache[item.file] = read_idx(root / item.file)
            grey = cache[item.file][int(item.id.rsplit(":", 1)[1])]
            yield _resized(np.repeat(grey[None], 3, axis=0), size)


class PhotoCrops(Source):
    """Square crops of a few photos on a multi-scale grid (a stand-in for natural-image datasets)."""

    PHOTOS = (
        "astronaut.png",
        "brick.png",
        "camera.png",
        "chelsea.png",
        "clock_motion.png",
        "coffee.png",
        "coins.png",
        "grass.png",
        "gravel.png",
        "hubble_deep_field.jpg",
        "ihc.png",
        "moon.png",
        "motorcycle_left.png",
        "motorcycle_right.png",
        "retina.jpg",
        "rocket.jpg",
    )
    SIDES = (64, 96, 128, 192, 256)

    def default_root(self) -> Path | None:
        import skimage  # the photos ship inside scikit-image's wheel

        return Path(skimage.__file__).parent / "data"

    def list(self, root: Path, classes: Sequence[str] | None) -> Listing:
        _check_root(root)
        photos = [p for p in self.PHOTOS if (root / p).is_file()] or sorted(
            p.name for p in root.iterdir() if p.suffix.lower() in EXTENSIONS
        )
        if not photos:
            raise PipelineError(f"dataset directory {root} has no photos")
        items = []
        for name in photos:
            with Image.open(root / name) as image:
                width, height = image.size
            for side in self.SIDES:
                stride = side // 2
                for top in range(0, height - side + 1, stride):
                    for left in range(0, width - side + 1, stride):
                        items.append(Item(f"{name}@{side}:{top},{left}", name))
        return Listing(items, None)

    def load(self, root: Path, items: Sequence[Item], size: int) -> Iterator[np.ndarray]:
        cache: dict[str, Image.Image] = {}
        for item in items:
            if item.file not in cache:
                with Image.open(root / item.file) as image:
                    image.load()
                    cache[item.file] = image.convert("RGB")
            side, corner = item.id.rsplit("@", 1)[1].split(":")
            top, left = map(int, corner.split(","))
            crop = cache[item.file].crop((left, top, left + int(side), top + int(side)))
            yield square(crop, size)


SOURCES: dict[str, Source] = {
    "cifar10": CifarBatches(),
    "coco": ImageFiles(labelled=False),
    "imagenet_r": ImageFiles(labelled=True),
    "image_folder": ImageFiles(labelled=True),
    "fashion_mnist": FashionMnist(),
    "photo_crops": PhotoCrops(),
}
