"""``shard-write`` and ``hdf5-read``: writing adversarial shards and reading training shards."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial

import numpy as np

from jobs import artifacts
from pipeline.data.shards import ShardSet
from pipeline.execute import execute
from pipeline.tools.bench.attack import attack_case
from pipeline.tools.bench.core import Bench, Result, build_upstream, inputs_of, interleave, ratio_row
from pipeline.tools.bench.train import train_planned, train_rates

# ---------------------------------------------------------------- shard-write

#: Images per second an attack produces on a GPU, the most demanding case: FGSM on the first 50
#: CIFAR-10 images against a PreAct ResNet-18 (RobustBench's Wong2020Fast) takes 5 ms on a GeForce
#: RTX 2080 (torchattacks' README, "Performance Comparison"), i.e. 10,000 images/s; a V100 is faster.
GPU_ATTACK_IMAGES_PER_S = 10_000


def bench_shard_write(bench: Bench, wants: Callable[[str], bool]) -> list[Result]:
    """MB/s of ``write_shard`` on a real adversarial shard with the attack step's codec, against the
    bytes per second an attack produces on a GPU; the note compares size and speed with gzip."""
    import jobs.attack
    from pipeline.data.shards import read_shard, write_shard

    name = bench.config.attack.names[0]
    if not wants(name):
        return []
    case = attack_case(bench, name)
    if not bench.store.is_complete("attack", case.planned.key):
        execute(case.planned, bench.store, case.config)
    arrays = read_shard(bench.store.open("attack", case.planned.key).file(artifacts.ADVERSARIAL))
    images = arrays["images"]
    sizes: dict[str, int] = {}

    def write(codec: str) -> float:
        path = bench.scratch / f"shard-{codec}.h5"
        start = time.perf_counter()
        write_shard(path, arrays, codec=codec)
        seconds = time.perf_counter() - start
        sizes[codec] = path.stat().st_size
        path.unlink()
        return seconds

    ours, gzip = jobs.attack.SHARD_CODEC, "gzip"
    bench.log(f"bench: shard-write/{name}: {len(images)} img {images.dtype}, {ours} and {gzip} interleaved")
    ours_s, gzip_s = interleave([lambda: write(ours), lambda: write(gzip)], max(bench.repeat, 5))
    megabytes = sum(a.nbytes for a in arrays.values()) / 1e6
    produced = GPU_ATTACK_IMAGES_PER_S * images[0].nbytes / 1e6
    note = (
        f"ratio = MB/s written / MB/s an attack produces on a GPU ({GPU_ATTACK_IMAGES_PER_S} img/s x "
        f"{images[0].nbytes} B, FGSM per torchattacks' README); attack/{name}'s shard, {len(images)} img "
        f"{images.dtype}, {ours} {sizes[ours] / 1e3:.0f} kB; {gzip}: {sizes[gzip] / 1e3:.0f} kB "
        f"({sizes[ours] / sizes[gzip] - 1:+.0%} for {ours}), {megabytes / gzip_s:.0f} MB/s"
    )
    return [ratio_row(f"shard-write/{name}", "MB/s", megabytes / ours_s, produced, note, minimum=1)]


# ---------------------------------------------------------------- hdf5-read


def shard_set(bench: Bench, kind: str) -> tuple[ShardSet, str]:
    """The shards trainer ``kind`` loads: clean ``cae_train`` images (cae), adversarial shards (aae)."""
    from pipeline.data.shards import shard_length

    planned = train_planned(bench, kind)
    build_upstream(bench, bench.config, planned)
    inputs = inputs_of(bench, planned)
    if kind == "cae":
        return artifacts.split_shards(inputs["data"], "cae_train"), "clean cae_train shards"
    adv = artifacts.adversarial_paths(inputs)
    return ShardSet(adv, [shard_length(p) for p in adv]), "adversarial shards"


def read_seconds(shards: ShardSet) -> float:
    """Seconds to read every image of ``shards``."""
    start = time.perf_counter()
    shards.read(0, len(shards), ["images"])
    return time.perf_counter() - start


def copy_seconds(images: np.ndarray) -> float:
    """Seconds to copy ``images`` in memory (what slicing a loaded array costs)."""
    start = time.perf_counter()
    images[0 : len(images)].copy()
    return time.perf_counter() - start


def bench_hdf5(bench: Bench, wants: Callable[[str], bool]) -> list[Result]:
    rows = []
    for kind in ("cae", "aae"):
        if not wants(kind):
            continue
        shards, what = shard_set(bench, kind)
        images = shards.read(0, len(shards), ["images"])["images"]
        megabytes = images.nbytes / 1e6
        read_s, memory_s = interleave([partial(read_seconds, shards), partial(copy_seconds, images)], bench.repeat)
        train_ips = train_rates(bench, kind)[0]
        consumed = train_ips * images[0].nbytes / 1e6
        note = (
            f"ratio = HDF5 read MB/s / MB/s train/{kind} consumes ({train_ips:.0f} img/s x "
            f"{images[0].nbytes} B); {what}, {len(images)} img {images.dtype}, page cache warm; "
            f"slicing in memory: {megabytes / memory_s:.0f} MB/s"
        )
        rows.append(ratio_row(f"hdf5-read/{kind}", "MB/s", megabytes / read_s, consumed, note, minimum=1))
    return rows
