"""Tables II-III (seen / unseen attacks) for every metric, detection AUROC, as CSV and LaTeX.

Input: per-image evaluation frames keyed by (row, training attack, test set); a row is a method (or
a variant of one) with its title. A cell of Table II for row m and attack a is m's model trained on
a, tested on a; Table III tests on a with the model trained on a's seeded random partner. The Clean
column averages m's models over clean test images. Avg is the mean of the table's columns (the
paper's eight, as its rows are). Every CSV cell has a 95% bootstrap interval over test images;
files start with their provenance (config, data manifests, commits).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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


@dataclass(frozen=True)
class Row:
    """One row of the tables: what it measures (``id``), its title, whether it has a model per attack,
    and the training seeds of its models (``(None,)`` when nothing is trained)."""

    id: str
    title: str
    per_attack: bool
    seeds: tuple[int | None, ...] = (None,)


@dataclass
class Evaluations:
    """Per-image frames by (row id, training attack or None, test set, training seed or None), and
    how tables are built."""

    frames: dict[tuple[str, str | None, str, int | None], pd.DataFrame]
    rows: list[Row]  # row order
    attacks: dict[str, str]  # column order: attack name -> title
    unseen: dict[str, str]  # test attack -> training attack
    provenance: dict[str, Any] = field(default_factory=dict)

    def _train(self, row: Row, attack: str, protocol: str) -> str | None:
        return None if not row.per_attack else attack if protocol == "seen" else self.unseen[attack]

    def cell_values(self, row: Row, column: str, protocol: str, metric: str) -> list[np.ndarray]:
        """The per-image values behind one table cell, one array per training seed (same images)."""
        if row.per_attack and column == CLEAN:
            return [np.concatenate([self.frames[(row.id, a, CLEAN, s)][metric].to_numpy() for a in self.attacks])
                    for s in row.seeds]
        train = self._train(row, column, protocol) if column != CLEAN else None
        return [self.frames[(row.id, train, column, s)][metric].to_numpy() for s in row.seeds]

    def detection(self, row: Row, attack: str, protocol: str) -> float:
        """AUROC of the reconstruction error, clean test images against ``attack``'s, mean over seeds."""
        train = self._train(row, attack, protocol)
        return float(np.mean([auroc(self.frames[(row.id, train, CLEAN, s)]["detection_score"].to_numpy(),
                                    self.frames[(row.id, train, attack, s)]["detection_score"].to_numpy())
                              for s in row.seeds]))


def _mean(values: np.ndarray) -> float:
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")


def _spread(means: Sequence[float]) -> float:
    """Standard deviation over training seeds (NaN with one seed)."""
    return float(np.std(means, ddof=1)) if len(means) > 1 else float("nan")


def table(ev: Evaluations, protocol: str, metric: str, resamples: int, seed: int) -> pd.DataFrame:
    """One table: rows = methods, columns = Clean, attacks..., Avg. A cell is the mean over training
    seeds of the per-seed mean, with the standard deviation over seeds (``_seed_sd``) and a 95%
    bootstrap interval over test images of the per-image values averaged over seeds."""
    scale = METRICS[metric][1]
    rows = []
    for method in ev.rows:
        row: dict[str, Any] = {"method": method.id, "title": method.title, "seeds": len(method.seeds)}
        seed_means = []
        for column in [CLEAN, *ev.attacks]:
            per_seed = [v * scale for v in ev.cell_values(method, column, protocol, metric)]
            means = [_mean(v) for v in per_seed]
            pooled = np.mean(np.stack(per_seed), axis=0)
            low, high = bootstrap_interval(pooled, resamples, seed)
            row.update({column: float(np.mean(means)), f"{column}_ci_low": low, f"{column}_ci_high": high,
                        f"{column}_n": int(np.isfinite(pooled).sum()), f"{column}_seed_sd": _spread(means)})
            seed_means.append(means)
        per_seed_avg = np.mean(seed_means, axis=0)
        row.update({"avg": float(np.mean(per_seed_avg)), "avg_seed_sd": _spread(list(per_seed_avg))})
        rows.append(row)
    return pd.DataFrame(rows)


def detection_table(ev: Evaluations, protocol: str) -> pd.DataFrame:
    """Detection AUROC of each row's reconstruction error, clean test images against each attack's."""
    rows = []
    for method in ev.rows:
        values = {a: ev.detection(method, a, protocol) for a in ev.attacks}
        rows.append({"method": method.id, "title": method.title, "seeds": len(method.seeds), **values,
                     "avg": float(np.mean(list(values.values())))})
    return pd.DataFrame(rows)


def _header(ev: Evaluations, title: str) -> list[str]:
    p = ev.provenance
    lines = [title, f"config: {p.get('config')}", f"commit(s): {', '.join(p.get('commits', []))}",
             f"data manifests (sha256): {', '.join(f'{k}={v[:12]}' for k, v in p.get('manifests', {}).items())}"]
    if ev.unseen:
        lines.append("unseen pairing (test <- train): " + ", ".join(f"{t}<-{s}" for t, s in ev.unseen.items()))
    return lines


