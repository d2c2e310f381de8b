"""``tabulate``: Tables II-III for every metric, detection AUROC (Fig. 6), Fig. 7 and the training curves,
as CSV, LaTeX and PNG, into the artifact and ``results/<config>/`` (``pipeline tables`` rewrites them
identically)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from jobs.artifacts import CLEAN, EXAMPLES, HISTORY, PER_IMAGE, eval_task_id, export_tree, manifest_sha256, \
    results_dir, row_id, unseen_pairs
from jobs.variants import describe
from pipeline.attacks.catalog import ATTACKS
from pipeline.config import ROLES
from pipeline.dag import Ref, Resources, Step, Task
from pipeline.hardware import hardware_provenance
from pipeline.methods import METHODS

CAE_TITLE = "CAE (eq. 1)"  # the model train-cae makes, in the training curves and the sanity table


def table_rows(cfg: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The rows of the tables: every method of ``evaluate.methods``, and each of its variants
    (``aae.variants``, ``cae.variants``; titled with their settings, "not in the paper") after it.
    ``models``: the trained models a row reads (a table row's own per-attack models, a CAE)."""
    rows = []
    for spec in (METHODS[m] for m in cfg["evaluate"].methods):
        seeds = list(cfg["seeds"]) if spec.learned else [None]
        variants = [("aae", None, {}), *(("aae", k, v) for k, v in cfg["aae"].variants.items()),
                    *(("cae", k, v) for k, v in cfg["cae"].variants.items())]
        for family, name, overrides in variants:
            if not spec.has_row(family, name):
                continue
            row = row_id(spec.name, name)
            title = spec.title if name is None else \
                f"{_short(spec.title)} + {name}: {describe(overrides)} (not in the paper)"
            cae = row_id("cae", name if family == "cae" else None)
            models = [row] * (spec.training is not None) + [cae] * spec.uses_cae
            rows.append({"id": row, "title": title, "per_attack": spec.per_attack, "seeds": seeds, "models": models})
    return rows


