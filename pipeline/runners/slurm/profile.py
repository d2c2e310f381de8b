"""Cluster profiles: how the steps of the pipeline become sbatch settings on one cluster.

A profile is a YAML mapping. Every key is optional; the same keys are valid at the top level (all
steps), in ``cpu:`` (steps whose ``Resources`` ask for no GPU), in ``gpu:`` (steps that ask for
GPUs) and in ``steps: {<step name>: ...}``. A step's value for a key comes from the most specific
place that sets it: ``steps.<name>`` > ``cpu``/``gpu`` > top level > the step's ``Resources``
(cpus, mem, time, and ``gres: gpu:<gpus>`` when it asks for GPUs) > built-in defaults.
``extra`` mappings are merged key by key; every other value replaces the one below it.

    partition        str   Slurm partition (or a comma-separated list)
    account          str   --account
    qos              str   --qos
    constraint       str   --constraint, a node feature expression such as ``v100&ib``
    gres             str   --gres, ``name[:type]:count`` (comma-separated for several)
    cpus_per_task    int   --cpus-per-task
    mem              str   --mem, e.g. ``16G``, ``4000M``, ``1T`` (no suffix: megabytes)
    time             str   --time: ``MM``, ``MM:SS``, ``HH:MM:SS``, ``D-HH``, ``D-HH:MM``, ``D-HH:MM:SS``;
                           quote it in YAML (unquoted ``4:00:00`` is read as the number 14400);
                           rounded up to whole minutes
    array_throttle   int   at most this many tasks of one array run at once (``--array=0-N%K``)
    setup            list  shell lines run in the job before the task (``module load ...``,
                           ``source venv/bin/activate``); they are the user's shell, run unchanged
    extra            map   more sbatch flags, e.g. ``{mail-type: FAIL, exclusive: true}``
                           (``true``: a flag without a value)
    max_num_timeout  int   how often a checkpointable step may be requeued after a time-out (3)
    signal_delay_s   int   seconds before the time limit at which Slurm sends the time-out signal (90)
    pack             int   at most this many tasks run one after another in one job (array task);
                           default: ``SMALL_PACK`` for steps declared ``small``, else 1

Every value except ``setup`` is checked against a pattern, so no shell metacharacter (``;``,
``$(``, backticks, spaces, newlines) can reach a job script. ``extra`` takes sbatch's long option
names in full (sbatch would read an abbreviation such as ``part`` as ``--partition``), and none
that the runner or a profile key sets. Unknown keys and malformed values fail naming the key.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipeline.dag import Step
from pipeline.errors import PipelineError
from pipeline.schema import bounded, build, suggest

DEFAULTS = {"max_num_timeout": 3, "signal_delay_s": 90}
SMALL_PACK = 16  # tasks per job for steps declared small, unless a profile says otherwise
# sbatch flags the runner adds unless ``extra`` sets them: a job whose upstream failed or was
# cancelled is cancelled too, instead of pending forever with reason DependencyNeverSatisfied.
RUNNER_FLAGS = {"kill-on-invalid-dep": "yes"}
# submitit's names for the profile keys it spells differently; keys that are not sbatch settings
# (the executor's requeue budget, the runner's packing).
_RENAMED = {"array_throttle": "array_parallelism", "extra": "additional_parameters"}
_NOT_SBATCH = ("max_num_timeout", "pack")


@dataclass
class Settings:
    """The keys a profile may set at the top level, in ``cpu``/``gpu`` and per step."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    gres: str | None = None
    cpus_per_task: int | None = bounded(None, lo=1)
    mem: str | None = None
    time: str | int | None = None  # int only to explain YAML's sexagesimal numbers
    array_throttle: int | None = bounded(None, lo=1)
    setup: list[str] | None = None
    extra: dict[str, str | int | bool] | None = None
    max_num_timeout: int | None = bounded(None, lo=0)
    signal_delay_s: int | None = bounded(None, lo=1)
    pack: int | None = bounded(None, lo=1)


