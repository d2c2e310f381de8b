"""Learned baselines: the CAE alone (a MagNet-style reformer), a plain AE trained on adversarial
images only (the paper's Fig. 7 baseline) and a supervised denoising AE trained on pairs, from
random weights and started as a copy of the CAE (the supervised bound of the CAE's decoder)."""

from __future__ import annotations

from pipeline.methods import MethodSpec, Training


def autoencode(model):
    """Recovery by the model's own reconstruction D(E(x)), from the latent mean."""
    from pipeline.models import reconstruct

    return lambda x: reconstruct(model, x)


CAE = MethodSpec(
    "cae",
    "CAE alone (reformer)",
    "learned",
    lambda models, p: autoencode(models["cae"]),
    uses_cae=True,
    cae_variants=True,
)
PLAIN_AE = MethodSpec(
    "plain_ae",
    "Plain AE (Fig. 7 baseline)",
    "learned",
    lambda models, p: autoencode(models["model"]),
    training=Training("vae"),
    figure=True,
)
PAIRED_DAE = MethodSpec(
    "paired_dae",
    "Paired denoising AE (supervised)",
    "learned",
    lambda models, p: autoencode(models["model"]),
    training=Training("vae", target="clean"),
)
PAIRED_DAE_CAE = MethodSpec(
    "paired_dae_cae",
    "Paired denoising AE from the CAE (supervised)",
    "learned",
    lambda models, p: autoencode(models["model"]),
    training=Training("vae", target="clean", from_cae=True),
)
