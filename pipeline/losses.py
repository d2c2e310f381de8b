"""Training losses: the VAE loss (the CAE's eq. 1, and the trained baselines') and the AAE cycle loss
(eqs. 5, 6).

Every sum is taken per image and then averaged over the batch. Each loss returns a dict of named
terms whose "total" is what gets minimised; the other terms are for logging.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from torch import Tensor, nn

from pipeline.models import ConvVAE


def sse(a: Tensor, b: Tensor) -> Tensor:
    """Squared error summed over each image (all but the batch dim), averaged over the batch."""
    return (a - b).pow(2).flatten(1).sum(1).mean()


def kl_standard_normal(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) summed over each image's latent, averaged over the batch."""
    return (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp())).flatten(1).sum(1).mean()


def freeze(module: nn.Module) -> nn.Module:
    """Stop training ``module``'s weights (requires_grad False, eval mode); gradients still flow
    through it to whatever feeds it. Returns the module."""
    module.requires_grad_(False)
    return module.eval()


def vae_loss(model: ConvVAE, x_in: Tensor, x_target: Tensor, lambda_kl: float) -> dict[str, Tensor]:
    """||target − D(E(x_in))||² + λ·KL: the CAE's eq. 1 (target = input, λ = λ1) and the baselines."""
    recon, mu, logvar, _ = model(x_in)
    terms = {"recon": sse(recon, x_target), "kl": kl_standard_normal(mu, logvar)}
    terms["total"] = terms["recon"] + lambda_kl * terms["kl"]
    return terms


def aae_loss(
    aae: ConvVAE, cae: ConvVAE, x_adv: Tensor, lambda_kl: float, warmup: bool
) -> dict[str, Tensor]:
    """Eqs. 2–6: Z_A = E_AAE(X_A), X̃_C = D_CAE(Z_A), Ẑ_A = E_CAE(X̃_C) (mean), X̂_A = D_AAE(Ẑ_A);
    total = ||X_A − X̂_A||² during warm-up, else λ2·KL + ||X_A − X̂_A||² + ||Z_A − Ẑ_A||².
    The CAE should be frozen (see ``freeze``); gradients pass through it into E_AAE."""
    mu, logvar = aae.encode(x_adv)
    z_a = aae.sample(mu, logvar)
    z_hat = cae.encode(cae.decode(z_a))[0]
    x_hat = aae.decode(z_hat)
    terms = {
        "recon_x": sse(x_adv, x_hat),
        "recon_z": sse(z_a, z_hat),
        "kl": kl_standard_normal(mu, logvar),
    }
    terms["total"] = (
        terms["recon_x"]
        if warmup
        else lambda_kl * terms["kl"] + terms["recon_x"] + terms["recon_z"]
    )
    return terms


@dataclass(frozen=True)
class LossParams:
    """Hyper-parameters of a loss: the KL weight (λ1 or λ2) and the AAE's warm-up length."""

    lambda_kl: float = 1e-3
    warmup_epochs: int = 0


Loss = Callable[[Mapping[str, nn.Module], LossParams, Mapping[str, Tensor], int], dict[str, Tensor]]

# Uniform signature (models, params, batch, epoch). models["model"] is the network being trained,
# models["cae"] the frozen CAE (aae only); batch["x"] is the input and batch["target"], when
# present, the image to reconstruct (a paired clean image), else the input. Epochs count from 0.
LOSSES: dict[str, Loss] = {
    "vae": lambda m, p, b, epoch: vae_loss(m["model"], b["x"], b.get("target", b["x"]), p.lambda_kl),
    "aae": lambda m, p, b, epoch: aae_loss(
        m["model"], m["cae"], b["x"], p.lambda_kl, warmup=epoch < p.warmup_epochs
    ),
}


def bind_loss(
    name: str, models: Mapping[str, nn.Module], params: LossParams
) -> Callable[[Mapping[str, Tensor], int], dict[str, Tensor]]:
    """The loss ``name`` as a function of (batch, epoch), the form ``training.train`` calls."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; known: {sorted(LOSSES)}")
    loss = LOSSES[name]
    return lambda batch, epoch: loss(models, params, batch, epoch)
