r"""SSAH: Semantic Similarity Attack with a High-frequency (low-frequency-constrained) perturbation.

Reference
---------
C. Luo, Q. Lin, W. Xie, B. Wu, J. Xie, L. Shen, "Frequency-driven Imperceptible
Adversarial Attack on Semantic Similarity", CVPR 2022 (arXiv:2203.05151).
Authors' public code: https://github.com/LinQinLiang/SSAH-adversarial-attack
(consulted for behaviour only; this file is an independent implementation).

The attack, as written in the paper (Sec. 3) and as the reference code computes it
-------------------------------------------------------------------------------
Let ``f(.)`` be the victim classifier without its last (classification) layer,
globally pooled: the penultimate feature vector (here ``model.features(x)``), and
``S(a, b) = <a, b> / (|a| |b|)`` the cosine similarity.

*Semantic-similarity objective.*  For each image ``x_i`` of the batch a "negative"
partner ``x_j`` is fixed once, at the first iteration: the image of the batch whose
clean feature is the *least* cosine-similar to ``f(x_i)``.  With
``S_p = S(f(x_i'), f(x_i))`` (adversarial vs. own clean feature) and
``S_n = S(f(x_i'), f(x_j))`` (adversarial vs. the partner's clean feature), the
similarity cost uses Circle-loss style self-paced weights with margin ``m``::

    w_p = [S_p - m]_+            (stop-gradient)
    w_n = [1 + m - S_n]_+        (stop-gradient)
    L_sim = sum_i [ w_p * S_p - w_n * S_n ]_+                         (paper: L_sim)

Minimising ``L_sim`` pushes the adversarial feature away from its own clean
feature (until ``S_p <= m`` the positive term is active) and towards the partner.
The margin thus enters only through the two detached weights, exactly as in the
reference ``SSAH.forward`` (``w_p = clamp_min(sim_pos - m, 0)``,
``w_n = clamp_min(1 + m - sim_neg, 0)``, ``sum(clamp(w_p*sim_pos - w_n*sim_neg, min=0))``).

*Low-frequency constraint.*  With a one-level 2-D Haar DWT ``x -> (LL, LH, HL, HH)``
and ``phi(x) = IDWT(LL, 0, 0, 0)`` the image rebuilt from its low-frequency band
alone (for Haar: every 2x2 block replaced by its mean),::

    L_lf = || phi(x') - phi(x) ||                                     (paper: L_lf)

The paper writes this as a norm of the difference of the low-frequency parts; the
reference code uses ``SmoothL1Loss(reduction='sum')``, which is what is used here.
(For pixel differences below 1, i.e. always for images in [0, 1], the summed
smooth-L1 equals one half of the squared L2 norm, so the two agree up to a factor.)

*Total loss.*::

    L = alpha * L_sim + lambda_lf * L_lf                              (paper: total L)

optimised with Adam over ``w`` in the change of variables ``x' = (tanh(w) + 1) / 2``
(so ``x'`` is always in [0, 1]; no epsilon-ball, no labels, no clipping), starting from
``w = artanh((2 - 2e) x - 1 + e)``, ``e = 3e-7`` (the clean image, squeezed away from
the tanh asymptotes).  Reference schedules: 150 steps at learning rate 1e-3 for
CIFAR-size (32x32) inputs, 200 steps at 1e-4 for ImageNet (224x224) inputs.

Implementation decisions (documented because the paper leaves them open)
-------------------------------------------------------------------------
* **Output = last iterate.**  The reference returns ``0.5 * (tanh(w) + 1)`` after the
  final step; it does *not* track a best or first-successful iterate and never looks
  at the classifier's prediction.  This implementation does the same.
* **Meaning of ``alpha``.**  The reproduced paper's Table I lists SSAH with
  "alpha = 0.01" and names every attack's parameters by its constructor arguments
  (torchattacks' ``eps``, ``alpha``, ``steps``, ...).  The reference code's constructor
  argument ``alpha`` is the weight of the similarity cost (default 1), so that is how we
  read it: ``alpha`` = weight of ``L_sim``, with the reference's Adam step ``lr`` = 1e-3
  and 150 steps for CIFAR-size inputs.  (Measured on a 32x32 batch: mean L-inf about 0.10;
  reading 0.01 as Adam's step size instead gives about 0.45.)  The other reading stays
  available as ``alpha=1, lr=0.01``.
* **Partner choice.**  The reference ranks the similarities of the step-0 iterate
  (the squeezed clean image) to the clean features; we rank the clean features
  themselves, which is the same up to the 3e-7 squeeze.  The image itself is a
  candidate but, having similarity 1, is never the least similar one when B > 1.
* **Adam.**  A hand-written Adam with ``torch.optim.Adam``'s defaults (bit-identical
  updates; avoids the multi-second ``torch._dynamo`` import that constructing a
  ``torch.optim`` optimizer triggers).  Gradients are taken with ``autograd.grad``, so
  the victim's parameter ``.grad`` fields are never touched.
* **Batch dependence.**  The partner of each image is chosen inside the batch, so
  the adversarial example of an image depends on which other images share its batch
  (and hence on batch size, data order and any seed that shuffles the data).  Apart
  from the partner choice the images do not interact: all costs are sums over images
  and Adam is per-coordinate.
* **Single-image batch.**  With one image the only candidate partner is the image
  itself (the reference then uses ``S_n = S_p``, which makes the objective stall at
  ``S_p = 0.5 + m``).  Here, when the batch has a single image, the partner term is
  dropped (``w_n = 0``): the objective degenerates to ``[w_p * S_p]_+``, i.e. push the
  feature away from its own clean feature until ``S_p <= m``.
* **Determinism.**  No randomness is used; for a fixed input (and a deterministic
  backend, e.g. CPU) the output is deterministic.  Partner ties are broken by the
  lowest batch index (``torch.argmin``).
* **Odd sizes.**  The Haar transform needs even H and W; for the low-frequency term an
  odd-sized image is replicate-padded by one row/column and the padding is cropped
  after the inverse transform.

Parameters
----------
model : torch.nn.Module
    Victim classifier taking images in [0, 1] (normalisation inside the model).
feature_fn : callable, optional
    ``x -> Tensor[B, D]`` penultimate (globally pooled) features; defaults to
    ``model.features``.
steps : int, optional
    Number of Adam iterations.  ``None`` (default) picks the reference schedule per
    call: 150 if ``max(H, W) <= 64`` else 200.
alpha : float
    Weight of ``L_sim`` (the reference code's ``alpha``; default 1.0).
lr : float, optional
    Adam learning rate.  ``None`` (default) picks the reference schedule per call:
    1e-3 if ``max(H, W) <= 64`` else 1e-4.
m : float
    Margin of the similarity cost (reference default 0.2).
lambda_lf : float
    Weight of the low-frequency constraint ``L_lf`` (reference default 0.1).

``forward(images, labels=None)`` ignores ``labels`` (torchattacks passes them) and
returns detached adversarial images in [0, 1] with the input's shape, dtype and device.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torchattacks.attack import Attack

__all__ = ["SSAH", "haar_dwt2d", "haar_idwt2d", "low_frequency"]

_TANH_EPS = 3e-7
_SMALL_MAX_SIDE = 64  # inputs up to this side use the CIFAR schedule


def haar_dwt2d(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One-level orthonormal 2-D Haar DWT of ``x`` with shape (..., H, W), H and W even.

    For each 2x2 block ``[[a, b], [c, d]]`` it returns (each of shape (..., H/2, W/2))::

        LL = (a + b + c + d) / 2     low-pass in both directions
        LH = (a + b - c - d) / 2     low-pass along W, high-pass along H
        HL = (a - b + c - d) / 2     high-pass along W, low-pass along H
        HH = (a - b - c + d) / 2     high-pass in both directions

    The transform is orthonormal, so energy is preserved and ``haar_idwt2d`` inverts it.
    """
    h, w = x.shape[-2], x.shape[-1]
    if h % 2 or w % 2:
        raise ValueError(f"haar_dwt2d needs even height and width, got {h}x{w}")
    a = x[..., 0::2, 0::2]
    b = x[..., 0::2, 1::2]
    c = x[..., 1::2, 0::2]
    d = x[..., 1::2, 1::2]
    s_ab, d_ab = a + b, a - b
    s_cd, d_cd = c + d, c - d
    ll = (s_ab + s_cd) * 0.5
    lh = (s_ab - s_cd) * 0.5
    hl = (d_ab + d_cd) * 0.5
    hh = (d_ab - d_cd) * 0.5
    return ll, lh, hl, hh


