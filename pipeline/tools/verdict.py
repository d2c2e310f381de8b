"""The verdict table of the README: each claim of the paper beside what a tier measured, and one word.

Every claim is a function of one tier's committed results (``results/<tier>/``) that returns what
was measured (with its spread) and a verdict by a stated rule: a difference counts when it exceeds
twice the standard deviation over training seeds of the rows compared (the seeds' own noise), else
it is "within noise". Nothing here is typed by hand but the paper's numbers (``paper_results``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.paper_results import TABLE_II, TABLE_III

HOLDS, FAILS, NOISE, UNTESTABLE = "holds", "does not hold", "within noise", "not testable here"
OURS, IDENTITY, SUPERVISED = "ours", "identity", ("paired_dae", "paired_dae_cae")
#: the paper's own method and the supervised methods it compares with ([18]-[22])
PAPER_OURS, PAPER_SUPERVISED = "Ours (paper)", ("ESMAF [21]", "SSAE [20]", "sim-DNN [18]", "DTBA [19]", "RR [22]")


def _reported_drops() -> str:
    """The paper's drop from Table II to III, for its method and the supervised method that drops least."""
    drop = {r: TABLE_II[r]["avg"] - TABLE_III[r]["avg"] for r in (PAPER_OURS, *PAPER_SUPERVISED)}
    least = min(PAPER_SUPERVISED, key=drop.__getitem__)
    return f"−{drop[PAPER_OURS]:.1f} against at best −{drop[least]:.1f} ({least})"


def _table(results: Path, stem: str) -> pd.DataFrame:
    return pd.read_csv(results / f"{stem}.csv", comment="#").set_index("method")


def _value(table: pd.DataFrame, row: str, column: str = "avg") -> tuple[float, float]:
    """A cell and its spread over seeds (0 where the row has one seed or none)."""
    sd = table.loc[row].get(f"{column}_seed_sd", np.nan)
    return float(table.loc[row, column]), 0.0 if pd.isna(sd) else float(sd)


def _compare(a: tuple[float, float], b: tuple[float, float]) -> str:
    """``holds`` when a exceeds b by more than twice their combined spread, ``does not hold`` when it
    falls short by as much, else ``within noise``."""
    margin = 2 * float(np.hypot(a[1], b[1]))
    return HOLDS if a[0] - b[0] > margin else FAILS if b[0] - a[0] > margin else NOISE


def _show(value: tuple[float, float], unit: str = "%") -> str:
    return f"{value[0]:.1f}{unit}" + (f" ± {value[1]:.1f}" if value[1] else "")


@dataclass(frozen=True)
class Claim:
    """A claim of the paper, what the paper reports for it, and how a tier's results test it."""

    text: str
    reported: str
    test: Callable[[Path, str], tuple[str, str]]  # (results folder, tier) -> (measured, verdict)


def _recovers(table: str) -> Callable[[Path, str], tuple[str, str]]:
    def test(results: Path, tier: str) -> tuple[str, str]:
        accuracy = _table(results, f"{table}_recovery_accuracy")
        flipped = _table(results, f"{table}_recovery_accuracy_flipped")
        ours, nothing = _value(accuracy, OURS), _value(accuracy, IDENTITY)
        return (
            f"recovery accuracy {_show(ours)} against {_show(nothing)} for doing nothing; on the images the "
            f"attacks flipped {_show(_value(flipped, OURS))}",
            _compare(ours, nothing),
        )

    return test


def _pixel_rate(results: Path, tier: str) -> tuple[str, str]:
    rate = _table(results, "table_ii_seen_pixel_rate")
    ours, nothing = _value(rate, OURS), _value(rate, IDENTITY)
    return (
        f"pixel rate at τ {_show(ours)}; doing nothing scores {_show(nothing)}, so the metric cannot tell "
        f"recovery from its absence",
        _compare(ours, nothing),
    )


def _above_supervised(results: Path, tier: str) -> tuple[str, str]:
    accuracy = _table(results, "table_ii_seen_recovery_accuracy")
    rows = [r for r in SUPERVISED if r in accuracy.index]
    if not rows:
        return "no supervised row in this tier's config", UNTESTABLE
    best = max(rows, key=lambda r: accuracy.loc[r, "avg"])
    ours, supervised = _value(accuracy, OURS), _value(accuracy, best)
    return f"Ours {_show(ours)} against {_show(supervised)} ({accuracy.loc[best, 'title']})", _compare(ours, supervised)


