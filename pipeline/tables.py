"""Tables II-III (seen / unseen attacks) for every metric, detection AUROC, as CSV and LaTeX.

Input: per-image evaluation frames keyed by (row, training attack, test set); a row is a method (or
a variant of one) with its title. A cell of Table II for row m and attack a is m's model trained on
a, tested on a; Table III tests on a with the model trained on a's seeded random partner. The Clean
column averages m's models over clean test images (per image, so each test image counts once).
Avg is the mean of the table's columns (the paper's eight, as its rows are), except for PSNR, where
an unchanged image scores the 100 dB cap: there Avg is over the attacks. The ``flipped`` subset
keeps, per attack, only the images whose prediction the attack flipped (the Clean column has none).
Every CSV cell has a 95% bootstrap interval over test images and its number of images; files start
with their provenance (config, data manifests, commits). Each row says how many of the trained
models it reads are "not trained" (held-out PSNR within 1 dB of the mean image; ``pipeline.sanity``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.metrics import auroc, bootstrap_interval
from pipeline.paper_results import TABLE_II, TABLE_III, reported_cells

CLEAN = "clean"
#: metric column -> (label, scale for display)
METRICS: dict[str, tuple[str, float]] = {
    "recovery_accuracy": ("recovery accuracy (%)", 100.0),
    "label_accuracy": ("true-label accuracy (%)", 100.0),
    "pixel_rate": ("pixel recovery rate at tolerance (%)", 100.0),
    "psnr": ("PSNR (dB)", 1.0),
    "ssim": ("SSIM", 1.0),
}
#: metrics whose Avg leaves out the Clean column (an unchanged clean image scores a cap, not a measurement)
AVG_OVER_ATTACKS = {"psnr"}
#: image subsets a table can be restricted to: every image, or those whose prediction the attack flipped
SUBSETS = ("all", "flipped")


@dataclass(frozen=True)
class Row:
    """One row of the tables: what it measures (``id``), its title, whether it has a model per attack,
    and the training seeds of its models (``(None,)`` when nothing is trained)."""

    id: str
    title: str
    per_attack: bool
    seeds: tuple[int | None, ...] = (None,)
    not_trained: tuple[int, int] = (0, 0)  # of the trained models the row reads: how many not trained, of how many

    @property
    def flag(self) -> str:
        """``2/21 not trained`` when some of the row's models are not trained, else empty."""
        bad, total = self.not_trained
        return f"{bad}/{total} not trained" if bad else ""


@dataclass
class Evaluations:
    """Per-image frames by (row id, training attack or None, test set, training seed or None), and
    how tables are built."""

    frames: dict[tuple[str, str | None, str, int | None], pd.DataFrame]
    rows: list[Row]  # row order
    attacks: dict[str, str]  # column order: attack name -> title
    unseen: dict[str, str]  # test attack -> training attack
    provenance: dict[str, Any] = field(default_factory=dict)
    # rows that read no trained model, against other victims: (row id, test set, victim noise seed) -> frame
    victim_frames: dict[tuple[str, str, int], pd.DataFrame] = field(default_factory=dict)

    def victim_means(self, row: Row, column: str, metric: str, subset: str) -> list[float]:
        """The cell's mean for each ``victim.noise_seeds`` victim (empty for rows without them)."""
        frames = [
            f
            for (r, c, _), f in sorted(self.victim_frames.items(), key=lambda i: i[0][2])
            if r == row.id and c == column
        ]
        if subset == "flipped":
            frames = [f[f["input_pred"] != f["clean_pred"]] if column != CLEAN else f.iloc[:0] for f in frames]
        return [_mean(f[metric].to_numpy()) for f in frames]

    def _train(self, row: Row, attack: str, protocol: str) -> str | None:
        return None if not row.per_attack else attack if protocol == "seen" else self.unseen[attack]

    def cell_values(self, row: Row, column: str, protocol: str, metric: str, subset: str = "all") -> list[np.ndarray]:
        """The per-image values behind one table cell, one array per training seed (same images); for
        the Clean column of a row trained per attack, each image's mean over the attacks' models."""
        if column == CLEAN and subset == "flipped":  # nothing attacked, nothing flipped
            return [np.empty(0) for _ in row.seeds]
        if row.per_attack and column == CLEAN:
            return [
                np.mean([self.frames[(row.id, a, CLEAN, s)][metric].to_numpy() for a in self.attacks], axis=0)
                for s in row.seeds
            ]
        train = self._train(row, column, protocol) if column != CLEAN else None
        frames = [self.frames[(row.id, train, column, s)] for s in row.seeds]
        if subset == "flipped":
            frames = [f[f["input_pred"] != f["clean_pred"]] for f in frames]
        return [f[metric].to_numpy() for f in frames]

    def detection(self, row: Row, attack: str, protocol: str) -> float:
        """AUROC of the reconstruction error, clean test images against ``attack``'s, mean over seeds."""
        train = self._train(row, attack, protocol)
        return float(
            np.mean(
                [
                    auroc(
                        self.frames[(row.id, train, CLEAN, s)]["detection_score"].to_numpy(),
                        self.frames[(row.id, train, attack, s)]["detection_score"].to_numpy(),
                    )
                    for s in row.seeds
                ]
            )
        )


