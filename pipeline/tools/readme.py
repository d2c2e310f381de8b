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

from pipeline.attacks.catalog import ATTACKS
from pipeline.errors import PipelineError

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


def _markdown(frame: pd.DataFrame, digits: int) -> str:
    """A table CSV (columns ``method``, ``title``, clean, the attacks, avg, their intervals) as Markdown."""
    order = {"clean": 0, "avg": 2}
    columns = sorted((c for c in frame.columns if c in HEADS or c in ATTACKS), key=lambda c: order.get(c, 1))
    heads = ["Method", *map(_title, columns)]
    lines = ["| " + " | ".join(heads) + " |", "|---" * len(heads) + "|"]
    for _, row in frame.iterrows():
        cells = [_cell(row[c], row.get(f"{c}_seed_sd"), digits) for c in columns]
        lines.append(f"| {row['title']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(value: float, spread: float | None, digits: int) -> str:
    """A value, with ``± sd`` over training seeds where there is one."""
    if pd.isna(value):
        return "–"
    return f"{value:.{digits}f}" + (f" ± {spread:.{digits}f}" if spread is not None and pd.notna(spread) else "")


def render_results(results: Path) -> str:
    """Tables II and III (recovery accuracy, PSNR), the detection AUROC and the figures of one config."""
    provenance = json.loads(render_file(results / "provenance.json"))
    runtimes = "; ".join(f"{r['device']}, {r['threads']} thread(s), torch {r['torch']}"
                         for r in provenance.get("runtime", []) if r)
    seeds = provenance.get("seeds", [])
    header = (f"Config `{provenance['config']}`, commit(s) {', '.join(c[:12] for c in provenance['commits'])}, "
              f"data manifests {', '.join(f'{k} {v[:12]}' for k, v in provenance['manifests'].items())}, "
              f"training seeds {', '.join(map(str, seeds))} (learned rows: mean ± standard deviation over "
              f"seeds), run on {runtimes or 'an unrecorded device'}. Files: [`{results}/`]({results}/).")
    parts = [header]
    for title, stem, digits in (
            ("Table II, seen attacks — recovery accuracy (%)", "table_ii_seen_recovery_accuracy", 1),
            ("Table III, unseen attacks — recovery accuracy (%)", "table_iii_unseen_recovery_accuracy", 1),
            ("Table II, seen attacks — PSNR against the clean image (dB)", "table_ii_seen_psnr", 1),
            ("Table II, seen attacks — pixel recovery rate at τ (%)", "table_ii_seen_pixel_rate", 1)):
        parts += [f"**{title}**", _markdown(_read(results / f"{stem}.csv"), digits)]
    detection = _read(results / "detection_auroc_seen.csv").assign(clean=float("nan"))
    parts += ["**Detection AUROC by reconstruction error, seen attacks (Fig. 6)**", _markdown(detection, 3)]
    parts += [f"![Fig. 7]({results}/fig7_recovery.png)", f"![Fig. 6]({results}/fig6_detection.png)"]
    ablations = results / "ablations"
    if ablations.is_dir():
        parts += [f"![Fig. 4]({ablations}/fig4_lambdas.png) ![Fig. 5]({ablations}/fig5_depths.png)"]
    return "\n\n".join(parts)


def render_sanity(results: Path) -> str:
    """Is each trained model trained? Its held-out PSNR in its own domain beside a constant image's,
    from ``training_sanity.csv``: per model, the mean over training data and seeds, and the range."""
    sanity = _read(results / "training_sanity.csv")
    lines = ["| model | trained on | models | steps | held-out images | held-out PSNR (dB) | constant image (dB) "
             "| D_CAE(E_AAE(x)) vs x (dB) | steps clipped |", "|---|---|---|---|---|---|---|---|---|"]
    for title, group in sanity.groupby("title", sort=False):
        data = "clean images" if set(group["data"]) == {"clean"} else f"{group['data'].nunique()} attacks"
        recovered = group["recovered_psnr"].dropna()
        lines.append(f"| {title.removesuffix(' (not in the paper)')} | {data} | {len(group)} | {_span(group['steps'], 0)} | {_span(group['heldout'], 0)} | "
                     f"{_mean_span(group['heldout_psnr'])} | {_mean_span(group['constant_psnr'])} | "
                     f"{_mean_span(recovered) if len(recovered) else '–'} | {_share(group['clipped_steps'])} |")
    return "\n".join(lines) + f"\n\n![training curves, first seed]({results}/fig_training.png)"


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
    victims, attacks = _read(results / "victims.csv"), _read(results / "attacks.csv")
    lines = ["| victim of | held-out accuracy | accuracy on the attacked images | chance | majority class |",
             "|---|---|---|---|---|"]
    lines += [f"| {r.role} | {r.val_accuracy:.3f} | {r.role_accuracy:.3f} | {r.chance:.3f} | {r.majority:.3f} |"
              for r in victims.itertuples()]
    lines += ["", "| role | attack | images | success (as stored) | before storage | mean L∞ | mean L2 |",
              "|---|---|---|---|---|---|---|"]
    lines += [f"| {r.role} | {_title(r.attack)} | {r.n} | {r.success:.3f} | {r.success_before_storage:.3f} | "
              f"{r.linf:.4f} | {r.l2:.3f} |" for r in attacks.itertuples()]
    return "\n".join(lines)


def render_file(path: Path) -> str:
    if not path.is_file():
        raise PipelineError(f"{path} does not exist yet")
    return path.read_text().strip()


TIERS = ("demo", "matched")  # configs whose committed results the README shows
_PER_TIER: dict[str, Callable[[Path], str]] = {"": render_results, "-attacks": render_attacks, "-sanity": render_sanity}
RENDERERS: dict[str, Callable[[], str]] = {
    **{f"{tier}{kind}": (lambda render=render, tier=tier: render(Path("results") / tier))
       for tier in TIERS for kind, render in _PER_TIER.items()},
    "bench": lambda: render_file(Path("results/bench.md")),
    "faults": lambda: render_file(Path("results/reliability.md")),
}


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
        text = pattern.sub(lambda m: m.group(1) + body + "\n" + m.group(2), text)
        done.append(name)
    readme.write_text(text)
    return done
