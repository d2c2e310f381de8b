"""``pipeline bench``: the pipeline's own code measured against bare references on this machine.

Every ratio is measured in one process with the sides interleaved (the order rotates every
repetition) and medians taken, so the load other programs put on the machine weighs on all sides
alike. Measurements use a config's real artifacts; what is missing is built with the local runner
first. See ``benchmarks/README.md``.
"""

from __future__ import annotations

import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

import pipeline
from jobs import artifacts
from pipeline.accounting import mebibytes
from pipeline.config import ATTACKED_ROLES, Config, load_config
from pipeline.dag import Plan, Planned, all_tasks, build_plan, discover
from pipeline.data.shards import ShardSet
from pipeline.errors import PipelineError
from pipeline.execute import execute
from pipeline.kernels import pin
from pipeline.methods import METHODS
from pipeline.runners.local.runner import run_plan
from pipeline.store import Artifact, Store
from pipeline.tools.bench_kernels import bench_kernels

THROUGHPUT_TARGET = 0.95
LATENCY_TARGET_S = 2.0
TRAIN_MIN_IMAGES = 2048  # images per timed training run (whole epochs, at least one)
ATTACK_IMAGES = {"fgsm": 250, "bim": 250, "pgd": 64, "jsma": 2, "cw": 8}  # per attacked shard (at most
# the config's shard); the cheap attacks get more, so per-task costs weigh as in a real shard
ATTACK_DEFAULT_IMAGES = 16
MEMORY_BUILD_LIMIT = 25  # memory/<step> builds at most this many missing upstream tasks
GROUPS = ("train", "attack", "shard-write", "hdf5-read", "latency", "memory", "parallel", "kernels")
REPO = Path(pipeline.__file__).resolve().parent.parent


@dataclass
class Result:
    """One row of the table. ``passed`` is None when nothing was measured."""

    benchmark: str
    ours: float | None
    reference: float | None
    unit: str
    ratio: float | None
    target: str
    passed: bool | None
    note: str = ""


@dataclass
class Bench:
    """What the benchmarks share: the config, the artifact store, how often to repeat, a log."""

    config_name: str
    config: Config
    overrides: list[str]
    store: Store
    repeat: int
    log: Callable[[str], None]
    scratch: Path  # removed at the end
    cache: dict[str, Any] = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        from pipeline.device import select_device

        return select_device(self.config.runtime)


# ---------------------------------------------------------------- measuring


def interleave(sides: Sequence[Callable[[], float]], repeat: int) -> list[float]:
    """Median seconds of each side (each returns its own timed seconds), run ``repeat`` times
    each, the order rotating every repetition."""
    times: list[list[float]] = [[] for _ in sides]
    for rep in range(repeat):
        for i in range(len(sides)):
            side = (i + rep) % len(sides)
            times[side].append(sides[side]())
    return [statistics.median(t) for t in times]


def ratio_row(
    name: str, unit: str, ours: float, reference: float, note: str = "", minimum: float = THROUGHPUT_TARGET
) -> Result:
    """A row whose ratio ours / reference passes at ``minimum`` or above."""
    ratio = ours / reference
    return Result(name, ours, reference, unit, ratio, f">= {minimum:g}", ratio >= minimum, note)


def skipped_row(name: str, why: str) -> Result:
    return Result(name, None, None, "", None, "", None, why)


# ---------------------------------------------------------------- plans and artifacts


def full_plan(config: Config, store: Store, force: Sequence[str] = ()) -> Plan:
    """Every task of the config (main and ablation groups)."""
    groups = {t.group for tasks in all_tasks(config, discover()).values() for t in tasks}
    return build_plan(config, store, ["all" if g == "main" else g for g in sorted(groups)], force)


def closure(plan: Plan, roots: Sequence[tuple[str, str]]) -> Plan:
    """The sub-plan of the tasks ``roots`` ((step, key) pairs) and everything they read."""
    by_key = {(p.task.step, p.key): p for p in plan.tasks}
    keep: set[tuple[str, str]] = set()
    stack = list(roots)
    while stack:
        ref = stack.pop()
        if ref not in keep:
            keep.add(ref)
            stack.extend(by_key[ref].inputs.values())
    return Plan([p for p in plan.tasks if (p.task.step, p.key) in keep], plan.steps)


