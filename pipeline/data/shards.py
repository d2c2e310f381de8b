"""HDF5 shards: a few named arrays per file (images N x 3 x S x S chunked per image block, compressed).

h5py and hdf5plugin are imported where they are used, so that planning (which imports the steps)
stays fast. Readers need nothing but ``import hdf5plugin`` (``read_shard`` does it) to decode every codec."""

from __future__ import annotations

import contextlib
import errno
import gc
import math
import os
import re
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import PipelineError

_CHUNK_IMAGES = 64


def _gzip(itemsize: int) -> dict[str, Any]:
    return {"compression": "gzip", "compression_opts": 4, "shuffle": itemsize > 1}


def _zstd(itemsize: int) -> dict[str, Any]:
    import hdf5plugin

    return dict(hdf5plugin.Zstd(clevel=1))


#: How image-like arrays (3 or more dimensions) are compressed, by name: the h5py dataset options for
#: an item size. Both are deterministic (the same arrays give the same bytes); not lzf, whose
#: uninitialised hash table wrote the same arrays to different bytes under `run -j 1` and `-j 2`, nor
#: Blosc/Blosc2, whose bytes change with the environment (BLOSC_NTHREADS=2 gave four different files in
#: four writes). ``zstd`` (level 1, no byte shuffle) writes adversarial float32 shards ~5x faster than
#: ``gzip``, from 34% smaller (FGSM, PGD) to 8% larger (DeepFool) on the demo's attacks: shuffling
#: costs half as many bytes again where pixels take few distinct values (FGSM, BIM, PGD) and saves at
#: most 8% elsewhere (benchmarks/README.md, ``shard-write``).
CODECS: dict[str, Callable[[int], dict[str, Any]]] = {"gzip": _gzip, "zstd": _zstd}


def write_shard(
    path: Path, arrays: Mapping[str, np.ndarray], attrs: Mapping[str, Any] = {}, codec: str = "gzip"
) -> None:
    """Write arrays (strings as UTF-8) to a new HDF5 file; image-like arrays are chunked and compressed
    with ``codec`` (one of ``CODECS``). A failed write (e.g. a full disk) raises one OSError naming the
    file, with the errno HDF5 saw."""
    with ShardWriter(path, codec=codec) as shard:
        shard.finish(arrays, attrs)


class ShardWriter:
    """A new shard whose image-like arrays may arrive batch by batch (``append``): one background thread
    compresses and writes them, whole chunks at a time, while the caller computes the next batch (h5py
    releases the GIL while HDF5 writes). ``finish`` writes the other arrays and closes the file. The
    same arrays, appended in the same batches, give the same bytes. Errors as ``write_shard``."""

    def __init__(self, path: Path, rows: int = 0, codec: str = "gzip"):
        import h5py

        self.path, self.rows, self.codec = Path(path), rows, CODECS[codec]
        self.handle: Any = None
        self.pending: list[Future] = []
        self._attempt(lambda: setattr(self, "handle", h5py.File(self.path, "w", track_order=True)))
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shard-writer")
        self.buffered: dict[str, list[np.ndarray]] = {}
        self.handed: dict[str, int] = {}  # rows of each appended array given to the thread

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, *failure: object) -> None:
        """Stop the thread; close the file if ``finish`` did not (the caller failed)."""
        self.pool.shutdown(cancel_futures=True)
        if self.handle is not None:
            with _quiet():
                self._abandon()

    def append(self, name: str, batch: np.ndarray) -> None:
        """The next rows of image-like array ``name`` (``rows`` rows in all); written in the background
        once they complete a chunk, or the array."""
        parts = self.buffered.setdefault(name, [])
        parts.append(np.asarray(batch))
        start = self.handed.get(name, 0)
        have = start + sum(map(len, parts))
        if have > self.rows:
            raise ValueError(f"{name}: {have} rows appended to a shard of {self.rows}")
        stop = have if have == self.rows else have - have % _CHUNK_IMAGES
        if stop > start:
            block = np.concatenate(parts)
            self.pending.append(self.pool.submit(self._write_rows, name, start, block[: stop - start]))
            self.buffered[name] = [block[stop - start :]] if stop < have else []
            self.handed[name] = stop

    def _write_rows(self, name: str, start: int, block: np.ndarray) -> None:
        """In the thread: ``block`` as rows ``start...`` of ``name``, created with its first rows."""
        _translated(self.path, lambda: self._put(name, start, block))

    def _put(self, name: str, start: int, block: np.ndarray) -> None:
        if name not in self.handle:
            chunks = (min(self.rows, _CHUNK_IMAGES),) + block.shape[1:]
            # no chunk cache: each whole chunk is compressed and written now, in this thread
            self.handle.create_dataset(
                name,
                shape=(self.rows,) + block.shape[1:],
                dtype=block.dtype,
                chunks=chunks,
                rdcc_nbytes=0,
                **self.codec(block.itemsize),
            )
        self.handle[name][start : start + len(block)] = block

    def finish(self, arrays: Mapping[str, np.ndarray], attrs: Mapping[str, Any] = {}) -> None:
        """Wait for the appended arrays, write ``arrays`` and ``attrs``, close the file."""
        appended = {name: self.handed.get(name, 0) + sum(map(len, parts)) for name, parts in self.buffered.items()}
        short = {name: n for name, n in appended.items() if n < self.rows}
        if short:
            raise ValueError(f"appended arrays {short} have fewer rows than the shard's {self.rows}")
        self._attempt(lambda: self._complete(arrays, attrs))

    def _complete(self, arrays: Mapping[str, np.ndarray], attrs: Mapping[str, Any]) -> None:
        for pending in self.pending:
            pending.result()
        for name, array in arrays.items():
            _create(self.handle, name, np.asarray(array), self.codec)
        self.handle.attrs.update(dict(attrs))
        self.handle.close()
        self.handle = None

    def _attempt(self, action: Callable[[], None]) -> None:
        """``_translated(action)``; after a failure, the file is closed as well as it can be and every
        HDF5 object of the shard dies, quietly, before the OSError is raised."""
        try:
            _translated(self.path, action)
        except OSError:
            with _quiet():
                self._abandon()
            raise

    def _abandon(self) -> None:
        """Close the file as well as it can be and drop every reference to it (a failed thread's
        exception holds some of its objects), so that they die now: call with ``_quiet``."""
        with contextlib.suppress(Exception):
            self.handle.close()
        self.handle, self.pending = None, []
        gc.collect()


