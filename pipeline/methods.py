"""What each recovery method needs (torch-free, so planning stays fast); the code is in ``recovery``."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MethodSpec:
    """``models``: trained models it reads (``cae``, ``aae`` or ``model``); ``per_attack``: one trained
    instance per training attack, made by train-aae as ``trained_as``; ``params``: evaluate config keys."""

    models: tuple[str, ...] = ()
    per_attack: bool = False
    trained_as: str | None = None
    params: tuple[str, ...] = ()


METHODS: dict[str, MethodSpec] = {
    "ours": MethodSpec(("aae", "cae"), True, "aae"),
    "identity": MethodSpec(),
    "jpeg": MethodSpec(params=("jpeg_quality",)),
    "bit_depth": MethodSpec(params=("bit_depth",)),
    "median": MethodSpec(params=("median_kernel",)),
    "cae": MethodSpec(("cae",)),
    "plain_ae": MethodSpec(("model",), True, "plain_ae"),
    "paired_dae": MethodSpec(("model",), True, "paired_dae"),
}