def haar_idwt2d(
    ll: torch.Tensor,
    lh: torch.Tensor | None = None,
    hl: torch.Tensor | None = None,
    hh: torch.Tensor | None = None,
) -> torch.Tensor:
    """Inverse of :func:`haar_dwt2d`; missing detail bands are taken as zero."""
    zero = torch.zeros_like(ll)
    lh = zero if lh is None else lh
    hl = zero if hl is None else hl
    hh = zero if hh is None else hh
    a = (ll + lh + hl + hh) * 0.5
    b = (ll + lh - hl - hh) * 0.5
    c = (ll - lh + hl - hh) * 0.5
    d = (ll - lh - hl + hh) * 0.5
    top = torch.stack((a, b), dim=-1).flatten(-2)  # (..., H/2, W): a b a b ...
    bottom = torch.stack((c, d), dim=-1).flatten(-2)
    return torch.stack((top, bottom), dim=-2).flatten(-3, -2)  # interleave rows


def low_frequency(x: torch.Tensor) -> torch.Tensor:
    """``IDWT(LL(x), 0, 0, 0)``: the image rebuilt from its Haar LL band only.

    Works for any H, W (odd sides are replicate-padded by one pixel, then cropped).
    """
    h, w = x.shape[-2], x.shape[-1]
    pad_h, pad_w = h % 2, w % 2
    if pad_h or pad_w:
        flat = x.reshape(-1, 1, h, w)
        flat = F.pad(flat, (0, pad_w, 0, pad_h), mode="replicate")
        x_even = flat.reshape(*x.shape[:-2], h + pad_h, w + pad_w)
    else:
        x_even = x
    ll = haar_dwt2d(x_even)[0]
    return haar_idwt2d(ll)[..., :h, :w]