def representative(plan: Plan, step: str, match: Callable[[Planned], bool] = lambda p: True) -> Planned:
    """The first task of ``step`` in plan order that matches, preferring the main group."""
    found = [p for p in plan.tasks if p.task.step == step and match(p)]
    if not found:
        raise PipelineError(f"the plan has no {step} task to benchmark")
    return next((p for p in found if p.task.group == "main"), found[0])


def build_upstream(bench: Bench, config: Config, planned: Planned) -> None:
    """Build, with the local runner, whatever ``planned`` reads that is not complete yet."""
    plan = full_plan(config, bench.store)
    run_plan(closure(plan, list(planned.inputs.values())), bench.store, config, echo=bench.log)


def inputs_of(bench: Bench, planned: Planned) -> dict[str, Artifact]:
    return {name: bench.store.open(step, key) for name, (step, key) in planned.inputs.items()}


# ---------------------------------------------------------------- train


@dataclass
class TrainCase:
    """One model trained as its step sets it up: the data as the step holds it in memory."""

    kind: str  # cae, or the trained method
    loss: str
    section: dict[str, Any]
    image_shape: tuple[int, int, int]
    data: Tensor  # uint8 clean images, or adversarial images in their storage dtype
    frozen: dict[str, nn.Module]

    def setup(self, device: torch.device):
        """The model, loss and optimiser settings the step trains (``jobs._training.setup``), past
        the AAE's warm-up (the full eq. 5-6 objective)."""
        from jobs._training import setup

        section = {**self.section, "warmup_epochs": 0} if "warmup_epochs" in self.section else self.section
        return setup(self.loss, section, 0, self.image_shape, self.frozen, device, len(self.data))


def stamped(loss: Callable) -> tuple[Callable, list[float]]:
    """``loss`` that records the time of every call (a call starts a training step)."""
    calls: list[float] = []

    def wrapped(batch: dict[str, Tensor], epoch: int) -> dict[str, Tensor]:
        calls.append(time.perf_counter())
        return loss(batch, epoch)

    return wrapped, calls


def train_epochs(n: int) -> int:
    return max(1, math.ceil(TRAIN_MIN_IMAGES / n))


def timed_images(case: TrainCase) -> int:
    """Images trained on after the first step, in one timed run."""
    return train_epochs(len(case.data)) * len(case.data) - min(case.section["optim"]["batch_size"], len(case.data))


def train_ours(case: TrainCase, device: torch.device, workdir: Path, final_save_only: bool = False) -> float:
    """Seconds of ``pipeline.training.train`` after its first step, with the configured checkpoints
    (or, with ``final_save_only``, only the one a run saves when it ends)."""
    from pipeline.training import train

    run = case.setup(device)
    loss, calls = stamped(run.loss)
    epochs = train_epochs(len(case.data))
    spec = replace(run.spec, epochs=epochs, checkpoint_every=epochs if final_save_only else run.spec.checkpoint_every)
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        train({"model": run.model}, loss, {"x": case.data}, spec, Path(tmp) / artifacts.CHECKPOINT, device)
        return time.perf_counter() - calls[1]


def train_bare(case: TrainCase, device: torch.device) -> float:
    """Seconds after the first step of a plain loop: float tensors in memory, shuffled batches, the
    same loss, SGD with momentum, weight decay and lr milestones, gradient clipping as configured."""
    run = case.setup(device)
    spec, model = run.spec, run.model.to(device).train()
    loss, calls = stamped(run.loss)
    x = case.data.to(device).float()
    x = x / 255 if case.data.dtype == torch.uint8 else x
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay)
    schedule = torch.optim.lr_scheduler.MultiStepLR(optimizer, spec.milestones, spec.gamma)
    for epoch in range(train_epochs(len(x))):
        for idx in torch.randperm(len(x)).split(spec.batch_size):
            terms = loss({"x": x[idx]}, epoch)
            optimizer.zero_grad(set_to_none=True)
            terms["total"].backward()
            if spec.clip_grad_norm is not None:
                nn.utils.clip_grad_norm_(params, spec.clip_grad_norm)
            optimizer.step()
        schedule.step()
    return time.perf_counter() - calls[1]


