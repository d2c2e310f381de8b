"""The pipeline's configuration: YAML files validated against typed sections, plus ``--set`` overrides.

A config file may start with ``extends: <name or path>`` to override another config. Built-in
names (``smoke``, ``demo``, ``paper``) live in ``pipeline/configs/``.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from pipeline.attacks.catalog import ATTACKS
from pipeline.attacks.spec import AttackLimits
from pipeline.errors import PipelineError
from pipeline.kernels import SETTINGS as CPU_KERNELS
from pipeline.methods import METHODS
from pipeline.schema import bounded, build, suggest

CONFIG_DIR = Path(__file__).parent / "configs"
ROLES = ("cae_train", "aae_train", "test")
ATTACKED_ROLES = ("aae_train", "test")


@dataclass
class DatasetConfig:
    """One image source on local disk."""

    source: str  # registry name: cifar10, coco, imagenet_r, image_folder, fashion_mnist, photo_crops
    root: str | None = None  # None: the location a package installs (packaged sources only)
    manifest: str | None = None  # take exactly the images listed in this manifest
    classes: list[str] | None = None  # labelled folder sources: keep only these classes
    exclude: list[str] = field(default_factory=list)  # files (relative to root) never to sample


@dataclass
class RoleConfig:
    """How many images a role takes from which dataset."""

    dataset: str
    count: int = bounded(1, lo=1)
    victim_count: int = bounded(0, lo=0)  # disjoint images to train this role's victim on


@dataclass
class RolesConfig:
    cae_train: RoleConfig
    aae_train: RoleConfig
    test: RoleConfig


@dataclass
class SampleConfig:
    datasets: dict[str, DatasetConfig]
    roles: RolesConfig
    seed: int = 0
    image_size: int = bounded(32, lo=4)
    shard_size: int = bounded(1000, lo=1)
    manifest_dir: str = "data_manifests"


@dataclass
class VictimConfig:
    """The classifier attacked on one role: a local weights file, or trained by ``train-victim``."""

    arch: str = "small_cnn"
    weights: str | None = None
    num_classes: int | None = None  # required with ``weights``; otherwise taken from the data
    epochs: int = bounded(10, lo=1)
    batch_size: int = bounded(128, lo=1)
    lr: float = bounded(0.05, lo=0.0)
    val_fraction: float = bounded(0.1, lo=0.0, hi=0.9)
    seed: int = 0


@dataclass
class VictimsConfig:
    aae_train: VictimConfig = field(default_factory=VictimConfig)
    test: VictimConfig = field(default_factory=VictimConfig)
    # not in the paper: more training seeds of the test role's victim, each attacked and evaluated on the
    # rows that read no trained model (doing nothing, the input transforms), whose tables then carry the
    # spread over victims; the learned rows use the ``test.seed`` victim alone
    noise_seeds: list[int] = bounded([], lo=0)


def _params_section(name: str, specs: Mapping[str, Any]) -> type:
    """A config section with one field per spec that has a parameter dataclass, named after the spec."""
    return dataclasses.make_dataclass(
        name, [(key, spec.params, field(default_factory=spec.params)) for key, spec in specs.items() if spec.params]
    )


if TYPE_CHECKING:

    class _ParamsSection:
        """What mypy sees of a section ``_params_section`` builds: one attribute per spec with parameters."""

        def __getattr__(self, name: str) -> Any: ...

    AttackParams = _ParamsSection
    MethodParams = _ParamsSection
else:
    AttackParams = _params_section("AttackParams", ATTACKS)
    MethodParams = _params_section("MethodParams", METHODS)


@dataclass
class AttackConfig:
    names: list[str] = bounded(list(ATTACKS), choices=tuple(ATTACKS))
    params: AttackParams = field(default_factory=AttackParams)
    limits: dict[str, AttackLimits] = field(default_factory=dict)  # over each attack spec's own limits
    shard_size: int = bounded(1000, lo=1)
    batch_size: int = bounded(256, lo=1)
    seed: int = 0
    labels: str = bounded("victim", choices=("victim", "true"))
    # float16 halves the files but moves DeepFool's minimal perturbations back across the boundary
    # (README, "Differences from the paper"); uint8 would round away eps = 2/255
    storage_dtype: str = bounded("float32", choices=("float16", "float32"))

    def limits_of(self, name: str) -> AttackLimits:
        """The run sizes of attack ``name``: this config's values, else its spec's."""
        default, given = ATTACKS[name].limits, self.limits.get(name, AttackLimits())
        return AttackLimits(**{k: v if v is not None else getattr(default, k) for k, v in asdict(given).items()})


@dataclass
class ArchConfig:
    widths: list[int] = bounded([512, 256, 128, 64], lo=1)
    kernel: int = bounded(7, lo=1)
    layout: str = "rows"


@dataclass
class OptimConfig:
    kind: str = bounded("sgd", choices=("sgd", "adam"))  # adam: not in the paper (momentum unused)
    epochs: int = bounded(700, lo=1)
    # when set, a run lasts this many optimiser steps (rounded up to whole epochs) whatever its data size,
    # and the schedule given in epochs (milestones, the AAE's warm-up) stretches with it (``schedule``)
    steps: int | None = bounded(None, lo=1)
    batch_size: int = bounded(256, lo=1)
    lr: float = bounded(0.03, lo=0.0)
    momentum: float = bounded(0.9, lo=0.0)
    weight_decay: float = bounded(1e-4, lo=0.0)
    milestones: list[int] = bounded([500, 1000], lo=1)
    gamma: float = bounded(0.1, lo=0.0)
    # not in the paper: with its summed squared errors, SGD at lr 0.03 diverges as soon as the AAE's
    # latent cycle term starts (README, "Differences from the paper"); None disables clipping
    clip_grad_norm: float | None = bounded(5.0, lo=0.0)
    checkpoint_every: int = bounded(1, lo=1)
    amp: bool = False
    compile: bool = False


def schedule(optim: Mapping[str, Any], warmup_epochs: int, images: int) -> tuple[dict[str, Any], int]:
    """An ``optim`` section (as a dict) and warm-up for a run on ``images`` images: unchanged without
    ``steps``; with it, ``epochs`` becomes enough epochs for ``steps`` optimiser steps, and the
    milestones and the warm-up scale by the same factor (the paper's proportions, at any data size).
    The result holds no ``steps``: it is what ``training.TrainSpec`` takes."""
    out = {k: v for k, v in optim.items() if k != "steps"}
    if optim.get("steps") is None:
        return out, warmup_epochs
    epochs = -(-optim["steps"] // -(-images // optim["batch_size"]))
    factor = epochs / optim["epochs"]
    out.update(epochs=epochs, milestones=[max(1, round(m * factor)) for m in optim["milestones"]])
    return out, round(warmup_epochs * factor)


@dataclass
class LossConfig:
    # how squared errors and the KL are reduced per image: "sum" over its elements (the paper's
    # ||.||²), or "mean" over them (not in the paper); either way averaged over the batch
    reduction: str = bounded("sum", choices=("sum", "mean"))


@dataclass
class CAEConfig:
    """The CAE. ``variants`` (not in the paper) names other settings of this section, each trained
    beside it and shown as a row of the CAE alone (e.g. other widths, to see how capacity scales)."""

    arch: ArchConfig = field(default_factory=ArchConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    lambda_kl: float = bounded(1e-3, lo=0.0)
    # not in the paper: this fraction of the training images is held out to measure the trained
    # model in its own domain (PSNR against the per-pixel mean image), so an under-trained model shows
    holdout: float = bounded(0.05, lo=0.0, hi=0.5)
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)


def _aae_arch() -> ArchConfig:
    return ArchConfig(widths=[512, 400, 300, 200, 100, 64])


def _aae_optim() -> OptimConfig:
    return OptimConfig(epochs=1500)


@dataclass
class AAEConfig:
    """The AAE (and every model trained per attack: the trained baselines take its arch, optim,
    loss, lambda_kl and holdout). ``init``, ``anchor_weight``, ``optim.kind: adam`` and
    ``loss.reduction: mean`` are not in the paper; ``variants`` names settings of them (overrides
    of this section), each trained beside the paper's AAE and shown as its own table row."""

    arch: ArchConfig = field(default_factory=_aae_arch)
    optim: OptimConfig = field(default_factory=_aae_optim)
    loss: LossConfig = field(default_factory=LossConfig)
    lambda_kl: float = bounded(1e-3, lo=0.0)
    warmup_epochs: int = bounded(300, lo=0)
    # what the warm-up minimises, the paper's "L_A": ||X_A - X̂_A||² through the cycle (``cycle``), or
    # the AAE's own reconstruction ||X_A - D_AAE(E_AAE(X_A))||² (``self``; the other reading)
    warmup_target: str = bounded("cycle", choices=("cycle", "self"))
    holdout: float = bounded(0.05, lo=0.0, hi=0.5)
    init: str = bounded("random", choices=("random", "cae"))  # cae: start from the CAE's weights
    anchor_weight: float = bounded(0.0, lo=0.0)  # weight of ||X_A - D_CAE(E_AAE(X_A))||²
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class EvaluateConfig:
    methods: list[str] = bounded(list(METHODS), choices=tuple(METHODS))  # table rows, in order
    skip: list[str] = bounded([], choices=tuple(METHODS))  # rows left out of ``methods`` (a new method stays in)
    params: MethodParams = field(default_factory=MethodParams)
    tolerance: float = bounded(0.05, lo=0.0, hi=1.0)  # τ of the pixel recovery rate (see README)
    batch_size: int = bounded(256, lo=1)
    unseen_seed: int = 0
    keep_images: int = bounded(8, lo=0)  # recovered images kept per evaluation, for figures

    def __post_init__(self) -> None:
        self.methods = [m for m in self.methods if m not in self.skip]


@dataclass
class TablesConfig:
    out_dir: str = "results/{name}"
    bootstrap: int = bounded(1000, lo=0)
    bootstrap_seed: int = 0
    figure_images: int = bounded(4, lo=1)


@dataclass
class AblationConfig:
    lambdas: list[float] = bounded([1e-4, 1e-3, 1e-2, 1e-1], lo=0.0)
    cae_depths: list[int] = bounded([3, 4, 5, 6], lo=2)
    aae_depths: list[int] = bounded([3, 4, 5, 6, 7, 8, 9], lo=2)
    attacks: list[str] = bounded(list(ATTACKS), choices=tuple(ATTACKS))
    variants: list[str] | None = None  # the aae.variants swept beside the paper's AAE (None: all)
    seeds: list[int] | None = None  # training seeds of every point (None: the config's seeds)


@dataclass
class ConvergenceRun:
    """One curve of the convergence study: a trained method (``evaluate`` row name) with settings of
    the ``aae`` section over the study's own (``aae`` here: overrides, as in ``aae.variants``)."""

    method: str = bounded("ours", choices=tuple(m for m, spec in METHODS.items() if spec.training))
    aae: dict[str, Any] = field(default_factory=dict)
    steps: int | None = bounded(None, lo=1)  # None: the study's budget; a costly run may take fewer steps
    max_steps: int | None = bounded(None, lo=1)  # None: the study's; a costly run may stop sooner


@dataclass
class ConvergenceConfig:
    """``pipeline run convergence``: long runs of each ``runs`` entry per attack and seed, measured
    on held-out attacked images at steps ``first_eval`` · 2^k and at ``steps``; a run whose own
    objective fell by more than ``plateau`` (relative) over its last doubling of steps goes on
    doubling, up to ``max_steps``. The lr stays constant (no milestones) unless a run sets them;
    the warm-up lasts ``warmup`` of ``steps`` (the paper: 300 of 1,500 epochs)."""

    runs: dict[str, ConvergenceRun] = field(default_factory=dict)
    attacks: list[str] = bounded(["cw"], choices=tuple(ATTACKS))
    seeds: list[int] | None = None  # None: the config's seeds
    steps: int = bounded(9000, lo=1)
    max_steps: int = bounded(36000, lo=1)
    first_eval: int = bounded(250, lo=1)
    plateau: float = bounded(0.02, lo=0.0)
    warmup: float = bounded(0.2, lo=0.0, hi=1.0)
    holdout: float = bounded(0.2, lo=0.0, hi=0.5)  # of the attacked images: the validation split


@dataclass
class RuntimeConfig:
    """How to run, never what to compute: not part of any artifact key."""

    device: str = bounded("auto", choices=("auto", "cpu", "cuda"))
    threads: int = bounded(0, lo=0)  # 0: torch's default
    jobs: int = bounded(0, lo=0)  # tasks at once (run -j); 0: as many as the cores, GPUs and memory allow
    progress: bool = True
    # the CPU kernels torch computes with (pipeline/kernels.py): a level gives the same bytes on every x86-64 CPU
    # that has it; auto: avx2 on x86-64, unpinned elsewhere; unpinned: the CPU's own (or the environment's)
    cpu_kernels: str = bounded("auto", choices=CPU_KERNELS)


@dataclass
class Config:
    name: str
    sample: SampleConfig
    # every learned model (the CAE and everything trained per attack on it) is trained once per seed;
    # learned rows report the mean and spread over seeds (the victims and attacks use fixed seeds)
    seeds: list[int] = bounded([0], lo=0)
    victim: VictimsConfig = field(default_factory=VictimsConfig)
    attack: AttackConfig = field(default_factory=AttackConfig)
    cae: CAEConfig = field(default_factory=CAEConfig)
    aae: AAEConfig = field(default_factory=AAEConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    tables: TablesConfig = field(default_factory=TablesConfig)
    ablation: AblationConfig = field(default_factory=AblationConfig)
    convergence: ConvergenceConfig = field(default_factory=ConvergenceConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-4`` as a float (YAML 1.1 wants ``1.0e-4``)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(\d+(\.\d*)?|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.load(path.read_text(), Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except OSError as err:
        raise PipelineError(f"cannot read config {path}: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise PipelineError(f"config {path} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise PipelineError(f"config {path} must be a mapping at the top level")
    return data


def resolve_path(name_or_path: str, relative_to: Path | None = None) -> Path:
    """A built-in config name (``demo``) or a path to a YAML file."""
    builtin = CONFIG_DIR / f"{name_or_path}.yaml"
    if "/" not in name_or_path and not name_or_path.endswith((".yaml", ".yml")):
        if builtin.exists():
            return builtin
        names = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
        raise PipelineError(f"no built-in config {name_or_path!r} (built-in: {', '.join(names)})")
    path = Path(name_or_path)
    if relative_to is not None and not path.is_absolute():
        path = relative_to / path
    return path


def _raw(name_or_path: str, relative_to: Path | None = None, seen: tuple[Path, ...] = ()) -> dict:
    path = resolve_path(name_or_path, relative_to).resolve()
    if path in seen:
        raise PipelineError(f"config {path} extends itself through {' -> '.join(map(str, seen))}")
    data = _read_yaml(path)
    parent = data.pop("extends", None)
    if parent is None:
        return data
    base = _raw(str(parent), path.parent, seen + (path,))
    return merge(base, data)


def merge(base: Mapping, override: Mapping) -> dict:
    """Deep-merge ``override`` into a copy of ``base`` (mappings merge, everything else replaces; an
    empty mapping replaces too, so ``--set aae.variants={}`` clears them)."""
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and value and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_override(text: str) -> dict[str, Any]:
    """``a.b=value`` -> ``{"a": {"b": value}}``, the value read as YAML."""
    dotted, sep, raw = text.partition("=")
    if not sep or not dotted or any(not part for part in dotted.split(".")):
        raise PipelineError(f"--set {text!r}: expected KEY.PATH=VALUE")
    try:
        value: Any = yaml.load(raw, Loader=_Loader) if raw.strip() else ""  # noqa: S506
    except yaml.YAMLError:
        raise PipelineError(f"--set {text!r}: value is not valid YAML") from None
    for part in reversed(dotted.split(".")):
        value = {part: value}
    return value


def load_config(name_or_path: str, overrides: Sequence[str] = ()) -> Config:
    """Read a config by built-in name or path, apply ``--set`` overrides, validate everything."""
    data = _raw(name_or_path)
    for text in overrides:
        data = merge(data, parse_override(text))
    data.setdefault("name", Path(name_or_path).stem)
    config = build(Config, data, "")
    _check_consistency(config)
    return config


def config_from_dict(data: Mapping[str, Any]) -> Config:
    """Rebuild a validated config from ``Config.to_dict()`` output (e.g. inside a Slurm job)."""
    config = build(Config, dict(data), "")
    _check_consistency(config)
    return config


def _variant(section: type, base: Any, overrides: Mapping[str, Any], where: str) -> Any:
    """``base`` (a config section) with a variant's ``overrides``, validated; variants cannot nest."""
    if not overrides and ".variants." in where:
        raise PipelineError(f"config key {where!r}: a variant needs at least one setting")
    if "variants" in overrides:
        raise PipelineError(f"config key {where + '.variants'!r}: variants cannot nest")
    return build(section, merge(dataclasses.asdict(base), overrides), where)


def _check_consistency(config: Config) -> None:
    sample = config.sample
    for role in ROLES:
        name = getattr(sample.roles, role).dataset
        if name not in sample.datasets:
            raise PipelineError(
                f"config key 'sample.roles.{role}.dataset': {name!r} is not in "
                f"sample.datasets ({', '.join(sorted(sample.datasets))})"
            )
    for name, overrides in config.cae.variants.items():
        _variant(CAEConfig, config.cae, overrides, f"cae.variants.{name}")
    aae_settings = {
        "aae": {},
        **{f"aae.variants.{k}": v for k, v in config.aae.variants.items()},
        **{f"convergence.runs.{k}.aae": v.aae for k, v in config.convergence.runs.items()},
    }
    for where, overrides in aae_settings.items():
        aae = _variant(AAEConfig, config.aae, overrides, where) if where != "aae" else config.aae
        latent = (config.cae.arch.widths[-1], aae.arch.widths[-1])
        if latent[0] != latent[1]:
            raise PipelineError(
                f"config keys 'cae.arch.widths' and '{where}.arch.widths' must end in the "
                f"same latent size, got {latent[0]} and {latent[1]}"
            )
    conv = config.convergence
    limits = {
        "convergence.max_steps": (conv.max_steps, "convergence.steps", conv.steps),
        **{
            f"convergence.runs.{k}.max_steps": (
                r.max_steps,
                f"convergence.runs.{k}.steps" if r.steps else "convergence.steps",
                r.steps or conv.steps,
            )
            for k, r in conv.runs.items()
        },
    }
    for where, (limit, budget_key, budget) in limits.items():
        if conv.runs and limit is not None and limit < budget:
            raise PipelineError(f"config key {where!r}: {limit} is below {budget_key} ({budget})")
    for name in config.ablation.variants or []:
        if name not in config.aae.variants:
            raise PipelineError(
                f"config key 'ablation.variants': {name!r} is not in aae.variants"
                f"{suggest(name, config.aae.variants) if config.aae.variants else ' (none defined)'}"
            )
    if len(set(config.seeds)) != len(config.seeds) or not config.seeds:
        raise PipelineError(f"config key 'seeds': {config.seeds} must be distinct, and at least one")
    for name in config.attack.limits:
        if name not in ATTACKS:
            raise PipelineError(f"unknown key 'attack.limits.{name}' (attacks: {', '.join(ATTACKS)})")
    if config.victim.noise_seeds and config.victim.test.weights is not None:
        raise PipelineError("config key 'victim.noise_seeds': the test victim is given as weights, not trained")
    if config.victim.test.seed in config.victim.noise_seeds or len(set(config.victim.noise_seeds)) != len(
        config.victim.noise_seeds
    ):
        raise PipelineError(
            f"config key 'victim.noise_seeds': {config.victim.noise_seeds} must be distinct and "
            f"differ from victim.test.seed ({config.victim.test.seed})"
        )
    for role in ATTACKED_ROLES:
        victim = getattr(config.victim, role)
        if victim.weights is None and getattr(sample.roles, role).victim_count == 0:
            raise PipelineError(
                f"config: victim.{role} has no weights, so it is trained, but sample.roles.{role}.victim_count is 0"
            )
        if victim.weights is not None and victim.num_classes is None:
            raise PipelineError(f"config key 'victim.{role}.num_classes' is required with weights")
