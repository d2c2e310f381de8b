"""Bad and hostile inputs: each ends with exactly one stderr line ``error: ...`` naming the file, key
or value, and leaves the artifact root as it was (every path and sha256; lock files aside).

All cases share one copy of the reference root, so "unchanged" is checked against a full,
realistic root: the failing task's inputs are there, only its own output must not appear.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from tests.conftest import photo_crops, write_cifar_batch
from tests.faults._harness import diff, pipeline, snapshot

pytestmark = pytest.mark.faults


@pytest.fixture(scope="module")
def shared(reference, tmp_path_factory):
    """A copy of the reference root, the config, and a folder for the inputs the cases make."""
    base = tmp_path_factory.mktemp("bad-inputs")
    return {
        "root": reference.clone(base / "artifacts"),
        "cwd": base,
        "config": str(reference.config),
        "inputs": base / "inputs",
        "reference": reference,
    }


def refused(shared, fault_log, category: str, args: list[str], *fragments: str) -> str:
    """``pipeline ARGS`` fails with one ``error:`` line holding ``fragments``; the root is unchanged."""
    root = shared["root"]
    before = snapshot(root)
    result = pipeline(shared["cwd"], root, *args)
    lines = result.stderr.strip().splitlines()
    clear = (
        result.returncode != 0
        and len(lines) == 1
        and lines[0].startswith("error: ")
        and all(f in lines[0] for f in fragments)
    )
    changed = diff(before, snapshot(root))
    fault_log(
        category,
        survived=clear and not changed,
        lost=sum(c.startswith(("-", "~")) for c in changed),
        note="one 'error:' line naming it; artifact root unchanged",
    )
    assert clear, f"rc={result.returncode}, wanted {fragments}:\n{result.stderr[-3000:]}"
    assert not changed, changed
    return lines[0]


def _run(shared, step: str, *sets: str) -> list[str]:
    return ["run", step, "--config", shared["config"], *[a for s in sets for a in ("--set", s)]]


# --- datasets -------------------------------------------------------------------------------------


def _image_dir(shared, name: str, bad: tuple[str, bytes] | None, good: int = 5) -> Path:
    folder = shared["inputs"] / name
    folder.mkdir(parents=True)
    for i, crop in enumerate(photo_crops(good, 40, seed=7)):
        Image.fromarray(crop).save(folder / f"img{i}.{'png' if i % 2 else 'jpg'}")
    if bad is not None:
        (folder / bad[0]).write_bytes(bad[1])
    return folder


def _bad_images(folder: Path) -> dict[str, tuple[str, bytes]]:
    jpeg, png = (folder / "img0.jpg").read_bytes(), bytearray((folder / "img1.png").read_bytes())
    corrupt_png = bytearray(png)
    start = corrupt_png.index(b"IDAT") + 8
    for i in range(start, start + 64):
        corrupt_png[i] ^= 0x5A
    huge = folder / "huge.png"
    Image.new("1", (10_000, 10_000)).save(huge)
    return {
        "truncated JPEG": ("cut.jpg", jpeg[:300]),
        "corrupt JPEG": ("junk.jpg", jpeg[:4] + bytes(np.random.default_rng(1).integers(0, 256, 2000, np.uint8))),
        "truncated PNG": ("cut.png", bytes(png[: len(png) * 6 // 10])),
        "corrupt PNG": ("junk.png", bytes(corrupt_png)),
        "zero-byte image": ("empty.jpg", b""),
        "10,000 x 10,000 image": ("huge.png", huge.read_bytes()),
    }


def test_bad_image_files(shared, fault_log):
    source = _image_dir(shared, "good", None)
    for i, (what, (name, data)) in enumerate(_bad_images(source).items()):
        folder = _image_dir(shared, f"bad{i}", (name, data))
        fragments = [str(folder / name)] + (["10000x10000", "over the limit"] if "10,000" in what else [])
        refused(
            shared,
            fault_log,
            "bad input: image file",
            _run(
                shared,
                "sample",
                "sample.datasets.photos.source=coco",
                f"sample.datasets.photos.root={folder}",
                "sample.roles.cae_train.count=6",
            ),
            *fragments,
        )


def test_bad_dataset_directories(shared, fault_log):
    missing, empty = shared["inputs"] / "no-such-dir", shared["inputs"] / "empty"
    empty.mkdir(parents=True)
    five = _image_dir(shared, "five", None)
    coco = "sample.datasets.photos.source=coco"
    refused(
        shared,
        fault_log,
        "bad input: dataset",
        _run(shared, "sample", coco, f"sample.datasets.photos.root={missing}"),
        str(missing),
        "does not exist",
    )
    refused(
        shared,
        fault_log,
        "bad input: dataset",
        _run(shared, "sample", coco, f"sample.datasets.photos.root={empty}"),
        str(empty),
        "has 0 images",
    )
    refused(
        shared,
        fault_log,
        "bad input: dataset",
        _run(shared, "sample", coco, f"sample.datasets.photos.root={five}", "sample.roles.cae_train.count=6"),
        str(five),
        "has 5 images",
        "cae_train 6",
    )
    cifar = shared["inputs"] / "cifar-10-batches-py"
    cifar.mkdir()
    write_cifar_batch(cifar / "data_batch_1", 4, seed=2, keys=("labels",))
    refused(
        shared,
        fault_log,
        "bad input: dataset",
        _run(shared, "sample", "sample.datasets.fashion.source=cifar10", f"sample.datasets.fashion.root={cifar}"),
        str(cifar / "data_batch_1"),
        "has no key 'data'",
    )


@pytest.mark.parametrize("entry", ["../../../../etc/passwd", "/etc/passwd"])
def test_manifest_entry_outside_the_dataset_root(shared, fault_log, entry):
    manifest = json.loads((shared["reference"].cwd / "data_manifests" / "smoke" / "photos.json").read_text())
    manifest["splits"]["cae_train"][3]["file"] = entry
    manifest["files"][entry] = "0" * 64
    evil = shared["inputs"] / f"evil-{len(entry)}.json"
    evil.parent.mkdir(parents=True, exist_ok=True)
    evil.write_text(json.dumps(manifest))
    refused(
        shared,
        fault_log,
        "bad input: manifest",
        _run(shared, "sample", f"sample.datasets.photos.manifest={evil}"),
        str(evil),
        repr(entry),
        "points outside the dataset root",
    )


# --- config ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "setting,fragments",
    [
        ("sample.shard_sise=3", ["sample.shard_sise", "shard_size"]),
        ("sample.image_size=big", ["sample.image_size", "'big'"]),
        ("attack.names=[fgsm,nosuch]", ["attack.names", "nosuch"]),
        ("attack.params.fgsm.eps=-0.1", ["attack.params.fgsm.eps", "-0.1"]),
        ("attack.params.pgd.steps=-3", ["attack.params.pgd.steps", "-3"]),
        ("sample.seed=$(touch /tmp/PWNED-faults)", ["sample.seed", "$(touch /tmp/PWNED-faults)"]),
    ],
    ids=["unknown-key", "bad-type", "unknown-attack", "negative-eps", "negative-steps", "shell-in-value"],
)
def test_bad_config_values(shared, fault_log, setting, fragments):
    refused(shared, fault_log, "bad input: config value", _run(shared, "all", setting), *fragments)
    assert not Path("/tmp/PWNED-faults").exists()


def test_zero_byte_config_file(shared, fault_log):
    empty = shared["inputs"] / "empty.yaml"
    empty.parent.mkdir(parents=True, exist_ok=True)
    empty.write_bytes(b"")
    refused(shared, fault_log, "bad input: config value", ["run", "all", "--config", str(empty)], str(empty))


# --- victim weights -------------------------------------------------------------------------------


class _Payload:
    """Unpickling this runs ``os.mkdir(marker)``: what a malicious weights file would do."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (self.marker,)


