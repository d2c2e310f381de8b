"""``ablation-figures``: Figs. 4 (λ1, λ2) and 5 (N_CAE x N_AAE) from the ablation evaluations, as CSV and
PNG into ``results/<config>/ablations/``: a curve (Fig. 4) and a heat map (Fig. 5) per swept row, the
paper's AAE and each of ``ablation.variants``. Target: ``pipeline run ablations``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from jobs.artifacts import export_tree, results_dir
from pipeline.dag import Ref, Resources, Step, Task


def tasks(cfg: Mapping[str, Any], upstream: Mapping[str, Sequence[Task]]) -> list[Task]:
    inputs = {f"eval:{t.id}": Ref("evaluate", t.id) for t in upstream["evaluate"] if t.group == "ablations"}
    sweep = cfg["ablation"]
    config = {"config_name": cfg["name"], "lambdas": sweep.lambdas, "cae_depths": sweep.cae_depths,
              "aae_depths": sweep.aae_depths, "out_dir": cfg["tables"].out_dir}
    return [Task("ablation-figures", "figures", config, inputs, group="ablations")]


def run(ctx, task: Task) -> None:
    import numpy as np
    import pandas as pd

    from pipeline import figures

    c = task.config
    scores: dict[tuple[str, str], list[float]] = {}
    for artifact in ctx.inputs.values():
        t = artifact.manifest["config"]
        scores.setdefault((t["row"], t["point"]), []).append(artifact.summary["recovery_accuracy"] * 100)
    mean = {key: float(np.mean(values)) for key, values in scores.items()}
    rows = list(dict.fromkeys(row for row, _ in sorted(scores)))
    suffix = {row: "" if "+" not in row else f" ({row.split('+', 1)[1]})" for row in rows}
    out = ctx.out / "ablations"
    out.mkdir()
    curves = {f"λ{k}{suffix[row]}": [mean[(row, f"lambda{k}={v:g}")] for v in c["lambdas"]]
              for row in rows for k in (1, 2)}
    pd.DataFrame({"lambda": c["lambdas"], **curves}).to_csv(out / "fig4_lambdas.csv", index=False, float_format="%.4f")
    figures.lambda_sweep(c["lambdas"], curves, "recovery accuracy (%)", out / "fig4_lambdas.png")
    grids = {row: np.array([[mean[(row, f"depth={nc}x{na}")] for na in c["aae_depths"]] for nc in c["cae_depths"]])
             for row in rows}
    for row, grid in grids.items():
        name = "fig5_depths" + suffix[row].replace(" (", "_").rstrip(")")
        pd.DataFrame(grid, index=pd.Index(c["cae_depths"], name="N_CAE"), columns=c["aae_depths"]).to_csv(
            out / f"{name}.csv", float_format="%.4f")
    figures.depth_heatmaps(c["cae_depths"], c["aae_depths"], {f"{row}": grid for row, grid in grids.items()},
                           "recovery accuracy (%)", out / "fig5_depths.png")
    export_tree(out, results_dir(c["out_dir"], c["config_name"]) / "ablations")
    ctx.summary.update({"points": len(mean)})


STEP = Step(
    name="ablation-figures",
    version=2,
    needs=("evaluate",),
    reads=("ablation", "tables", "name"),
    resources=Resources(cpus=1, mem="4G", time="00:30:00"),
    tasks=tasks,
    run=run,
    description="Figs. 4 and 5: recovery accuracy over the λ and depth sweeps",
    exports=lambda c: str(results_dir(c["out_dir"], c["config_name"]) / "ablations"),
)
