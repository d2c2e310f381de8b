"""Recovery methods: one ``MethodSpec`` each, declared in the modules of this package.

A spec says everything the pipeline needs about a method: its title, whether and how ``train-aae``
trains it (per training attack), which trained models it reads, its evaluate parameters
(``evaluate.params.<name>`` in a config) and how it recovers a batch. Specs are torch-free; the
``recover`` function imports what it needs when it is called, so planning stays fast. Any module
added to this package is discovered, and its specs become table rows (see README, "Extending").
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

#: row groups of the tables, in order: the paper's method, no defence, input transforms, learned baselines
KINDS = ("paper", "none", "transform", "learned")
#: ``aae`` config keys that only matter when a model is trained through the frozen CAE
CYCLE_KEYS = ("warmup_epochs", "warmup_target", "init", "anchor_weight")

Recover = Callable[[Any], Any]  # a batch of images in [0, 1] -> recovered images in [0, 1]


@dataclass(frozen=True)
class Training:
    """How ``train-aae`` trains a method's model once per training attack, from the ``aae`` section.

    ``loss`` names a loss of ``pipeline.losses.LOSSES``; the model learns to output ``target``
    (``input``: the adversarial image itself, ``clean``: its clean original, a supervised pair);
    ``with_cae``: the loss runs through the frozen CAE, which the task reads; ``from_cae``: the
    model has the CAE's architecture and starts as a copy of it (the task reads the CAE too).
    """

    loss: str
    target: str = "input"
    with_cae: bool = False
    from_cae: bool = False

    @property
    def reads_cae(self) -> bool:
        return self.with_cae or self.from_cae

    def section(self, aae: Mapping[str, Any], cae: Mapping[str, Any]) -> dict[str, Any]:
        """The ``aae`` config values that determine this model (the key of its artifact), with the
        CAE's architecture for a model started from the CAE."""
        unused = {"variants", *(() if self.with_cae else CYCLE_KEYS)}
        section = {k: v for k, v in aae.items() if k not in unused}
        return {**section, "arch": cae["arch"], "init": "cae"} if self.from_cae else section


@dataclass(frozen=True)
class MethodSpec:
    """One recovery method (a row of Tables II-III).

    ``recover(models, params)`` returns the recovery function; ``models`` holds ``model`` (its own
    trained model, when ``training`` is set) and ``cae`` (the main CAE, when ``uses_cae``);
    ``params`` is an instance of ``params`` (None when the method has no parameters).
    ``variants``: one more row per entry of ``aae.variants`` (AAE settings not in the paper);
    ``cae_variants``: one more row per entry of ``cae.variants`` (CAE settings).
    ``figure``: a column of Fig. 7 (recovered images).
    """

    name: str
    title: str
    kind: str
    recover: Callable[[Mapping[str, Any], Any], Recover]
    params: type | None = None
    training: Training | None = None
    uses_cae: bool = False
    variants: bool = False
    cae_variants: bool = False
    figure: bool = False

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"method {self.name!r}: kind {self.kind!r} is not one of {KINDS}")

    @property
    def learned(self) -> bool:
        """Reads a trained model (its own or the CAE): evaluated once per training seed."""
        return self.training is not None or self.uses_cae

    def has_row(self, family: str, row: str | None) -> bool:
        """Whether this method has a table row for the variant ``row`` of ``family`` (``aae`` or
        ``cae``; None: the config as written)."""
        return row is None or (self.variants if family == "aae" else self.cae_variants)

    @property
    def per_attack(self) -> bool:
        """One trained model per training attack (evaluated seen and unseen)."""
        return self.training is not None

    def require_training(self) -> Training:
        """``training``, where a task is built only for methods that train (a bug otherwise)."""
        if self.training is None:
            raise RuntimeError(f"method {self.name!r} trains no model")
        return self.training


def discover() -> dict[str, MethodSpec]:
    """Every spec declared at the top level of a module of this package, in row order."""
    found: list[tuple[int, str, int, MethodSpec]] = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        specs = [v for v in vars(module).values() if isinstance(v, MethodSpec)]
        found += [(KINDS.index(s.kind), info.name, i, s) for i, s in enumerate(specs)]
    methods: dict[str, MethodSpec] = {}
    for *_, spec in sorted(found, key=lambda item: item[:3]):
        if spec.name in methods:
            raise RuntimeError(f"two modules declare method {spec.name!r}")
        methods[spec.name] = spec
    return methods


METHODS: dict[str, MethodSpec] = discover()
