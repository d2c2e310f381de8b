"""``convergence-figures``: the convergence study's curves and verdicts as CSV and PNG into
``results/<config>/convergence/``: ``curves.csv`` (every measurement of every run), ``summary.csv``
(per run and attack: the last measurement's mean and spread over seeds, steps reached, how many
seeds plateaued) and ``fig_convergence.png`` (objective, PSNR against the clean image and recovery
accuracy against steps; one column per run, seeds as thin lines, doing nothing and the CAE alone as
dashed levels). Target: ``pipeline run convergence``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobs.artifacts import CONVERGENCE, CONVERGENCE_SUMMARY, FIG_CONVERGENCE, HISTORY, export_tree, results_dir
from pipeline.dag import Ref, Resources, Step, Task, TaskRecord
from pipeline.execute import Context

#: what the figure plots, by history column (the AAE's eq. 5-6 objective where it has one)
QUANTITIES = {
    "objective": ("heldout_paper", "heldout_total"),
    "PSNR vs clean (dB)": ("psnr_recovered_clean",),
    "recovery accuracy": ("recovery_accuracy",),
}
#: summary columns: the last measurement of each run
SUMMARY = (
    "heldout_total",
    "heldout_paper",
    "heldout_recon_x",
    "heldout_recon_z",
    "heldout_kl",
    "psnr_objective",
    "psnr_recovered_input",
    "psnr_recovered_clean",
    "recovery_accuracy",
    "recovery_accuracy_flipped",
)


@dataclass(frozen=True)
class ConvergenceFiguresTask(TaskRecord):
    """The convergence study's curves of one config, from every train-convergence run."""

    config_name: str
    runs: list[str]  # ``convergence.runs``, in order
    out_dir: str

    def export_dir(self) -> Path:
        return results_dir(self.out_dir, self.config_name) / CONVERGENCE


def tasks(cfg: Mapping[str, Any], upstream: Mapping[str, Sequence[Task]]) -> list[Task]:
    inputs = {f"run:{t.id}": Ref("train-convergence", t.id) for t in upstream["train-convergence"]}
    record = ConvergenceFiguresTask(cfg["name"], list(cfg["convergence"].runs), cfg["tables"].out_dir)
    return [Task("convergence-figures", "figures", record, inputs, group="convergence")] if inputs else []


def run(ctx: Context, task: ConvergenceFiguresTask) -> None:
    import pandas as pd

    from pipeline import figures

    curves, finals = [], []
    for artifact in ctx.inputs.values():
        t, summary = artifact.manifest["config"], artifact.summary
        history = pd.read_csv(artifact.file(HISTORY))
        measured = history.dropna(subset=["step"]).assign(
            run=t["run"], method=t["method"], attack=t["attack"], seed=t["seed"]
        )
        curves.append(measured)
        finals.append(
            {
                "run": t["run"],
                "method": t["method"],
                "attack": t["attack"],
                "seed": t["seed"],
                "steps": summary["steps"],
                "plateaued": summary["plateaued"],
                **{f"reference_{k}": v for k, v in summary["references"].items()},
                **{k: summary["final"].get(k) for k in SUMMARY},
            }
        )
    order = {name: i for i, name in enumerate(task.runs)}
    curves_frame = pd.concat(curves).sort_values(
        ["attack", "run", "seed", "step"], key=lambda s: s.map(order) if s.name == "run" else s
    )
    first = ["run", "method", "attack", "seed", "step", "epoch"]
    curves_frame = curves_frame[first + [k for k in curves_frame.columns if k not in first]]
    finals_frame = pd.DataFrame(finals)
    grouped = finals_frame.groupby(["attack", "run"], sort=False)
    numeric = [k for k in finals_frame.columns if k not in ("run", "method", "attack", "seed", "plateaued")]
    summary = (
        grouped[numeric]
        .mean()
        .join(grouped[numeric].std(ddof=1).add_suffix("_sd"))
        .join(
            grouped.agg(
                seeds=("seed", "count"),
                plateaued=("plateaued", "sum"),
                steps_min=("steps", "min"),
                steps_max=("steps", "max"),
                method=("method", "first"),
            )
        )
        .reset_index()
    )
    summary = summary.sort_values(["attack", "run"], key=lambda s: s.map(order) if s.name == "run" else s)
    out = ctx.out / CONVERGENCE
    out.mkdir()
    curves_frame.to_csv(out / "curves.csv", index=False, float_format="%.6g")
    summary.to_csv(out / CONVERGENCE_SUMMARY, index=False, float_format="%.4f")
    for attack, by_attack in curves_frame.groupby("attack", sort=False):
        panels: dict[str, dict[str, list]] = {}
        for run_name, by_run in by_attack.groupby("run", sort=False):
            panels[run_name] = {}
            for label, columns in QUANTITIES.items():
                column = next(k for k in columns if k in by_run and by_run[k].notna().any())
                panels[run_name][label] = [(g["step"].tolist(), g[column].tolist()) for _, g in by_run.groupby("seed")]
        levels = finals_frame[finals_frame["attack"] == attack]
        references = {
            "recovery accuracy": {
                name.removeprefix("reference_"): float(levels[name].mean())
                for name in levels
                if name.startswith("reference_")
            }
        }
        figures.convergence_panels(panels, references, out / f"{FIG_CONVERGENCE}_{attack}.png", log_y=("objective",))
    export_tree(out, task.export_dir())
    ctx.summary.update({"runs": len(finals), "plateaued": int(finals_frame["plateaued"].sum())})


def exports(config: Mapping[str, Any]) -> str:
    """Where a task also writes, outside the store (``Step.exports``; the engine passes its key config)."""
    return str(ConvergenceFiguresTask(**config).export_dir())


STEP = Step(
    name="convergence-figures",
    version=1,
    needs=("train-convergence",),
    reads=("convergence", "tables", "name"),
    resources=Resources(cpus=1, mem="4G", time="00:30:00"),
    tasks=tasks,
    run=run,
    description="the convergence study's curves, summary and figure, into results/<config>/convergence/",
    exports=exports,
)
