"""Pinned CPU kernels (``pipeline.kernels``): the pin wins over an outer environment asking for other
kernels, on real torch kernels in fresh processes (torch fixes its kernels once per process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from pipeline import kernels
from pipeline.errors import PipelineError

pytestmark = pytest.mark.unit

OUTER = {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "AUTO", "ONEDNN_MAX_CPU_ISA": "SSE41"}
# a few SGD steps of the project's 1-D conv VAE (conv1d: oneDNN; its sums and activations: ATen; the
# optimiser's updates: ATen), then one linear layer (MKL); prints the CPU description and a digest of the bytes
TRAIN = """
import hashlib, json, sys, torch
from pipeline.kernels import ensure
from pipeline.models import build_model
described = None if sys.argv[1] == "nothing" else ensure(sys.argv[1])
torch.manual_seed(0)
model = build_model((3, 16, 16), {"widths": [32, 16, 8], "kernel": 7, "layout": "rows"})
optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
x = torch.rand(16, 3, 16, 16)
for _ in range(3):
    recon, mu, logvar, _ = model(x)
    loss = ((recon - x) ** 2).sum() - 0.5 * (1 + logvar - mu**2 - logvar.exp()).sum()
    optimizer.zero_grad(); loss.backward(); optimizer.step()
out = torch.nn.functional.linear(mu.flatten(1), torch.rand(10, mu[0].numel()))
data = b"".join(p.detach().numpy().tobytes() for p in model.parameters()) + out.detach().numpy().tobytes()
print(json.dumps({"cpu": described, "digest": hashlib.sha256(data).hexdigest()}))
"""


def _train(setting: str, outer: dict[str, str], first: str = "") -> dict:
    """Run TRAIN in a fresh interpreter whose environment holds ``outer`` and none of the pin's variables
    otherwise (this test process pinned its own); ``first`` runs before the pin."""
    env = {k: v for k, v in os.environ.items() if k not in kernels.VARIABLES} | outer
    done = subprocess.run(
        [sys.executable, "-c", first + TRAIN, setting], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0 or "PipelineError" in done.stderr, done.stderr
    return json.loads(done.stdout) if done.returncode == 0 else {"error": done.stderr.strip().splitlines()[-1]}


@pytest.mark.skipif(not kernels.is_x86(), reason="the levels pin x86-64 kernels")
def test_the_pin_wins_over_an_outer_environment_and_an_unpinned_run_follows_it():
    pinned = _train("avx2", {})
    assert pinned["cpu"]["capability"] == "AVX2" and pinned["cpu"]["pinned"] == "avx2"
    assert pinned["cpu"]["mkl_branch"] == "COMPATIBLE" and pinned["cpu"]["onednn_max_isa"] == "AVX2"
    under_outer = _train("avx2", OUTER)
    assert under_outer == pinned  # the same description and the same bytes
    unpinned = _train("unpinned", OUTER)
    assert unpinned["cpu"]["capability"] == "DEFAULT" and unpinned["cpu"]["pinned"] is None
    assert unpinned["cpu"]["mkl_branch"] == "AUTO" and unpinned["digest"] != pinned["digest"]  # the outer kernels


@pytest.mark.skipif(not kernels.is_x86(), reason="the levels pin x86-64 kernels")
def test_torch_that_computed_before_the_pin_is_one_clear_error():
    late = _train("avx2", OUTER, first="import torch; torch.ones(3).sum()\n")
    assert late["error"].startswith(
        "pipeline.errors.PipelineError: runtime.cpu_kernels=avx2: torch in this process "
        "already computes with DEFAULT kernels"
    )


def test_auto_is_avx2_on_x86_and_no_pin_elsewhere(monkeypatch):
    monkeypatch.setattr("platform.machine", lambda: "x86_64")
    assert kernels.level_of("auto") == "avx2" and kernels.level_of("unpinned") is None
    monkeypatch.setattr("platform.machine", lambda: "aarch64")
    assert kernels.level_of("auto") is None and kernels.level_of("avx512") == "avx512"


def test_pin_sets_every_variable_over_the_outer_value(monkeypatch):
    for name, value in OUTER.items():
        monkeypatch.setenv(name, value)
    assert kernels.pin("avx512") == "avx512"
    assert {name: os.environ[name] for name in kernels.VARIABLES} == {
        "ATEN_CPU_CAPABILITY": "avx512",
        "ONEDNN_MAX_CPU_ISA": "AVX512_CORE",
        "MKL_CBWR": "COMPATIBLE",
    }
    assert kernels.pin("unpinned") is None and os.environ["ATEN_CPU_CAPABILITY"] == "avx512"  # left as it was


def test_a_cpu_below_the_level_is_one_clear_error_before_anything_is_pinned(monkeypatch):
    import torch

    monkeypatch.setattr("platform.machine", lambda: "x86_64")
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"avx": True, "avx2": False, "fma3": True})
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "default")
    with pytest.raises(
        PipelineError,
        match=r"^config key 'runtime.cpu_kernels': auto pins avx2 kernels, but this "
        r"CPU \(.+\) lacks avx2: set runtime.cpu_kernels=default",
    ):
        kernels.ensure("auto")
    assert os.environ["ATEN_CPU_CAPABILITY"] == "default"
    monkeypatch.setattr("platform.machine", lambda: "aarch64")
    with pytest.raises(PipelineError, match="avx2 pins avx2 kernels, which need an x86-64 CPU; this one is aarch64"):
        kernels.ensure("avx2")
