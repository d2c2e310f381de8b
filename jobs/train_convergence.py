"""``train-convergence``: the convergence study (``convergence`` section; target ``pipeline run
convergence``). One long run per (study run, attack, seed) on the ``aae_train`` role's attacked
images, measured on a held-out validation split at log-spaced steps (``pipeline.convergence``):
the objective and its terms, PSNRs, and the victim's recovery accuracy. A run that has not reached
its plateau at ``steps`` goes on doubling, up to ``max_steps``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from jobs._training import setup, split
from jobs.artifacts import (
    CHECKPOINT,
    HISTORY,
    VictimPin,
    adversarial_refs,
    image_shape,
    init_seed,
    load_victim,
    save_model,
    seeded,
    victim_task_parts,
)
from jobs.train_aae import training_data
from pipeline.config import merge
from pipeline.convergence import eval_steps
from pipeline.dag import UNKEYED, Ref, Resources, Step, Task, TaskRecord
from pipeline.execute import Context
from pipeline.methods import METHODS


@dataclass(frozen=True)
class TrainConvergenceTask(TaskRecord):
    """One long run of the study (``convergence.runs.<run>``) for one attack and training seed."""

    run: str
    method: str
    loss: str
    target: str
    attack: str
    seed: int
    aae: dict[str, Any]  # the run's ``aae`` values (``Training.section``)
    steps: int
    eval_steps: list[int]
    plateau: float
    warmup: float
    holdout: float
    image_shape: tuple[int, int, int]
    victim: VictimPin
    shards: tuple[str, ...] = field(default=(), metadata=UNKEYED)  # the inputs holding the adversarial images


def tasks(cfg: Mapping[str, Any], upstream: Mapping[str, Sequence[Task]]) -> list[Task]:
    conv = cfg["convergence"]
    shards = adversarial_refs(upstream["attack"])
    victim, victim_inputs = victim_task_parts("aae_train", cfg["victim"].aae_train)
    out = []
    for name, study_run in conv.runs.items():
        budget = study_run.steps or conv.steps
        steps = eval_steps(conv.first_eval, budget)
        while steps[-1] * 2 <= (study_run.max_steps or conv.max_steps):
            steps.append(steps[-1] * 2)
        training = METHODS[study_run.method].require_training()
        section = merge(merge(asdict(cfg["aae"]), {"optim": {"milestones": [], "steps": None}}), study_run.aae)
        section = training.section(section, asdict(cfg["cae"]))
        for attack in (a for a in conv.attacks if a in cfg["attack"].names):
            for seed in conv.seeds or cfg["seeds"]:
                inputs = {
                    **shards[("aae_train", attack, None)],
                    **victim_inputs,
                    "clean": Ref("sample", cfg["sample"].roles.aae_train.dataset),
                }
                if training.reads_cae:
                    inputs["cae"] = Ref("train-cae", seeded("main", seed))
                record = TrainConvergenceTask(
                    name,
                    study_run.method,
                    training.loss,
                    training.target,
                    attack,
                    seed,
                    section,
                    budget,
                    steps,
                    conv.plateau,
                    conv.warmup,
                    conv.holdout,
                    image_shape(cfg["sample"]),
                    victim,
                    tuple(shards[("aae_train", attack, None)]),
                )
                out.append(
                    Task("train-convergence", seeded(f"{name}/{attack}", seed), record, inputs, group="convergence")
                )
    return out


def run(ctx: Context, task: TrainConvergenceTask) -> None:
    import torch

    from pipeline.convergence import plateaued
    from pipeline.device import select_device
    from pipeline.models import reconstruct
    from pipeline.progress import ProgressFile
    from pipeline.sanity import HeldOut
    from pipeline.training import train, write_history_csv

    device = select_device(ctx.config.runtime)
    data, frozen = training_data(ctx, task.shards)
    images = {"x": data["x"], "clean": data["clean"]}
    train_part, held = split(images, task.holdout)
    target = "clean" if task.target == "clean" else "x"
    per_epoch = -(-len(train_part["x"]) // task.aae["optim"]["batch_size"])
    section = dict(task.aae)
    if "warmup_epochs" in section:
        section["warmup_epochs"] = round(task.warmup * task.steps / per_epoch)
    start = init_seed(task.run, task.attack, task.seed)
    model = setup(task.loss, section, start, task.image_shape, frozen, device, len(train_part["x"]))
    spec = METHODS[task.method]
    victim = load_victim(ctx.inputs, task.victim, device)
    clean = held["clean"].float() / 255
    measure = HeldOut(task.loss, held["x"].float(), clean, victim, device, clean if target == "clean" else None)
    references = {"identity": measure.references(lambda x: x)["recovery_accuracy"]}
    if "cae" in frozen:
        references["cae"] = measure.references(lambda x: reconstruct(frozen["cae"], x))["recovery_accuracy"]
    recover = spec.recover(model.models, None)
    at_epoch = {max(1, round(step / per_epoch)): step for step in task.eval_steps}

    progress = ProgressFile(ctx.work, max(at_epoch))  # `pipeline status` shows how far the longest budget is

    def after_epoch(row: dict[str, Any]) -> dict[str, Any] | None:
        done = row["epoch"] + 1
        measured = None
        if done in at_epoch:
            measured = {"step": done * per_epoch, **measure(model.models, model.loss, recover)}
        progress({**row, **(measured or {})})
        return measured

    trainable = {"x": train_part["x"], **({"target": train_part["clean"]} if target == "clean" else {})}
    budget = max(1, round(task.steps / per_epoch))
    for epochs in sorted(e for e in at_epoch if e >= budget):
        history = train(
            {"model": model.model},
            model.loss,
            trainable,
            replace(model.spec, epochs=epochs),
            ctx.work / CHECKPOINT,
            device,
            progress=ctx.progress,
            after_epoch=after_epoch,
        )
        objective = {r["step"]: r["heldout_total"] for r in history if "step" in r}
        if plateaued(objective, task.plateau):
            break
    save_model(ctx.out, model.model, task.image_shape, section["arch"])
    write_history_csv(history, ctx.out / HISTORY)
    last = [r for r in history if "step" in r][-1]
    ctx.summary.update(
        {
            "steps": last["step"],
            "epochs": len(history),
            "steps_per_epoch": per_epoch,
            "plateaued": plateaued(objective, task.plateau),
            "final": last,
            "references": references,
            "images": len(train_part["x"]),
            "heldout": len(held["x"]),
            "init": model.init,
            "threads": torch.get_num_threads(),
        }
    )


STEP = Step(
    name="train-convergence",
    version=1,
    needs=("sample", "train-victim", "attack", "train-cae"),
    reads=("convergence", "aae", "cae", "attack", "victim", "sample", "seeds"),
    resources=Resources(cpus=8, gpus=1, mem="32G", time="48:00:00"),
    tasks=tasks,
    run=run,
    checkpointable=True,
    description="the convergence study: long runs measured on held-out attacked images at log-spaced steps",
)