class _Adam:
    """Adam with torch.optim.Adam's defaults (betas 0.9/0.999, eps 1e-8, no weight decay).

    Same update as ``torch.optim.Adam`` (single-tensor form); written out because
    constructing a ``torch.optim`` optimizer imports ``torch._dynamo`` (seconds of
    start-up per process), which this one-tensor loop does not need.
    """

    def __init__(self, param: torch.Tensor, lr: float, betas=(0.9, 0.999), eps: float = 1e-8):
        self.param, self.lr, self.eps = param, float(lr), float(eps)
        self.beta1, self.beta2 = float(betas[0]), float(betas[1])
        self.exp_avg = torch.zeros_like(param)
        self.exp_avg_sq = torch.zeros_like(param)
        self.t = 0

    @torch.no_grad()
    def step(self, grad: torch.Tensor) -> None:
        self.t += 1
        self.exp_avg.lerp_(grad, 1.0 - self.beta1)
        self.exp_avg_sq.mul_(self.beta2).addcmul_(grad, grad, value=1.0 - self.beta2)
        bias_c1 = 1.0 - self.beta1**self.t
        bias_c2 = 1.0 - self.beta2**self.t
        denom = (self.exp_avg_sq.sqrt() / math.sqrt(bias_c2)).add_(self.eps)
        self.param.addcdiv_(self.exp_avg, denom, value=-self.lr / bias_c1)


