"""The recovery-model settings a run trains: the config as given (``main``), its row variants
(``aae.variants``: AAE settings not in the paper, each a row of the tables; ``cae.variants``: CAE
settings, each a row of the CAE alone), and the ablation points of Figs. 4 and 5, swept for the
paper's AAE and for the row variants ``ablation.variants`` names.

An ablation point varies λ1 (CAE KL weight), λ2 (AAE KL weight), or the depths N_CAE, N_AAE.
Widths for a depth follow the paper's two ladders between the configured first width F and latent
width L (paper: 512, 64): the CAE is geometric from F to L (N = 4 gives 512-256-128-64), the AAE has
evenly spaced widths from 400/512·F down to 100/512·F between F and L (N = 6 gives
512-400-300-200-100-64).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from pipeline.config import merge


def cae_widths(depth: int, first: int, latent: int) -> list[int]:
    """Geometric ladder ``first`` -> ``latent`` over ``depth`` layers."""
    return [int(round(first * (latent / first) ** (i / (depth - 1)))) for i in range(depth)]


def aae_widths(depth: int, first: int, latent: int) -> list[int]:
    """``first``, then ``depth - 2`` evenly spaced widths from 400/512 to 100/512 of it (halves round
    up, so 64 gives the main config's 64-50-38-25-13-8), then ``latent``."""
    middle: Iterable[float] = np.linspace(first * 400 / 512, first * 100 / 512, depth - 2) if depth > 2 else []
    return [first, *(int(np.floor(w + 0.5)) for w in middle), latent]


def ablation_seeds(cfg: Mapping[str, Any]) -> list[int]:
    """The training seeds of every ablation point: ``ablation.seeds``, else the config's."""
    return cfg["ablation"].seeds or cfg["seeds"]


@dataclass(frozen=True)
class Variant:
    """One setting of the CAE and AAE sections.

    ``row``: the ``aae.variants`` (``family`` ``aae``) or ``cae.variants`` (``cae``) entry it
    belongs to (None: the config as written); ``point``: its ablation point (e.g. ``lambda1=0.01``;
    None outside the ablations), plotted in ``figure``; ``cae_id``: the train-cae task it uses
    (variants with equal CAE settings share one).
    """

    row: str | None
    point: str | None
    cae: dict[str, Any]
    aae: dict[str, Any]
    cae_id: str
    figure: str | None = None
    family: str = "aae"

    @property
    def group(self) -> str:
        return "main" if self.point is None else "ablations"


def _with(section: dict[str, Any], lambda_kl: float | None = None, widths: list[int] | None = None) -> dict:
    out = {**section, "arch": dict(section["arch"])}
    if lambda_kl is not None:
        out["lambda_kl"] = lambda_kl
    if widths is not None:
        out["arch"]["widths"] = widths
    return out


def _points(base: Variant, sweep: Any) -> list[Variant]:
    """The ablation points of one row: λ1, λ2 and the depth grid around its settings."""
    cae, aae = base.cae, base.aae
    first, latent = cae["arch"]["widths"][0], cae["arch"]["widths"][-1]
    out = [
        Variant(base.row, f"lambda1={v:g}", _with(cae, lambda_kl=v), aae, f"lambda1={v:g}", "lambda1")
        for v in sweep.lambdas
    ]
    out += [
        Variant(base.row, f"lambda2={v:g}", cae, _with(aae, lambda_kl=v), base.cae_id, "lambda2") for v in sweep.lambdas
    ]
    out += [
        Variant(
            base.row,
            f"depth={nc}x{na}",
            _with(cae, widths=cae_widths(nc, first, latent)),
            _with(aae, widths=aae_widths(na, aae["arch"]["widths"][0], latent)),
            f"depth={nc}",
            "depth",
        )
        for nc in sweep.cae_depths
        for na in sweep.aae_depths
    ]
    return [v if v.cae != base.cae else Variant(v.row, v.point, v.cae, v.aae, base.cae_id, v.figure) for v in out]


def variants(cfg: Mapping[str, Any], ablations: bool) -> list[Variant]:
    """``main``, the row variants (AAE, then CAE), and (with ``ablations``) every ablation point of the
    swept rows."""
    cae, aae = asdict(cfg["cae"]), asdict(cfg["aae"])
    main = Variant(None, None, cae, aae, "main")
    rows = [Variant(name, None, cae, merge(aae, overrides), "main") for name, overrides in cfg["aae"].variants.items()]
    cae_rows = [
        Variant(name, None, merge(cae, overrides), aae, f"cae+{name}", family="cae")
        for name, overrides in cfg["cae"].variants.items()
    ]
    out = [main, *rows, *cae_rows]
    if ablations:
        swept = cfg["ablation"].variants
        out += [
            point
            for base in [main, *rows]
            if base.row is None or swept is None or base.row in swept
            for point in _points(base, cfg["ablation"])
        ]
    return out


def describe(overrides: Mapping[str, Any], prefix: str = "") -> str:
    """``{"optim": {"kind": "adam"}, "init": "cae"}`` as ``optim.kind=adam, init=cae``."""
    parts = []
    for key, value in overrides.items():
        if isinstance(value, Mapping):
            parts.append(describe(value, f"{prefix}{key}."))
        else:
            parts.append(f"{prefix}{key}={value:g}" if isinstance(value, float) else f"{prefix}{key}={value}")
    return ", ".join(parts)