def train_planned(bench: Bench, kind: str) -> Planned:
    """The task that trains model ``kind``: train-cae's main task, or the first AAE of train-aae."""
    plan = full_plan(bench.config, bench.store)
    if kind == "cae":
        return representative(plan, "train-cae")
    return representative(plan, "train-aae", lambda p: METHODS[p.task.config["method"]].training.with_cae)


def cae_case(bench: Bench) -> TrainCase:
    """The train-cae task's model and clean uint8 images, as the step loads them."""
    planned = train_planned(bench, "cae")
    build_upstream(bench, bench.config, planned)
    images = artifacts.read_split(inputs_of(bench, planned)["data"], "cae_train")["images"]
    c = planned.task.config
    return TrainCase("cae", "vae", c["cae"], tuple(c["image_shape"]), torch.from_numpy(images), {})


def aae_case(bench: Bench) -> TrainCase:
    """The first train-aae task of the AAE: its adversarial shards as stored, and the frozen CAE."""
    from pipeline.losses import freeze

    planned = train_planned(bench, "aae")
    build_upstream(bench, bench.config, planned)
    inputs = inputs_of(bench, planned)
    images = artifacts.read_adversarial(inputs, ["images"])["images"]
    c = planned.task.config
    frozen = {"cae": freeze(artifacts.load_model(inputs["cae"], bench.device))}
    return TrainCase(c["method"], c["loss"], c["aae"], tuple(c["image_shape"]), torch.from_numpy(images), frozen)


def train_case(bench: Bench, kind: str) -> TrainCase:
    """The case of model ``kind`` (cae, aae), loaded once."""
    key = f"case/{kind}"
    if key not in bench.cache:
        bench.cache[key] = {"cae": cae_case, "aae": aae_case}[kind](bench)
    return bench.cache[key]


def train_rates(bench: Bench, kind: str) -> tuple[float, float, float]:
    """Median images/s of ours, of the bare loop, and of ours saving only one checkpoint at the end
    (measured once, then cached)."""
    key = f"rates/{kind}"
    if key not in bench.cache:
        case, device, work = train_case(bench, kind), bench.device, bench.store.root
        bench.log(
            f"bench: train/{kind}: {train_epochs(len(case.data))} epoch(s) of {len(case.data)} images "
            f"x {bench.repeat} on each of 3 sides"
        )
        train_bare(case, device)  # warm-up: one-time costs of this process stay out of all sides
        seconds = interleave(
            [
                lambda: train_ours(case, device, work),
                lambda: train_bare(case, device),
                lambda: train_ours(case, device, work, final_save_only=True),
            ],
            bench.repeat,
        )
        bench.cache[key] = tuple(timed_images(case) / s for s in seconds)
    return bench.cache[key]


def train_note(case: TrainCase, ours: float, bare: float, one_save: float) -> str:
    """What one timed run is, and what its periodic checkpoints cost."""
    epochs, every = train_epochs(len(case.data)), case.section["optim"]["checkpoint_every"]
    share = 1 - ours / one_save
    dtype = str(case.data.dtype).removeprefix("torch.")
    return (
        f"{epochs} ep x {len(case.data)} img {dtype}, first step excluded; checkpoints every {every} ep "
        f"cost {share:.0%} of ours (ratio with one final save: {one_save / bare:.2f})"
    )


def bench_train(bench: Bench, wants: Callable[[str], bool]) -> list[Result]:
    rows = []
    for kind in ("cae", "aae"):
        if wants(kind):
            ours, bare, one_save = train_rates(bench, kind)
            note = train_note(train_case(bench, kind), ours, bare, one_save)
            note += "; CAE frozen, post-warm-up loss" if kind == "aae" else ""
            rows.append(ratio_row(f"train/{kind}", "img/s", ours, bare, note))
    return rows


# ---------------------------------------------------------------- attack


