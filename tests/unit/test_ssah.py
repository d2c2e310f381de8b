"""Unit tests for pipeline.attacks.ssah (SSAH, Luo et al. CVPR 2022).

A tiny CNN victim is trained for a few seconds on synthetic structured images
(3 classes: horizontal stripes, vertical stripes, Gaussian blobs; random phase,
frequency, colour and noise), so that its penultimate features are meaningful.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from pipeline.attacks.ssah import SSAH, _Adam, haar_dwt2d, haar_idwt2d, low_frequency

# Victim / data settings.  Low-contrast, fine (period 2.5-5 px) patterns make the
# classifier rely on small high-frequency signals, i.e. make it about as fragile as
# natural-image CNNs are (an easy high-contrast task gives a very smooth victim whose
# features barely react to any perturbation the low-frequency term allows).
SIZE = 16
CONTRAST = 0.3
NOISE = 0.03
N_TRAIN = 256
EPOCHS = 5
BATCH = 32
# One intra-op thread: cheapest and stable when the 2 cores are shared with other work.
NTHREADS = 1


@contextlib.contextmanager
def _threads(n: int):
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def make_images(n: int, gen: torch.Generator, size: int = SIZE):
    """Class 0: horizontal stripes, 1: vertical stripes, 2: a Gaussian blob."""
    labels = torch.arange(n) % 3
    coords = torch.arange(size, dtype=torch.float32)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    imgs = torch.empty(n, 3, size, size)
    for i in range(n):
        c = int(labels[i])
        freq = 2 * torch.pi / (2.5 + 2.5 * torch.rand((), generator=gen))
        phase = 2 * torch.pi * torch.rand((), generator=gen)
        if c == 0:
            pattern = 0.5 + 0.5 * torch.sin(freq * yy + phase)
        elif c == 1:
            pattern = 0.5 + 0.5 * torch.sin(freq * xx + phase)
        else:
            cy, cx = (4 + (size - 8) * torch.rand(2, generator=gen)).tolist()
            sigma = 3.0 + 4.0 * float(torch.rand((), generator=gen))
            pattern = torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))
        colour = CONTRAST * (0.5 + 0.5 * torch.rand(3, 1, 1, generator=gen))
        base = 0.2 + 0.5 * torch.rand(3, 1, 1, generator=gen)
        noise = NOISE * torch.randn(3, size, size, generator=gen)
        imgs[i] = (base + colour * pattern + noise).clamp(0.0, 1.0)
    return imgs, labels


class TinyNet(nn.Module):
    """Two conv layers (with BatchNorm, as in real CNNs) + global average pool + linear head."""

    def __init__(self, n_classes: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1, stride=2)
        self.bn2 = nn.BatchNorm2d(32)
        self.head = nn.Linear(32, n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return x.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _features_cos(model, a, b):
    with torch.no_grad():
        return F.cosine_similarity(model.features(a), model.features(b), dim=1)


def _band_energies(delta: torch.Tensor):
    ll, lh, hl, hh = haar_dwt2d(delta)
    low = float((ll**2).sum())
    high = float((lh**2).sum() + (hl**2).sum() + (hh**2).sum())
    return low, high


@pytest.fixture(scope="module")
def victim():
    with _threads(NTHREADS), torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # weight init only; the global RNG state is restored afterwards
        gen = torch.Generator().manual_seed(0)
        x_train, y_train = make_images(N_TRAIN, gen)
        model = TinyNet()
        # the attack's own Adam (bit-identical to torch.optim.Adam, see
        # test_adam_matches_reference_update) avoids torch.optim's slow first import
        params = list(model.parameters())
        opts = [_Adam(p, 1e-2) for p in params]
        for _ in range(EPOCHS):
            perm = torch.randperm(len(x_train), generator=gen)
            for k in range(0, len(x_train), BATCH):
                idx = perm[k : k + BATCH]
                loss = F.cross_entropy(model(x_train[idx]), y_train[idx])
                grads = torch.autograd.grad(loss, params)
                for opt, g in zip(opts, grads):
                    opt.step(g)
        model.eval()
        x_test, y_test = make_images(48, torch.Generator().manual_seed(1))
        with torch.no_grad():
            acc = (model(x_test).argmax(1) == y_test).float().mean().item()
    assert acc >= 0.9, f"victim failed to learn the synthetic task (acc={acc:.2f})"
    return model, x_test, y_test


@pytest.fixture(scope="module")
def attacked(victim):
    """SSAH at modest strength (50 Adam steps at lr 1e-2) on 48 correctly classified images."""
    model, x, y = victim
    with _threads(NTHREADS):
        with torch.no_grad():
            keep = model(x).argmax(1) == y
        x, y = x[keep], y[keep]
        atk = SSAH(model, steps=50, lr=1e-2)
        adv = atk(x, y)
    return model, x, y, adv


# --------------------------------------------------------------------------- DWT
@pytest.mark.unit
def test_haar_dwt_idwt_perfect_reconstruction():
    gen = torch.Generator().manual_seed(3)
    for h, w in [(32, 32), (6, 10), (2, 2), (224, 18)]:
        x = torch.rand(2, 3, h, w, generator=gen)
        bands = haar_dwt2d(x)
        assert all(b.shape == (2, 3, h // 2, w // 2) for b in bands)
        rec = haar_idwt2d(*bands)
        assert rec.shape == x.shape
        assert torch.allclose(rec, x, atol=1e-6, rtol=0)
        # orthonormal: energy preserved
        energy = sum(float((b.double() ** 2).sum()) for b in bands)
        assert abs(energy - float((x.double() ** 2).sum())) < 1e-3


@pytest.mark.unit
def test_ll_only_reconstruction_is_block_average():
    x = torch.rand(2, 3, 12, 8, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    ll = haar_dwt2d(x)[0]
    expected = F.avg_pool2d(x, 2).repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)
    assert torch.allclose(haar_idwt2d(ll), expected, atol=1e-12, rtol=0)
    assert torch.allclose(low_frequency(x), expected, atol=1e-12, rtol=0)
    # a known 2x2 example
    block = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    ll, lh, hl, hh = haar_dwt2d(block)
    assert float(ll) == pytest.approx(5.0) and float(hh) == pytest.approx(0.0)
    assert torch.allclose(low_frequency(block), torch.full_like(block, 2.5))
    # odd sizes are handled by the low-frequency helper (padding + crop)
    odd = torch.rand(1, 1, 5, 7, generator=torch.Generator().manual_seed(5))
    lf = low_frequency(odd)
    assert lf.shape == odd.shape
    assert torch.allclose(lf[..., :4, :6], low_frequency(odd[..., :4, :6]))
    with pytest.raises(ValueError):
        haar_dwt2d(odd)


# --------------------------------------------------------------------------- attack
@pytest.mark.unit
def test_output_range_shape_dtype(attacked):
    _, x, _, adv = attacked
    assert adv.shape == x.shape and adv.dtype == x.dtype and adv.device == x.device
    assert not adv.requires_grad
    assert torch.isfinite(adv).all()
    assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0
    assert float((adv - x).abs().max()) > 1e-3  # it actually moved


@pytest.mark.unit
def test_lowers_feature_similarity(attacked):
    model, x, _, adv = attacked
    cos = _features_cos(model, adv, x)
    # clean vs clean is 1; SSAH must push the mean similarity clearly down
    assert float(cos.mean()) < 0.7, f"mean cos(adv, clean) = {float(cos.mean()):.3f}"
    assert float((cos < 0.9).float().mean()) > 0.5
    # ... and far more than random noise of the same per-image L2 norm does
    delta = adv - x
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(7))
    scale = delta.flatten(1).norm(dim=1) / noise.flatten(1).norm(dim=1)
    noisy = (x + noise * scale.view(-1, 1, 1, 1)).clamp(0.0, 1.0)
    cos_noise = _features_cos(model, noisy, x)
    assert float(1 - cos.mean()) > 5 * float(1 - cos_noise.mean())


@pytest.mark.unit
def test_perturbation_is_mostly_high_frequency(attacked, victim):
    model, x, _, adv = attacked
    delta = adv - x
    low, high = _band_energies(delta)
    # white noise puts 1/4 of its energy in LL; SSAH must put clearly less there
    assert low / (low + high) < 0.05, f"LL share of perturbation energy {low / (low + high):.3f}"
    # relative to the clean band energies (natural images live in LL) the gap is larger still
    c_low, c_high = _band_energies(x)
    assert low / c_low < 0.25 * (high / c_high)
    # and the constraint is what causes it: without it (lambda_lf = 0, "SSA") the LL share rises
    with _threads(NTHREADS):
        adv_free = SSAH(model, steps=50, lr=1e-2, lambda_lf=0.0)(x)
    f_low, f_high = _band_energies(adv_free - x)
    assert low / (low + high) < 0.5 * f_low / (f_low + f_high)


@pytest.mark.unit
def test_success_rate_positive(attacked):
    model, x, y, adv = attacked
    with torch.no_grad():
        pred = model(adv).argmax(1)
    success = float((pred != y).float().mean())
    # observed ~0.98 with these settings; require a clearly non-trivial rate
    assert success > 0.25, f"SSAH success rate only {success:.2f} on the trained tiny victim"


@pytest.mark.unit
def test_deterministic_and_labels_ignored(victim):
    model, x, y = victim
    x = x[:8]
    with _threads(NTHREADS):
        atk = SSAH(model, steps=10, lr=1e-2)
        a = atk(x, y[:8])
        b = atk(x, y[:8])
        c = atk(x)  # labels are ignored
    assert torch.equal(a, b)
    assert torch.equal(a, c)


@pytest.mark.unit
def test_single_image_batch_and_no_side_effects(victim):
    model, x, y = victim
    model.train()  # the attack must run in eval mode and restore the given mode
    try:
        with _threads(NTHREADS):
            adv = SSAH(model, steps=20, lr=1e-2)(x[:1], y[:1])
        assert model.training
    finally:
        model.eval()
    assert adv.shape == (1, 3, SIZE, SIZE) and torch.isfinite(adv).all()
    assert float(_features_cos(model, adv, x[:1])) < 0.99
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.unit
def test_adam_matches_reference_update():
    """_Adam follows torch.optim.Adam's update rule (checked here against the formula)."""
    gen = torch.Generator().manual_seed(11)
    w = torch.randn(5, generator=gen, dtype=torch.float64)
    p = w.clone()
    opt = _Adam(p, lr=0.05)
    m = torch.zeros_like(w)
    v = torch.zeros_like(w)
    for t in range(1, 21):
        g = torch.randn(5, generator=gen, dtype=torch.float64) * 10.0 ** (t % 5 - 3)
        opt.step(g)
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        w = w - 0.05 * (m / (1 - 0.9**t)) / ((v / (1 - 0.999**t)).sqrt() + 1e-8)
    assert torch.allclose(p, w, rtol=1e-10, atol=1e-12)


