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
        cells = [f"{row[c]:.{digits}f}" if pd.notna(row[c]) else "–" for c in columns]
        lines.append(f"| {row['title']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render_results(results: Path) -> str:
    """Tables II and III (recovery accuracy, PSNR), the detection AUROC and the figures of one config."""
    provenance = json.loads(render_file(results / "provenance.json"))
    header = (f"Config `{provenance['config']}`, commit(s) {', '.join(c[:12] for c in provenance['commits'])}, "
              f"data manifests {', '.join(f'{k} {v[:12]}' for k, v in provenance['manifests'].items())}. "
              f"Files: [`{results}/`]({results}/).")
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


def render_training(results: Path) -> str:
    """First and final total loss of every main recovery model, from ``training_losses.csv``, and the curves."""
    totals = _read(results / "training_losses.csv").query("term == 'total'")
    lines = ["| model | training data | epochs | first epoch | final epoch | final / first |",
             "|---|---|---|---|---|---|"]
    for (model, attack), curve in totals.groupby(["model", "attack"], sort=False):
        first, final = curve.sort_values("epoch")["loss"].iloc[[0, -1]]
        lines.append(f"| {model} | {_title(attack)} | {len(curve)} | {first:.1f} | {final:.1f} | "
                     f"{final / first:.2f} |")
    return "\n".join(lines) + f"\n\n![training curves]({results}/fig_training.png)"


def render_file(path: Path) -> str:
    if not path.is_file():
        raise PipelineError(f"{path} does not exist yet")
    return path.read_text().strip()


RENDERERS: dict[str, Callable[[], str]] = {
    "demo": lambda: render_results(Path("results/demo")),
    "demo-attacks": lambda: render_attacks(Path("results/demo")),
    "demo-training": lambda: render_training(Path("results/demo")),
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