def attack_overrides(config: Config) -> list[str]:
    """``--set`` values that make each attack's first shard small (never fewer attack steps)."""
    role = getattr(config.sample.roles, ATTACKED_ROLES[0])
    out = []
    for name in config.attack.names:
        start, stop = artifacts.shard_ranges(role.count, name, config.attack)[0]
        images = ATTACK_IMAGES.get(name, ATTACK_DEFAULT_IMAGES)
        if stop - start > images:
            out.append(f"attack.limits.{name}.shard_size={images}")
    return out


@dataclass
class AttackCase:
    """One attack task, forced, and what calling the attack directly needs."""

    name: str
    planned: Planned
    config: Config
    victim: nn.Module
    clean: Tensor


def attack_case(bench: Bench, name: str) -> AttackCase:
    config = load_config(bench.config_name, bench.overrides + attack_overrides(bench.config))
    role = ATTACKED_ROLES[0]
    planned = full_plan(config, bench.store, force=["attack"]).find("attack", artifacts.attack_task_id(role, name, 0))
    build_upstream(bench, config, planned)
    inputs, c = inputs_of(bench, planned), planned.task.config
    victim = artifacts.load_victim(inputs, c["victim"], bench.device)
    images = artifacts.split_shards(inputs["clean"], role).read(c["start"], c["stop"], ["images"])["images"]
    clean = torch.from_numpy(images).float() / 255
    return AttackCase(name, planned, config, victim, clean)


def attack_step(bench: Bench, case: AttackCase, parts: dict[str, list[float]]) -> float:
    """Seconds of the whole forced task: input checks, the attack, predictions, HDF5, publishing. Its
    parts go to ``parts``: the phases the step times itself (its manifest's ``summary.seconds``), what
    else ran inside the step, and what ``execute`` adds around it (input checks, publishing, manifest)."""
    start = time.perf_counter()
    execute(case.planned, bench.store, case.config)
    seconds = time.perf_counter() - start
    manifest = bench.store.open("attack", case.planned.key).manifest
    phases = manifest["summary"]["seconds"]
    for name, value in {
        **phases,
        "rest of the step": manifest["seconds"] - sum(phases.values()),
        "execute": seconds - manifest["seconds"],
    }.items():
        parts.setdefault(name, []).append(value)
    return seconds


def attack_direct(bench: Bench, case: AttackCase) -> float:
    """Seconds of a plain loop doing the task's compute on in-memory tensors: per batch, the victim's
    labels, the registry's attack, the victim's prediction on the result."""
    from pipeline.attacks.catalog import build_attack
    from pipeline.device import derived_seed

    c, device, victim = case.planned.task.config, bench.device, case.victim
    attack = build_attack(case.name, victim, c["params"])
    start = time.perf_counter()
    for lo in range(0, len(case.clean), c["batch_size"]):
        x = case.clean[lo : lo + c["batch_size"]].to(device)
        with torch.no_grad():
            labels = victim(x).argmax(1)
        torch.manual_seed(derived_seed(c["seed"], c["role"], c["attack"], c["start"] + lo))
        adv = attack(x, labels)
        with torch.no_grad():
            victim(adv).argmax(1)
    return time.perf_counter() - start


def attack_note(images: int, step_s: float, parts: dict[str, list[float]]) -> str:
    """Where the step's time goes, in ms (medians of each part over the repetitions), largest first."""
    medians = sorted(((statistics.median(v), name) for name, v in parts.items()), reverse=True)
    pieces = [f"{name} {seconds * 1e3:.0f}" for seconds, name in medians]
    return f"{images} img; step {step_s * 1e3:.0f} ms = " + ", ".join(pieces)


def bench_attacks(bench: Bench, wants: Callable[[str], bool]) -> list[Result]:
    rows = []
    for name in bench.config.attack.names:
        if not wants(name):
            continue
        case = attack_case(bench, name)
        bench.log(f"bench: attack/{name}: task {case.planned.label}, {len(case.clean)} image(s)")
        attack_direct(bench, case)  # warm-up
        parts: dict[str, list[float]] = {}
        step_s, direct_s = interleave(
            [lambda: attack_step(bench, case, parts), lambda: attack_direct(bench, case)], bench.repeat
        )
        n = len(case.clean)
        rows.append(ratio_row(f"attack/{name}", "img/s", n / step_s, n / direct_s, attack_note(n, step_s, parts)))
    return rows


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


