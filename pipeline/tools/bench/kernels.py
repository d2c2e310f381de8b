"""``pipeline bench --only kernels``: what pinning torch's CPU kernels (``runtime.cpu_kernels``) costs.

torch fixes its kernels once per process, so every measurement runs in a child process of its own:
the bare training loop of ``train/cae`` and the direct attack loop of ``attack/<name>`` (the
references of those rows: the compute alone), with the config's pin, and unpinned in an environment
without the pin's variables (the CPU's own kernels). The two sides are interleaved, medians taken.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.config import Config, load_config
from pipeline.errors import PipelineError
from pipeline.kernels import VARIABLES, pin
from pipeline.store import Store

if TYPE_CHECKING:
    from pipeline.tools.bench.core import Bench, Result

KERNELS_TARGET = 0.8  # pinned img/s / unpinned img/s
ATTACK = "pgd"  # measured when the config has it (else its first attack): forty gradient steps per image


def attack_name(config: Config) -> str:
    return ATTACK if ATTACK in config.attack.names else config.attack.names[0]


def train_seconds(bench: Bench) -> tuple[int, float]:
    """Images and seconds of the bare CAE training loop (after a warm-up run)."""
    from pipeline.tools.bench.train import timed_images, train_bare, train_case

    case = train_case(bench, "cae")
    train_bare(case, bench.device)
    return timed_images(case), train_bare(case, bench.device)


def attack_seconds(bench: Bench) -> tuple[int, float]:
    """Images and seconds of the direct attack loop on the first shard (after a warm-up run)."""
    from pipeline.tools.bench.attack import attack_case, attack_direct

    case = attack_case(bench, attack_name(bench.config))
    attack_direct(bench, case)
    return len(case.clean), attack_direct(bench, case)


ROWS: dict[str, Callable[[Bench], tuple[int, float]]] = {"train-cae": train_seconds, "attack": attack_seconds}


def measure(argv: list[str]) -> None:
    """Child: print the img/s of one row, in the kernels its config pins. ``argv``: config, artifact root,
    scratch folder, row, ``--set`` overrides."""
    from pipeline.tools.bench.core import Bench

    config_name, root, scratch, row, *overrides = argv
    config = load_config(config_name, overrides)
    pin(config.runtime.cpu_kernels)
    bench = Bench(config_name, config, overrides, Store(Path(root)), 1, lambda line: None, Path(scratch))
    images, seconds = ROWS[row](bench)
    print(images / seconds)


def child_seconds_per_image(bench: Bench, row: str, pinned: bool) -> float:
    """Run ``measure`` in a child, pinned as the config says or unpinned; seconds per image."""
    env = {k: v for k, v in os.environ.items() if pinned or k not in VARIABLES}
    overrides = bench.overrides + ([] if pinned else ["runtime.cpu_kernels=unpinned"])
    code = "import sys; from pipeline.tools.bench.kernels import measure; measure(sys.argv[1:])"
    child = subprocess.run(
        [sys.executable, "-c", code, bench.config_name, str(bench.store.root), str(bench.scratch), row, *overrides],
        capture_output=True,
        text=True,
        cwd=bench.scratch,
        env=env,
    )
    if child.returncode != 0:
        raise PipelineError(f"kernels/{row} child failed: {child.stderr[-800:]}")
    return 1 / float(child.stdout.split()[-1])


def bench_kernels(bench: Bench, wants: Callable[[str], bool]) -> list[Result]:
    from pipeline.tools.bench.attack import attack_case
    from pipeline.tools.bench.core import interleave, ratio_row
    from pipeline.tools.bench.train import train_case

    rows = []
    for row, prepare in (
        ("train-cae", lambda: train_case(bench, "cae")),
        ("attack", lambda: attack_case(bench, attack_name(bench.config))),
    ):
        if not wants(row):
            continue
        prepare()  # builds what the children read, in this process
        bench.log(f"bench: kernels/{row}: pinned and unpinned children, {bench.repeat} each")
        pinned, unpinned = interleave(
            [partial(child_seconds_per_image, bench, row, True), partial(child_seconds_per_image, bench, row, False)],
            bench.repeat,
        )
        name = row if row == "train-cae" else f"attack ({attack_name(bench.config)})"
        rows.append(
            ratio_row(
                f"kernels/{row}",
                "img/s",
                1 / pinned,
                1 / unpinned,
                f"{name}, compute alone, own process per side: runtime.cpu_kernels="
                f"{bench.config.runtime.cpu_kernels} / unpinned (the CPU's own kernels)",
                minimum=KERNELS_TARGET,
            )
        )
    return rows
