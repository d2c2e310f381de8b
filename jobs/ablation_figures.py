"""``ablation-figures``: Figs. 4 (λ1, λ2) and 5 (N_CAE x N_AAE) from the ablation evaluations, per
ablation attack, as CSV and PNG into ``results/<config>/ablations/``: a curve (Fig. 4) and a heat map
(Fig. 5) per swept row (the paper's AAE and each of ``ablation.variants``), each point the mean and
standard deviation over ``ablation.seeds``, with doing nothing (the identity row) as a reference
level. Target: ``pipeline run ablations``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from jobs.artifacts import eval_task_id, export_tree, results_dir
from pipeline.dag import Ref, Resources, Step, Task
from pipeline.methods import METHODS


def tasks(cfg: Mapping[str, Any], upstream: Mapping[str, Sequence[Task]]) -> list[Task]:
    sweep = cfg["ablation"]
    points = [t for t in upstream["evaluate"] if t.group == "ablations"]
    inputs = {f"point:{t.id}": Ref("evaluate", t.id) for t in points}
    attacks = list(dict.fromkeys(t.config["test"] for t in points))
    identity = {eval_task_id(name, None, a, None, None) for a in attacks
                for name, spec in METHODS.items() if spec.kind == "none" and name in cfg["evaluate"].methods}
    inputs.update({f"level:{t.id}": Ref("evaluate", t.id) for t in upstream["evaluate"] if t.id in identity})
    config = {"config_name": cfg["name"], "lambdas": sweep.lambdas, "cae_depths": sweep.cae_depths,
              "aae_depths": sweep.aae_depths, "attacks": attacks, "out_dir": cfg["tables"].out_dir}
    return [Task("ablation-figures", "figures", config, inputs, group="ablations")] if points else []


def run(ctx, task: Task) -> None:
    import numpy as np
    import pandas as pd

    from pipeline import figures

    c = task.config
    scores: dict[tuple[str, str, str], list[float]] = {}
    levels: dict[str, float] = {}
    for name, artifact in ctx.inputs.items():
        t, accuracy = artifact.manifest["config"], artifact.summary["recovery_accuracy"] * 100
        if name.startswith("level:"):
            levels[t["test"]] = accuracy
        else:
            scores.setdefault((t["row"], t["point"], t["test"]), []).append(accuracy)
    mean = {key: float(np.mean(v)) for key, v in scores.items()}
    sd = {key: float(np.std(v, ddof=1)) if len(v) > 1 else float("nan") for key, v in scores.items()}
    rows = list(dict.fromkeys(row for row, _, _ in sorted(scores)))
    suffix = {row: "" if "+" not in row else f" ({row.split('+', 1)[1]})" for row in rows}
    out = ctx.out / "ablations"
    out.mkdir()
    for attack in c["attacks"]:
        keys = {f"λ{k}{suffix[row]}": [(row, f"lambda{k}={v:g}", attack) for v in c["lambdas"]]
                for row in rows for k in (1, 2)}
        curves = {label: ([mean[p] for p in points], [sd[p] for p in points]) for label, points in keys.items()}
        pd.DataFrame({"lambda": c["lambdas"], **{label: m for label, (m, _) in curves.items()},
                      **{f"{label} sd": s for label, (_, s) in curves.items()}}).to_csv(
            out / f"fig4_lambdas_{attack}.csv", index=False, float_format="%.4f")
        reference = {"doing nothing": levels[attack]} if attack in levels else {}
        figures.lambda_sweep(c["lambdas"], curves, f"recovery accuracy on {attack} (%)",
                             out / f"fig4_lambdas_{attack}.png", reference)
        grids = {}
        for row in rows:
            cells = [[(row, f"depth={nc}x{na}", attack) for na in c["aae_depths"]] for nc in c["cae_depths"]]
            grids[row] = (np.array([[mean[p] for p in line] for line in cells]),
                          np.array([[sd[p] for p in line] for line in cells]))
            index = pd.Index(c["cae_depths"], name="N_CAE")
            name = f"fig5_depths_{attack}" + suffix[row].replace(" (", "_").rstrip(")")
            pd.concat([pd.DataFrame(grids[row][0], index=index, columns=c["aae_depths"]),
                       pd.DataFrame(grids[row][1], index=index, columns=[f"{d} sd" for d in c["aae_depths"]])],
                      axis=1).to_csv(out / f"{name}.csv", float_format="%.4f")
        titles = {f"{row}{f' (doing nothing: {levels[attack]:.1f})' if attack in levels else ''}": grid
                  for row, grid in grids.items()}
        figures.depth_heatmaps(c["cae_depths"], c["aae_depths"], titles, f"recovery accuracy on {attack} (%)",
                               out / f"fig5_depths_{attack}.png")
    export_tree(out, results_dir(c["out_dir"], c["config_name"]) / "ablations")
    ctx.summary.update({"points": len(mean), "levels": levels})


def _export_folder(c: Mapping[str, Any]) -> str:
    """Where the task exports (a Step's ``exports``: a module-level function, so a planned task pickles)."""
    return str(results_dir(c["out_dir"], c["config_name"]) / "ablations")


STEP = Step(
    name="ablation-figures",
    version=3,
    needs=("evaluate",),
    reads=("ablation", "tables", "evaluate", "name"),
    resources=Resources(cpus=1, mem="4G", time="00:30:00"),
    tasks=tasks,
    run=run,
    description="Figs. 4 and 5: recovery accuracy over the λ and depth sweeps, per ablation attack",
    exports=_export_folder,
)