def bench_hdf5(bench: Bench, wants: Callable[[str], bool]) -> list[Result]:
    rows = []
    for kind in ("cae", "aae"):
        if not wants(kind):
            continue
        shards, what = shard_set(bench, kind)
        images = shards.read(0, len(shards), ["images"])["images"]
        megabytes = images.nbytes / 1e6

        def read() -> float:
            start = time.perf_counter()
            shards.read(0, len(shards), ["images"])
            return time.perf_counter() - start

        def in_memory() -> float:
            start = time.perf_counter()
            images[0 : len(images)].copy()
            return time.perf_counter() - start

        read_s, memory_s = interleave([read, in_memory], bench.repeat)
        train_ips = train_rates(bench, kind)[0]
        consumed = train_ips * images[0].nbytes / 1e6
        note = (
            f"ratio = HDF5 read MB/s / MB/s train/{kind} consumes ({train_ips:.0f} img/s x "
            f"{images[0].nbytes} B); {what}, {len(images)} img {images.dtype}, page cache warm; "
            f"slicing in memory: {megabytes / memory_s:.0f} MB/s"
        )
        rows.append(ratio_row(f"hdf5-read/{kind}", "MB/s", megabytes / read_s, consumed, note, minimum=1))
    return rows


# ---------------------------------------------------------------- latency


def cli_command() -> list[str]:
    """The installed ``pipeline`` command of this interpreter."""
    script = Path(sys.executable).parent / "pipeline"
    return [str(script)] if script.exists() else [sys.executable, "-m", "pipeline.cli"]


def wall_seconds(argv: Sequence[str], expect: str = "") -> float:
    """Wall time of a command; it must succeed (and print ``expect``)."""
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, cwd=REPO)
    seconds = time.perf_counter() - start
    if done.returncode != 0 or expect not in done.stdout:
        raise PipelineError(
            f"`{' '.join(argv)}` failed (exit {done.returncode}): {(done.stderr or done.stdout).strip()[-500:]}"
        )
    return seconds


def latency_row(name: str, seconds: list[float], note: str) -> Result:
    median = statistics.median(seconds)
    return Result(name, median, None, "s", None, f"< {LATENCY_TARGET_S:g} s", median < LATENCY_TARGET_S, note)


def latency_dry_run(bench: Bench) -> Result:
    argv = ["submit", "all", "--dry-run", "--config", "paper", "--profile", str(REPO / "slurm" / "v100.yaml")]
    seconds = []
    for rep in range(bench.repeat):
        root = bench.scratch / f"dry-run-{rep}"
        seconds.append(wall_seconds([*cli_command(), "--artifacts", str(root), *argv]))
    return latency_row("latency/dry-run", seconds, "paper config, empty artifact root (every task pending), subprocess")


def fabricate_complete(root: Path, config: Config) -> int:
    """Publish a placeholder artifact (manifest only) for every planned task; returns how many."""
    store = Store(root)
    plan = build_plan(config, store, ["all"])
    for planned in plan.tasks:
        with store.staging(planned.task.step, planned.key) as tmp:
            store.publish(tmp, planned.task.step, planned.key, {"task": planned.task.id, "placeholder": True})
    return len(plan.tasks)


def latency_noop(bench: Bench) -> Result:
    root = bench.scratch / "noop"
    count = fabricate_complete(root, load_config("paper"))
    argv = [*cli_command(), "--artifacts", str(root), "run", "all", "--config", "paper"]
    seconds = [wall_seconds(argv, expect="nothing to do") for _ in range(bench.repeat)]
    return latency_row(
        "latency/noop",
        seconds,
        f"paper config, {count} placeholder artifacts (empty manifests, not real outputs), subprocess",
    )


def bench_latency(bench: Bench, wants: Callable[[str], bool]) -> list[Result]:
    runs = {"dry-run": latency_dry_run, "noop": latency_noop}
    return [run(bench) for name, run in runs.items() if wants(name)]


