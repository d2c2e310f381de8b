"""Tables II-III from hand-made per-image frames: cells, Avg, the identity row, LaTeX, paper rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.config import load_config
from pipeline.paper_results import TABLE_II, reported_cells
from pipeline.tables import CLEAN, Evaluations, Row, detection_table, latex_escape, table, write_tables

pytestmark = pytest.mark.unit

TITLES = {
    "fgsm": "FGSM",
    "pgd": "PGD",
    "ssah": "SSAH",
    "deepfool": "DeepFool",
    "bim": "BIM",
    "cw": "CW",
    "jsma": "JSMA",
}


def _frame(accuracy: list[float], score: float, flipped: list[bool] | None = None) -> pd.DataFrame:
    """Per-image metrics as evaluate writes them (the other metrics constant); ``flipped``: the
    images whose prediction the attack changed (default: none)."""
    n = len(accuracy)
    constant = {m: np.full(n, 0.5) for m in ("label_accuracy", "pixel_rate", "psnr", "ssim")}
    flips = np.array(flipped if flipped is not None else [False] * n)
    return pd.DataFrame(
        {
            "clean_pred": np.zeros(n, int),
            "input_pred": flips.astype(int),
            "recovery_accuracy": accuracy,
            **constant,
            "detection_score": np.full(n, score),
        }
    )


def _evaluations(attacks: list[str]) -> Evaluations:
    """Identity: recovers ``k/4`` of the images of the k-th attack. A row trained per attack with two
    seeds: seed 0 recovers all seen images, seed 1 half of them; both 1 of 4 unseen."""
    rows = [Row("identity", "Identity (no defence)", False), Row("net", "Net_1 & 50% {x}", True, (0, 1))]
    frames = {("identity", None, CLEAN, None): _frame([1, 1, 1, 1], 0.0)}
    for k, attack in enumerate(attacks):
        identity = [1] * k + [0] * (4 - k)
        flipped = [a == 0 for a in identity]  # what doing nothing does not recover
        frames[("identity", None, attack, None)] = _frame(identity, 0.0, flipped)
        for seed, seen in ((0, [1, 1, 1, 1]), (1, [1, 1, 0, 0])):
            frames[("net", attack, CLEAN, seed)] = _frame([1, 1, 0, 0], 1.0)
            frames[("net", attack, attack, seed)] = _frame(seen, 2.0, flipped[:4])
    unseen = {a: attacks[(i + 1) % len(attacks)] for i, a in enumerate(attacks)}
    for test, train in unseen.items():
        for seed in (0, 1):
            frames[("net", train, test, seed)] = _frame([0, 0, 0, 1], 2.0, [False] * 4)
    return Evaluations(frames, rows, {a: TITLES[a] for a in attacks}, unseen, {"config": "unit"})


def test_cells_avg_and_the_identity_row():
    ev = _evaluations(["fgsm", "pgd", "cw"])
    seen = table(ev, "seen", "recovery_accuracy", resamples=50, seed=0).set_index("method")
    assert list(seen.loc["identity", ["clean", "fgsm", "pgd", "cw"]]) == [100, 0, 25, 50]
    assert seen.loc["identity", "avg"] == pytest.approx(175 / 4)
    assert list(seen.loc["net", ["clean", "fgsm", "pgd", "cw"]]) == [50, 75, 75, 75]  # clean: every model
    assert seen.loc["net", "fgsm_seed_sd"] == pytest.approx(np.std([100, 50], ddof=1))  # spread over seeds
    assert seen.loc["net", "avg"] == pytest.approx((50 + 3 * 75) / 4)
    assert seen.loc["net", "avg_seed_sd"] == pytest.approx(np.std([87.5, 50], ddof=1))
    assert np.isnan(seen.loc["identity", "fgsm_seed_sd"]) and seen.loc["identity", "seeds"] == 1
    assert seen.loc["net", "fgsm_ci_low"] <= 75 <= seen.loc["net", "fgsm_ci_high"]  # over seed-averaged images
    assert seen.loc["net", "clean_n"] == 4 and seen.loc["net", "title"] == "Net_1 & 50% {x}"  # each image once
    unseen = table(ev, "unseen", "recovery_accuracy", resamples=50, seed=0).set_index("method")
    assert list(unseen.loc["net", ["fgsm", "pgd", "cw"]]) == [25, 25, 25]  # the partner's model
    assert unseen.loc["identity", "pgd"] == seen.loc["identity", "pgd"]  # nothing trained, nothing differs
    assert seen.loc["identity", "pgd_ci_low"] <= 25 <= seen.loc["identity", "pgd_ci_high"]
    flipped = table(ev, "seen", "recovery_accuracy", resamples=50, seed=0, subset="flipped").set_index("method")
    assert list(flipped.loc["identity", ["fgsm_n", "pgd_n", "cw_n"]]) == [4, 3, 2]
    assert list(flipped.loc["identity", ["fgsm", "pgd", "cw"]]) == [0, 0, 0]  # doing nothing recovers no flip
    assert flipped["clean"].isna().all() and (flipped["clean_n"] == 0).all()
    # seed 0 recovers every image, seed 1 the first two: of pgd's flipped images (the last three) one
    assert flipped.loc["net", "pgd"] == pytest.approx((100 + 100 / 3) / 2)
    assert flipped.loc["net", "avg"] == pytest.approx(np.mean([(100 + 50) / 2, (100 + 100 / 3) / 2, (100 + 0) / 2]))
    detection = detection_table(ev, "seen").set_index("method")
    assert detection.loc["net", "fgsm"] == 1.0 and detection.loc["identity", "fgsm"] == 0.5


def test_latex_escapes_titles():
    assert (
        latex_escape("Net_1 & 50% {x} #2 $y ~ ^ \\")
        == r"Net\_1 \& 50\% \{x\} \#2 \$y \textasciitilde{} \textasciicircum{} \textbackslash{}"
    )


def _reported(tex: str) -> dict[str, list[str]]:
    body = tex.split("Reported in the paper")[1].split(r"\bottomrule")[0]
    cells = [line.removesuffix(r" \\").split(" & ") for line in body.splitlines()[1:] if " & " in line]
    return {row[0]: row[1:] for row in cells}


@pytest.mark.parametrize(
    "attacks",
    [
        ["pgd", "fgsm"],
        ["jsma", "cw", "bim", "deepfool", "ssah", "pgd", "fgsm"],
        ["fgsm", "pgd", "ssah", "deepfool", "bim", "cw", "jsma"],
    ],
)
def test_paper_rows_sit_under_their_own_attack_whatever_the_order_or_subset(tmp_path, attacks):
    config = load_config("smoke", [f"attack.names=[{', '.join(attacks)}]"])
    assert config.attack.names == attacks
    write_tables(_evaluations(attacks), tmp_path, resamples=10, seed=0)
    tex = (tmp_path / "table_ii_seen_recovery_accuracy.tex").read_text()
    header = next(line for line in tex.splitlines() if line.startswith("Method & "))
    assert header == "Method & " + " & ".join(["Clean", *(TITLES[a] for a in attacks), "Avg"]) + r" \\"
    ours = _reported(tex)["Ours (paper)"]
    assert len(ours) == len(attacks) + 2
    expected = [f"{TABLE_II['Ours (paper)'][c]:.1f}" for c in ["clean", *attacks]]
    assert ours[:-1] == expected
    assert ours[-1] == ("72.3" if len(attacks) == 7 else "--")  # the paper's Avg averages all eight columns


def test_reported_cells_leave_unknown_columns_empty():
    cells = reported_cells(TABLE_II["RR [22]"], ["clean", "pgd", "blur_attack", "avg"])
    assert cells[:2] == [86.5, 79.0] and all(np.isnan(cells[2:]))


def test_csv_files_carry_provenance_and_titles(tmp_path):
    written = write_tables(_evaluations(["fgsm", "pgd"]), tmp_path, resamples=10, seed=0)
    assert len(written) == 2 * (5 + 2) * 2  # II and III: five metrics, flipped only, detection; CSV and LaTeX
    csv = (tmp_path / "table_iii_unseen_recovery_accuracy.csv").read_text().splitlines()
    assert csv[0].startswith("# Table III") and csv[1] == "# config: unit" and "fgsm<-pgd" in csv[4]
    tex = (tmp_path / "table_ii_seen_recovery_accuracy.tex").read_text()
    assert "Net\\_1 \\& 50\\% \\{x\\} & 50.0{\\scriptsize$\\pm$0.0} & \\textbf{75.0}{\\scriptsize$\\pm$35.4} & " in tex
    assert "Identity (no defence) & \\textbf{100.0} & 0.0 & " in tex  # nothing trained: no spread


def test_rows_that_read_no_model_carry_the_spread_over_victims():
    ev = _evaluations(["fgsm", "pgd"])
    # two more victims for the identity row: on fgsm they keep 2 and 4 of the 4 images (main: 0)
    for seed, kept in ((1, 2), (2, 4)):
        ev.victim_frames[("identity", CLEAN, seed)] = _frame([1, 1, 1, 1], 0.0)
        ev.victim_frames[("identity", "fgsm", seed)] = _frame([1] * kept + [0] * (4 - kept), 0.0)
        ev.victim_frames[("identity", "pgd", seed)] = _frame([1, 0, 0, 0], 0.0)
    seen = table(ev, "seen", "recovery_accuracy", resamples=10, seed=0).set_index("method")
    assert seen.loc["identity", "fgsm"] == 0  # the table's own victim
    assert seen.loc["identity", "fgsm_victim_sd"] == pytest.approx(np.std([0, 50, 100], ddof=1))
    assert seen.loc["identity", "pgd_victim_sd"] == 0 and seen.loc["identity", "clean_victim_sd"] == 0
    assert seen.loc["identity", "avg_victim_sd"] == pytest.approx(
        np.std([(100 + 0 + 25) / 3, (100 + 50 + 25) / 3, (100 + 100 + 25) / 3], ddof=1)
    )
    for column in ("fgsm_victim_sd", "avg_victim_sd"):  # learned rows (two seeds here): seeds only
        assert np.isnan(seen.loc["net", column])
