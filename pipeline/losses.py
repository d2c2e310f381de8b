"""Training losses: the VAE loss (the CAE's eq. 1, and the trained baselines') and the AAE cycle loss
(eqs. 5, 6), and what each model's held-out check compares.

Squared errors and the KL are reduced per image (``sum``: the paper's ||.||²; ``mean`` over the
elements, not in the paper) and then averaged over the batch. Each loss returns a dict of named
terms whose "total" is what gets minimised; the other terms are for logging.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import cast

from torch import Tensor, nn

from pipeline.models import ConvVAE, reconstruct, recover

#: how a per-element quantity becomes one number per batch
REDUCTIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "sum": lambda t: t.flatten(1).sum(1).mean(),  # summed over each image, averaged over the batch
    "mean": lambda t: t.mean(),
}


def sse(a: Tensor, b: Tensor, reduction: str) -> Tensor:
    """Squared error, reduced per image (see ``REDUCTIONS``) and averaged over the batch."""
    return REDUCTIONS[reduction]((a - b).pow(2))


def kl_standard_normal(mu: Tensor, logvar: Tensor, reduction: str) -> Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) over each image's latent, averaged over the batch."""
    return REDUCTIONS[reduction](-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()))


def freeze(module: nn.Module) -> nn.Module:
    """Stop training ``module``'s weights (requires_grad False, eval mode); gradients still flow
    through it to whatever feeds it. Returns the module."""
    module.requires_grad_(False)
    return module.eval()


def vae_loss(model: ConvVAE, x_in: Tensor, x_target: Tensor, lambda_kl: float, reduction: str) -> dict[str, Tensor]:
    """||target − D(E(x_in))||² + λ·KL: the CAE's eq. 1 (target = input, λ = λ1) and the baselines."""
    recon, mu, logvar, _ = model(x_in)
    terms = {"recon": sse(recon, x_target, reduction), "kl": kl_standard_normal(mu, logvar, reduction)}
    terms["total"] = terms["recon"] + lambda_kl * terms["kl"]
    return terms


def aae_loss(
    aae: ConvVAE,
    cae: ConvVAE,
    x_adv: Tensor,
    lambda_kl: float,
    warmup: bool,
    reduction: str,
    anchor_weight: float,
    warmup_target: str,
) -> dict[str, Tensor]:
    """Eqs. 2–6: Z_A = E_AAE(X_A), X̃_C = D_CAE(Z_A), Ẑ_A = E_CAE(X̃_C) (mean), X̂_A = D_AAE(Ẑ_A);
    total = λ2·KL + ||X_A − X̂_A||² + ||Z_A − Ẑ_A||² ("paper" is this sum whatever the total), and
    during the warm-up only the paper's "L_A": ||X_A − X̂_A||² (``warmup_target`` ``cycle``), or in
    its other reading the AAE's own reconstruction ||X_A − D_AAE(Z_A)||² (``self``, term
    ``recon_self``), which pre-trains E_AAE and D_AAE as an autoencoder.
    With ``anchor_weight`` w > 0 (not in the paper) the total gains w·||X_A − X̃_C||², which ties
    the recovered image D_CAE(E_AAE(X_A)) to its input. The CAE should be frozen (see ``freeze``);
    gradients pass through it into E_AAE."""
    mu, logvar = aae.encode(x_adv)
    z_a = aae.sample(mu, logvar)
    x_tilde = cae.decode(z_a)
    z_hat = cae.encode(x_tilde)[0]
    x_hat = aae.decode(z_hat)
    terms = {
        "recon_x": sse(x_adv, x_hat, reduction),
        "recon_z": sse(z_a, z_hat, reduction),
        "kl": kl_standard_normal(mu, logvar, reduction),
    }
    terms["paper"] = lambda_kl * terms["kl"] + terms["recon_x"] + terms["recon_z"]
    if warmup and warmup_target == "self":
        terms["recon_self"] = sse(x_adv, aae.decode(z_a), reduction)
    terms["total"] = terms["paper"] if not warmup else terms[WARMUP_TERMS[warmup_target]]
    if anchor_weight:
        terms["anchor"] = sse(x_adv, x_tilde, reduction)
        terms["total"] = terms["total"] + anchor_weight * terms["anchor"]
    return terms


