"""HDF5 shards: a few named arrays per file (images N x 3 x S x S chunked per image block, compressed).

h5py is imported where it is used, so that planning (which imports the steps) stays fast."""

from __future__ import annotations

import errno
import gc
import math
import os
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import PipelineError

_CHUNK_IMAGES = 64
# Image-like arrays are compressed with gzip (deterministic: a rerun writes the same bytes). Not lzf:
# it is 2.6x faster on a matched PGD shard (12 against 31 ms) but leaves its hash table uninitialised,
# so the same arrays were written to different bytes under `run -j 1` and `-j 2`.


def write_shard(path: Path, arrays: Mapping[str, np.ndarray], attrs: Mapping[str, Any] = {}) -> None:
    """Write arrays (strings as UTF-8) to a new HDF5 file; image-like arrays are chunked and gzipped.
    A failed write (e.g. a full disk) raises one OSError naming the file, with the errno HDF5 saw."""
    failure = None
    # HDF5 objects that cannot flush complain again (tracebacks on stderr) as they die: not twice
    hooks = sys.unraisablehook, sys.excepthook
    sys.unraisablehook = sys.excepthook = lambda *_: None
    try:
        try:
            _write_shard(path, arrays, attrs)
        except (OSError, RuntimeError) as err:
            found = re.search(r"errno = (\d+)", str(err))
            code = int(found[1]) if found else errno.EIO
            failure = OSError(code, f"cannot write HDF5 shard: {os.strerror(code)}", str(path))
        if failure is not None:
            gc.collect()  # the failed write's HDF5 objects die here, once its exception is gone
    finally:
        sys.unraisablehook, sys.excepthook = hooks
    if failure is not None:
        raise failure


def _write_shard(path: Path, arrays: Mapping[str, np.ndarray], attrs: Mapping[str, Any]) -> None:
    import h5py

    with h5py.File(path, "w", track_order=True) as handle:
        for name, array in arrays.items():
            array = np.asarray(array)
            if array.dtype.kind in "US":
                handle.create_dataset(name, data=array.astype(object), dtype=h5py.string_dtype())
            elif array.ndim >= 3 and len(array):
                chunks = (min(len(array), _CHUNK_IMAGES),) + array.shape[1:]
                handle.create_dataset(name, data=array, chunks=chunks, compression="gzip",
                                      compression_opts=4, shuffle=array.itemsize > 1)
            else:
                handle.create_dataset(name, data=array)
        handle.attrs.update(dict(attrs))


def read_shard(path: Path, names: Sequence[str] | None = None, rows: slice = slice(None)) -> dict[str, np.ndarray]:
    """Read (some rows of) named arrays; a truncated, corrupt or hostile file fails naming the path."""
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            names = list(handle.keys()) if names is None else names
            missing = [n for n in names if n not in handle]
            if missing:
                raise PipelineError(f"shard {path} has no dataset(s) {', '.join(missing)}")
            out = {}
            for name in names:
                dataset = _dataset(handle, name, path, rows)
                data = dataset[rows]
                out[name] = data.astype(str) if dataset.dtype.kind == "O" else data
            return out
    except PipelineError:
        raise
    except (OSError, KeyError, ValueError) as err:
        raise PipelineError(f"cannot read HDF5 shard {path}: {err}") from None


def shard_length(path: Path, name: str = "images") -> int:
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            return int(_dataset(handle, name, path).shape[0])
    except PipelineError:
        raise
    except (OSError, KeyError, ValueError) as err:
        raise PipelineError(f"cannot read HDF5 shard {path}: {err}") from None


def _dataset(handle, name: str, path: Path, rows: slice = slice(0)):
    """Dataset ``name`` of an open shard, refused unless its bytes are in the file itself (no soft or
    external link, no external raw storage, no virtual dataset mapping other files) and reading
    ``rows`` of it fits in this machine's memory (a shard may declare any shape)."""
    import h5py

    link = handle.get(name, getlink=True)
    if not isinstance(link, h5py.HardLink):
        raise PipelineError(f"shard {path}: {name!r} is a link ({type(link).__name__}), not data stored in the shard")
    dataset = handle[name]
    if not isinstance(dataset, h5py.Dataset) or dataset.external or dataset.is_virtual or dataset.shape is None:
        raise PipelineError(f"shard {path}: dataset {name!r} keeps its data outside the shard "
                            f"(external storage or a virtual dataset) or has none")
    count = len(range(*rows.indices(dataset.shape[0]))) if dataset.shape else 1
    size = count * math.prod(dataset.shape[1:]) * dataset.dtype.itemsize
    if size > _memory():
        raise PipelineError(f"shard {path}: dataset {name!r} declares shape {dataset.shape} of {dataset.dtype}, "
                            f"{size / 2**30:.1f} GiB to read, more than this machine's memory "
                            f"({_memory() / 2**30:.1f} GiB)")
    return dataset


def _memory() -> int:
    """Bytes of physical memory."""
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


class ShardSet:
    """Consecutive shards read as one array: rows ``[start, stop)`` may span several files."""

    def __init__(self, paths: Sequence[Path], lengths: Sequence[int]):
        self.paths = list(paths)
        self.offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(int)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def read(self, start: int, stop: int, names: Sequence[str]) -> dict[str, np.ndarray]:
        if not 0 <= start <= stop <= len(self):
            raise PipelineError(f"rows {start}:{stop} are outside this shard set of {len(self)} rows")
        parts: dict[str, list[np.ndarray]] = {name: [] for name in names}
        for i, path in enumerate(self.paths):
            lo, hi = max(start, self.offsets[i]), min(stop, self.offsets[i + 1])
            if lo < hi:
                chunk = read_shard(path, names, slice(lo - self.offsets[i], hi - self.offsets[i]))
                for name in names:
                    parts[name].append(chunk[name])
        return {name: np.concatenate(p) if p else np.empty((0,)) for name, p in parts.items()}

    def take(self, rows: np.ndarray, names: Sequence[str]) -> dict[str, np.ndarray]:
        """Rows ``rows`` (any order, e.g. the rows an adversarial shard attacked), read as the one
        span that covers them."""
        lo, hi = int(rows.min()), int(rows.max()) + 1
        span = self.read(lo, hi, names)
        return {name: array[rows - lo] for name, array in span.items()}