def _mean(values: np.ndarray) -> float:
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")


def _column_mean(values: Sequence[Sequence[float]]) -> np.ndarray:
    """The mean over columns (first axis) per seed or victim, of the columns that have images."""
    array = np.array(values)
    counted = np.isfinite(array).sum(0)
    return np.where(counted > 0, np.nansum(array, 0) / np.maximum(counted, 1), np.nan)


def _spread(means: Sequence[float]) -> float:
    """Standard deviation over training seeds (NaN with one seed)."""
    return float(np.std(means, ddof=1)) if len(means) > 1 else float("nan")


def table(ev: Evaluations, protocol: str, metric: str, resamples: int, seed: int, subset: str = "all") -> pd.DataFrame:
    """One table: rows = methods, columns = Clean, attacks..., Avg. A cell is the mean over training
    seeds of the per-seed mean, with the standard deviation over seeds (``_seed_sd``), a 95%
    bootstrap interval over test images of the per-image values averaged over seeds, and the number
    of images (``_n``); rows evaluated against more victims also carry the standard deviation over
    victims (``_victim_sd``: this victim and the others). ``subset`` restricts the images
    (``SUBSETS``), and Avg covers the columns that have any."""
    scale = METRICS[metric][1]
    columns = [CLEAN, *ev.attacks]
    averaged = [c for c in columns if not (c == CLEAN and (metric in AVG_OVER_ATTACKS or subset == "flipped"))]
    rows = []
    for method in ev.rows:
        row: dict[str, Any] = {
            "method": method.id,
            "title": method.title,
            "seeds": len(method.seeds),
            "not_trained": method.flag,
        }
        seed_means, victim_means, more_victims = [], [], False
        for column in columns:
            per_seed = [v * scale for v in ev.cell_values(method, column, protocol, metric, subset)]
            means = [_mean(v) for v in per_seed]
            pooled = np.mean(np.stack(per_seed), axis=0)
            low, high = bootstrap_interval(pooled, resamples, seed)
            row.update(
                {
                    column: float(np.mean(means)),
                    f"{column}_ci_low": low,
                    f"{column}_ci_high": high,
                    f"{column}_n": int(np.isfinite(pooled).sum()),
                    f"{column}_seed_sd": _spread(means),
                }
            )
            victims = [*means, *(m * scale for m in ev.victim_means(method, column, metric, subset))]
            if len(victims) > len(means):
                row[f"{column}_victim_sd"] = _spread(victims)
                more_victims = True
            if column in averaged:
                seed_means.append(means)
                victim_means.append(victims)
        row.update(
            {"avg": float(np.mean(_column_mean(seed_means))), "avg_seed_sd": _spread(list(_column_mean(seed_means)))}
        )
        if more_victims:
            row["avg_victim_sd"] = _spread(list(_column_mean(victim_means)))
        rows.append(row)
    return pd.DataFrame(rows)


def detection_table(ev: Evaluations, protocol: str) -> pd.DataFrame:
    """Detection AUROC of each row's reconstruction error, clean test images against each attack's."""
    rows = []
    for method in ev.rows:
        values = {a: ev.detection(method, a, protocol) for a in ev.attacks}
        rows.append(
            {
                "method": method.id,
                "title": method.title,
                "seeds": len(method.seeds),
                **values,
                "avg": float(np.mean(list(values.values()))),
            }
        )
    return pd.DataFrame(rows)


def spread(frame: pd.DataFrame, column: str) -> np.ndarray:
    """Each row's spread of one column: over training seeds where it has several, else over victims
    (rows that read no trained model, with ``victim.noise_seeds``), else NaN."""
    nan = np.full(len(frame), np.nan)
    seeds = frame[f"{column}_seed_sd"].to_numpy(dtype=float) if f"{column}_seed_sd" in frame else nan
    victims = frame[f"{column}_victim_sd"].to_numpy(dtype=float) if f"{column}_victim_sd" in frame else nan
    return np.where(np.isfinite(seeds), seeds, victims)


def _header(ev: Evaluations, title: str) -> list[str]:
    p = ev.provenance
    lines = [
        title,
        f"config: {p.get('config')}",
        f"commit(s): {', '.join(p.get('commits', []))}",
        f"data manifests (sha256): {', '.join(f'{k}={v[:12]}' for k, v in p.get('manifests', {}).items())}",
    ]
    if ev.unseen:
        lines.append("unseen pairing (test <- train): " + ", ".join(f"{t}<-{s}" for t, s in ev.unseen.items()))
    return lines


def write_csv(frame: pd.DataFrame, path: Path, header: Sequence[str]) -> None:
    with open(path, "w") as handle:
        handle.writelines(f"# {line}\n" for line in header)
        frame.to_csv(handle, index=False, float_format="%.4f")


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def latex_escape(text: str) -> str:
    """``text`` with LaTeX's special characters escaped, so it prints as written."""
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