WEIGHTS = {
    "not-a-state-dict": ["is not a state dict"],
    "wrong-architecture": ["does not fit", "small_cnn"],
    "pickle-payload": ["cannot be loaded safely"],
    "zero-byte": ["cannot be loaded safely"],
}


@pytest.mark.parametrize("kind", list(WEIGHTS))
def test_bad_victim_weights(shared, fault_log, kind):
    import torch

    from pipeline.victims import small_cnn

    folder = shared["inputs"] / "weights"
    folder.mkdir(parents=True, exist_ok=True)
    path, marker = folder / f"{kind}.pt", folder / "PAYLOAD-RAN"
    if kind == "zero-byte":
        path.write_bytes(b"")
    else:
        torch.save(
            {
                "not-a-state-dict": [1, 2, 3],
                "wrong-architecture": small_cnn(10).state_dict(),
                "pickle-payload": {"head.weight": _Payload(str(marker))},
            }[kind],
            path,
        )
    try:
        refused(
            shared,
            fault_log,
            "bad input: weights file",
            _run(shared, "attack", f"victim.test.weights={path}", "victim.test.num_classes=8"),
            str(path),
            *WEIGHTS[kind],
        )
    finally:
        assert not marker.exists(), "unpickling the weights file ran its payload"


def test_attack_returning_nan_is_refused(shared, fault_log):
    """A real path to a NaN attack: victim weights holding NaN (e.g. from a diverged training), so
    DeepFool's gradients and steps are NaN."""
    import torch

    from pipeline.victims import small_cnn

    paths = []
    for classes in (10, 8):
        state = {
            k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
            for k, v in small_cnn(classes).state_dict().items()
        }
        paths.append(shared["inputs"] / f"nan{classes}.pt")
        paths[-1].parent.mkdir(parents=True, exist_ok=True)
        torch.save(state, paths[-1])
    refused(
        shared,
        fault_log,
        "bad input: attack returns NaN",
        _run(
            shared,
            "attack",
            "attack.names=[deepfool]",
            "attack.params.deepfool.steps=2",
            "attack.limits.deepfool.max_images=4",
            f"victim.aae_train.weights={paths[0]}",
            "victim.aae_train.num_classes=10",
            f"victim.test.weights={paths[1]}",
            "victim.test.num_classes=8",
        ),
        "attack deepfool returned NaN/inf",
        "nothing was published",
    )