# ---------------------------------------------------------------- memory


def run_task(argv: Sequence[str]) -> None:
    """Child of memory/<step>: run one task, forced, as ``pipeline run STEP --force STEP`` would, then
    print this process's peak resident memory (``VmHWM``, KiB). ``argv``: config, artifact root, step,
    task id, ``--set`` overrides."""
    config_name, root, step, task_id, *overrides = argv
    config = load_config(config_name, overrides)
    store = Store(Path(root))
    execute(full_plan(config, store, force=[step]).find(step, task_id), store, config)
    print(re.search(r"^VmHWM:\s*(\d+) kB", Path("/proc/self/status").read_text(), re.M).group(1))


def peak_rss_mib(argv: Sequence[str], cwd: Path) -> float:
    """Peak resident memory of a child process that prints its own ``VmHWM`` last, in MiB; it must
    succeed. (``wait4``'s ``ru_maxrss`` would not do: it counts the parent's memory at fork time.)"""
    child = subprocess.run(argv, capture_output=True, text=True, cwd=cwd)
    if child.returncode != 0:
        raise PipelineError(f"memory child failed: {child.stderr[-800:]}")
    return int(child.stdout.split()[-1]) / 1024


def bench_memory(bench: Bench, wants: Callable[[str], bool]) -> list[Result]:
    rows = []
    plan = full_plan(bench.config, bench.store)
    for name, step in plan.steps.items():
        if not wants(name):
            continue
        planned = representative(plan, name)
        missing = closure(plan, list(planned.inputs.values())).pending()
        if len(missing) > MEMORY_BUILD_LIMIT:
            rows.append(
                skipped_row(
                    f"memory/{name}",
                    f"{len(missing)} upstream tasks missing (> "
                    f"{MEMORY_BUILD_LIMIT}); run `pipeline run all` on --artifacts first",
                )
            )
            continue
        build_upstream(bench, bench.config, planned)
        bench.log(f"bench: memory/{name}: {planned.label} in a child process")
        code = "import sys; from pipeline.tools.bench import run_task; run_task(sys.argv[1:])"
        # in scratch, so that results/ written by the table and figure steps stays out of the checkout
        peak = peak_rss_mib(
            [
                sys.executable,
                "-c",
                code,
                bench.config_name,
                str(bench.store.root),
                name,
                planned.task.id,
                *bench.overrides,
            ],
            cwd=bench.scratch,
        )
        limit = mebibytes(step.resources.mem)
        rows.append(
            Result(
                f"memory/{name}",
                peak,
                limit,
                "MiB",
                peak / limit,
                "< 1",
                peak < limit,
                f"peak RSS of {planned.label} (forced, own process) / the step's declared mem",
            )
        )
    return rows


# ---------------------------------------------------------------- parallel

PARALLEL_TARGET = 1.6  # speed-up of -j 2 over -j 1 on two cores


def smoke_run_seconds(bench: Bench, jobs: int, rep: int) -> float:
    """Wall time of ``pipeline run all --config smoke -j JOBS`` (subprocess, one torch thread per task)
    in a fresh artifact root and working directory, so that nothing writes into the checkout."""
    cwd = bench.scratch / f"parallel-j{jobs}-{rep}"
    cwd.mkdir()
    argv = [
        *cli_command(),
        "--artifacts",
        str(cwd / "artifacts"),
        "run",
        "all",
        "--config",
        "smoke",
        "-j",
        str(jobs),
        "--set",
        f"sample.manifest_dir={cwd / 'data_manifests'}",
        "--set",
        "runtime.threads=1",
    ]
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, cwd=cwd)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise PipelineError(f"`{' '.join(argv)}` failed (exit {done.returncode}): {done.stderr.strip()[-500:]}")
    shutil.rmtree(cwd, ignore_errors=True)
    return seconds