def _points(frame: pd.DataFrame, figure: str) -> dict[str, dict[str, tuple[float, float]]]:
    """An ablation CSV as curve -> point -> (mean, sd): Fig. 4's λ1 and λ2 over λ, Fig. 5's grid."""
    if figure == "fig4_lambdas":
        rows = frame.set_index("lambda")
        return {
            curve: {f"{lam:g}": (row[curve], row[f"{curve} sd"]) for lam, row in rows.iterrows()}
            for curve in ("λ1", "λ2")
        }
    grid = frame.set_index("N_CAE")
    return {
        "depths": {
            f"{nc}x{na}": (grid.loc[nc, na], grid.loc[nc, f"{na} sd"])
            for nc in grid.index
            for na in grid.columns
            if not na.endswith("sd")
        }
    }


def _optimum(figure: str, expected: str) -> Callable[[Path, str], tuple[str, str]]:
    """Is ``expected`` the best point of the paper's AAE in ``figure``, on every ablation attack? It
    holds unless another point beats it beyond noise (then the paper's optimum is not one here)."""

    def test(results: Path, tier: str) -> tuple[str, str]:
        files = [
            f
            for f in sorted((results / "ablations").glob(f"{figure}_*.csv"))
            if "_" not in f.stem.removeprefix(f"{figure}_")
        ]  # the paper's AAE; variants have a suffix
        if not files:
            return "no ablation run", UNTESTABLE
        found, verdicts = [], []
        for path in files:
            for curve, points in _points(pd.read_csv(path), figure).items():
                if expected not in points:
                    return f"{expected} was not swept", UNTESTABLE
                best = max(points, key=lambda k: points[k][0])
                found.append(
                    f"{curve} on {path.stem.removeprefix(f'{figure}_')}: best {best} "
                    f"({_show(points[best])}), {expected} {_show(points[expected])}"
                )
                verdicts.append(_compare(points[best], points[expected]))
        return "; ".join(found), FAILS if HOLDS in verdicts else HOLDS

    return test


def _degrades_less(results: Path, tier: str) -> tuple[str, str]:
    seen = _table(results, "table_ii_seen_recovery_accuracy")
    unseen = _table(results, "table_iii_unseen_recovery_accuracy")
    rows = [r for r in SUPERVISED if r in seen.index]
    if not rows:
        return "no supervised row in this tier's config", UNTESTABLE
    drops = {r: seen.loc[r, "avg"] - unseen.loc[r, "avg"] for r in [OURS, *rows]}
    text = ", ".join(f"{seen.loc[r, 'title'].split(' (')[0]} {d:+.1f}" for r, d in drops.items())
    verdict = HOLDS if drops[OURS] < min(drops[r] for r in rows) else FAILS
    return f"Table II − Table III averages: {text} points", verdict


def _cross_domain(results: Path, tier: str) -> tuple[str, str]:
    if tier == "matched":
        return "one domain for every role", UNTESTABLE
    return _recovers("table_ii_seen")(results, tier)


CLAIMS = [
    Claim(
        "Ours recovers attacked images it was trained on (Table II)",
        f"Avg {TABLE_II[PAPER_OURS]['avg']}% (their recovery rate)",
        _recovers("table_ii_seen"),
    ),
    Claim(
        "... and attacks it was not trained on (Table III)",
        f"Avg {TABLE_III[PAPER_OURS]['avg']}%",
        _recovers("table_iii_unseen"),
    ),
    Claim(
        "Pixel recovery rate (the paper's metric, read at tolerance τ)", f"{TABLE_II[PAPER_OURS]['avg']}%", _pixel_rate
    ),
    Claim(
        "Ours above the supervised methods",
        f"{TABLE_II[PAPER_OURS]['avg']}% against at most {max(TABLE_II[r]['avg'] for r in PAPER_SUPERVISED)}%",
        _above_supervised,
    ),
    Claim("Ours degrades less than supervised methods from seen to unseen attacks", _reported_drops(), _degrades_less),
    Claim("λ1 = λ2 = 0.001 is optimal (Fig. 4)", "peak 70.1% at 0.001", _optimum("fig4_lambdas", "0.001")),
    Claim("N_CAE = 4, N_AAE = 6 is the best trade-off (Fig. 5)", "peak around 4 x 6", _optimum("fig5_depths", "4x6")),
    Claim(
        "Recovery across domains (CAE on one domain, AAE on another, test on a third)", "Tables II-III", _cross_domain
    ),
]


def render_verdicts(tiers: dict[str, Path]) -> str:
    """The verdict table: a line per claim and tier."""
    lines = ["| claim of the paper | the paper | tier | measured here | verdict |", "|---|---|---|---|---|"]
    for claim in CLAIMS:
        for tier, results in tiers.items():
            measured, verdict = claim.test(results, tier)
            lines.append(f"| {claim.text} | {claim.reported} | {tier} | {measured} | **{verdict}** |")
    return "\n".join(lines)
