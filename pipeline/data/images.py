"""Decode one image file into a square uint8 array of a given size."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.errors import PipelineError

#: Larger images are refused before decoding (a 10,000 x 10,000 file would need 300 MB).
MAX_PIXELS = 40_000_000
EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def square(image: Image.Image, size: int) -> np.ndarray:
    """Center-crop to a square and resize to ``size``; returns uint8 3 x size x size."""
    image = flatten(image)
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    image = image.resize(
        (size, size), Image.Resampling.BICUBIC, box=(left, top, left + side, top + side), reducing_gap=3.0
    )
    return np.asarray(image, dtype=np.uint8).transpose(2, 0, 1).copy()


def flatten(image: Image.Image) -> Image.Image:
    """RGB on a white background for images with transparency or a palette."""
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def load_file(path: Path, size: int) -> np.ndarray:
    """Decode an image file; a corrupt, truncated or oversized file fails naming the path."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # we check the size below
            with Image.open(path) as image:
                width, height = image.size
                if width * height > MAX_PIXELS:
                    raise PipelineError(
                        f"image {path} is {width}x{height}, over the limit of "
                        f"{MAX_PIXELS:,} pixels (list it in the dataset's 'exclude')"
                    )
                if image.format == "JPEG":
                    image.draft("RGB", (size * 2, size * 2))  # decode at reduced scale: much faster
                image.load()
                return square(image, size)
    except PipelineError:
        raise
    except Image.DecompressionBombError as err:
        raise PipelineError(
            f"image {path} is over the limit of {MAX_PIXELS:,} pixels ({err}; list it in the dataset's 'exclude')"
        ) from None
    except (OSError, SyntaxError, ValueError) as err:
        raise PipelineError(f"cannot decode image {path}: {err}") from None
