"""The contract between steps: artifact file names, their loaders and the task ids steps share.

A step reads another step's output only through this module; tools (``pipeline bench``, the README
renderer) use it too. Torch and h5py are imported inside the loaders, so planning stays fast.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.config import AttackConfig, VictimConfig
from pipeline.dag import Ref, Task, record_of
from pipeline.data.shards import ShardSet
from pipeline.errors import PipelineError
from pipeline.execute import planned_at
from pipeline.store import Artifact, sha256_file

# sample
SAMPLE_INDEX, SAMPLE_MANIFEST = "index.json", "manifest.json"
# train-victim
VICTIM_WEIGHTS, VICTIM_META = "victim.pt", "victim.json"
# attack
ADVERSARIAL = "adv.h5"
# train-cae, train-aae, train-convergence
MODEL_WEIGHTS, MODEL_META, HISTORY = "model.pt", "model.json", "history.csv"
CHECKPOINT = "checkpoint.pt"  # in the task's work directory, until the artifact is published
# evaluate
PER_IMAGE, EXAMPLES = "per_image.csv", "examples.h5"

# results (``results/<config>/``), written by tabulate, ablation-figures and convergence-figures, read by
# ``pipeline readme``
PROVENANCE, VICTIMS_TABLE, ATTACKS_TABLE = "provenance.json", "victims.csv", "attacks.csv"
TRAINING_SANITY, FIG_TRAINING = "training_sanity.csv", "fig_training.png"
FIG_DETECTION, FIG_RECOVERY = "fig6_detection.png", "fig7_recovery.png"
ABLATIONS, CONVERGENCE = "ablations", "convergence"  # the subfolders of ablation-figures and convergence-figures
FIG_LAMBDAS, FIG_DEPTHS = "fig4_lambdas", "fig5_depths"  # file stems in ABLATIONS, each followed by _<attack>
CONVERGENCE_SUMMARY, FIG_CONVERGENCE = "summary.csv", "fig_convergence"  # in CONVERGENCE; the figure: _<attack>

ADV_INPUT = "adv-"  # prefix of the input names under which a task reads the shards of one attack
CLEAN = "clean"  # the test set of clean images, beside the attacks


# ---------------------------------------------------------------- sample


def victim_split(role: str) -> str:
    """Name of the split a role's victim is trained on."""
    return f"{role}_victim"


def split_shards(sample: Artifact, split: str) -> ShardSet:
    """The shards of one split of a ``sample`` artifact, readable as one array."""
    index = json.loads(sample.file(SAMPLE_INDEX).read_text())
    if split not in index["splits"]:
        raise PipelineError(f"sample artifact {sample.path} has no split {split!r}")
    shards = index["splits"][split]["shards"]
    return ShardSet([sample.file(s["file"]) for s in shards], [s["count"] for s in shards])


def read_split(sample: Artifact, split: str, names: Sequence[str] = ("images",)) -> dict[str, np.ndarray]:
    """Every row of one split: ``images`` (uint8 N x 3 x S x S), ``labels`` (-1 when unlabelled)."""
    shards = split_shards(sample, split)
    return shards.read(0, len(shards), names)


def classes(sample: Artifact) -> list[str] | None:
    return json.loads(sample.file(SAMPLE_INDEX).read_text())["classes"]


def manifest_sha256(sample: Artifact) -> str:
    """The sha256 of the data manifest a ``sample`` artifact wrote (which images, from which files)."""
    return sample.manifest["files"][SAMPLE_MANIFEST]["sha256"]


# ---------------------------------------------------------------- victims


def victim_task_id(role: str, noise_seed: int | None = None) -> str:
    """The train-victim task of a role's victim, or of one of its ``victim.noise_seeds`` victims."""
    return role if noise_seed is None else f"{role}/v{noise_seed}"


#: a task's victim: its train-victim task id, or the weights file it is given (arch, num_classes, weights, sha256)
VictimPin = str | dict[str, Any]


def victim_task_parts(
    role: str, victim: VictimConfig, noise_seed: int | None = None
) -> tuple[VictimPin, dict[str, Ref]]:
    """The value (a task's ``victim`` field) and inputs that pin a role's victim (or its ``noise_seed``
    twin): its weights file, or its train-victim task."""
    if victim.weights is None:
        task_id = victim_task_id(role, noise_seed)
        return task_id, {"victim": Ref("train-victim", task_id)}
    path = Path(victim.weights).expanduser().absolute()
    digest = sha256_file(path) if path.is_file() else "missing"
    return {"arch": victim.arch, "num_classes": victim.num_classes, "weights": str(path), "sha256": digest}, {}


