"""The paper's figures from measured results: Fig. 4 (λ sweeps), Fig. 5 (depths), Fig. 6 (detection),
Fig. 7 (recovered images), and the training curves. PNG bytes depend only on the data (no timestamps)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

_PNG = {"format": "png", "dpi": 120, "metadata": {"Software": None}}


def _save(fig, path: Path) -> None:
    fig.savefig(path, **_PNG)
    plt.close(fig)


def recovery_grid(rows: Sequence[tuple[str, Mapping[str, np.ndarray]]], columns: Sequence[str], path: Path) -> None:
    """Fig. 7: one row per (attack, image), one column per kind of image (each 3 x H x W in [0, 1])."""
    fig, axes = plt.subplots(len(rows), len(columns), figsize=(1.3 * len(columns), 1.3 * len(rows)), squeeze=False)
    for i, (label, images) in enumerate(rows):
        for j, column in enumerate(columns):
            ax = axes[i, j]
            ax.imshow(np.clip(images[column].transpose(1, 2, 0), 0, 1), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(column, fontsize=7)
            if j == 0:
                ax.set_ylabel(label, fontsize=7)
    fig.tight_layout()
    _save(fig, path)


def detection_bars(methods: Sequence[str], seen: Sequence[float], unseen: Sequence[float], path: Path) -> None:
    """Fig. 6: mean detection AUROC per method, seen vs unseen attacks."""
    fig, ax = plt.subplots(figsize=(6, 3))
    x = np.arange(len(methods))
    ax.bar(x - 0.2, seen, 0.4, label="seen")
    ax.bar(x + 0.2, unseen, 0.4, label="unseen")
    ax.set_xticks(x, methods, rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("detection AUROC")
    ax.set_ylim(0, 1)
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.legend(fontsize=7)
    fig.tight_layout()
    _save(fig, path)


def lambda_sweep(
    lambdas: Sequence[float],
    curves: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    ylabel: str,
    path: Path,
    levels: Mapping[str, float] = {},
) -> None:
    """Fig. 4: recovery vs λ1 and λ2 on a log axis, each curve its (means, standard deviations over
    seeds) as error bars, ``levels`` (label -> value, e.g. doing nothing) as dashed lines."""
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    for name, (means, sds) in curves.items():
        ax.errorbar(lambdas, means, yerr=np.nan_to_num(sds), marker="o", capsize=2, label=name)
    for k, (label, level) in enumerate(levels.items()):
        ax.axhline(level, color="grey", lw=0.8, ls="--" if k == 0 else ":", label=label)
    ax.set_xscale("log")
    ax.set_xlabel("λ")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)
    fig.tight_layout()
    _save(fig, path)


def depth_heatmaps(
    cae_depths: Sequence[int],
    aae_depths: Sequence[int],
    grids: Mapping[str, tuple[np.ndarray, np.ndarray]],
    label: str,
    path: Path,
) -> None:
    """Fig. 5: recovery for every (N_CAE, N_AAE), one panel per swept row (title -> (means, standard
    deviations over seeds)), one colour scale; each cell reads ``mean±sd``."""
    values = np.stack([means for means, _ in grids.values()])
    low, high = float(np.nanmin(values)), float(np.nanmax(values))
    low, high = (low, high) if high > low else (low - 1, high + 1)  # one colour for equal values
    width, height = 1 + 0.8 * len(aae_depths), 1 + 0.5 * len(cae_depths)
    fig, axes = plt.subplots(
        1, len(grids), figsize=(width * len(grids) + 1, height), squeeze=False, layout="constrained"
    )
    for ax, (title, (grid, sds)) in zip(axes[0], grids.items()):
        image = ax.imshow(grid, cmap="viridis", aspect="auto", vmin=low, vmax=high)
        ax.set_xticks(range(len(aae_depths)), aae_depths)
        ax.set_yticks(range(len(cae_depths)), cae_depths)
        ax.set_xlabel("N_AAE")
        ax.set_ylabel("N_CAE")
        ax.set_title(title, fontsize=8)
        for i in range(len(cae_depths)):
            for j in range(len(aae_depths)):
                spread = f"±{sds[i, j]:.1f}" if np.isfinite(sds[i, j]) else ""
                ax.text(j, i, f"{grid[i, j]:.1f}{spread}", ha="center", va="center", fontsize=6, color="white")
    fig.colorbar(image, ax=list(axes[0]), label=label)
    _save(fig, path)


def training_curves(
    panels: Mapping[str, Mapping[str, Sequence[tuple[int, float]]]], path: Path, columns: int = 4
) -> None:
    """Loss per epoch, one panel per model (title -> line label -> (epoch, loss) points), log scale,
    ``columns`` panels a row."""
    rows = -(-len(panels) // columns)
    width = min(columns, len(panels))
    fig, axes = plt.subplots(rows, width, figsize=(3.2 * width, 2.6 * rows), squeeze=False)
    for ax, (title, lines) in zip(axes.flat, panels.items()):
        for label, points in lines.items():
            ax.plot([e for e, _ in points], [v for _, v in points], label=label, lw=1)
        ax.set_yscale("log")
        ax.set_title(title, fontsize=8)
        ax.set_xlabel("epoch", fontsize=7)
        ax.tick_params(which="both", labelsize=6)
        ax.legend(fontsize=5)
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    for row in axes:
        row[0].set_ylabel("loss per image", fontsize=7)
    fig.tight_layout()
    _save(fig, path)


def convergence_panels(
    runs: Mapping[str, Mapping[str, Sequence[tuple[Sequence[float], Sequence[float]]]]],
    references: Mapping[str, Mapping[str, float]],
    path: Path,
    log_y: Sequence[str] = (),
) -> None:
    """The convergence study: one column per run (title -> quantity -> one (steps, values) line per
    seed, drawn thin), one row per quantity (log-scaled for those in ``log_y``), log-scaled steps;
    ``references`` (quantity -> label -> level) are dashed lines in every panel of that quantity."""
    quantities = list(dict.fromkeys(q for lines in runs.values() for q in lines))
    fig, axes = plt.subplots(
        len(quantities), len(runs), figsize=(2.4 * len(runs), 2.0 * len(quantities)), squeeze=False, sharex=True
    )
    for j, (title, lines) in enumerate(runs.items()):
        axes[0, j].set_title(title, fontsize=7)
        for i, quantity in enumerate(quantities):
            ax = axes[i, j]
            for steps, values in lines.get(quantity, []):
                ax.plot(steps, values, lw=0.8, color="C0", marker=".", markersize=2)
            for k, (label, level) in enumerate(references.get(quantity, {}).items()):
                ax.axhline(level, color=f"C{k + 1}", lw=0.8, ls="--", label=label)
            ax.set_xscale("log")
            if quantity in log_y:
                ax.set_yscale("log")
            ax.tick_params(which="both", labelsize=6)
            if j == 0:
                ax.set_ylabel(quantity, fontsize=7)
                if references.get(quantity):
                    ax.legend(fontsize=5)
            if i == len(quantities) - 1:
                ax.set_xlabel("steps", fontsize=7)
    for i in range(len(quantities)):  # one scale per row, so runs compare at a glance
        lows, highs = zip(*(axes[i, j].get_ylim() for j in range(len(runs))))
        for j in range(len(runs)):
            axes[i, j].set_ylim(min(lows), max(highs))
    fig.tight_layout()
    _save(fig, path)
