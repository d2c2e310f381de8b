"""What manifests say about the machine (``describe_runtime``), and the artifacts made on other hardware
than most, in ``provenance.json`` (``hardware_provenance``) and ``pipeline verify``."""

from __future__ import annotations

import copy

import pytest
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.config import RuntimeConfig
from pipeline.device import describe_runtime
from pipeline.hardware import cpu_model, hardware_provenance
from pipeline.kernels import is_x86
from pipeline.store import Store

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def here() -> dict:
    """The runtime a manifest records for a task of the default runtime settings on this machine."""
    return describe_runtime(RuntimeConfig(device="cpu"))


def _elsewhere(here: dict) -> dict:
    """The runtime as another machine recorded it: another CPU model, the same pinned kernels."""
    runtime = copy.deepcopy(here)
    runtime["cpu"]["model"] = "AMD EPYC 7763 64-Core Processor"
    return runtime


def test_a_manifest_names_the_cpu_its_kernels_and_the_pinned_level(here):
    assert here["device"] == "cpu" and "gpu" not in here
    assert here["cpu"]["model"] == cpu_model() != "unknown"
    if is_x86():  # the test session pins the default level, as every command does (tests/conftest.py)
        assert (here["cpu"]["capability"], here["cpu"]["pinned"], here["cpu"]["mkl_branch"]) == (
            "AVX2",
            "avx2",
            "COMPATIBLE",
        )


def test_provenance_counts_each_hardware_and_names_the_artifacts_made_on_another(here):
    manifests = {f"attack:{i}": {"runtime": here} for i in range(3)}
    assert hardware_provenance(manifests)["mixed_hardware"] is False
    manifests["train-victim:test"] = {"runtime": _elsewhere(here)}
    manifests["sample:old"] = {"runtime": {"device": "cpu", "threads": 1}}  # written before this was recorded
    provenance = hardware_provenance(manifests)
    assert provenance["mixed_hardware"] is True
    first, *others = provenance["hardware"]
    assert first["artifacts"] == 3 and first["cpu"] == here["cpu"]["model"] and "names" not in first
    assert {(h["cpu"], tuple(h["names"])) for h in others} == {
        ("AMD EPYC 7763 64-Core Processor", ("train-victim:test",)),
        (None, ("sample:old",)),
    }


def test_verify_lists_the_artifacts_made_on_other_hardware(here, tmp_path):
    store = Store(tmp_path)
    for key, runtime in (("a1", here), ("a2", here), ("b1", _elsewhere(here))):
        with store.staging("train-victim", key) as staging:
            (staging / "victim.pt").write_text(key)
            store.publish(staging, "train-victim", key, {"task": f"role-{key}", "runtime": runtime})
    result = CliRunner().invoke(main, ["--artifacts", str(tmp_path), "verify"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "made on 2 kinds of hardware:"
    assert lines[1].startswith(f"  2 artifact(s): {here['cpu']['model']}, {here['cpu']['capability']} kernels")
    assert lines[2].startswith("  1 artifact(s): AMD EPYC 7763 64-Core Processor, ")
    assert lines[3:] == ["    train-victim[role-b1] b1", "verified 3 artifact(s), 0 bad"]