# --- artifacts ------------------------------------------------------------------------------------


def test_clean_shard_not_matching_its_manifest(shared, fault_log):
    root = shared["root"]
    (shard,) = [
        p.parent / "aae_train" / "shard-00000.h5"
        for p in root.glob("sample/*/MANIFEST.json")
        if json.loads(p.read_text())["config"]["dataset"] == "fashion"
    ]
    original = shard.read_bytes()
    damaged = bytearray(original)
    damaged[len(damaged) // 2] ^= 0x01
    shard.write_bytes(bytes(damaged))
    try:  # a new attack seed: every attack task is pending and reads the clean shards
        refused(
            shared,
            fault_log,
            "bad input: artifact checksum",
            _run(shared, "attack", "attack.seed=1"),
            str(shard),
            "does not match the sha256 in its manifest",
        )
    finally:
        shard.write_bytes(original)


# --- cluster profiles -----------------------------------------------------------------------------

PAYLOADS = ["gpu; rm -rf {marker}", "$(touch {marker})", "gpu\n#SBATCH --wrap='touch {marker}'", "`touch {marker}`"]
FIELDS = [
    "partition",
    "account",
    "qos",
    "constraint",
    "gres",
    "mem",
    "time",
    "cpus_per_task",
    "array_throttle",
    "max_num_timeout",
    "signal_delay_s",
    "gpu.partition",
    "steps.attack.time",
    "extra.mail-type",
    "extra.<key>",
    "steps.<key>",
]


def _profile(field: str, value: str) -> dict:
    if field == "extra.<key>":
        return {"extra": {value: "x"}}
    if field == "steps.<key>":
        return {"steps": {value: {"time": "10"}}}
    *where, key = field.split(".")
    profile = node = {}
    for part in where:
        node = node.setdefault(part, {})
    node[key] = value
    return profile


@pytest.mark.parametrize("field", FIELDS)
def test_hostile_profile_values_are_refused(shared, fault_log, field):
    marker = shared["inputs"] / "PWNED"
    for i, payload in enumerate(PAYLOADS):
        value = payload.format(marker=marker)
        path = shared["inputs"] / f"hostile-{field.replace('<', '').replace('>', '')}-{i}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(_profile(field, value)))
        key = field.replace("<key>", "")
        refused(
            shared,
            fault_log,
            "hostile profile value",
            ["submit", "all", "--dry-run", "--profile", str(path), "--config", shared["config"]],
            str(path),
            key,
        )
    assert not marker.exists()


def test_hostile_setup_lines_stay_the_users_own_shell_lines(shared, tmp_path, fault_log):
    """``setup`` is documented as the user's own shell lines, run as written: they are not refused,
    but they must appear only as whole lines of the setup section, never inside an #SBATCH line,
    and a dry run must not run them."""
    marker = shared["inputs"] / "SETUP-RAN"
    lines = [p.format(marker=marker).replace("\n", " ") for p in PAYLOADS]
    profile = tmp_path / "setup.yaml"
    profile.write_text(yaml.safe_dump({"setup": lines}))
    root = tmp_path / "empty-root"  # everything pending: a script per step
    result = pipeline(
        tmp_path, root, "submit", "all", "--dry-run", "--profile", str(profile), "--config", shared["config"]
    )
    scripts = sorted(root.glob(".submissions/*/*.sh"))
    texts = [s.read_text().splitlines() for s in scripts]
    whole = all(text.count(line) == 1 for text in texts for line in lines)
    sbatch_clean = not any(marker.name in t for text in texts for t in text if t.startswith("#SBATCH"))
    fault_log(
        "hostile profile value",
        survived=result.returncode == 0 and bool(scripts) and whole and sbatch_clean and not marker.exists(),
        note="setup: kept verbatim as the user's lines, not run by --dry-run",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert scripts and whole and sbatch_clean
    assert not marker.exists()
    assert sorted(p.relative_to(root).parts[0] for p in root.iterdir()) == [".submissions"]


def test_extra_flags_that_sbatch_would_read_as_a_runner_flag_are_refused(shared, fault_log):
    """sbatch takes any unambiguous prefix of a long option: ``part`` sets the partition."""
    for flag, means in (
        ("part", "--partition"),
        ("dep", "--dependency"),
        ("arr", "--array"),
        ("out", "--output"),
        ("sig", "--signal"),
        ("job-n", "--job-name"),
        ("parsable", "set by the runner"),
    ):
        path = shared["inputs"] / f"abbreviated-{flag}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump({"gpu": {"extra": {flag: "gpu"}}}))
        refused(
            shared,
            fault_log,
            "profile extra flag abbreviating or naming a runner flag",
            ["submit", "all", "--dry-run", "--profile", str(path), "--config", shared["config"]],
            str(path),
            f"'gpu.extra.{flag}'",
            means,
        )


# --- the Slurm side -------------------------------------------------------------------------------

HOSTILE_ROOTS = [
    "/tmp/a\nb",
    "/tmp/a%x",
    "/tmp/a%j",
    "/tmp/a\tb",
    "/tmp/a\rb",
    "/tmp/a\x1b[2Jb",
    "/tmp/a\x7fb",
    "/tmp/a\u2028b",
]


@pytest.mark.parametrize("root", HOSTILE_ROOTS, ids=[ascii(r) for r in HOSTILE_ROOTS])
def test_artifact_roots_a_job_script_cannot_carry_are_refused(shared, fault_log, root):
    """A newline would start a new script line under bash; Slurm expands %x, %j, ... in --output."""
    profile = Path(__file__).resolve().parents[2] / "slurm" / "local.yaml"
    result = pipeline(
        shared["cwd"], Path(root), "submit", "all", "--config", shared["config"], "--profile", str(profile), "--dry-run"
    )
    lines = result.stderr.strip().splitlines()
    clear = result.returncode == 1 and len(lines) == 1 and lines[0].startswith(f"error: artifact root {root!r}")
    untouched = not Path(root).exists()
    fault_log(
        "hostile artifact root (Slurm)",
        survived=clear and untouched,
        note="newline, tab, CR, ESC, DEL, U+2028, %x, %j: one 'error:' line naming it; no script written",
    )
    assert clear, result.stderr
    assert untouched


def _record(shared, job_id: str) -> Path:
    folder = shared["root"] / ".submissions"
    folder.mkdir(exist_ok=True)
    path = folder / "20260101-000000-evil.json"
    path.write_text(
        json.dumps(
            {
                "run_id": "20260101-000000-evil",
                "log_folder": str(folder / "x"),
                "jobs": [
                    {
                        "job_id": job_id,
                        "step": "attack",
                        "label": "attack[x]",
                        "dependency": None,
                        "tasks": [{"id": "x", "key": "0" * 20, "job_id": job_id}],
                    }
                ],
            }
        )
    )
    return path


@pytest.mark.parametrize("job_id", ["1;touch {marker}", "--user=root", "1 2", "$(touch {marker})", "1_2_3"])
def test_job_ids_in_submission_records_are_checked_before_any_slurm_command(shared, fault_log, job_id):
    marker = shared["inputs"] / "JOB-ID-RAN"
    value = job_id.format(marker=marker)
    path = _record(shared, value)
    try:
        for command in (["cancel"], ["status", "--config", shared["config"]]):
            refused(
                shared,
                fault_log,
                "hostile job id in a submission record",
                command,
                str(path),
                repr(value),
                "is not a Slurm job id",
            )
    finally:
        path.unlink()
    assert not marker.exists()


def test_submission_folders_are_private(shared, tmp_path, fault_log):
    old = os.umask(0o022)
    try:
        result = pipeline(
            tmp_path,
            tmp_path / "root",
            "submit",
            "all",
            "--dry-run",
            "--config",
            shared["config"],
            "--profile",
            str(Path(__file__).resolve().parents[2] / "slurm" / "local.yaml"),
        )
    finally:
        os.umask(old)
    modes = {
        p.name: p.stat().st_mode & 0o777
        for p in [tmp_path / "root" / ".submissions", *(tmp_path / "root" / ".submissions").iterdir()]
    }
    private = result.returncode == 0 and set(modes.values()) == {0o700}
    fault_log(
        "submission folder readable by others",
        survived=private,
        note="umask 022: .submissions and each run's folder (pickles, logs) created 0700",
    )
    assert result.returncode == 0, result.stderr
    assert set(modes.values()) == {0o700}, modes


# --- hostile data files ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "labels, fragment",
    [
        (["cat", "dog", "cat", "dog"], "'labels' must be 4 integers, one per image"),
        ([0, 1, 2, 11], "'labels' must lie in 0-9, found 0-11"),
        ([0, 1, 2], "'labels' must be 4 integers, one per image, not int64 (3,)"),
        ({"0": 1}, "not dict"),
    ],
    ids=["text", "out-of-range", "too-few", "mapping"],
)
def test_malformed_cifar_labels(shared, fault_log, labels, fragment):
    import pickle

    cifar = shared["inputs"] / f"cifar-labels-{len(str(labels))}-{type(labels).__name__}"
    cifar.mkdir(parents=True)
    with open(cifar / "data_batch_1", "wb") as handle:
        pickle.dump({b"data": np.zeros((4, 3072), np.uint8), b"labels": labels}, handle, protocol=2)
    refused(
        shared,
        fault_log,
        "malformed CIFAR labels",
        _run(shared, "sample", "sample.datasets.fashion.source=cifar10", f"sample.datasets.fashion.root={cifar}"),
        str(cifar / "data_batch_1"),
        fragment,
    )


MANIFEST_DAMAGE = {
    "top-level list": (lambda m: [m], "the top level must be an object"),
    "label as text": (
        lambda m: {
            **m,
            "splits": {
                **m["splits"],
                "cae_train": [{**m["splits"]["cae_train"][0], "label": "cat"}, *m["splits"]["cae_train"][1:]],
            },
        },
        "'splits.cae_train[0].label' must be an integer",
    ),
    "entry without a file": (
        lambda m: {
            **m,
            "splits": {**m["splits"], "cae_train": [{"id": "x", "label": -1}, *m["splits"]["cae_train"][1:]]},
        },
        "'splits.cae_train[0].file' must be a path",
    ),
    "files as a list": (lambda m: {**m, "files": list(m["files"])}, "'files' must be an object of file -> sha256"),
    "checksum not hex": (lambda m: {**m, "files": {k: "z" * 64 for k in m["files"]}}, "must be a sha256"),
    "split as a mapping": (
        lambda m: {**m, "splits": {**m["splits"], "cae_train": {"0": {}}}},
        "'splits.cae_train' must be a list of entries",
    ),
    "wrong format": (lambda m: {**m, "format": "1"}, "'format' must be 1"),
}


@pytest.mark.parametrize("damage", list(MANIFEST_DAMAGE))
def test_malformed_dataset_manifests(shared, fault_log, damage):
    change, fragment = MANIFEST_DAMAGE[damage]
    manifest = json.loads((shared["reference"].cwd / "data_manifests" / "smoke" / "photos.json").read_text())
    path = shared["inputs"] / f"manifest-{damage.replace(' ', '-')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(change(manifest)))
    refused(
        shared,
        fault_log,
        "malformed dataset manifest",
        _run(shared, "sample", f"sample.datasets.photos.manifest={path}"),
        f"manifest {path}",
        fragment,
    )


def _hostile_shard(path: Path, kind: str, original: Path) -> None:
    """``path``: the arrays of an adversarial shard, with ``images`` made hostile."""
    import h5py
    import hdf5plugin  # noqa: F401  (the shard's images are zstd-compressed)

    with h5py.File(original, "r") as handle:
        arrays = {name: handle[name][()] for name in handle}
    with h5py.File(path, "w") as handle:
        for name, array in arrays.items():
            if name != "images":
                handle[name] = array
        if kind == "external storage":  # the bytes of another file, read as the images
            handle.create_dataset("images", shape=(1, 3, 8, 8), dtype=np.uint8, external=[("/etc/passwd", 0, 192)])
        elif kind == "external link":  # another file's images
            handle["images"] = h5py.ExternalLink(str(original), "images")
        elif kind == "soft link":
            handle["real"] = arrays["images"]
            handle["images"] = h5py.SoftLink("/real")
        else:  # 286 GiB declared, a few KiB on disk: chunks never written
            handle.create_dataset(
                "images", shape=(2_000_000, 3, 112, 112), dtype=np.float32, chunks=(1, 3, 112, 112), compression="gzip"
            )


@pytest.mark.parametrize(
    "kind, fragment",
    [
        ("external storage", "keeps its data outside the shard"),
        ("external link", "'images' is a link (ExternalLink)"),
        ("soft link", "'images' is a link (SoftLink)"),
        ("huge declared array", "280.4 GiB to read, more than this machine's memory"),
    ],
)
def test_hostile_hdf5_shards(shared, fault_log, kind, fragment):
    """Someone who can write to the artifact root swaps an adversarial shard (and its checksum in
    the manifest): the training that reads it stops with one line, and reads nothing else."""
    root = shared["root"]
    (manifest,) = [
        p for p in root.glob("attack/*/MANIFEST.json") if json.loads(p.read_text())["task"] == "aae_train/fgsm/000000"
    ]
    shard, saved = manifest.parent / "adv.h5", manifest.read_bytes()
    original = shard.read_bytes()
    backup = shared["inputs"] / "adv-original.h5"
    backup.parent.mkdir(parents=True, exist_ok=True)
    backup.write_bytes(original)
    _hostile_shard(shard, kind, backup)
    data = json.loads(saved)
    data["files"]["adv.h5"] = {"sha256": hashlib.sha256(shard.read_bytes()).hexdigest(), "size": shard.stat().st_size}
    manifest.write_text(json.dumps(data))
    try:  # a new learning rate: every training is pending and reads the shards
        refused(
            shared,
            fault_log,
            "hostile HDF5 shard (external storage or link, 280 GiB declared)",
            _run(shared, "train-aae", "aae.optim.lr=0.0123"),
            f"shard {shard}: ",
            fragment,
        )
    finally:
        shard.write_bytes(original)
        manifest.write_bytes(saved)
