"""The paper's method: recovery by D_CAE(E_AAE(x)), with the AAE trained through the frozen CAE."""

from __future__ import annotations

from pipeline.methods import MethodSpec, Training


def _cae_of_aae(models, params):
    from pipeline.models import recover

    return lambda x: recover(models["model"], models["cae"], x)


OURS = MethodSpec(
    "ours",
    "Ours (CAE + AAE, as written)",
    "paper",
    _cae_of_aae,
    training=Training("aae", with_cae=True),
    uses_cae=True,
    variants=True,
    figure=True,
)