@pytest.mark.unit
def test_partner_is_least_similar_clean_feature():
    feats = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.7, 0.7]])
    partners = SSAH.select_partners(feats)
    assert partners.tolist() == [2, 2, 0, 0]


@pytest.mark.unit
def test_defaults_and_aliases(victim):
    model, _, _ = victim
    atk = SSAH(model)
    assert atk.schedule(torch.zeros(1, 3, 32, 32)) == (150, 1e-3)
    assert atk.schedule(torch.zeros(1, 3, 224, 224)) == (200, 1e-4)
    assert (atk.alpha, atk.m, atk.lambda_lf) == (1.0, 0.2, 0.1)
    assert SSAH(model, lr=0.01).schedule(torch.zeros(1, 3, 32, 32)) == (150, 0.01)
    with pytest.raises(ValueError):
        SSAH(model, lr=0.0)
    with pytest.raises(AttributeError):
        SSAH(nn.Sequential(nn.Flatten(), nn.Linear(12, 2)))
    # an explicit feature_fn works for models without `.features`
    seq = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    adv = SSAH(seq, feature_fn=seq[:3], steps=2, lr=1e-2)(torch.rand(3, 3, 8, 8))
    assert adv.shape == (3, 3, 8, 8)


@pytest.mark.unit
def test_float64_input_on_float32_model(victim):
    model, x, _ = victim
    adv = SSAH(model, steps=2, lr=1e-2)(x[:4].double())
    assert adv.dtype == torch.float64 and adv.shape == (4, 3, SIZE, SIZE)