def model_titles(cfg: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """Every trained model a table reads (``cae``, its ``cae.variants``, the per-attack rows), by
    model row, with its title: the order of the sanity table and the training curves."""
    caes = {row_id("cae", name): f"{CAE_TITLE.split(' (')[0]} + {name}: {describe(overrides)}"
            for name, overrides in cfg["cae"].variants.items()}
    return {"cae": CAE_TITLE, **caes, **{r["id"]: r["title"] for r in rows if r["per_attack"]}}


def tasks(cfg: Mapping[str, Any], upstream: Mapping[str, Sequence[Task]]) -> list[Task]:
    tables, ev, attacks = cfg["tables"], cfg["evaluate"], cfg["attack"].names
    inputs = {f"eval:{t.id}": Ref("evaluate", t.id) for t in upstream["evaluate"] if t.group == "main"}
    datasets = sorted({getattr(cfg["sample"].roles, role).dataset for role in ROLES})
    inputs.update({f"sample:{name}": Ref("sample", name) for name in datasets})
    inputs.update({f"attack:{t.id}": Ref("attack", t.id) for t in upstream["attack"]})
    inputs.update({f"victim:{t.id}": Ref("train-victim", t.id) for t in upstream["train-victim"]})
    inputs.update({f"trained:{t.id}": Ref(t.step, t.id) for step in ("train-cae", "train-aae")
                   for t in upstream[step] if t.group == "main"})
    rows = table_rows(cfg)
    config = {"config_name": cfg["name"], "attacks": {a: ATTACKS[a].title for a in attacks}, "rows": rows,
              "figure": [m for m in ev.methods if METHODS[m].figure],
              "models": model_titles(cfg, rows),
              "seeds": cfg["seeds"], "unseen": unseen_pairs(attacks, ev.unseen_seed), "bootstrap": tables.bootstrap,
              "bootstrap_seed": tables.bootstrap_seed, "figure_images": tables.figure_images,
              "out_dir": tables.out_dir}
    return [Task("tabulate", "tables", config, inputs)]


def load_evaluations(ctx, c: dict):
    """Per-image frames of every evaluation input, with the provenance of the run."""
    import pandas as pd

    from pipeline.tables import Evaluations, Row

    frames, victim_frames, commits, runtimes = {}, {}, set(), set()
    for name, artifact in ctx.inputs.items():
        if name.startswith("eval:"):
            t = artifact.manifest["config"]
            frame = pd.read_csv(artifact.file(PER_IMAGE))
            if t["victim_seed"] is None:
                frames[(t["row"], t["train_attack"], t["test"], t["seed"])] = frame
            else:
                victim_frames[(t["row"], t["test"], t["victim_seed"])] = frame
            commits.add(str(artifact.manifest["code"]["git_commit"]))
            runtimes.add(json.dumps(artifact.manifest.get("runtime"), sort_keys=True))
    manifests = {name.split(":", 1)[1]: manifest_sha256(a) for name, a in ctx.inputs.items()
                 if name.startswith("sample:")}
    flags: dict[str, list[bool]] = {}  # model row -> "not trained" of each of its models
    for model, _, artifact in _trained(ctx):
        flags.setdefault(model, []).append(bool(artifact.summary.get("not_trained")))
    rows = [Row(r["id"], r["title"], r["per_attack"], tuple(r["seeds"]),
                (sum(sum(flags.get(m, [])) for m in r["models"]), sum(len(flags.get(m, [])) for m in r["models"])))
            for r in c["rows"]]
    provenance = {"config": c["config_name"], "commits": sorted(commits), "manifests": manifests,
                  "seeds": c["seeds"], "runtime": [json.loads(r) for r in sorted(runtimes)],
                  **hardware_provenance({name: a.manifest for name, a in ctx.inputs.items()})}
    return Evaluations(frames, rows, c["attacks"], c["unseen"], provenance, victim_frames)


def run(ctx, task: Task) -> None:
    import yaml

    from pipeline import figures
    from pipeline.data.shards import read_shard
    from pipeline.tables import detection_table, write_tables

    c = task.config
    ev = load_evaluations(ctx, c)
    out = ctx.out / "results"
    write_tables(ev, out, c["bootstrap"], c["bootstrap_seed"])
    seen, unseen = detection_table(ev, "seen"), detection_table(ev, "unseen")
    figures.detection_bars([row.title for row in ev.rows], seen["avg"], unseen["avg"], out / "fig6_detection.png")
    titles = {row.id: _short(row.title) for row in ev.rows}
    rows = []
    first_seed = c["seeds"][0]
    for attack in ev.attacks if c["figure"] else []:
        examples = {m: read_shard(ctx.input(f"eval:{eval_task_id(m, attack, attack, None, first_seed)}").file(EXAMPLES))
                    for m in c["figure"]}
        first = examples[c["figure"][0]]
        for i in range(min(c["figure_images"], len(first["rows"]))):
            images = {"clean": first["clean"][i], "attacked": first["inputs"][i],
                      **{titles[m]: examples[m]["recovered"][i] for m in examples}}
            rows.append((f"{attack} #{first['rows'][i]}", images))
    figures.recovery_grid(rows, list(rows[0][1]) if rows else [], out / "fig7_recovery.png")
    _write_attack_summaries(ctx, out)
    _write_training_sanity(ctx, out, c["models"], ["clean", *c["attacks"]], ev)
    _write_training_curves(ctx, out, c["models"], ["clean", *c["attacks"]], first_seed)
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
                           for name, a in sorted(ctx.inputs.items())
                           if name.startswith("attack:") and a.manifest["config"]["victim_seed"] is None])
    weighted = shards.assign(**{k: shards[k] * shards["n"] for k in ("success", "success_before_storage", "linf", "l2")})
    totals = weighted.groupby(["role", "attack"], sort=False).sum()
    for k in ("success", "success_before_storage", "linf", "l2"):
        totals[k] = totals[k] / totals["n"]
    totals.reset_index().to_csv(out / "attacks.csv", index=False, float_format="%.4f")


def _trained(ctx) -> list[tuple[str, str, Any]]:
    """(model row, training data, artifact) of every trained recovery model read: a CAE (``cae``, or
    a ``cae.variants`` row) on ``clean`` images, or a table row's model on an attack's."""
    out = []
    for name, artifact in sorted(ctx.inputs.items()):
        if name.startswith("trained:"):
            config = artifact.manifest["config"]
            out.append((config["row"], config.get("attack", "clean"), artifact))
    return out