def load_victim(inputs: Mapping[str, Artifact], task_victim: VictimPin, device):
    """The victim a task was planned with (see ``victim_task_parts``), in eval mode."""
    from pipeline.victims import load_victim as load

    if isinstance(task_victim, dict):
        return load(task_victim["arch"], task_victim["num_classes"], Path(task_victim["weights"]), device)
    artifact = inputs["victim"]
    meta = json.loads(artifact.file(VICTIM_META).read_text())
    return load(meta["arch"], meta["num_classes"], artifact.file(VICTIM_WEIGHTS), device)


# ---------------------------------------------------------------- attacks


def shard_ranges(count: int, attack: str, cfg: AttackConfig) -> list[tuple[int, int]]:
    """The ``[start, stop)`` rows of a role attacked by one attack, shard by shard."""
    limits = cfg.limits_of(attack)
    total = min(count, limits.max_images or count)
    size = limits.shard_size or cfg.shard_size
    return [(start, min(start + size, total)) for start in range(0, total, size)]


def attack_task_id(role: str, attack: str, start: int, noise_seed: int | None = None) -> str:
    return f"{role}/{attack}/{start:06d}" + ("" if noise_seed is None else f"/v{noise_seed}")


def adversarial_refs(attack_tasks: Sequence[Task]) -> dict[tuple[str, str, int | None], dict[str, Ref]]:
    """Per (role, attack, victim noise seed; None: the role's own victim): the inputs naming every
    shard of that attack on that role, in row order."""
    from jobs.attack import AttackTask

    refs: dict[tuple[str, str, int | None], dict[str, Ref]] = {}
    for t in attack_tasks:
        shard = record_of(t, AttackTask)
        refs.setdefault((shard.role, shard.attack, shard.victim_seed), {})[f"{ADV_INPUT}{shard.start:06d}"] = Ref(
            "attack", t.id
        )
    return refs


def read_adversarial(
    inputs: Mapping[str, Artifact], names: Sequence[str] = ("images", "rows"), shards: Sequence[str] | None = None
) -> dict[str, np.ndarray]:
    """The adversarial shards among a task's inputs, concatenated in row order (see ``adversarial_paths``)."""
    from pipeline.data.shards import read_shard

    arrays = [read_shard(path, names) for path in adversarial_paths(inputs, shards)]
    return {name: np.concatenate([a[name] for a in arrays]) for name in names}


def adversarial_paths(inputs: Mapping[str, Artifact], shards: Sequence[str] | None = None) -> list[Path]:
    """The adversarial shard files of the inputs named ``shards`` (as ``adversarial_refs`` declares them,
    in row order); None: every input named as a shard (``pipeline bench``, which holds no task record)."""
    names = shards if shards is not None else sorted(name for name in inputs if name.startswith(ADV_INPUT))
    return [inputs[name].file(ADVERSARIAL) for name in names]


def unseen_pairs(attacks: Sequence[str], seed: int) -> dict[str, str]:
    """For each test attack, the training attack of the unseen protocol: a seeded random other one."""
    rng = np.random.default_rng(seed)
    pairs = {}
    for test in attacks:
        others = [a for a in attacks if a != test]
        pairs[test] = others[int(rng.integers(len(others)))] if others else test
    return pairs


# ---------------------------------------------------------------- recovery models


def seeded(task_id: str, seed: int) -> str:
    """A learned model's task id for one training seed (seed 0 keeps the plain id)."""
    return task_id if seed == 0 else f"{task_id}/s{seed}"


def row_id(method: str, row: str | None) -> str:
    """A table row: a method, or a method under one of its ``aae.variants``."""
    return method if row is None else f"{method}+{row}"


def train_task_id(row: str, attack: str, point: str | None, seed: int) -> str:
    """The train-aae task of one row's model for one training attack (and ablation point, seed)."""
    return seeded(f"{row}/{attack}" + (f"/{point}" if point else ""), seed)


def eval_task_id(
    row: str, train: str | None, test: str, point: str | None, seed: int | None, noise_seed: int | None = None
) -> str:
    task_id = (
        f"{row}/{train or '-'}/{test}"
        + (f"/{point}" if point else "")
        + ("" if noise_seed is None else f"/v{noise_seed}")
    )
    return task_id if seed is None else seeded(task_id, seed)


def save_model(out: Path, model, image_shape: Sequence[int], arch: Mapping[str, Any]) -> None:
    """Write a trained recovery model (weights and what rebuilds it) into an artifact directory."""
    import torch

    torch.save({k: v.cpu() for k, v in model.state_dict().items()}, out / MODEL_WEIGHTS)
    (out / MODEL_META).write_text(json.dumps({"image_shape": list(image_shape), "arch": dict(arch)}, indent=1))


