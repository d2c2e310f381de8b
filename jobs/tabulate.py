"""``tabulate``: Tables II-III for every metric, detection AUROC (Fig. 6), Fig. 7 and the training curves,
as CSV, LaTeX and PNG, into the artifact and ``results/<config>/`` (``pipeline tables`` rewrites them
identically)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobs.artifacts import (
    ATTACKS_TABLE,
    CLEAN,
    EXAMPLES,
    FIG_DETECTION,
    FIG_RECOVERY,
    FIG_TRAINING,
    HISTORY,
    PER_IMAGE,
    PROVENANCE,
    TRAINING_SANITY,
    VICTIMS_TABLE,
    eval_task_id,
    export_tree,
    manifest_sha256,
    results_dir,
    row_id,
    unseen_pairs,
)
from jobs.variants import describe
from pipeline.attacks.catalog import ATTACKS
from pipeline.config import ROLES
from pipeline.dag import UNKEYED, Ref, Resources, Step, Task, TaskRecord
from pipeline.execute import Context
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
        variants = [
            ("aae", None, {}),
            *(("aae", k, v) for k, v in cfg["aae"].variants.items()),
            *(("cae", k, v) for k, v in cfg["cae"].variants.items()),
        ]
        for family, name, overrides in variants:
            if not spec.has_row(family, name):
                continue
            row = row_id(spec.name, name)
            title = (
                spec.title
                if name is None
                else f"{_short(spec.title)} + {name}: {describe(overrides)} (not in the paper)"
            )
            cae = row_id("cae", name if family == "cae" else None)
            models = [row] * (spec.training is not None) + [cae] * spec.uses_cae
            rows.append({"id": row, "title": title, "per_attack": spec.per_attack, "seeds": seeds, "models": models})
    return rows


def model_titles(cfg: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """Every trained model a table reads (``cae``, its ``cae.variants``, the per-attack rows), by
    model row, with its title: the order of the sanity table and the training curves."""
    caes = {
        row_id("cae", name): f"{CAE_TITLE.split(' (')[0]} + {name}: {describe(overrides)}"
        for name, overrides in cfg["cae"].variants.items()
    }
    return {"cae": CAE_TITLE, **caes, **{r["id"]: r["title"] for r in rows if r["per_attack"]}}


def _declared() -> Any:
    return field(default_factory=dict, metadata=UNKEYED)


@dataclass(frozen=True)
class TabulateTask(TaskRecord):
    """The tables and figures of one config; its ``*_inputs`` fields name what it reads, by task id."""

    config_name: str
    attacks: dict[str, str]  # attack -> title, in column order
    rows: list[dict[str, Any]]  # ``table_rows``
    figure: list[str]  # the methods of Fig. 7
    models: dict[str, str]  # ``model_titles``
    seeds: list[int]
    unseen: dict[str, str]  # ``unseen_pairs``
    bootstrap: int
    bootstrap_seed: int
    figure_images: int
    out_dir: str
    evaluations: dict[str, str] = _declared()  # the main evaluations
    samples: dict[str, str] = _declared()  # by dataset
    shards: dict[str, str] = _declared()  # every attack shard
    victims: dict[str, str] = _declared()
    trained: dict[str, str] = _declared()  # every main model of train-cae and train-aae

    def export_dir(self) -> Path:
        return results_dir(self.out_dir, self.config_name)


def _named(prefix: str, ids: Sequence[str]) -> dict[str, str]:
    """Task id -> the name of the input under which the table reads it."""
    return {task_id: f"{prefix}:{task_id}" for task_id in ids}


def tasks(cfg: Mapping[str, Any], upstream: Mapping[str, Sequence[Task]]) -> list[Task]:
    tables, ev, attacks = cfg["tables"], cfg["evaluate"], cfg["attack"].names
    datasets = sorted({getattr(cfg["sample"].roles, role).dataset for role in ROLES})
    evaluations = _named("eval", [t.id for t in upstream["evaluate"] if t.group == "main"])
    samples, shards = _named("sample", datasets), _named("attack", [t.id for t in upstream["attack"]])
    victims = _named("victim", [t.id for t in upstream["train-victim"]])
    trained_tasks = [t for step in ("train-cae", "train-aae") for t in upstream[step] if t.group == "main"]
    trained = _named("trained", [t.id for t in trained_tasks])
    inputs = {name: Ref("evaluate", t) for t, name in evaluations.items()}
    inputs.update({name: Ref("sample", t) for t, name in samples.items()})
    inputs.update({name: Ref("attack", t) for t, name in shards.items()})
    inputs.update({name: Ref("train-victim", t) for t, name in victims.items()})
    inputs.update({trained[t.id]: Ref(t.step, t.id) for t in trained_tasks})
    rows = table_rows(cfg)
    record = TabulateTask(
        cfg["name"],
        {a: ATTACKS[a].title for a in attacks},
        rows,
        [m for m in ev.methods if METHODS[m].figure],
        model_titles(cfg, rows),
        cfg["seeds"],
        unseen_pairs(attacks, ev.unseen_seed),
        tables.bootstrap,
        tables.bootstrap_seed,
        tables.figure_images,
        tables.out_dir,
        evaluations,
        samples,
        shards,
        victims,
        trained,
    )
    return [Task("tabulate", "tables", record, inputs)]


def load_evaluations(ctx: Context, task: TabulateTask):
    """Per-image frames of every evaluation input, with the provenance of the run."""
    import pandas as pd

    from pipeline.tables import Evaluations, Row

    frames, victim_frames, commits, runtimes = {}, {}, set(), set()
    for name in task.evaluations.values():
        artifact = ctx.input(name)
        t = artifact.manifest["config"]
        frame = pd.read_csv(artifact.file(PER_IMAGE))
        if t["victim_seed"] is None:
            frames[(t["row"], t["train_attack"], t["test"], t["seed"])] = frame
        else:
            victim_frames[(t["row"], t["test"], t["victim_seed"])] = frame
        commits.add(str(artifact.manifest["code"]["git_commit"]))
        runtimes.add(json.dumps(artifact.manifest.get("runtime"), sort_keys=True))
    manifests = {dataset: manifest_sha256(ctx.input(name)) for dataset, name in task.samples.items()}
    flags: dict[str, list[bool]] = {}  # model row -> "not trained" of each of its models
    for model, _, artifact in _trained(ctx, task):
        flags.setdefault(model, []).append(bool(artifact.summary.get("not_trained")))
    rows = [
        Row(
            r["id"],
            r["title"],
            r["per_attack"],
            tuple(r["seeds"]),
            (sum(sum(flags.get(m, [])) for m in r["models"]), sum(len(flags.get(m, [])) for m in r["models"])),
        )
        for r in task.rows
    ]
    provenance = {
        "config": task.config_name,
        "commits": sorted(commits),
        "manifests": manifests,
        "seeds": task.seeds,
        "runtime": [json.loads(r) for r in sorted(runtimes)],
        **hardware_provenance({name: a.manifest for name, a in ctx.inputs.items()}),
    }
    return Evaluations(frames, rows, task.attacks, task.unseen, provenance, victim_frames)


def run(ctx: Context, task: TabulateTask) -> None:
    import yaml

    from pipeline import figures
    from pipeline.data.shards import read_shard
    from pipeline.tables import detection_table, write_tables

    ev = load_evaluations(ctx, task)
    out = ctx.out / "results"
    write_tables(ev, out, task.bootstrap, task.bootstrap_seed)
    seen, unseen = detection_table(ev, "seen"), detection_table(ev, "unseen")
    figures.detection_bars([row.title for row in ev.rows], seen["avg"], unseen["avg"], out / FIG_DETECTION)
    titles = {row.id: _short(row.title) for row in ev.rows}
    rows = []
    first_seed = task.seeds[0]
    for attack in ev.attacks if task.figure else []:
        examples = {
            m: read_shard(ctx.input(task.evaluations[eval_task_id(m, attack, attack, None, first_seed)]).file(EXAMPLES))
            for m in task.figure
        }
        first = examples[task.figure[0]]
        for i in range(min(task.figure_images, len(first["rows"]))):
            images = {
                "clean": first["clean"][i],
                "attacked": first["inputs"][i],
                **{titles[m]: examples[m]["recovered"][i] for m in examples},
            }
            rows.append((f"{attack} #{first['rows'][i]}", images))
    figures.recovery_grid(rows, list(rows[0][1]) if rows else [], out / FIG_RECOVERY)
    _write_attack_summaries(ctx, task, out)
    _write_training_sanity(ctx, task, out, ["clean", *task.attacks], ev)
    _write_training_curves(ctx, task, out, ["clean", *task.attacks], first_seed)
    (out / "config.yaml").write_text(yaml.safe_dump(ctx.config.to_dict(), sort_keys=False))
    (out / PROVENANCE).write_text(json.dumps(ev.provenance, indent=1, sort_keys=True) + "\n")
    export_tree(out, task.export_dir())
    ctx.summary.update({"files": len(list(out.iterdir())), "evaluations": len(ev.frames)})


def _write_attack_summaries(ctx: Context, task: TabulateTask, out: Path) -> None:
    """``victims.csv`` (held-out accuracy) and ``attacks.csv`` (success, norms per role and attack)."""
    import pandas as pd

    victims = [
        {
            "role": a.manifest["task"],
            **{k: a.summary[k] for k in ("val_accuracy", "role_accuracy", "chance", "majority", "n_train")},
        }
        for a in map(ctx.input, sorted(task.victims.values()))
    ]
    pd.DataFrame(victims).to_csv(out / VICTIMS_TABLE, index=False, float_format="%.4f")
    shards = pd.DataFrame(
        [
            {
                "role": a.manifest["config"]["role"],
                "attack": a.manifest["config"]["attack"],
                **{k: a.summary[k] for k in ("n", "success", "success_before_storage", "linf", "l2")},
            }
            for a in map(ctx.input, sorted(task.shards.values()))
            if a.manifest["config"]["victim_seed"] is None
        ]
    )
    averaged = ("success", "success_before_storage", "linf", "l2")
    weighted = shards.assign(**{k: shards[k] * shards["n"] for k in averaged})
    totals = weighted.groupby(["role", "attack"], sort=False).sum()
    for k in averaged:
        totals[k] = totals[k] / totals["n"]
    totals.reset_index().to_csv(out / ATTACKS_TABLE, index=False, float_format="%.4f")


def _trained(ctx: Context, task: TabulateTask) -> list[tuple[str, str, Any]]:
    """(model row, training data, artifact) of every trained recovery model read: a CAE (``cae``, or
    a ``cae.variants`` row) on ``clean`` images, or a table row's model on an attack's."""
    out = []
    for artifact in map(ctx.input, sorted(task.trained.values())):
        config = artifact.manifest["config"]
        out.append((config["row"], config.get("attack", "clean"), artifact))
    return out


def _write_training_sanity(ctx: Context, task: TabulateTask, out: Path, data_order: list[str], ev) -> None:
    """``training_sanity.csv``: each trained model's PSNR on held-out images of its own training data
    (its objective; the AAE's cycle, and D_CAE(E_AAE(x)) against x) beside the per-pixel mean image's
    (the floor) and the class-mean image's, whether it is "not trained" (``pipeline.sanity``), and the
    recovery accuracy of its table row's model on the clean test images; in the order of the task's
    ``models`` (model -> title), then training data, then seed."""
    import pandas as pd

    models = task.models
    rows = []
    order = sorted(
        _trained(ctx, task), key=lambda m: (list(models).index(m[0]), data_order.index(m[1]), m[2].summary["seed"])
    )
    for model, data, artifact in order:
        summary = artifact.summary
        held = summary["heldout"]
        clean = ev.frames.get((model, None if data == "clean" else data, CLEAN, summary["seed"]))
        rows.append(
            {
                "model": model,
                "title": models[model],
                "data": data,
                "seed": summary["seed"],
                "epochs": summary["epochs"],
                "steps": summary["steps"],
                "images": summary["images"],
                "heldout": held["n"],
                "heldout_psnr": held.get("objective"),
                "mean_image_psnr": held.get("mean_image"),
                "class_mean_psnr": held.get("class_mean"),
                "not_trained": summary["not_trained"],
                "recovered_psnr": held.get("recovered"),
                "clean_recovery_accuracy": None if clean is None else clean["recovery_accuracy"].mean(),
                "clipped_steps": summary["clipped"],
            }
        )
    pd.DataFrame(rows).to_csv(out / TRAINING_SANITY, index=False, float_format="%.3f")


def _short(title: str) -> str:
    """A row's title without its settings and notes: ``Ours + anchor``."""
    return title.split(":")[0].split(" (")[0]


def _write_training_curves(ctx: Context, task: TabulateTask, out: Path, data_order: list[str], seed: int) -> None:
    """``training_losses.csv`` (every loss term per epoch of every main recovery model, training seed
    ``seed``) and ``fig_training.png`` (the total loss per epoch, one panel per model, one line per
    training data); the task's ``models`` maps each model (``cae``, or a table row) to its title, in
    panel order."""
    import pandas as pd

    from pipeline import figures
    from pipeline.training import NOT_LOSSES

    models = task.models
    frames = {}
    for model, attack, artifact in _trained(ctx, task):
        if artifact.summary["seed"] == seed:
            history = pd.read_csv(artifact.file(HISTORY))
            curve = history.drop(columns=[c for c in NOT_LOSSES if c != "epoch" and c in history])
            frames[(list(models).index(model), data_order.index(attack))] = curve.melt(
                id_vars="epoch", var_name="term", value_name="loss"
            ).assign(model=model, attack=attack)
    curves = pd.concat([frames[k] for k in sorted(frames)])[["model", "attack", "epoch", "term", "loss"]]
    curves.to_csv(out / "training_losses.csv", index=False, float_format="%.6g")
    totals = curves[curves["term"] == "total"]
    panels = {
        _short(models[model]): {
            attack: list(zip(g["epoch"], g["loss"])) for attack, g in by_model.groupby("attack", sort=False)
        }
        for model, by_model in totals.groupby("model", sort=False)
    }
    figures.training_curves(panels, out / FIG_TRAINING)


def exports(config: Mapping[str, Any]) -> str:
    """Where a task also writes, outside the store (``Step.exports``; the engine passes its key config)."""
    return str(TabulateTask(**config).export_dir())


STEP = Step(
    name="tabulate",
    version=5,
    needs=("sample", "train-victim", "attack", "train-cae", "train-aae", "evaluate"),
    reads=("tables", "evaluate", "attack", "sample", "aae", "cae", "seeds", "name"),
    resources=Resources(cpus=2, mem="8G", time="01:00:00"),
    tasks=tasks,
    run=run,
    description="Tables II-III per metric, detection AUROC and figures, into results/<config>/",
    exports=exports,
)
