"""The recovery-model settings a run trains: the paper's setting, and the ablation points of Figs. 4-5.

A variant fixes the CAE and the AAE settings. ``main`` is the config as given; the ablations vary
λ1 (CAE KL weight), λ2 (AAE KL weight), and the depths N_CAE, N_AAE. Widths for a depth follow
the paper's two ladders between the configured first width F and latent width L (paper: 512, 64):
the CAE is geometric from F to L (N = 4 gives 512-256-128-64), the AAE has evenly spaced widths
from 400/512·F down to 100/512·F between F and L (N = 6 gives 512-400-300-200-100-64).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


def cae_widths(depth: int, first: int, latent: int) -> list[int]:
    """Geometric ladder ``first`` -> ``latent`` over ``depth`` layers."""
    return [int(round(first * (latent / first) ** (i / (depth - 1)))) for i in range(depth)]


def aae_widths(depth: int, first: int, latent: int) -> list[int]:
    """``first``, then ``depth - 2`` evenly spaced widths from 400/512 to 100/512 of it, then ``latent``."""
    middle = np.linspace(first * 400 / 512, first * 100 / 512, depth - 2) if depth > 2 else []
    return [first, *(int(round(w)) for w in middle), latent]


@dataclass(frozen=True)
class Variant:
    """One setting of the CAE and AAE sections; ``main`` is the config as given."""

    name: str
    cae: dict[str, Any]  # the cae config section, as a dict
    aae: dict[str, Any]  # the aae config section, as a dict
    figure: str | None  # which ablation figure the variant is a point of


def _with(section: dict[str, Any], lambda_kl: float | None = None, widths: list[int] | None = None) -> dict:
    out = {**section, "arch": dict(section["arch"])}
    if lambda_kl is not None:
        out["lambda_kl"] = lambda_kl
    if widths is not None:
        out["arch"]["widths"] = widths
    return out


def variants(cfg: Mapping[str, Any], ablations: bool) -> list[Variant]:
    """``main``, plus (with ``ablations``) every ablation point; names are unique."""
    cae, aae = asdict(cfg["cae"]), asdict(cfg["aae"])
    out = [Variant("main", cae, aae, None)]
    if not ablations:
        return out
    sweep = cfg["ablation"]
    out += [Variant(f"lambda1={v:g}", _with(cae, lambda_kl=v), aae, "lambda1") for v in sweep.lambdas]
    out += [Variant(f"lambda2={v:g}", cae, _with(aae, lambda_kl=v), "lambda2") for v in sweep.lambdas]
    first, latent = cae["arch"]["widths"][0], cae["arch"]["widths"][-1]
    out += [Variant(f"depth={nc}x{na}", _with(cae, widths=cae_widths(nc, first, latent)),
                    _with(aae, widths=aae_widths(na, aae["arch"]["widths"][0], latent)), "depth")
            for nc in sweep.cae_depths for na in sweep.aae_depths]
    return out
