"""Where tensors live: the GPU when present, the CPU otherwise, with the same code."""

from __future__ import annotations

import hashlib

import torch

from pipeline.config import RuntimeConfig


def select_device(runtime: RuntimeConfig) -> torch.device:
    """The device named by ``runtime.device`` (``auto``: CUDA if available); sets CPU threads."""
    if runtime.threads:
        torch.set_num_threads(runtime.threads)
    if runtime.device == "cuda" or (runtime.device == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def derived_seed(*parts: object) -> int:
    """A stable 63-bit seed from any printable parts (e.g. seed, role, attack, first row)."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def describe_runtime(runtime: RuntimeConfig) -> dict[str, object]:
    """Where a task ran: the device ``runtime`` selects and torch's CPU thread count. Results are
    bit-for-bit repeatable for one (config, device, threads); the thread count changes CPU sums."""
    return {"device": str(select_device(runtime)), "threads": torch.get_num_threads(), "torch": torch.__version__}
