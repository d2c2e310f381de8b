"""The whole pipeline on the smoke config, locally: tables, rerun, re-tabulation, verification."""

from __future__ import annotations

import csv
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


def _pipeline(cwd: Path, root: Path, *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "--artifacts", str(root), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert result.returncode == 0, f"pipeline {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """One full ``pipeline run all --config smoke``, shared (read-only) by the tests below."""
    cwd = tmp_path_factory.mktemp("smoke")
    root = cwd / "artifacts"
    started = time.time()
    _pipeline(cwd, root, "run", "all", "--config", "smoke")
    return {"cwd": cwd, "root": root, "results": cwd / "results" / "smoke", "seconds": time.time() - started}


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path) as handle:
        return list(csv.DictReader(line for line in handle if not line.startswith("#")))


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def test_tables_have_every_column_the_identity_row_and_the_mean_as_avg(smoke):
    columns = ["clean", "fgsm", "pgd", "ssah", "deepfool", "bim", "cw", "jsma"]
    for name in (
        "table_ii_seen_recovery_accuracy.csv",
        "table_iii_unseen_recovery_accuracy.csv",
        "table_ii_seen_psnr.csv",
    ):
        rows = {row["method"]: row for row in _rows(smoke["results"] / name)}
        assert "identity" in rows and "ours" in rows
        assert rows["blur"]["title"] == "Gaussian blur"  # README "Extending": one file adds a row
        averaged = columns[1:] if name == "table_ii_seen_psnr.csv" else columns  # PSNR: Avg over the attacks
        for row in rows.values():
            values = [float(row[c]) for c in averaged]
            assert float(row["avg"]) == pytest.approx(sum(values) / len(averaged), abs=1e-3)
            for c in columns:
                assert float(row[f"{c}_ci_low"]) <= float(row[c]) + 1e-6 <= float(row[f"{c}_ci_high"]) + 2e-6
    identity = {row["method"]: row for row in _rows(smoke["results"] / "table_ii_seen_psnr.csv")}["identity"]
    assert float(identity["clean"]) == pytest.approx(100.0)  # the clean image itself: PSNR capped at 100 dB
    header = (smoke["results"] / "table_ii_seen_recovery_accuracy.csv").read_text().splitlines()[:4]
    assert header[1] == "# config: smoke" and header[2].startswith("# commit(s): ")
    tex = (smoke["results"] / "table_ii_seen_recovery_accuracy.tex").read_text()
    assert "Identity (no defence)" in tex and "Reported in the paper" in tex and r"\toprule" in tex
    for protocol in ("ii_seen", "iii_unseen"):
        assert "\nGaussian blur & " in (smoke["results"] / f"table_{protocol}_recovery_accuracy.tex").read_text()
    for figure in ("fig6_detection.png", "fig7_recovery.png", "fig_training.png"):
        assert (smoke["results"] / figure).read_bytes()[:4] == b"\x89PNG"


def test_rerun_is_a_fast_no_op(smoke):
    import resource

    def cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime

    started = cpu()
    result = _pipeline(smoke["cwd"], smoke["root"], "run", "all", "--config", "smoke")
    assert "nothing to do" in result.stdout and "up to date, skipped: sample (3)" in result.stdout
    # CPU seconds, not wall time, so a busy machine does not fail it: the benchmark holds the < 2 s
    # target; this guards regressions
    assert cpu() - started < 10


def test_tables_are_regenerated_byte_for_byte(smoke):
    before = _digests(smoke["results"])
    (smoke["results"] / "table_ii_seen_ssim.csv").write_text("tampered")
    _pipeline(smoke["cwd"], smoke["root"], "tables", "--config", "smoke")
    assert _digests(smoke["results"]) == before


def test_training_reduced_the_loss_and_recorded_curves(smoke):
    for step in ("train-cae", "train-aae"):
        for manifest in (smoke["root"] / step).glob("*/MANIFEST.json"):
            summary = json.loads(manifest.read_text())["summary"]
            assert summary["epochs"] == 3 and summary["heldout"]["n"] >= 1
            curve = _rows(manifest.parent / "history.csv")
            assert len(curve) == 3 and (manifest.parent / "losses.png").stat().st_size > 1000
    manifests = {m: json.loads(m.read_text()) for m in (smoke["root"] / "train-cae").glob("*/MANIFEST.json")}
    cae = next(
        m
        for m, data in manifests.items()  # the curves show the first seed of the main CAE
        if data["summary"]["seed"] == 0 and data["config"]["row"] == "cae"
    )
    summary = json.loads(cae.read_text())["summary"]
    assert summary["final_total"] < summary["first_total"]
    exported = _rows(smoke["results"] / "training_losses.csv")
    cae_totals = [float(r["loss"]) for r in exported if r["model"] == "cae" and r["term"] == "total"]
    assert cae_totals == pytest.approx([float(r["total"]) for r in _rows(cae.parent / "history.csv")], rel=1e-5)
    models = {(r["model"], r["attack"]) for r in exported}
    assert ("ours", "fgsm") in models and ("plain_ae", "jsma") in models and ("ours+anchor", "cw") in models


def test_variants_and_seeds_are_rows_with_their_spread_and_a_sanity_table(smoke):
    rows = {row["method"]: row for row in _rows(smoke["results"] / "table_ii_seen_recovery_accuracy.csv")}
    for variant, setting in (
        ("cae_init", "init=cae"),
        ("anchor", "anchor_weight=1"),
        ("adam", "optim.kind=adam"),
        ("mean", "loss.reduction=mean"),
    ):
        row = rows[f"ours+{variant}"]
        assert setting in row["title"] and row["title"].endswith("(not in the paper)") and row["seeds"] == "2"
        assert row["fgsm_seed_sd"] != ""  # two seeds: a spread
    assert rows["ours"]["title"] == "Ours (CAE + AAE, as written)" and rows["identity"]["fgsm_seed_sd"] == ""
    # rows that read no trained model: the spread over the two victims (victim.noise_seeds: [1])
    assert all(rows[m]["avg_victim_sd"] != "" for m in ("identity", "jpeg", "blur"))
    assert rows["ours"].get("avg_victim_sd", "") == ""
    sanity = _rows(smoke["results"] / "training_sanity.csv")
    models = {(r["model"], r["data"], r["seed"]) for r in sanity}
    assert ("cae", "clean", "1") in models and ("ours+cae_init", "fgsm", "0") in models
    assert ("cae+wide", "clean", "0") in models and ("paired_dae_cae", "cw", "1") in models
    assert all(float(r["mean_image_psnr"]) > 0 and float(r["heldout_psnr"]) > 0 for r in sanity)
    # Fashion-MNIST has labels: a class-mean reference wherever training saw the held-out images' classes
    assert all(r["class_mean_psnr"] for r in sanity if r["data"] in ("fgsm", "pgd"))
    assert all(r["recovered_psnr"] for r in sanity if r["model"].startswith("ours"))
    assert all(0 <= float(r["clean_recovery_accuracy"]) <= 1 for r in sanity if r["model"] in ("cae", "cae+wide"))
    # a row says how many of the models it reads (its own, and the CAE for ours) are not trained
    for method, row in rows.items():
        reads = [method, "cae"] if method.startswith("ours") else [method]
        bad = sum(r["not_trained"] == "True" for r in sanity if r["model"] in reads)
        total = sum(r["model"] in reads for r in sanity)
        assert row["not_trained"] == (f"{bad}/{total} not trained" if bad else "")


def test_flipped_only_tables_count_the_images_the_attack_flipped(smoke):
    flipped = {r["method"]: r for r in _rows(smoke["results"] / "table_ii_seen_recovery_accuracy_flipped.csv")}
    attacks = {r["attack"]: r for r in _rows(smoke["results"] / "attacks.csv") if r["role"] == "test"}
    for attack, summary in attacks.items():
        assert int(flipped["identity"][f"{attack}_n"]) == round(float(summary["success"]) * int(summary["n"]))
        if int(flipped["identity"][f"{attack}_n"]):
            assert float(flipped["identity"][attack]) == 0  # doing nothing recovers none of them
    assert all(r["clean"] == "" for r in flipped.values())


def test_the_convergence_study_measures_every_run_and_seed(smoke, tmp_path):
    import shutil

    root = tmp_path / "artifacts"
    shutil.copytree(smoke["root"], root)
    _pipeline(tmp_path, root, "run", "convergence", "--config", "smoke")
    out = tmp_path / "results" / "smoke" / "convergence"
    curves = _rows(out / "curves.csv")
    runs = {"as_written", "warmup_self", "cae_init", "paired_dae_cae"}
    assert {(r["run"], r["seed"]) for r in curves} == {(run, seed) for run in runs for seed in ("0", "1")}
    for run in runs:  # measured at 10, 20, 40 steps (smoke: 8 CW images, 6 trained, batch 16: a step an epoch)
        steps = sorted({int(float(r["step"])) for r in curves if r["run"] == run})
        assert steps[:3] == [10, 20, 40] and set(steps) <= {10, 20, 40, 80}
    summary = {r["run"]: r for r in _rows(out / "summary.csv")}
    assert set(summary) == runs and all(r["seeds"] == "2" for r in summary.values())
    assert all(0 <= float(r["recovery_accuracy"]) <= 1 for r in summary.values())
    assert float(summary["as_written"]["heldout_paper"]) > 0 and summary["paired_dae_cae"]["heldout_paper"] == ""
    assert (out / "fig_convergence_cw.png").read_bytes()[:4] == b"\x89PNG"


def test_a_step_run_again_gives_the_same_bytes_on_the_same_device_and_threads(smoke, tmp_path):
    import shutil

    root = tmp_path / "artifacts"
    shutil.copytree(smoke["root"], root)
    for step in ("train-victim", "train-cae"):
        manifests = sorted((root / step).glob("*/MANIFEST.json"))
        before = {m.parent.name: json.loads(m.read_text())["files"] for m in manifests}
        _pipeline(smoke["cwd"], root, "run", step, "--config", "smoke", "--force", step)
        after = {
            m.parent.name: json.loads(m.read_text())["files"] for m in sorted((root / step).glob("*/MANIFEST.json"))
        }
        assert after == before, step  # every file's sha256, rebuilt from scratch
        runtime = json.loads(manifests[0].read_text())["runtime"]
        assert runtime["device"] == "cpu" and runtime["threads"] == 1  # what the smoke config pins


def test_status_and_verify(smoke):
    status = _pipeline(smoke["cwd"], smoke["root"], "status", "--config", "smoke").stdout
    assert "attack         25/25 done" in status and "success" in status and "img/s" in status  # 7 of victim 2
    verify = _pipeline(smoke["cwd"], smoke["root"], "verify").stdout
    assert ", 0 bad" in verify


def test_only_missing_attack_shards_are_recomputed(smoke, tmp_path):
    import shutil

    root = tmp_path / "artifacts"
    shutil.copytree(smoke["root"], root)
    shards = sorted((root / "attack").glob("*/MANIFEST.json"))
    victim = next(p.parent for p in shards if json.loads(p.read_text())["task"] == "aae_train/pgd/000016")
    before = json.loads((victim / "MANIFEST.json").read_text())["files"]
    shutil.rmtree(victim)
    result = _pipeline(smoke["cwd"], root, "run", "attack", "--config", "smoke")
    assert result.stdout.count("attack[") == 1 and "attack[aae_train/pgd/000016]" in result.stdout
    assert json.loads((victim / "MANIFEST.json").read_text())["files"] == before  # same bytes again


def test_bench_measures_each_side_and_each_step_in_its_own_process(smoke, tmp_path):
    import shutil

    root = tmp_path / "artifacts"
    shutil.copytree(smoke["root"], root)
    _pipeline(
        smoke["cwd"],
        root,
        "bench",
        "--config",
        "smoke",
        "--repeat",
        "1",
        "--json",
        str(tmp_path / "b.json"),
        "--only",
        "attack/fgsm",
        "--only",
        "memory/sample",
        "--only",
        "memory/train-cae",
    )
    rows = {r["benchmark"]: r for r in json.loads((tmp_path / "b.json").read_text())["results"]}
    assert set(rows) == {"attack/fgsm", "memory/sample", "memory/train-cae"}
    assert rows["attack/fgsm"]["ours"] > 0 and rows["attack/fgsm"]["reference"] > 0
    peaks = [rows[f"memory/{step}"]["ours"] for step in ("sample", "train-cae")]
    assert all(100 < peak < 4096 for peak in peaks)  # MiB: a real process, under the declared limits


def test_ablations_sweep_the_configured_grid(smoke, tmp_path):
    import shutil

    root = tmp_path / "artifacts"
    shutil.copytree(smoke["root"], root)
    _pipeline(tmp_path, root, "run", "ablations", "--config", "smoke")
    out = tmp_path / "results" / "smoke" / "ablations"
    # smoke: lambdas [1e-3, 1e-1], depths CAE [2, 3] x AAE [3, 4], for the paper's AAE and the anchor variant
    lambdas = _rows(out / "fig4_lambdas_fgsm.csv")
    assert [float(r["lambda"]) for r in lambdas] == [1e-3, 1e-1]
    curves = {"λ1", "λ2", "λ1 (anchor)", "λ2 (anchor)"}
    assert set(lambdas[0]) == {"lambda", *curves, *(f"{c} sd" for c in curves)}
    depths = _rows(out / "fig5_depths_fgsm.csv") + _rows(out / "fig5_depths_fgsm_anchor.csv")
    assert [r["N_CAE"] for r in depths] == ["2", "3"] * 2 and set(depths[0]) == {"N_CAE", "3", "4", "3 sd", "4 sd"}
    means = [
        float(v)
        for r in lambdas + depths
        for k, v in r.items()
        if k not in ("lambda", "N_CAE") and not k.endswith("sd")
    ]
    assert all(0 <= v <= 100 for v in means)
    assert all(float(r["3 sd"]) >= 0 for r in depths)  # two seeds per point: a spread
    for figure in ("fig4_lambdas_fgsm.png", "fig5_depths_fgsm.png"):
        assert (out / figure).read_bytes()[:4] == b"\x89PNG"
    kept = {p.name: p.read_bytes() for p in out.iterdir()}
    _pipeline(tmp_path, root, "tables", "--config", "smoke")  # tabulate exports into results/smoke/ too
    assert {p.name: p.read_bytes() for p in out.iterdir()} == kept
    assert (out.parent / "table_ii_seen_recovery_accuracy.csv").is_file()
