"""Published artifacts damaged on disk: a corrupted or truncated HDF5 shard, a corrupted manifest.

``execute`` checks the sha256 of every input in full before a task reads it, so a damaged input
stops the downstream task with one line naming the file; it is never used. The user's recovery:
``pipeline verify`` names every damaged file, then ``pipeline clean STEP`` (or removing the named
artifact directory) and ``pipeline run`` rebuild it byte for byte.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.faults._harness import check, digests, folder_digests, leftovers, ok, one_line_error, pipeline, snapshot

pytestmark = pytest.mark.faults


def _artifact(root: Path, step: str, **config) -> Path:
    """The artifact of ``step`` whose task config has these values."""
    (found,) = [
        p.parent
        for p in (root / step).glob("*/MANIFEST.json")
        if all(json.loads(p.read_text())["config"].get(k) == v for k, v in config.items())
    ]
    return found


def _recover_and_compare(reference, tmp_path, root, how):
    how()
    ok(pipeline(tmp_path, root, "run", "all", "--config", str(reference.config)))
    ok(pipeline(tmp_path, root, "clean"))
    results = reference.results_dir(tmp_path)  # written when tabulate ran again
    return (
        digests(root) == reference.digests
        and leftovers(root) == []
        and (not results.exists() or folder_digests(results) == reference.results)
    )


def _fail_then_verify(reference, tmp_path, root, damaged: Path, *fragments: str):
    """The downstream run fails naming ``damaged`` and publishes nothing half-written; ``pipeline
    verify`` names it too. Returns the check of the invariants."""
    step, key = damaged.relative_to(root).parts[:2]
    artifact = root / step / key
    before = digests(root)
    failed = pipeline(tmp_path, root, "run", "all", "--config", str(reference.config))
    one_line_error(failed, str(damaged), *fragments)
    found = check(root, before, reference.digests, damaged=artifact)
    verify = pipeline(tmp_path, root, "verify")
    assert verify.returncode == 1 and "BAD  " in verify.stdout and str(damaged) in verify.stdout, verify.stdout
    assert ", 1 bad" in verify.stdout
    with_config = pipeline(tmp_path, root, "verify", "--config", str(reference.config))
    assert with_config.returncode == 1 and str(damaged) in with_config.stdout
    return found


def test_corrupted_clean_shard_is_detected_and_rebuilt_by_clean(reference, tmp_path, fault_log):
    root = reference.clone(tmp_path / "artifacts", drop=["attack"])
    shard = _artifact(root, "sample", dataset="clipart") / "test" / "shard-00000.h5"
    raw = bytearray(shard.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # same size: only the sha256 can tell
    shard.write_bytes(bytes(raw))
    found = _fail_then_verify(reference, tmp_path, root, shard, "does not match the sha256 in its manifest")
    rebuilt = _recover_and_compare(
        reference,
        tmp_path,
        root,
        lambda: ok(pipeline(tmp_path, root, "clean", "sample", "--config", str(reference.config))),
    )
    fault_log(
        "corrupted HDF5 shard (sample, 1 byte)",
        survived=found.survived and rebuilt,
        lost=len(found.lost),
        note="attack refused it naming the file; verify named it; clean sample + run rebuilt it",
    )
    assert found.survived and rebuilt, found


def test_truncated_adversarial_shard_is_detected_and_rebuilt(reference, tmp_path, fault_log):
    root = reference.clone(tmp_path / "artifacts")
    for method in ("ours", "plain_ae"):  # the two readers of the shard, to be rebuilt
        shutil.rmtree(_artifact(root, "train-aae", method=method, attack="fgsm"))
    artifact = _artifact(root, "attack", role="aae_train", attack="fgsm", start=16)
    shard = artifact / "adv.h5"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    found = _fail_then_verify(reference, tmp_path, root, shard, "bytes, its manifest says")
    rebuilt = _recover_and_compare(reference, tmp_path, root, lambda: shutil.rmtree(artifact))
    fault_log(
        "truncated HDF5 shard (attack)",
        survived=found.survived and rebuilt,
        lost=len(found.lost),
        note="train-aae refused it naming the file; removing it + run rebuilt it",
    )
    assert found.survived and rebuilt, found


def test_corrupted_manifest_is_detected_and_rebuilt(reference, tmp_path, fault_log):
    root = reference.clone(tmp_path / "artifacts", drop=["tabulate"])
    artifact = _artifact(root, "evaluate", method="ours", train_attack="pgd", test="fgsm")
    manifest = artifact / "MANIFEST.json"
    manifest.write_bytes(manifest.read_bytes()[:100])
    found = _fail_then_verify(reference, tmp_path, root, manifest, "is corrupt")
    rebuilt = _recover_and_compare(reference, tmp_path, root, lambda: shutil.rmtree(artifact))
    fault_log(
        "corrupted MANIFEST.json (evaluate)",
        survived=found.survived and rebuilt,
        lost=len(found.lost),
        note="tabulate refused it naming the file; removing it + run rebuilt it",
    )
    assert found.survived and rebuilt, found


def test_verify_on_an_intact_root_changes_nothing(reference, tmp_path):
    root = reference.clone(tmp_path / "artifacts")
    before = snapshot(root)
    assert ", 0 bad" in ok(pipeline(tmp_path, root, "verify")).stdout
    assert snapshot(root) == before


def test_a_manifest_file_entry_without_size_is_one_error_line_naming_it_for_every_command(
    reference, tmp_path, fault_log
):
    """Hand-edited or half-written by another tool: every command that reads the manifest answers with
    one line naming it (``status`` after saying everything else), none with a traceback."""
    root = reference.clone(tmp_path / "artifacts", drop=["tabulate"])
    artifact = _artifact(root, "evaluate", method="ours", train_attack="pgd", test="fgsm")
    manifest = artifact / "MANIFEST.json"
    data = json.loads(manifest.read_text())
    name = sorted(data["files"])[0]
    del data["files"][name]["size"]
    manifest.write_text(json.dumps(data))
    before = digests(root)
    said = f"artifact manifest {manifest} is corrupt (file entry {name!r} has no valid 'size')"
    config = ("--config", str(reference.config))
    run = pipeline(tmp_path, root, "run", "all", *config)
    tables = pipeline(tmp_path, root, "tables", *config)
    status = pipeline(tmp_path, root, "status", *config)
    verify = pipeline(tmp_path, root, "verify")
    one_line_error(run, said)
    one_line_error(tables, said)
    answered = status.returncode == 1 and status.stderr.strip() == f"error: {said}" and "evaluate " in status.stdout
    found = check(root, before, reference.digests, damaged=artifact)
    fault_log(
        "malformed MANIFEST.json (a file entry without size)",
        survived=answered and found.survived,
        lost=len(found.lost),
        note="run, tables, status and verify each named it in one line; nothing published",
    )
    assert answered, (status.stdout[-2000:], status.stderr)
    assert verify.returncode == 1 and f"BAD  {said}" in verify.stdout, verify.stdout
    assert found.survived, found