@dataclass
class Profile(Settings):
    """A validated cluster profile (see the module docstring)."""

    cpu: Settings = field(default_factory=Settings)
    gpu: Settings = field(default_factory=Settings)
    steps: dict[str, Settings] = field(default_factory=dict)

    def blocks(self) -> Iterator[tuple[str, Settings]]:
        """Every place that holds settings, with its key prefix, from least to most specific."""
        yield "", self
        yield "cpu", self.cpu
        yield "gpu", self.gpu
        for name, settings in self.steps.items():
            yield f"steps.{name}", settings

    def resolve(self, step: Step) -> JobSettings:
        """The sbatch settings of one step, each with the place that set it."""
        resources = step.resources
        kind = "gpu" if resources.gpus else "cpu"
        layers: list[tuple[str | None, dict[str, Any]]] = [
            (
                None,
                {
                    "cpus_per_task": resources.cpus,
                    "mem": resources.mem,
                    "time": resources.time,
                    "gres": f"gpu:{resources.gpus}" if resources.gpus else None,
                    "pack": SMALL_PACK if step.small else 1,
                },
            )
        ]
        layers += [
            (where, _values(settings)) for where, settings in self.blocks() if where in ("", kind, f"steps.{step.name}")
        ]
        values: dict[str, Any] = dict(DEFAULTS)
        origin = {name: "the built-in default" for name in DEFAULTS}
        for where, layer in layers:
            for name, value in layer.items():
                if value is not None:
                    values[name] = {**values.get(name, {}), **_flags(value)} if name == "extra" else value
                    origin[name] = (
                        f"the Resources of step {step.name!r}"
                        if where is None
                        else f"profile key {_join(where, name)!r}"
                    )
        return JobSettings(values, origin)


@dataclass(frozen=True)
class JobSettings:
    """One step's resolved settings, and for each the place that set it (for error messages)."""

    values: dict[str, Any]
    origin: dict[str, str]

    def get(self, name: str) -> Any:
        return self.values.get(name)

    def submitit_parameters(self, checkpointable: bool) -> dict[str, Any]:
        """Parameters for ``submitit.SlurmExecutor.update_parameters``."""
        params: dict[str, Any] = {
            _RENAMED.get(k, k): _CONVERT[k](v) if k in _CONVERT else v
            for k, v in self.values.items()
            if k not in _NOT_SBATCH
        }
        # submitit requeues checkpointable steps with ``scontrol requeue``; the job must allow it
        flags = {**RUNNER_FLAGS, **({"requeue": True} if checkpointable else {})}
        params["additional_parameters"] = {**flags, **params.get("additional_parameters", {})}
        return params


def _values(settings: Settings) -> dict[str, Any]:
    return {f.name: getattr(settings, f.name) for f in dataclasses.fields(Settings)}


def _flags(extra: Mapping[str, Any]) -> dict[str, Any]:
    """``extra`` with sbatch's spelling of each flag (submitit writes ``mail_type`` as ``--mail-type``)."""
    return {flag.replace("_", "-"): value for flag, value in extra.items()}


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


# --- time -------------------------------------------------------------------------------------

_TIME = re.compile(r"(?:(\d+)-)?(\d+)(?::(\d{2}))?(?::(\d{2}))?")
# Which unit each colon-separated number has, by (has days, how many numbers).
_TIME_UNITS = {
    (False, 1): (60,),
    (False, 2): (60, 1),
    (False, 3): (3600, 60, 1),
    (True, 1): (3600,),
    (True, 2): (3600, 60),
    (True, 3): (3600, 60, 1),
}


def minutes(time: str) -> int:
    """A Slurm time string in whole minutes (rounded up)."""
    match = _TIME.fullmatch(time)
    if match is None:
        raise ValueError(f"not a Slurm time: {time!r}")
    days, *clock = match.groups()
    numbers = [int(n) for n in clock if n is not None]
    units = _TIME_UNITS[(days is not None, len(numbers))]
    seconds = int(days or 0) * 86400 + sum(n * u for n, u in zip(numbers, units))
    return math.ceil(seconds / 60)


_CONVERT = {"time": minutes}

# --- validation -------------------------------------------------------------------------------