def _latex_cell(value: float, spread: float, digits: int, bold: bool) -> str:
    """``value`` (bold if the column's best), with ``±spread`` over seeds in small type when known."""
    if not np.isfinite(value):
        return "--"
    text = f"\\textbf{{{value:.{digits}f}}}" if bold else f"{value:.{digits}f}"
    return text + (f"{{\\scriptsize$\\pm${spread:.{digits}f}}}" if np.isfinite(spread) else "")


def _latex_row(
    name: str,
    values: Sequence[float],
    digits: int,
    bold: AbstractSet[int] = frozenset(),
    spreads: Sequence[float] | None = None,
) -> str:
    spreads = spreads if spreads is not None else [float("nan")] * len(values)
    cells = [_latex_cell(v, sd, digits, i in bold) for i, (v, sd) in enumerate(zip(values, spreads))]
    return " & ".join([latex_escape(name), *cells]) + r" \\"


def write_latex(
    frame: pd.DataFrame,
    path: Path,
    ev: Evaluations,
    caption: str,
    digits: int,
    reported: Mapping[str, Mapping[str, float]] | None,
    with_clean: bool = True,
) -> None:
    """A booktabs table: the measured block, then (if given) the paper's rows, marked as reported."""
    columns = [CLEAN] * with_clean + [*ev.attacks, "avg"]
    heads = ["Clean"] * with_clean + [*ev.attacks.values(), "Avg"]
    lines = [f"% {line}" for line in _header(ev, "generated by advrecover (pipeline tables)")]
    lines += [
        r"\begin{table}[t]",
        r"\centering",
        f"\\caption{{{caption}}}",
        r"\begin{tabular}{l" + "r" * len(columns) + "}",
        r"\toprule",
        " & ".join(["Method", *heads]) + r" \\",
        r"\midrule",
        rf"\multicolumn{{{len(columns) + 1}}}{{l}}{{\emph{{Measured here ({ev.provenance.get('config')} config)}}}} \\",
    ]
    values = frame[columns].to_numpy(dtype=float)
    spreads = np.stack([spread(frame, c) for c in columns], axis=1)
    best = {j for j in range(len(columns)) if np.isfinite(values[:, j]).any()}
    top = {j: int(np.nanargmax(values[:, j])) for j in best}
    flags = frame["not_trained"].fillna("") if "not_trained" in frame else pd.Series([""] * len(frame))
    for i, (title, flag) in enumerate(zip(frame["title"], flags)):
        name = f"{title} ({flag})" if flag else title
        lines.append(_latex_row(name, values[i], digits, {j for j in best if top[j] == i}, spreads[i]))
    if reported:
        lines += [
            r"\midrule",
            rf"\multicolumn{{{len(columns) + 1}}}{{l}}{{\emph{{Reported in the paper "
            r"(their recovery rate; not measured here, not comparable)}} \\",
        ]
        lines += [_latex_row(name, reported_cells(dict(row), columns), 1) for name, row in reported.items()]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    path.write_text("\n".join(lines) + "\n")


def write_tables(ev: Evaluations, out: Path, resamples: int, seed: int) -> list[Path]:
    """Every table of the paper's protocol into ``out``; returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    tables = [(metric, "all") for metric in METRICS] + [("recovery_accuracy", "flipped")]
    for number, protocol, reported in (("II", "seen", TABLE_II), ("III", "unseen", TABLE_III)):
        for metric, subset in tables:
            label = METRICS[metric][0] + (", images the attack flipped" if subset == "flipped" else "")
            frame = table(ev, protocol, metric, resamples, seed, subset)
            stem = f"table_{number.lower()}_{protocol}_{metric}" + ("_flipped" if subset == "flipped" else "")
            title = f"Table {number} ({protocol} attacks), {label}"
            avg = (
                "Avg: mean of the attack columns"
                if metric in AVG_OVER_ATTACKS or subset == "flipped"
                else "Avg: mean of the eight columns"
            )
            write_csv(frame, out / f"{stem}.csv", _header(ev, title) + [avg])
            caption = (
                f"Table {number}: {protocol} attacks on the test role, {label}; "
                f"config {ev.provenance.get('config')}; {avg}."
            )
            digits = 3 if metric == "ssim" else 1
            write_latex(
                frame,
                out / f"{stem}.tex",
                ev,
                caption,
                digits,
                reported if (metric, subset) == ("recovery_accuracy", "all") else None,
            )
            written += [out / f"{stem}.csv", out / f"{stem}.tex"]
        frame = detection_table(ev, protocol)
        stem = f"detection_auroc_{protocol}"
        write_csv(frame, out / f"{stem}.csv", _header(ev, f"Detection AUROC, {protocol} attacks (Fig. 6)"))
        write_latex(
            frame,
            out / f"{stem}.tex",
            ev,
            f"Attack detection AUROC by reconstruction error, {protocol} attacks.",
            3,
            None,
            with_clean=False,
        )
        written += [out / f"{stem}.csv", out / f"{stem}.tex"]
    return written