def _create(handle, name: str, array: np.ndarray, codec: Callable[[int], dict[str, Any]]) -> None:
    import h5py

    if array.dtype.kind in "US":
        handle.create_dataset(name, data=array.astype(object), dtype=h5py.string_dtype())
    elif array.ndim >= 3 and len(array):
        chunks = (min(len(array), _CHUNK_IMAGES),) + array.shape[1:]
        handle.create_dataset(name, data=array, chunks=chunks, **codec(array.itemsize))
    else:
        handle.create_dataset(name, data=array)


def _translated(path: Path, action: Callable[[], None]) -> None:
    """``action()``; a failed HDF5 write in it (e.g. a full disk) becomes one OSError naming the file,
    with the errno HDF5 saw, raised once the failed write's HDF5 objects have died quietly."""
    failure = None
    with _quiet():
        try:
            action()
        except (OSError, RuntimeError) as err:
            found = re.search(r"errno = (\d+)", str(err))  # HDF5's message; the writer thread's OSError has it
            code = int(found[1]) if found else getattr(err, "errno", None) or errno.EIO
            failure = OSError(code, f"cannot write HDF5 shard: {os.strerror(code)}", str(path))
        if failure is not None:
            gc.collect()  # the objects die here, once the exception that held them is gone
    if failure is not None:
        raise failure


_QUIET = threading.Lock()
_quiet_depth, _hooks = 0, (sys.unraisablehook, sys.excepthook)


def _ignore(*_: object) -> None:
    """A hook that reports nothing."""


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """HDF5 objects that cannot flush complain as they die (tracebacks on stderr): silence them, in any
    thread (the windows of the main thread and the writer thread may overlap)."""
    global _quiet_depth, _hooks
    with _QUIET:
        if _quiet_depth == 0:
            _hooks = sys.unraisablehook, sys.excepthook
            sys.unraisablehook = sys.excepthook = _ignore
        _quiet_depth += 1
    try:
        yield
    finally:
        with _QUIET:
            _quiet_depth -= 1
            if _quiet_depth == 0:
                sys.unraisablehook, sys.excepthook = _hooks


def read_shard(path: Path, names: Sequence[str] | None = None, rows: slice = slice(None)) -> dict[str, np.ndarray]:
    """Read (some rows of) named arrays; a truncated, corrupt or hostile file fails naming the path."""
    import h5py
    import hdf5plugin  # noqa: F401  (registers the decoders of CODECS)

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
        raise PipelineError(
            f"shard {path}: dataset {name!r} keeps its data outside the shard "
            f"(external storage or a virtual dataset) or has none"
        )
    count = len(range(*rows.indices(dataset.shape[0]))) if dataset.shape else 1
    size = count * math.prod(dataset.shape[1:]) * dataset.dtype.itemsize
    if size > _memory():
        raise PipelineError(
            f"shard {path}: dataset {name!r} declares shape {dataset.shape} of {dataset.dtype}, "
            f"{size / 2**30:.1f} GiB to read, more than this machine's memory "
            f"({_memory() / 2**30:.1f} GiB)"
        )
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
