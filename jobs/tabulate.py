"""``tabulate``: Tables II-III for every metric, detection AUROC (Fig. 6), Fig. 7 and the training curves,
as CSV, LaTeX and PNG, into the artifact and ``results/<config>/`` (``pipeline tables`` rewrites them
identically)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from jobs._io import export_tree, results_dir
from jobs.evaluate import unseen_pairs
from pipeline.config import ROLES
from pipeline.dag import Ref, Resources, Step, Task
from pipeline.methods import METHODS


def tasks(cfg: Mapping[str, Any], upstream: Mapping[str, Sequence[Task]]) -> list[Task]:
    tables, ev, attacks = cfg["tables"], cfg["evaluate"], cfg["attack"].names
    inputs = {f"eval:{t.id}": Ref("evaluate", t.id) for t in upstream["evaluate"] if t.group == "main"}
    datasets = sorted({getattr(cfg["sample"].roles, role).dataset for role in ROLES})
    inputs.update({f"sample:{name}": Ref("sample", name) for name in datasets})
    inputs.update({f"attack:{t.id}": Ref("attack", t.id) for t in upstream["attack"]})
    inputs.update({f"victim:{t.id}": Ref("train-victim", t.id) for t in upstream["train-victim"]})
    inputs.update({f"trained:{t.id}": Ref(t.step, t.id) for step in ("train-cae", "train-aae")
                   for t in upstream[step] if t.group == "main"})
    config = {"config_name": cfg["name"], "methods": ev.methods, "attacks": attacks,
              "unseen": unseen_pairs(attacks, ev.unseen_seed), "bootstrap": tables.bootstrap,
              "bootstrap_seed": tables.bootstrap_seed, "figure_images": tables.figure_images,
              "out_dir": tables.out_dir}
    return [Task("tabulate", "tables", config, inputs)]


def load_evaluations(ctx, c: dict):
    """Per-image frames of every evaluation input, with the provenance of the run."""
    import pandas as pd

    from pipeline.tables import Evaluations

    frames, commits = {}, set()
    for name, artifact in ctx.inputs.items():
        if name.startswith("eval:"):
            t = artifact.manifest["config"]
            frames[(t["method"], t["train_attack"], t["test"])] = pd.read_csv(artifact.file("per_image.csv"))
            commits.add(str(artifact.manifest["code"]["git_commit"]))
    manifests = {name.split(":", 1)[1]: a.manifest["files"]["manifest.json"]["sha256"]
                 for name, a in ctx.inputs.items() if name.startswith("sample:")}
    return Evaluations(frames, c["methods"], c["attacks"], c["unseen"],
                       {m for m in c["methods"] if METHODS[m].per_attack},
                       {"config": c["config_name"], "commits": sorted(commits), "manifests": manifests})


def run(ctx, task: Task) -> None:
    import yaml

    from pipeline import figures
    from pipeline.data.shards import read_shard
    from pipeline.tables import METHOD_NAMES, detection_table, write_tables

    c = task.config
    ev = load_evaluations(ctx, c)
    out = ctx.out / "results"
    write_tables(ev, out, c["bootstrap"], c["bootstrap_seed"])
    seen, unseen = detection_table(ev, "seen"), detection_table(ev, "unseen")
    figures.detection_bars([METHOD_NAMES[m] for m in ev.methods], seen["avg"], unseen["avg"],
                           out / "fig6_detection.png")
    shown = [m for m in ("plain_ae", "ours") if m in ev.methods]
    rows = []
    for attack in ev.attacks if shown else []:
        examples = {m: read_shard(ctx.input(f"eval:{m}/{attack}/{attack}").file("examples.h5")) for m in shown}
        first = examples[shown[0]]
        for i in range(min(c["figure_images"], len(first["rows"]))):
            images = {"clean": first["clean"][i], "attacked": first["inputs"][i],
                      **{METHOD_NAMES[m].split(" (")[0]: examples[m]["recovered"][i] for m in examples}}
            rows.append((f"{attack} #{first['rows'][i]}", images))
    figures.recovery_grid(rows, list(rows[0][1]) if rows else [], out / "fig7_recovery.png")
    _write_attack_summaries(ctx, out)
    _write_training_curves(ctx, out, ["clean", *c["attacks"]])
    (out / "config.yaml").write_text(yaml.safe_dump(ctx.config.to_dict(), sort_keys=False))
    (out / "provenance.json").write_text(json.dumps(ev.provenance, indent=1, sort_keys=True) + "\n")
    export_tree(out, results_dir(c["out_dir"], c["config_name"]))
    ctx.summary.update({"files": len(list(out.iterdir())), "evaluations": len(ev.frames)})


def _write_attack_summaries(ctx, out) -> None:
    """``victims.csv`` (held-out accuracy) and ``attacks.csv`` (success, norms per role and attack)."""
    import pandas as pd

    victims = [{"role": a.manifest["task"], **{k: a.summary[k] for k in ("val_accuracy", "role_accuracy",
                                                                        "chance", "majority", "n_train")}}
               for name, a in sorted(ctx.inputs.items()) if name.startswith("victim:")]
    pd.DataFrame(victims).to_csv(out / "victims.csv", index=False, float_format="%.4f")
    shards = pd.DataFrame([{"role": a.manifest["config"]["role"], "attack": a.manifest["config"]["attack"],
                            **{k: a.summary[k] for k in ("n", "success", "success_before_storage", "linf", "l2")}}
                           for name, a in sorted(ctx.inputs.items()) if name.startswith("attack:")])
    weighted = shards.assign(**{k: shards[k] * shards["n"] for k in ("success", "success_before_storage", "linf", "l2")})
    totals = weighted.groupby(["role", "attack"], sort=False).sum()
    for k in ("success", "success_before_storage", "linf", "l2"):
        totals[k] = totals[k] / totals["n"]
    totals.reset_index().to_csv(out / "attacks.csv", index=False, float_format="%.4f")


MODEL_TITLES = {"cae": "CAE (eq. 1)", "aae": "AAE, CAE frozen (eqs. 2-6)", "plain_ae": "Plain AE",
                "paired_dae": "Paired denoising AE"}


def _write_training_curves(ctx, out, data_order: list[str]) -> None:
    """``training_losses.csv`` (every loss term per epoch of every main recovery model) and
    ``fig_training.png`` (the total loss per epoch, one panel per model, one line per training data)."""
    import pandas as pd

    from pipeline import figures

    frames = {}
    for name, artifact in ctx.inputs.items():
        if name.startswith("trained:"):
            model = artifact.manifest["config"].get("model", "cae")
            attack = artifact.manifest["config"].get("attack", "clean")
            curve = pd.read_csv(artifact.file("history.csv")).drop(columns="lr")
            frames[(list(MODEL_TITLES).index(model), data_order.index(attack))] = \
                curve.melt(id_vars="epoch", var_name="term", value_name="loss").assign(model=model, attack=attack)
    curves = pd.concat([frames[k] for k in sorted(frames)])[["model", "attack", "epoch", "term", "loss"]]
    curves.to_csv(out / "training_losses.csv", index=False, float_format="%.6g")
    totals = curves[curves["term"] == "total"]
    panels = {MODEL_TITLES[model]: {attack: list(zip(g["epoch"], g["loss"]))
                                    for attack, g in by_model.groupby("attack", sort=False)}
              for model, by_model in totals.groupby("model", sort=False)}
    figures.training_curves(panels, out / "fig_training.png")


STEP = Step(
    name="tabulate",
    version=2,
    needs=("sample", "train-victim", "attack", "train-cae", "train-aae", "evaluate"),
    reads=("tables", "evaluate", "attack", "sample", "name"),
    resources=Resources(cpus=2, mem="8G", time="01:00:00"),
    tasks=tasks,
    run=run,
    description="Tables II-III per metric, detection AUROC and figures, into results/<config>/",
)