_NAME = r"[A-Za-z0-9_.-]+"
_GRES = r"[A-Za-z0-9_]+(?::[A-Za-z0-9_.-]+)?:\d+"
_FORMATS: dict[str, tuple[re.Pattern, str]] = {
    "partition": (re.compile(rf"{_NAME}(?:,{_NAME})*"), "a partition name or a comma-separated list"),
    "account": (re.compile(_NAME), "an account name"),
    "qos": (re.compile(_NAME), "a QOS name"),
    "constraint": (re.compile(r"[A-Za-z0-9_.,&|!*:\[\]-]+"), "a node feature expression like v100&ib"),
    "gres": (re.compile(rf"{_GRES}(?:,{_GRES})*"), "a GRES like gpu:v100:1 (name[:type]:count)"),
    "mem": (re.compile(r"\d+(?:[KMGT]B?)?"), "a memory size like 16G, 4000M or 1T"),
    "time": (_TIME, "a Slurm time: MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS"),
}
_FLAG = re.compile(r"[a-z][a-z0-9_-]*")
_FLAG_VALUE = re.compile(r"[A-Za-z0-9_.,:=@%/+-]+")
# sbatch's long options (Slurm 22.05). sbatch also takes any unambiguous prefix of one, so a flag
# must be written in full: ``part`` would be read as ``--partition``.
SBATCH_OPTIONS = frozenset(
    """
    account acctg-freq array batch bb bbf begin chdir cluster-constraint clusters comment constraint container
    contiguous core-spec cores-per-socket cpu-freq cpus-per-gpu cpus-per-task deadline delay-boot dependency
    distribution error exclude exclusive export export-file extra-node-info get-user-env gid gpu-bind gpu-freq
    gpus gpus-per-node gpus-per-socket gpus-per-task gres gres-flags help hint hold ignore-pbs input job-name
    kill-on-invalid-dep licenses mail-type mail-user mcs-label mem mem-bind mem-per-cpu mem-per-gpu mincpus
    network nice no-kill no-requeue nodefile nodelist nodes ntasks ntasks-per-core ntasks-per-gpu
    ntasks-per-node ntasks-per-socket open-mode output overcommit oversubscribe parsable partition power prefer
    priority profile propagate qos quiet reboot requeue reservation signal sockets-per-node spread-job switches
    test-only thread-spec threads-per-core time time-min tmp uid usage use-min-nodes verbose version wait
    wait-all-nodes wckey wrap""".split()
)
# sbatch flags the runner sets itself, that have a profile key of their own, or that would keep
# submitit from reading the job id sbatch prints (or from submitting at all).
_RESERVED_FLAGS = {
    "array",
    "dependency",
    "output",
    "error",
    "open-mode",
    "signal",
    "job-name",
    "wrap",
    "partition",
    "account",
    "qos",
    "constraint",
    "gres",
    "cpus-per-task",
    "mem",
    "time",
    "requeue",
    "no-requeue",
    "parsable",
    "test-only",
    "wait",
    "help",
    "usage",
    "version",
}


def _check(settings: Settings, where: str) -> None:
    if isinstance(settings.time, int):  # YAML reads an unquoted 4:00:00 as the number 14400
        raise PipelineError(
            f"key {_join(where, 'time')!r}: YAML read the value as the number {settings.time}; "
            f"quote the time, e.g. '04:00:00'"
        )
    for name, (pattern, what) in _FORMATS.items():
        value = getattr(settings, name)
        if value is not None and not pattern.fullmatch(value):
            raise PipelineError(f"key {_join(where, name)!r}: value {value!r} is not {what}")
    if settings.time is not None and minutes(settings.time) < 1:
        raise PipelineError(f"key {_join(where, 'time')!r}: value {settings.time!r} is shorter than a minute")
    for flag, value in (settings.extra or {}).items():
        key = _join(where, f"extra.{flag}")
        _check_flag(flag, key)
        if value is False or not (value is True or _FLAG_VALUE.fullmatch(str(value))):
            raise PipelineError(
                f"key {key!r}: value {value!r} is not a plain sbatch value "
                f"(letters, digits and _.,:=@%/+-; true for a flag without a value)"
            )


def _check_flag(flag: str, key: str) -> None:
    """A flag of ``extra`` is one of sbatch's long options, in full, and not one the runner sets."""
    if not _FLAG.fullmatch(flag):
        raise PipelineError(f"key {key!r}: {flag!r} is not an sbatch flag name")
    option = flag.replace("_", "-")
    if option not in SBATCH_OPTIONS:
        expands = sorted(o for o in SBATCH_OPTIONS if o.startswith(option))
        close = difflib.get_close_matches(option, SBATCH_OPTIONS, n=1)
        hint = (
            f"sbatch would read it as --{' or --'.join(expands)}"
            if expands
            else f"did you mean --{close[0]}?"
            if close
            else "see sbatch --help"
        )
        raise PipelineError(f"key {key!r}: {flag!r} is not an sbatch option written in full ({hint})")
    if option in _RESERVED_FLAGS:
        raise PipelineError(f"key {key!r}: --{option} is set by the runner or by its own profile key")


def load_profile(path: str | Path, steps: Mapping[str, Step]) -> Profile:
    """Read and validate a profile; ``steps`` are the valid names under ``steps:``."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as err:
        raise PipelineError(f"cannot read profile {path}: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise PipelineError(f"profile {path} is not valid YAML: {err}") from None
    try:
        profile = build(Profile, data or {}, "")
        for name in profile.steps:
            if name not in steps:
                raise PipelineError(f"unknown key {'steps.' + name!r}: no such step{suggest(name, steps)}")
        for where, settings in profile.blocks():
            _check(settings, where)
    except PipelineError as err:
        raise PipelineError(f"profile {path}: {err}") from None
    return profile