def load_model(artifact: Artifact, device):
    """A trained recovery model from a train-cae / train-aae artifact, in eval mode."""
    import torch

    from pipeline.models import build_model

    meta = json.loads(artifact.file(MODEL_META).read_text())
    model = build_model(tuple(meta["image_shape"]), meta["arch"])
    try:
        model.load_state_dict(torch.load(artifact.file(MODEL_WEIGHTS), map_location="cpu", weights_only=True))
    except Exception as err:
        raise PipelineError(f"model file {artifact.file(MODEL_WEIGHTS)} cannot be loaded: {err}") from None
    return model.to(device).eval()


def init_seed(model: str, attack: str, seed: int) -> int:
    """The seed of a trained model's initial weights and batch order: its training seed, drawn apart
    for every model (table row or ``cae``) and training data, so no two rows or attacks share a start."""
    from pipeline.device import derived_seed

    return derived_seed("init", model, attack, seed)


def image_shape(sample_cfg) -> tuple[int, int, int]:
    return (3, sample_cfg.image_size, sample_cfg.image_size)


# ---------------------------------------------------------------- results


def results_dir(template: str, config_name: str) -> Path:
    return Path(template.format(name=config_name))


EXPORTED = ".exported"  # in each export's folder: the files its last export wrote, one per line


def export_tree(src: Path, dst: Path) -> None:
    """Copy the files of ``src`` into folder ``dst`` (staged beside it, then each moved in by an atomic
    rename), and remove the files the previous export into ``dst`` wrote (``dst/.exported``) that this one
    no longer has. Nothing else in ``dst`` is touched: another export's subfolder (``ablations/``), files
    put there by hand. One export per folder; a further export takes a subfolder of its own.

    A Slurm job of a superseded plan that runs late never overwrites newer results: a Slurm job's
    export records when its run was submitted (``planned_at``) in ``.<name>.planned`` beside ``dst``;
    a local export, planned now, always replaces, and moves such a record to now."""
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    submitted, stamp_path = planned_at(), dst.with_name(f".{dst.name}.planned")
    if submitted is None and not stamp_path.exists():
        _replace_tree(src, dst)
        return
    mine = time.time() if submitted is None else submitted
    with open(stamp_path, "a+") as stamp:
        fcntl.flock(stamp, fcntl.LOCK_EX)
        stamp.seek(0)
        theirs = _timestamp(stamp.read())
        if dst.exists() and theirs is not None and theirs > mine:
            print(
                f"warning: {dst} not replaced: it holds the export of a run submitted at {_iso(theirs)}, "
                f"later than this one ({_iso(mine)})",
                file=sys.stderr,
            )
            return
        _replace_tree(src, dst)
        stamp.seek(0)
        stamp.truncate()
        stamp.write(f"{mine!r} {_iso(mine)}\n")


def _replace_tree(src: Path, dst: Path) -> None:
    for stale in dst.parent.glob(f".{dst.name}.*-*"):  # left by a copy that was killed
        shutil.rmtree(stale, ignore_errors=True)
    tmp = dst.with_name(f".{dst.name}.tmp-{uuid.uuid4().hex[:8]}")
    shutil.copytree(src, tmp)
    files = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file() and p.name != EXPORTED)
    dst.mkdir(exist_ok=True)
    record = dst / EXPORTED
    previous = record.read_text().splitlines() if record.is_file() else []
    _write_record(tmp, record, sorted({*previous, *files}))  # a killed export is cleaned up by the next one
    for name in files:
        (dst / name).parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp / name, dst / name)
    for name in sorted(set(previous) - set(files)):
        _remove_exported(dst, name)
    _write_record(tmp, record, files)
    shutil.rmtree(tmp, ignore_errors=True)


def _write_record(tmp: Path, record: Path, names: Sequence[str]) -> None:
    (tmp / EXPORTED).write_text("".join(f"{name}\n" for name in names))
    os.replace(tmp / EXPORTED, record)


def _remove_exported(dst: Path, name: str) -> None:
    """Remove file ``dst/name`` (a name from ``dst/.exported``, never outside ``dst``) and the folders
    it leaves empty."""
    path = dst / name
    if dst.resolve() not in path.resolve().parents:
        return
    path.unlink(missing_ok=True)
    for folder in path.parents:
        if folder == dst or not folder.is_dir() or any(folder.iterdir()):
            break
        folder.rmdir()


def _timestamp(text: str) -> float | None:
    try:
        return float(text.split()[0])
    except (IndexError, ValueError):
        return None


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")
