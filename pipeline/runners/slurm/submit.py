"""Submitting a plan: its pending tasks as submitit job arrays with ``afterok`` dependencies
(``submit``), or their sbatch scripts written without Slurm (``dry_run``)."""

from __future__ import annotations

import os
import shlex
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.config import Config
from pipeline.dag import Plan
from pipeline.errors import PipelineError
from pipeline.execute import pin_git_commit
from pipeline.runners.slurm.arrays import ArrayJob, Ref, array_jobs
from pipeline.runners.slurm.cluster import check_cluster, check_root, slurm_command
from pipeline.runners.slurm.profile import JobSettings, Profile
from pipeline.runners.slurm.records import RECORDS, run_folder, silent, submission_lock, write_record
from pipeline.runners.slurm.states import Foreign, Snapshot, Triage, snapshot, triage
from pipeline.store import Store


@dataclass
class Submitted:
    """One job as submitted, or in a dry run as it would be."""

    job: ArrayJob
    settings: JobSettings
    job_id: str  # Slurm's id; ``JOB<n>`` in a dry run
    dependency: str | None
    element_ids: list[str]  # Slurm's id of each element (``<job id>_<index>`` in an array)
    script: Path | None = None  # dry run: the sbatch script written


@dataclass
class Submission:
    """What ``submit`` or ``dry_run`` did."""

    run_id: str
    folder: Path  # submitit's files and logs; in a dry run, the sbatch scripts
    jobs: list[Submitted]
    plan: Plan  # as submitted: artifacts read after Slurm's answer
    queued: dict[Ref, str] = field(default_factory=dict)  # pending tasks a healthy queued job builds -> its id
    cancelled: dict[str, list[Ref]] = field(default_factory=dict)  # stale jobs cancelled -> the tasks they held
    superseded: list[Foreign] = field(default_factory=list)  # jobs of another plan cancelled: they wrote here
    foreign: list[Foreign] = field(default_factory=list)  # jobs of another plan left in the queue
    record: Path | None = None


def submit(
    plan: Plan,
    store: Store,
    config: Config,
    profile: Profile,
    targets: Sequence[str],
    force: Sequence[str] = (),
    package: str = "jobs",
    echo: Callable[[str], None] = silent,
) -> Submission:
    """Submit the plan's pending tasks, except those a healthy queued job will build; cancel the
    queued jobs that can never run (and submit their tasks again) and the queued jobs of another plan
    that would write where this one writes; record the submission. ``echo`` hears of a wait for the
    submission lock."""
    import submitit
    from submitit.core.utils import FailedJobError

    from pipeline.runners.slurm.job import RUNNERS

    check_root(store.root)
    if shutil.which("sbatch") is None:
        raise PipelineError(
            "sbatch is not on PATH, so this machine cannot submit to Slurm: use --dry-run to "
            "see the jobs and their scripts, or `pipeline run` to run the tasks here"
        )
    settings = _settings(plan, profile)
    check_cluster(settings.values())
    with submission_lock(store.root, "submit", echo):
        planned = time.time()
        snap = snapshot(store.root, plan, strict=True)
        plan = snap.plan
        found = triage(plan, snap.states)
        writes = exports(plan)
        cancelled, superseded = _doomed(snap, found, writes.values())
        if cancelled or superseded:
            slurm_command(["scancel", *cancelled, *(job.job_id for job in superseded)])
        jobs = array_jobs(plan, found.queued, _packs(settings))
        run_id = _new_run_id()
        folder = run_folder(store.root, run_id) if jobs else store.root / RECORDS / run_id
        resolved, commit = config.to_dict(), pin_git_commit()
        done: list[Submitted] = []
        ids: dict[int, str] = {}
        try:
            for job in jobs:
                job_settings = settings[job.step.name]
                dependency = job.dependency(ids)
                # A fresh executor per job: update_parameters(x=None) would not clear an earlier value.
                executor = submitit.SlurmExecutor(folder, max_num_timeout=job_settings.get("max_num_timeout"))
                executor.update_parameters(**_parameters(job, job_settings, dependency))
                runner = RUNNERS[job.step.checkpointable](
                    str(store.root), resolved, tuple(targets), tuple(force), job.step.name, package, commit, planned
                )
                handles = executor.map_array(runner, *_arguments(job))
                ids[job.number] = handles[0].job_id.split("_")[0]
                done.append(Submitted(job, job_settings, ids[job.number], dependency, [h.job_id for h in handles]))
        except FailedJobError as err:
            message = " ".join(str(err).split()) or "no message"
            raise PipelineError(
                f"sbatch refused job #{job.number} ({job.label}): {message}"
                + (
                    f"; the {len(done)} job(s) before it are queued as run {run_id} "
                    f"(`pipeline cancel {run_id}` removes them)"
                    if done
                    else ""
                )
            ) from None
        finally:
            record = (
                write_record(
                    store.root,
                    run_id,
                    folder,
                    done,
                    config,
                    targets,
                    force,
                    commit,
                    [*cancelled, *(job.job_id for job in superseded)],
                    writes,
                )
                if done
                else None
            )
    foreign = [job for job in snap.foreign if job not in superseded]
    return Submission(run_id, folder, done, plan, found.queued, cancelled, superseded, foreign, record)