def write_csv(frame: pd.DataFrame, path: Path, header: Sequence[str]) -> None:
    with open(path, "w") as handle:
        handle.writelines(f"# {line}\n" for line in header)
        frame.to_csv(handle, index=False, float_format="%.4f")


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(text: str) -> str:
    """``text`` with LaTeX's special characters escaped, so it prints as written."""
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


def _latex_cell(value: float, spread: float, digits: int, bold: bool) -> str:
    """``value`` (bold if the column's best), with ``±spread`` over seeds in small type when known."""
    if not np.isfinite(value):
        return "--"
    text = f"\\textbf{{{value:.{digits}f}}}" if bold else f"{value:.{digits}f}"
    return text + (f"{{\\scriptsize$\\pm${spread:.{digits}f}}}" if np.isfinite(spread) else "")


def _latex_row(name: str, values: Sequence[float], digits: int, bold: set[int] = frozenset(),
               spreads: Sequence[float] | None = None) -> str:
    spreads = spreads if spreads is not None else [float("nan")] * len(values)
    cells = [_latex_cell(v, sd, digits, i in bold) for i, (v, sd) in enumerate(zip(values, spreads))]
    return " & ".join([latex_escape(name), *cells]) + r" \\"


def write_latex(frame: pd.DataFrame, path: Path, ev: Evaluations, caption: str, digits: int,
                reported: Mapping[str, Mapping[str, float]] | None, with_clean: bool = True) -> None:
    """A booktabs table: the measured block, then (if given) the paper's rows, marked as reported."""
    columns = [CLEAN] * with_clean + [*ev.attacks, "avg"]
    heads = ["Clean"] * with_clean + [*ev.attacks.values(), "Avg"]
    lines = [f"% {line}" for line in _header(ev, "generated by advrecover (pipeline tables)")]
    lines += [r"\begin{table}[t]", r"\centering", f"\\caption{{{caption}}}",
              r"\begin{tabular}{l" + "r" * len(columns) + "}", r"\toprule",
              " & ".join(["Method", *heads]) + r" \\", r"\midrule",
              rf"\multicolumn{{{len(columns) + 1}}}{{l}}{{\emph{{Measured here ({ev.provenance.get('config')} config)}}}} \\"]
    values = frame[columns].to_numpy(dtype=float)
    spreads = np.stack([frame[f"{c}_seed_sd"].to_numpy(dtype=float) if f"{c}_seed_sd" in frame
                        else np.full(len(frame), np.nan) for c in columns], axis=1)
    best = {j for j in range(len(columns)) if np.isfinite(values[:, j]).any()}
    top = {j: int(np.nanargmax(values[:, j])) for j in best}
    for i, title in enumerate(frame["title"]):
        lines.append(_latex_row(title, values[i], digits, {j for j in best if top[j] == i}, spreads[i]))
    if reported:
        lines += [r"\midrule", rf"\multicolumn{{{len(columns) + 1}}}{{l}}{{\emph{{Reported in the paper "
                               r"(their recovery rate; not measured here, not comparable)}} \\"]
        lines += [_latex_row(name, reported_cells(dict(row), columns), 1) for name, row in reported.items()]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    path.write_text("\n".join(lines) + "\n")


def write_tables(ev: Evaluations, out: Path, resamples: int, seed: int) -> list[Path]:
    """Every table of the paper's protocol into ``out``; returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for number, protocol, reported in (("II", "seen", TABLE_II), ("III", "unseen", TABLE_III)):
        for metric, (label, _) in METRICS.items():
            frame = table(ev, protocol, metric, resamples, seed)
            stem = f"table_{number.lower()}_{protocol}_{metric}"
            title = f"Table {number} ({protocol} attacks), {label}"
            write_csv(frame, out / f"{stem}.csv", _header(ev, title))
            caption = (f"Table {number}: {protocol} attacks on the test role, {label}; "
                       f"config {ev.provenance.get('config')}.")
            digits = 3 if metric == "ssim" else 1
            write_latex(frame, out / f"{stem}.tex", ev, caption, digits,
                        reported if metric == "recovery_accuracy" else None)
            written += [out / f"{stem}.csv", out / f"{stem}.tex"]
        frame = detection_table(ev, protocol)
        stem = f"detection_auroc_{protocol}"
        write_csv(frame, out / f"{stem}.csv", _header(ev, f"Detection AUROC, {protocol} attacks (Fig. 6)"))
        write_latex(frame, out / f"{stem}.tex", ev,
                    f"Attack detection AUROC by reconstruction error, {protocol} attacks.", 3, None, with_clean=False)
        written += [out / f"{stem}.csv", out / f"{stem}.tex"]
    return written