class SSAH(Attack):
    r"""SSAH attack (Luo et al., CVPR 2022) as a torchattacks ``Attack``.

    Loss (see the module docstring for the derivation and all decisions)::

        S_p = cos(f(x'_i), f(x_i)),  S_n = cos(f(x'_i), f(x_{j(i)})),
        j(i) = argmin_j cos(f(x_i), f(x_j))                  (fixed at the first step)
        L_sim = sum_i [ [S_p - m]_+^sg * S_p - [1 + m - S_n]_+^sg * S_n ]_+
        L_lf  = SmoothL1_sum( IDWT(LL(x')), IDWT(LL(x)) )     (one-level Haar)
        L     = alpha * L_sim + lambda_lf * L_lf
        x'    = (tanh(w) + 1) / 2,  w optimised by Adam(lr) for `steps` steps

    Parameters
    ----------
    model : nn.Module
        Victim classifier on [0, 1] images.
    feature_fn : callable, optional
        Penultimate features ``x -> [B, D]``; default ``model.features``.
    steps : int or None
        Adam iterations (None: 150 for images with max side <= 64, else 200).
    alpha : float
        Weight of the similarity cost (the reference code's ``alpha``, 1.0; Table I: 0.01).
    lr : float or None
        Adam learning rate (None: 1e-3 for max side <= 64, else 1e-4).
    m : float
        Similarity margin (0.2).
    lambda_lf : float
        Weight of the low-frequency constraint (0.1).

    Output is the last iterate (as in the reference); labels are ignored; the result
    depends on the batch composition (partner chosen within the batch); a
    single-image batch drops the partner term.  Deterministic, no randomness.

    Examples::
        >>> atk = SSAH(model, steps=150, alpha=0.01, lr=1e-3)
        >>> adv = atk(images, labels)
    """

    def __init__(
        self,
        model: torch.nn.Module,
        feature_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
        steps: int | None = None,
        alpha: float = 1.0,
        lr: float | None = None,
        m: float = 0.2,
        lambda_lf: float = 0.1,
    ) -> None:
        super().__init__("SSAH", model)
        if feature_fn is None:
            feature_fn = getattr(model, "features", None)
            if feature_fn is None or not callable(feature_fn):
                raise AttributeError(
                    "SSAH needs penultimate features: pass feature_fn or give the model "
                    "a callable `features(x) -> Tensor[B, D]`"
                )
        if steps is not None and int(steps) < 0:
            raise ValueError("steps must be >= 0")
        if lr is not None and not float(lr) > 0:
            raise ValueError("lr (Adam's step size) must be > 0")
        self.feature_fn = feature_fn
        self.steps = None if steps is None else int(steps)
        self.alpha = float(alpha)
        self.lr = None if lr is None else float(lr)
        self.m = float(m)
        self.lambda_lf = float(lambda_lf)
        self.supported_mode = ["default"]

    # ------------------------------------------------------------------ helpers
    def schedule(self, images: torch.Tensor) -> tuple[int, float]:
        """(steps, learning rate) used for ``images`` (reference schedule if unset)."""
        small = max(images.shape[-2], images.shape[-1]) <= _SMALL_MAX_SIDE
        steps = self.steps if self.steps is not None else (150 if small else 200)
        lr = self.lr if self.lr is not None else (1e-3 if small else 1e-4)
        return steps, lr

    def get_features(self, inputs: torch.Tensor) -> torch.Tensor:
        """Penultimate features, honouring torchattacks' normalisation handling."""
        if self._normalization_applied is False:
            inputs = self.normalize(inputs)
        feats = self.feature_fn(inputs)
        return feats.reshape(feats.shape[0], -1)

    def _model_dtype(self, input_dtype: torch.dtype) -> torch.dtype:
        """Floating dtype of the model's parameters (fallback: the input's / float32)."""
        for p in self.model.parameters():
            if p.is_floating_point():
                return p.dtype
        return input_dtype if input_dtype.is_floating_point else torch.float32

    @staticmethod
    def select_partners(clean_features: torch.Tensor) -> torch.Tensor:
        """Index of the least cosine-similar clean feature of the batch, per image."""
        z = F.normalize(clean_features, dim=1)
        return torch.argmin(z @ z.t(), dim=1)

    # ------------------------------------------------------------------ attack
    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        r"""Overridden.  ``labels`` is accepted for the torchattacks interface and ignored."""
        del labels
        if images.dim() != 4:
            raise ValueError(f"expected images of shape (N, C, H, W), got {tuple(images.shape)}")
        out_device, out_dtype = images.device, images.dtype
        device = self.device if self.device is not None else images.device
        model_dtype = self._model_dtype(out_dtype)
        # optimise in float32/float64 (half precision cannot represent the tanh squeeze)
        work_dtype = model_dtype if model_dtype in (torch.float32, torch.float64) else torch.float32
        x = images.detach().to(device=device, dtype=work_dtype).clamp(0.0, 1.0)
        n = x.shape[0]
        if n == 0:
            return images.detach().clone()
        steps, lr = self.schedule(x)

        with torch.no_grad():
            clean_feat = F.normalize(self.get_features(x.to(model_dtype)).to(work_dtype), dim=1)
            partner = self.select_partners(clean_feat)
            partner_feat = clean_feat[partner]
            clean_lf = low_frequency(x)
        use_partner = n > 1

        w = torch.atanh(x * (2.0 - 2.0 * _TANH_EPS) - 1.0 + _TANH_EPS).detach().requires_grad_(True)
        adam = _Adam(w, lr)

        for _ in range(steps):
            with torch.enable_grad():
                adv = 0.5 * (torch.tanh(w) + 1.0)
                adv_feat = F.normalize(self.get_features(adv.to(model_dtype)).to(work_dtype), dim=1)
                s_pos = (adv_feat * clean_feat).sum(dim=1)
                w_p = torch.clamp_min(s_pos.detach() - self.m, 0.0)
                cost = w_p * s_pos
                if use_partner:
                    s_neg = (adv_feat * partner_feat).sum(dim=1)
                    w_n = torch.clamp_min(1.0 + self.m - s_neg.detach(), 0.0)
                    cost = cost - w_n * s_neg
                sim_cost = torch.clamp_min(cost, 0.0).sum()
                lf_cost = F.smooth_l1_loss(low_frequency(adv), clean_lf, reduction="sum", beta=1.0)
                total = self.alpha * sim_cost + self.lambda_lf * lf_cost
                # autograd.grad instead of backward(): keeps the model's .grad untouched
                (grad,) = torch.autograd.grad(total, [w])
            adam.step(grad)

        adv = 0.5 * (torch.tanh(w.detach()) + 1.0)
        adv = adv.clamp(0.0, 1.0)
        return adv.to(device=out_device, dtype=out_dtype).detach()