def _doomed(snap: Snapshot, found: Triage, writes: Iterable[str]) -> tuple[dict[str, list[Ref]], list[Foreign]]:
    """The queued jobs ``submit`` cancels: those that can never run (with the tasks they hold), and
    those of another plan that would write where this plan writes (``writes``)."""
    stale: dict[str, list[Ref]] = {}
    for ref in sorted(found.stale, key=lambda ref: snap.states[ref].job_id):
        if snap.states[ref].queued:
            stale.setdefault(snap.states[ref].job_id, []).append(ref)
    writes = list(writes)
    return stale, [job for job in snap.foreign if job.clashes(writes)]


def exports(plan: Plan) -> dict[Ref, str]:
    """Where each task of the plan writes outside the artifact store (its step's ``exports``), as an
    absolute path: a job runs in the directory it was submitted from."""
    return {
        (p.task.step, p.key): os.path.abspath(p.step.exports(p.task.config))
        for p in plan.tasks
        if p.step.exports is not None
    }


def dry_run(plan: Plan, store: Store, profile: Profile) -> Submission:
    """Write the sbatch script of every job the plan would submit; runs no Slurm command.

    Job ids are placeholders ``JOB<n>``; tasks queued by earlier submissions are not looked up.
    """
    from submitit.slurm.slurm import _make_sbatch_string  # the text SlurmExecutor submits

    check_root(store.root)
    settings = _settings(plan, profile)
    run_id = f"dry-run-{_new_run_id()}"
    jobs = array_jobs(plan, pack=_packs(settings))
    folder = run_folder(store.root, run_id) if jobs else store.root / RECORDS / run_id
    ids = {job.number: f"JOB{job.number}" for job in jobs}
    command = " ".join([shlex.quote(sys.executable), "-u -m submitit.core._submit", shlex.quote(str(folder))])
    out = []
    for job in jobs:
        dependency = job.dependency(ids)
        params = _parameters(job, settings[job.step.name], dependency)
        script = _make_sbatch_string(command=command, folder=folder, map_count=_map_count(job), **params)
        path = folder / f"job{job.number:03d}-{job.step.name}.sh"
        path.write_text(script)
        element_ids = (
            [ids[job.number]]
            if len(job.elements) == 1
            else [f"{ids[job.number]}_{i}" for i in range(len(job.elements))]
        )
        out.append(Submitted(job, settings[job.step.name], ids[job.number], dependency, element_ids, path))
    return Submission(run_id, folder, out, plan)


def _settings(plan: Plan, profile: Profile) -> dict[str, JobSettings]:
    return {name: profile.resolve(step) for name, step in plan.steps.items()}


def _packs(settings: Mapping[str, JobSettings]) -> dict[str, int]:
    return {name: s.get("pack") for name, s in settings.items()}


def _map_count(job: ArrayJob) -> int | None:
    return len(job.elements) if len(job.elements) > 1 else None


def _arguments(job: ArrayJob) -> tuple[list[list[str]], list[list[str]]]:
    """Per element: its task ids and their artifact keys (the runner's two arguments)."""
    return [[p.task.id for p in e] for e in job.elements], [[p.key for p in e] for e in job.elements]


def _parameters(job: ArrayJob, settings: JobSettings, dependency: str | None) -> dict[str, Any]:
    params = {"job_name": job.step.name, **settings.submitit_parameters(job.step.checkpointable)}
    return {**params, "dependency": dependency} if dependency else params


def _new_run_id() -> str:
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"