def bench_parallel(bench: Bench, wants: Callable[[str], bool]) -> list[Result]:
    if not wants("smoke-j2"):
        return []
    cores = len(os.sched_getaffinity(0))
    if cores < 2:
        return [skipped_row("parallel/smoke-j2", f"{cores} usable core: -j 2 needs two")]
    bench.log("bench: parallel/smoke-j2: pipeline run all --config smoke, -j 1 and -j 2 interleaved")
    reps = iter(range(2 * bench.repeat))
    one, two = interleave(
        [lambda: smoke_run_seconds(bench, 1, next(reps)), lambda: smoke_run_seconds(bench, 2, next(reps))], bench.repeat
    )
    speedup = one / two
    return [
        Result(
            "parallel/smoke-j2",
            two,
            one,
            "s",
            speedup,
            f">= {PARALLEL_TARGET:g}",
            speedup >= PARALLEL_TARGET,
            "wall s of `run all --config smoke` from an empty root (subprocess, 1 torch thread per task): "
            "ours -j 2, reference -j 1; ratio = speed-up (-j 1 s / -j 2 s)",
        )
    ]


# ---------------------------------------------------------------- the whole run


def machine() -> dict[str, Any]:
    """CPU model, cores, torch version and threads, the device the config selects."""
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
    return {
        "cpu": model.group(1).strip() if model else platform.processor() or "unknown",
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def selection(only: Sequence[str]) -> dict[str, Callable[[str], bool]]:
    """Per group, which of its rows to run: ``--only attack`` runs the group, ``attack/fgsm`` one row."""
    if not only:
        return {group: lambda item: True for group in GROUPS}
    chosen: dict[str, set[str] | None] = {}
    for name in only:
        group, _, item = name.partition("/")
        if group not in GROUPS:
            raise PipelineError(f"--only {name!r}: unknown benchmark (groups: {', '.join(GROUPS)})")
        if not item or chosen.get(group, set()) is None:
            chosen[group] = None
        else:
            chosen.setdefault(group, set()).add(item)
    return {group: (lambda item, items=items: items is None or item in items) for group, items in chosen.items()}


BENCHMARKS: dict[str, Callable[[Bench, Callable[[str], bool]], list[Result]]] = {
    "train": bench_train,
    "attack": bench_attacks,
    "shard-write": bench_shard_write,
    "hdf5-read": bench_hdf5,
    "latency": bench_latency,
    "memory": bench_memory,
    "parallel": bench_parallel,
    "kernels": bench_kernels,
}


def bench_overrides(config_name: str, scratch: Path) -> list[str]:
    """Runtime settings of every measurement (none is part of an artifact key): the sample step's
    manifest copies go to scratch, not into the checkout; one torch thread unless the config sets
    ``runtime.threads`` (on a shared machine, OpenMP threads stall on each other and timings then
    vary tenfold)."""
    threads = [] if load_config(config_name).runtime.threads else ["runtime.threads=1"]
    return [f"sample.manifest_dir={scratch / 'data_manifests'}", *threads]


def run_benchmarks(
    config_name: str, artifacts: Path | None, only: Sequence[str], repeat: int, log: Callable[[str], None]
) -> tuple[dict[str, Any], list[Result]]:
    """Run the selected benchmarks; returns the machine description and the result rows."""
    wanted = selection(only)
    if config_name.endswith((".yaml", ".yml")) or "/" in config_name:  # a file: children run elsewhere
        config_name = str(Path(config_name).absolute())
    scratch = Path(tempfile.mkdtemp(prefix="pipeline-bench-"))
    try:
        overrides = bench_overrides(config_name, scratch)
        config = load_config(config_name, overrides)
        pin(config.runtime.cpu_kernels)  # before torch computes: the kernels every task then checks for
        store = Store(artifacts or scratch / "artifacts")
        store.root.mkdir(parents=True, exist_ok=True)
        bench = Bench(config_name, config, overrides, store, repeat, log, scratch)
        device = bench.device  # sets the thread count
        info = {**machine(), "device": str(device), "config": config_name, "artifacts": str(store.root)}
        rows = [row for group, run in BENCHMARKS.items() if group in wanted for row in run(bench, wanted[group])]
        for name in set(only) - {r.benchmark for r in rows} - set(GROUPS):
            log(f"bench: no benchmark named {name!r}")
        return info, rows
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
