"""``attack/<name>``: the forced attack task against a direct loop of the same attack."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
from torch import Tensor, nn

from jobs import artifacts
from pipeline.config import ATTACKED_ROLES, Config, load_config
from pipeline.dag import Planned
from pipeline.execute import execute
from pipeline.tools.bench.core import Bench, Result, build_upstream, full_plan, inputs_of, interleave, ratio_row

ATTACK_IMAGES = {"fgsm": 250, "bim": 250, "pgd": 64, "jsma": 2, "cw": 8}  # per attacked shard (at most
# the config's shard); the cheap attacks get more, so per-task costs weigh as in a real shard
ATTACK_DEFAULT_IMAGES = 16


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
            [partial(attack_step, bench, case, parts), partial(attack_direct, bench, case)], bench.repeat
        )
        n = len(case.clean)
        rows.append(ratio_row(f"attack/{name}", "img/s", n / step_s, n / direct_s, attack_note(n, step_s, parts)))
    return rows
