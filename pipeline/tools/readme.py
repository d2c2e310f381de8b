"""``pipeline readme``: refresh the generated blocks of README.md from the files in ``results/``.

A block is the text between ``<!-- results:NAME -->`` and the next ``<!-- end -->``. Nothing in
a block is typed by hand: each is rendered from committed result files by a renderer below.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from jobs.artifacts import (
    ABLATIONS,
    ATTACKS_TABLE,
    CONVERGENCE,
    CONVERGENCE_SUMMARY,
    FIG_CONVERGENCE,
    FIG_DEPTHS,
    FIG_DETECTION,
    FIG_LAMBDAS,
    FIG_RECOVERY,
    FIG_TRAINING,
    PROVENANCE,
    TRAINING_SANITY,
    VICTIMS_TABLE,
)
from pipeline.attacks.catalog import ATTACKS
from pipeline.errors import PipelineError
from pipeline.tables import spread
from pipeline.tools.verdict import render_verdicts

#: column heads of the tables, besides the attacks' own titles
HEADS = {"clean": "Clean", "avg": "Avg"}


def _read(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise PipelineError(f"{path} does not exist yet: run `pipeline run all` or `pipeline tables` first")
    return pd.read_csv(path, comment="#")


def _title(column: str) -> str:
    if column in HEADS:
        return HEADS[column]
    return ATTACKS[column].title if column in ATTACKS else column


#: a PSNR at the metric's cap: the image is unchanged
PSNR_CAP = 100.0


def _markdown(frame: pd.DataFrame, digits: int, counts: bool = False, cap: float | None = None) -> str:
    """A table CSV (columns ``method``, ``title``, clean, the attacks, avg, their intervals) as Markdown;
    rows with models that are not trained say how many; ``counts``: a last line with each column's
    number of images; values at ``cap`` (a metric's maximum, e.g. the PSNR of an unchanged image) as ∞."""
    order = {"clean": 0, "avg": 2}
    columns = sorted((c for c in frame.columns if c in HEADS or c in ATTACKS), key=lambda c: order.get(c, 1))
    heads = ["Method", *map(_title, columns)]
    lines = ["| " + " | ".join(heads) + " |", "|---" * len(heads) + "|"]
    spreads = {c: spread(frame, c) for c in columns}
    for i, (_, row) in enumerate(frame.iterrows()):
        cells = ["∞" if cap is not None and row[c] >= cap else _cell(row[c], spreads[c][i], digits) for c in columns]
        flag = row.get("not_trained")
        title = f"{row['title']} **({flag})**" if isinstance(flag, str) and flag else row["title"]
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    if counts:  # the same images in every row: read them off the identity row where there is one
        first = frame[frame["method"] == "identity"].iloc[0] if (frame["method"] == "identity").any() else frame.iloc[0]
        lines.append(
            "| *images (n)* | "
            + " | ".join(str(int(first[f"{c}_n"])) if f"{c}_n" in frame else "" for c in columns)
            + " |"
        )
    return "\n".join(lines)


def _cell(value: float, sd: float, digits: int) -> str:
    """A value, with ``± sd`` (over training seeds or victims) where there is one; ``–`` where there is none."""
    if pd.isna(value):
        return "–"
    return f"{value:.{digits}f}" + (f" ± {sd:.{digits}f}" if pd.notna(sd) else "")


def render_results(results: Path) -> str:
    """Tables II and III (recovery accuracy, PSNR), the detection AUROC and the figures of one config."""
    provenance = json.loads(render_file(results / PROVENANCE))
    runtimes = "; ".join(
        f"{r['device']}, {r['threads']} thread(s), torch {r['torch']}" for r in provenance.get("runtime", []) if r
    )
    seeds = provenance.get("seeds", [])
    header = (
        f"Config `{provenance['config']}`, commit(s) {', '.join(c[:12] for c in provenance['commits'])}, "
        f"data manifests {', '.join(f'{k} {v[:12]}' for k, v in provenance['manifests'].items())}, "
        f"training seeds {', '.join(map(str, seeds))} (learned rows: mean ± standard deviation over "
        f"seeds), run on {runtimes or 'an unrecorded device'}. Files: [`{results}/`]({results}/)."
    )
    parts = [header]
    for title, stem, options in (
        (
            "Table II, seen attacks — recovery accuracy on the images the attack flipped (%; Avg over the attacks)",
            "table_ii_seen_recovery_accuracy_flipped",
            {"counts": True},
        ),
        ("Table II, seen attacks — recovery accuracy (%)", "table_ii_seen_recovery_accuracy", {}),
        ("Table III, unseen attacks — recovery accuracy (%)", "table_iii_unseen_recovery_accuracy", {}),
        (
            "Table II, seen attacks — PSNR against the clean image (dB; ∞: unchanged; Avg over the attacks)",
            "table_ii_seen_psnr",
            {"cap": PSNR_CAP},
        ),
        ("Table II, seen attacks — pixel recovery rate at τ (%)", "table_ii_seen_pixel_rate", {}),
    ):
        parts += [f"**{title}**", _markdown(_read(results / f"{stem}.csv"), 1, **options)]
    detection = _read(results / "detection_auroc_seen.csv").assign(clean=float("nan"))
    parts += ["**Detection AUROC by reconstruction error, seen attacks (Fig. 6)**", _markdown(detection, 3)]
    parts += [f"![Fig. 7]({results}/{FIG_RECOVERY})", f"![Fig. 6]({results}/{FIG_DETECTION})"]
    ablations = results / ABLATIONS
    for fig4 in sorted(ablations.glob(f"{FIG_LAMBDAS}_*.png")):
        attack = fig4.stem.removeprefix(f"{FIG_LAMBDAS}_")
        parts += [f"![Fig. 4, {attack}]({fig4}) ![Fig. 5, {attack}]({ablations}/{FIG_DEPTHS}_{attack}.png)"]
    return "\n\n".join(parts)


def render_sanity(results: Path) -> str:
    """Is each trained model trained? Its held-out PSNR in its own domain beside the per-pixel mean
    image's (the floor) and the class-mean image's, from ``training_sanity.csv``: per model, the
    mean over training data and seeds and the range, how many are "not trained" (within 1 dB of the
    floor), and its recovery accuracy on the clean test images (does it keep the class?)."""
    sanity = _read(results / TRAINING_SANITY)
    lines = [
        "| model | trained on | models | steps | held-out images | held-out PSNR (dB) | mean image (dB) "
        "| class-mean image (dB) | not trained | D_CAE(E_AAE(x)) vs x (dB) | clean test images kept (%) "
        "| steps clipped |",
        "|---" * 12 + "|",
    ]
    for title, group in sanity.groupby("title", sort=False):
        data = "clean images" if set(group["data"]) == {"clean"} else f"{group['data'].nunique()} attacks"
        cells = [
            _mean_span(group[k].dropna()) if group[k].notna().any() else "–"
            for k in ("heldout_psnr", "mean_image_psnr", "class_mean_psnr")
        ]
        recovered, kept = group["recovered_psnr"].dropna(), 100 * group["clean_recovery_accuracy"].dropna()
        lines.append(
            f"| {title.removesuffix(' (not in the paper)')} | {data} | {len(group)} | "
            f"{_span(group['steps'], 0)} | {_span(group['heldout'], 0)} | {' | '.join(cells)} | "
            f"{int(group['not_trained'].sum())} of {len(group)} | "
            f"{_mean_span(recovered) if len(recovered) else '–'} | {_mean_span(kept) if len(kept) else '–'} | "
            f"{_share(group['clipped_steps'])} |"
        )
    return "\n".join(lines) + f"\n\n![training curves, first seed]({results}/{FIG_TRAINING})"


def _share(values: pd.Series) -> str:
    """The mean fraction of training steps whose gradient was clipped, or – without clipping."""
    return "–" if values.isna().all() else f"{100 * values.mean():.0f}%"


def _span(values: pd.Series, digits: int) -> str:
    low, high = values.min(), values.max()
    return f"{low:.{digits}f}" if low == high else f"{low:.{digits}f}–{high:.{digits}f}"


def _mean_span(values: pd.Series) -> str:
    """``mean (min–max)`` over the models of one row."""
    return f"{values.mean():.1f} ({_span(values, 1)})"


def render_attacks(results: Path) -> str:
    """Victim accuracy and per-attack success of one config, from ``victims.csv`` and ``attacks.csv``."""
    victims, attacks = _read(results / VICTIMS_TABLE), _read(results / ATTACKS_TABLE)
    lines = [
        "| victim of | held-out accuracy | accuracy on the attacked images | chance | majority class |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {r.role} | {r.val_accuracy:.3f} | {r.role_accuracy:.3f} | {r.chance:.3f} | {r.majority:.3f} |"
        for r in victims.itertuples()
    ]
    lines += [
        "",
        "| role | attack | images | success (as stored) | before storage | mean L∞ | mean L2 |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r.role} | {_title(r.attack)} | {r.n} | {r.success:.3f} | {r.success_before_storage:.3f} | "
        f"{r.linf:.4f} | {r.l2:.3f} |"
        for r in attacks.itertuples()
    ]
    return "\n".join(lines)


def render_convergence(results: Path) -> str:
    """The convergence study of one config, from ``convergence/summary.csv``: per run and attack, the
    steps reached, how many seeds plateaued, and the last measurement (mean ± sd over seeds)."""
    summary = _read(results / CONVERGENCE / CONVERGENCE_SUMMARY)
    lines = [
        "| run | attack | steps | plateaued | objective, held out | cycle PSNR (dB) | D(E(x)) vs clean (dB) "
        "| recovery accuracy (%) | on flipped images (%) | doing nothing / CAE alone (%) |",
        "|---" * 10 + "|",
    ]
    for r in summary.itertuples():
        objective = r.heldout_paper if pd.notna(r.heldout_paper) else r.heldout_total
        objective_sd = r.heldout_paper_sd if pd.notna(r.heldout_paper) else r.heldout_total_sd
        reference = f"{100 * r.reference_identity:.1f}" + (
            f" / {100 * r.reference_cae:.1f}" if pd.notna(getattr(r, "reference_cae", float("nan"))) else ""
        )
        lines.append(
            f"| {r.run} | {_title(r.attack)} | {_span(pd.Series([r.steps_min, r.steps_max]), 0)} | "
            f"{int(r.plateaued)} of {int(r.seeds)} | {_cell(objective, objective_sd, 2)} | "
            f"{_cell(r.psnr_objective, r.psnr_objective_sd, 1)} | "
            f"{_cell(r.psnr_recovered_clean, r.psnr_recovered_clean_sd, 1)} | "
            f"{_cell(100 * r.recovery_accuracy, 100 * r.recovery_accuracy_sd, 1)} | "
            f"{_cell(100 * r.recovery_accuracy_flipped, 100 * r.recovery_accuracy_flipped_sd, 1)} | {reference} |"
        )
    figures = sorted((results / CONVERGENCE).glob(f"{FIG_CONVERGENCE}_*.png"))
    return "\n".join(lines) + "".join(f"\n\n![convergence, {f.stem.split('_')[-1]}]({f})" for f in figures)


def render_file(path: Path) -> str:
    if not path.is_file():
        raise PipelineError(f"{path} does not exist yet")
    return path.read_text().strip()


def _tier_renderer(render: Callable[[Path], str], tier: str) -> Callable[[], str]:
    """``render`` applied to one tier's results folder, when called."""
    return lambda: render(Path("results") / tier)


TIERS = ("demo", "matched")  # configs whose committed results the README shows
_PER_TIER: dict[str, Callable[[Path], str]] = {"": render_results, "-attacks": render_attacks, "-sanity": render_sanity}
RENDERERS: dict[str, Callable[[], str]] = {
    **{f"{tier}{kind}": _tier_renderer(render, tier) for tier in TIERS for kind, render in _PER_TIER.items()},
    "matched-convergence": lambda: render_convergence(Path("results") / "matched"),
    "verdict": lambda: render_verdicts({tier: Path("results") / tier for tier in reversed(TIERS)}),
    "bench": lambda: render_file(Path("results/bench.md")),
    "faults": lambda: render_file(Path("results/reliability.md")),
}


def _between_markers(body: str) -> Callable[[re.Match[str]], str]:
    """The replacement of a matched block: its two markers around ``body`` (taken literally)."""
    return lambda m: m.group(1) + body + "\n" + m.group(2)


def refresh(readme: Path, names: list[str] | None = None) -> list[str]:
    """Re-render the named blocks (default: every block whose source exists); returns those done."""
    text = readme.read_text()
    done = []
    for name in names or list(RENDERERS):
        pattern = re.compile(rf"(<!-- results:{re.escape(name)} -->\n).*?(<!-- end -->)", re.S)
        if not pattern.search(text):
            raise PipelineError(f"{readme} has no block <!-- results:{name} --> ... <!-- end -->")
        try:
            body = RENDERERS[name]()
        except PipelineError:
            if names:
                raise
            continue
        text = pattern.sub(_between_markers(body), text)
        done.append(name)
    readme.write_text(text)
    return done