def _write_training_sanity(ctx, out, models: Mapping[str, str], data_order: list[str], ev) -> None:
    """``training_sanity.csv``: each trained model's PSNR on held-out images of its own training data
    (its objective; the AAE's cycle, and D_CAE(E_AAE(x)) against x) beside the per-pixel mean image's
    (the floor) and the class-mean image's, whether it is "not trained" (``pipeline.sanity``), and the
    recovery accuracy of its table row's model on the clean test images; in the order of ``models``
    (model -> title), then training data, then seed."""
    import pandas as pd

    rows = []
    order = sorted(_trained(ctx), key=lambda m: (list(models).index(m[0]), data_order.index(m[1]),
                                                 m[2].summary["seed"]))
    for model, data, artifact in order:
        summary = artifact.summary
        held = summary["heldout"]
        clean = ev.frames.get((model, None if data == "clean" else data, CLEAN, summary["seed"]))
        rows.append({"model": model, "title": models[model], "data": data, "seed": summary["seed"],
                     "epochs": summary["epochs"], "steps": summary["steps"], "images": summary["images"],
                     "heldout": held["n"], "heldout_psnr": held.get("objective"),
                     "mean_image_psnr": held.get("mean_image"), "class_mean_psnr": held.get("class_mean"),
                     "not_trained": summary["not_trained"], "recovered_psnr": held.get("recovered"),
                     "clean_recovery_accuracy": None if clean is None else clean["recovery_accuracy"].mean(),
                     "clipped_steps": summary["clipped"]})
    pd.DataFrame(rows).to_csv(out / "training_sanity.csv", index=False, float_format="%.3f")


def _short(title: str) -> str:
    """A row's title without its settings and notes: ``Ours + anchor``."""
    return title.split(":")[0].split(" (")[0]


def _write_training_curves(ctx, out, models: Mapping[str, str], data_order: list[str], seed: int) -> None:
    """``training_losses.csv`` (every loss term per epoch of every main recovery model, training seed
    ``seed``) and ``fig_training.png`` (the total loss per epoch, one panel per model, one line per
    training data); ``models`` maps each model (``cae``, or a table row) to its title, in panel order."""
    import pandas as pd

    from pipeline import figures
    from pipeline.training import NOT_LOSSES

    frames = {}
    for model, attack, artifact in _trained(ctx):
        if artifact.summary["seed"] == seed:
            history = pd.read_csv(artifact.file(HISTORY))
            curve = history.drop(columns=[c for c in NOT_LOSSES if c != "epoch" and c in history])
            frames[(list(models).index(model), data_order.index(attack))] = \
                curve.melt(id_vars="epoch", var_name="term", value_name="loss").assign(model=model, attack=attack)
    curves = pd.concat([frames[k] for k in sorted(frames)])[["model", "attack", "epoch", "term", "loss"]]
    curves.to_csv(out / "training_losses.csv", index=False, float_format="%.6g")
    totals = curves[curves["term"] == "total"]
    panels = {_short(models[model]): {attack: list(zip(g["epoch"], g["loss"]))
                              for attack, g in by_model.groupby("attack", sort=False)}
              for model, by_model in totals.groupby("model", sort=False)}
    figures.training_curves(panels, out / "fig_training.png")


def _export_folder(c: Mapping[str, Any]) -> str:
    """Where the task exports (a Step's ``exports``: a module-level function, so a planned task pickles)."""
    return str(results_dir(c["out_dir"], c["config_name"]))


STEP = Step(
    name="tabulate",
    version=5,
    needs=("sample", "train-victim", "attack", "train-cae", "train-aae", "evaluate"),
    reads=("tables", "evaluate", "attack", "sample", "aae", "cae", "seeds", "name"),
    resources=Resources(cpus=2, mem="8G", time="01:00:00"),
    tasks=tasks,
    run=run,
    description="Tables II-III per metric, detection AUROC and figures, into results/<config>/",
    exports=_export_folder,
)
