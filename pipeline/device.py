"""Where tensors live: the GPU when present, the CPU otherwise, with the same code."""

from __future__ import annotations

import hashlib
import os
from typing import Any

import torch

from pipeline.config import RuntimeConfig
from pipeline.kernels import describe, level_of


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


def describe_runtime(runtime: RuntimeConfig) -> dict[str, Any]:
    """Where a task ran: the device ``runtime`` selects, torch's CPU thread count, the CPU and its kernels
    (``kernels.describe``) and, on a GPU, the GPU and its determinism settings. Results are bit-for-bit
    repeatable for one (config, device, threads, pinned CPU kernels); the thread count changes CPU sums."""
    device = select_device(runtime)
    described = {
        "device": str(device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cpu": describe(level_of(runtime.cpu_kernels)),
    }
    if device.type == "cuda":
        described["gpu"] = describe_gpu(device)
    return described


def describe_gpu(device: torch.device) -> dict[str, Any]:
    """The GPU, its CUDA and cuDNN versions, and the settings that decide whether its results repeat."""
    major, minor = torch.cuda.get_device_capability(device)
    return {
        "name": torch.cuda.get_device_name(device),
        "compute_capability": f"{major}.{minor}",
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "matmul_fp32_precision": torch.backends.cuda.matmul.fp32_precision,
        "cudnn_fp32_precision": torch.backends.cudnn.fp32_precision,
        "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
    }
