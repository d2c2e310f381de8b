"""``ablation-figures``: Figs. 4 (λ1, λ2) and 5 (N_CAE x N_AAE) from the ablation evaluations, per
ablation attack, as CSV and PNG into ``results/<config>/ablations/``: a curve (Fig. 4) and a heat map
(Fig. 5) per swept row (the paper's AAE and each of ``ablation.variants``), each point the mean and
standard deviation over ``ablation.seeds``, with doing nothing (the identity row) as a reference
level. Target: ``pipeline run ablations``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobs.artifacts import ABLATIONS, FIG_DEPTHS, FIG_LAMBDAS, eval_task_id, export_tree, results_dir
from jobs.evaluate import EvaluateTask
from pipeline.dag import UNKEYED, Ref, Resources, Step, Task, TaskRecord, record_of
from pipeline.execute import Context
from pipeline.methods import METHODS


@dataclass(frozen=True)
class AblationPoint:
    """One ablation evaluation the figures read: its input name and what it measured."""

    input: str
    row: str
    variant: str | None  # the row's ``aae.variants`` entry; None: the paper's AAE
    point: str
    test: str


@dataclass(frozen=True)
class AblationFiguresTask(TaskRecord):
    """Figs. 4 and 5 of one config, per ablation attack; ``points`` and ``levels`` name what they read."""

    config_name: str
    lambdas: list[float]
    cae_depths: list[int]
    aae_depths: list[int]
    attacks: list[str]
    out_dir: str
    points: tuple[AblationPoint, ...] = field(default=(), metadata=UNKEYED)
    levels: dict[str, str] = field(default_factory=dict, metadata=UNKEYED)  # attack -> doing nothing's input

    def export_dir(self) -> Path:
        return results_dir(self.out_dir, self.config_name) / ABLATIONS


def tasks(cfg: Mapping[str, Any], upstream: Mapping[str, Sequence[Task]]) -> list[Task]:
    sweep = cfg["ablation"]
    evaluations: list[tuple[Task, EvaluateTask]] = [(t, record_of(t, EvaluateTask)) for t in upstream["evaluate"]]
    swept = [(t, e, e.point) for t, e in evaluations if e.point is not None]  # the "ablations" group
    points = [AblationPoint(f"point:{t.id}", e.row, e.variant, point, e.test) for t, e, point in swept]
    inputs = {p.input: Ref("evaluate", t.id) for p, (t, _, _) in zip(points, swept)}
    attacks = list(dict.fromkeys(p.test for p in points))
    identity = {
        eval_task_id(name, None, a, None, None)
        for a in attacks
        for name, spec in METHODS.items()
        if spec.kind == "none" and name in cfg["evaluate"].methods
    }
    levels = {}
    for t, e in evaluations:
        if t.id in identity:
            levels[e.test] = f"level:{t.id}"
            inputs[levels[e.test]] = Ref("evaluate", t.id)
    record = AblationFiguresTask(
        cfg["name"],
        sweep.lambdas,
        sweep.cae_depths,
        sweep.aae_depths,
        attacks,
        cfg["tables"].out_dir,
        tuple(points),
        levels,
    )
    return [Task("ablation-figures", "figures", record, inputs, group="ablations")] if points else []


def run(ctx: Context, task: AblationFiguresTask) -> None:
    import numpy as np
    import pandas as pd

    from pipeline import figures

    def accuracy(name: str) -> float:
        return ctx.input(name).summary["recovery_accuracy"] * 100

    levels = {attack: accuracy(name) for attack, name in task.levels.items()}
    scores: dict[tuple[str, str, str], list[float]] = {}
    for p in task.points:
        scores.setdefault((p.row, p.point, p.test), []).append(accuracy(p.input))
    mean = {key: float(np.mean(v)) for key, v in scores.items()}
    sd = {key: float(np.std(v, ddof=1)) if len(v) > 1 else float("nan") for key, v in scores.items()}
    rows = list(dict.fromkeys(row for row, _, _ in sorted(scores)))
    variants = {p.row: p.variant for p in task.points}
    suffix = {row: "" if variants[row] is None else f" ({variants[row]})" for row in rows}
    out = ctx.out / ABLATIONS
    out.mkdir()
    for attack in task.attacks:
        keys = {
            f"λ{k}{suffix[row]}": [(row, f"lambda{k}={v:g}", attack) for v in task.lambdas]
            for row in rows
            for k in (1, 2)
        }
        curves = {label: ([mean[p] for p in points], [sd[p] for p in points]) for label, points in keys.items()}
        pd.DataFrame(
            {
                "lambda": task.lambdas,
                **{label: m for label, (m, _) in curves.items()},
                **{f"{label} sd": s for label, (_, s) in curves.items()},
            }
        ).to_csv(out / f"{FIG_LAMBDAS}_{attack}.csv", index=False, float_format="%.4f")
        reference = {"doing nothing": levels[attack]} if attack in levels else {}
        figures.lambda_sweep(
            task.lambdas, curves, f"recovery accuracy on {attack} (%)", out / f"{FIG_LAMBDAS}_{attack}.png", reference
        )
        grids = {}
        for row in rows:
            cells = [[(row, f"depth={nc}x{na}", attack) for na in task.aae_depths] for nc in task.cae_depths]
            grids[row] = (
                np.array([[mean[p] for p in line] for line in cells]),
                np.array([[sd[p] for p in line] for line in cells]),
            )
            index = pd.Index(task.cae_depths, name="N_CAE")
            name = f"{FIG_DEPTHS}_{attack}" + suffix[row].replace(" (", "_").rstrip(")")
            pd.concat(
                [
                    pd.DataFrame(grids[row][0], index=index, columns=task.aae_depths),
                    pd.DataFrame(grids[row][1], index=index, columns=[f"{d} sd" for d in task.aae_depths]),
                ],
                axis=1,
            ).to_csv(out / f"{name}.csv", float_format="%.4f")
        titles = {
            f"{row}{f' (doing nothing: {levels[attack]:.1f})' if attack in levels else ''}": grid
            for row, grid in grids.items()
        }
        figures.depth_heatmaps(
            task.cae_depths,
            task.aae_depths,
            titles,
            f"recovery accuracy on {attack} (%)",
            out / f"{FIG_DEPTHS}_{attack}.png",
        )
    export_tree(out, task.export_dir())
    ctx.summary.update({"points": len(mean), "levels": levels})


def exports(config: Mapping[str, Any]) -> str:
    """Where a task also writes, outside the store (``Step.exports``; the engine passes its key config)."""
    return str(AblationFiguresTask(**config).export_dir())


STEP = Step(
    name="ablation-figures",
    version=3,
    needs=("evaluate",),
    reads=("ablation", "tables", "evaluate", "name"),
    resources=Resources(cpus=1, mem="4G", time="00:30:00"),
    tasks=tasks,
    run=run,
    description="Figs. 4 and 5: recovery accuracy over the λ and depth sweeps, per ablation attack",
    exports=exports,
)