#: the term the AAE's warm-up minimises, by reading of the paper's "L_A" (``aae.warmup_target``)
WARMUP_TERMS = {"cycle": "recon_x", "self": "recon_self"}


@dataclass(frozen=True)
class CycleParams:
    """What only the AAE's loss through the frozen CAE reads: its warm-up length (epochs) and reading,
    and its anchor weight. Defaults live in the config schema (``pipeline.config.AAEConfig``)."""

    warmup_epochs: int
    warmup_target: str
    anchor_weight: float


@dataclass(frozen=True)
class LossParams:
    """Hyper-parameters of a loss: the KL weight (λ1 or λ2), the reduction, and for the AAE's loss its
    ``cycle`` settings (None for a loss that does not run through the CAE). Defaults live in the config
    schema (``pipeline.config``)."""

    lambda_kl: float
    reduction: str
    cycle: CycleParams | None = None

    def through_cae(self) -> CycleParams:
        """The cycle settings, which the AAE's loss needs."""
        if self.cycle is None:
            raise ValueError("the aae loss needs LossParams.cycle (the aae section's warm-up and anchor settings)")
        return self.cycle


Loss = Callable[[Mapping[str, nn.Module], LossParams, Mapping[str, Tensor], int], dict[str, Tensor]]
Outputs = Callable[[Mapping[str, nn.Module], Mapping[str, Tensor]], dict[str, tuple[Tensor, Tensor]]]


def _net(models: Mapping[str, nn.Module], name: str) -> ConvVAE:
    """``models[name]``: every network these losses train or read through is a ``ConvVAE``."""
    return cast(ConvVAE, models[name])


def target_of(batch: Mapping[str, Tensor]) -> Tensor:
    """The image a batch's model learns to output: its paired ``target``, else its input ``x``."""
    return batch.get("target", batch["x"])


def _aae_loss(
    models: Mapping[str, nn.Module], params: LossParams, batch: Mapping[str, Tensor], epoch: int
) -> dict[str, Tensor]:
    cycle = params.through_cae()
    return aae_loss(
        _net(models, "model"),
        _net(models, "cae"),
        batch["x"],
        params.lambda_kl,
        epoch < cycle.warmup_epochs,
        params.reduction,
        cycle.anchor_weight,
        cycle.warmup_target,
    )


# Uniform signature (models, params, batch, epoch). models["model"] is the network being trained,
# models["cae"] the frozen CAE (aae only); batch["x"] is the input and batch["target"], when
# present, the image to reconstruct (a paired clean image), else the input. Epochs count from 0.
LOSSES: dict[str, Loss] = {
    "vae": lambda m, p, b, epoch: vae_loss(_net(m, "model"), b["x"], target_of(b), p.lambda_kl, p.reduction),
    "aae": lambda m, p, b, epoch: _aae_loss(m, p, b, epoch),
}


def _cycle_outputs(aae: ConvVAE, cae: ConvVAE, x: Tensor) -> dict[str, tuple[Tensor, Tensor]]:
    """The AAE's cycle D_AAE(E_CAE(X̃_C)) and its recovery X̃_C = D_CAE(E_AAE(x)), each against x."""
    recovered = recover(aae, cae, x)
    return {"objective": (aae.decode(cae.encode(recovered)[0]), x), "recovered": (recovered, x)}


# What a model trained with each loss is checked on, held out: named (output, reference) pairs,
# from latent means. "objective": what the loss asks the model to reproduce (the AAE: its cycle
# D_AAE(E_CAE(D_CAE(E_AAE(x))))); "recovered" (AAE): D_CAE(E_AAE(x)) against the input x.
OUTPUTS: dict[str, Outputs] = {
    "vae": lambda m, b: {"objective": (reconstruct(_net(m, "model"), b["x"]), target_of(b))},
    "aae": lambda m, b: _cycle_outputs(_net(m, "model"), _net(m, "cae"), b["x"]),
}


def bind_loss(
    name: str, models: Mapping[str, nn.Module], params: LossParams
) -> Callable[[Mapping[str, Tensor], int], dict[str, Tensor]]:
    """The loss ``name`` as a function of (batch, epoch), the form ``training.train`` calls."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; known: {sorted(LOSSES)}")
    loss = LOSSES[name]
    return lambda batch, epoch: loss(models, params, batch, epoch)
