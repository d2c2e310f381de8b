"""What the pipeline knows about an attack (torch-free, so configs validate and plans build fast)."""

from __future__ import annotations

import importlib
from dataclasses import asdict, dataclass, field
from typing import Any

from pipeline.schema import bounded


@dataclass
class AttackLimits:
    """Run sizes of one attack: slow attacks take fewer images or finer shards, never fewer steps."""

    max_images: int | None = bounded(None, lo=1)
    shard_size: int | None = bounded(None, lo=1)


@dataclass(frozen=True)
class AttackSpec:
    """One attack: its name and title, its parameters and the class that runs it.

    ``params`` is a dataclass whose fields are the keyword arguments of ``constructor``
    (``"module:Class"``, imported only when the attack is built): ``Class(victim, **params)``
    is a torchattacks ``Attack``. ``limits`` are the default run sizes (``attack.limits.<name>``
    in a config overrides them).
    """

    name: str
    title: str
    params: type
    constructor: str
    limits: AttackLimits = field(default_factory=AttackLimits)

    def build(self, model: Any, params: Any) -> Any:
        """The attack on ``model`` with ``params`` (a ``self.params`` instance or a dict of its fields)."""
        if isinstance(params, dict):
            params = self.params(**params)
        module, _, name = self.constructor.partition(":")
        return getattr(importlib.import_module(module), name)(model, **asdict(params))
