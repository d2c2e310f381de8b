"""How many tasks the local runner runs at once, with how many threads and which GPUs (no processes)."""

import pytest

from pipeline.dag import Planned, Resources, Step, Task
from pipeline.errors import PipelineError
from pipeline.runners.local.resources import Demand, Machine, allot, detect_machine
from pipeline.runners.local.runner import parse_jobs

pytestmark = pytest.mark.unit

GIB = 1024


def _pending(name: str, count: int, resources: Resources) -> list[Planned]:
    step = Step(name, 1, (), (), resources, lambda cfg, up: [], lambda ctx, task: None)
    return [Planned(Task(name, str(i), {}), step, f"{name}{i}", {}, complete=False) for i in range(count)]


# the steps' shapes as jobs/ declares them (cluster-sized)
SAMPLE = Resources(cpus=4, mem="16G")
ATTACK = Resources(cpus=4, gpus=1, mem="16G")
TRAIN = Resources(cpus=8, gpus=1, mem="32G")
FIGURES = Resources(cpus=1, mem="4G")
TWO_CORES = Machine(cores=2, mem_mib=24 * GIB, gpus=())


def test_j_n_runs_n_at_once_each_with_its_share_of_the_cores():
    pending = _pending("attack", 18, ATTACK) + _pending("figures", 1, FIGURES)
    two = allot(pending, TWO_CORES, jobs=2, threads=0)
    assert two.workers == 2 and two.gpus == ()
    assert two.demands["attack"].threads == 1 and not two.demands["attack"].gpu
    assert two.cores is None and two.mem_mib is None  # -j N: the user chose how many fit
    big = Machine(cores=32, mem_mib=128 * GIB, gpus=())
    four = allot(pending, big, jobs=4, threads=0)
    assert four.demands["attack"].threads == 4  # 32 // 4 = 8 cores each, at most the 4 it declares
    assert four.demands["figures"].threads == 1
    assert allot(pending, big, jobs=4, threads=3).demands["attack"].threads == 3  # runtime.threads wins
    assert allot(pending[:3], big, jobs=8, threads=0).workers == 3  # never more workers than tasks


def test_gpu_steps_take_one_gpu_each_and_cpu_steps_none():
    gpus = Machine(cores=32, mem_mib=256 * GIB, gpus=("0", "1", "2", "3"))
    pending = _pending("train", 21, TRAIN) + _pending("sample", 3, SAMPLE)
    six = allot(pending, gpus, jobs=6, threads=0)
    assert six.workers == 6 and six.gpus == ("0", "1", "2", "3")  # two workers without a GPU
    assert six.demands["train"].gpu and not six.demands["sample"].gpu
    assert allot(pending, gpus, jobs=2, threads=0).gpus == ("0", "1")


def test_auto_packs_the_declared_resources_on_the_machine():
    gpus = Machine(cores=32, mem_mib=256 * GIB, gpus=("0", "1", "2", "3"))
    trainings = allot(_pending("train", 21, TRAIN), gpus, jobs=0, threads=0)
    assert trainings.workers == 4  # by the GPUs (cores and memory would allow 4 and 8)
    assert trainings.demands["train"] == Demand(threads=8, cpus=8, mem_mib=32 * GIB, gpu=True)
    samples = allot(_pending("sample", 30, SAMPLE), gpus, jobs=0, threads=0)
    assert samples.workers == 8 and samples.gpus == ("0", "1", "2", "3")  # 32 cores / 4
    assert samples.cores == 32 and samples.mem_mib == 256 * GIB
    by_memory = allot(_pending("sample", 30, SAMPLE), Machine(64, 40 * GIB, ()), jobs=0, threads=0)
    assert by_memory.workers == 2


def test_auto_clamps_declarations_larger_than_the_machine_so_they_run_alone():
    pending = _pending("train", 3, TRAIN)  # 8 cpus and 32G on 2 cores and 24 GiB
    auto = allot(pending, TWO_CORES, jobs=0, threads=0)
    assert auto.workers == 1
    demand = auto.demands["train"]
    assert (demand.cpus, demand.mem_mib, demand.threads) == (2, 24 * GIB, 2)
    assert auto.fits(demand, 0, 0) and not auto.fits(demand, 1, 0)
    with_threads = allot(pending + _pending("figures", 2, FIGURES), TWO_CORES, jobs=0, threads=1)
    assert with_threads.workers == 2  # two figures (1 cpu, 4G each) fit beside each other
    assert not with_threads.fits(with_threads.demands["train"], 1, 4 * GIB)


@pytest.mark.parametrize(
    "visible,expected",
    [("0,1", ("0", "1")), ("", ()), ("-1", ()), ("2,-1,3", ("2",)), ("GPU-5a1c,GPU-77b0", ("GPU-5a1c", "GPU-77b0"))],
)
def test_gpus_are_those_cuda_would_see(monkeypatch, visible, expected):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert detect_machine("auto").gpus == expected
    assert detect_machine("cpu").gpus == ()


def test_the_machine_has_what_this_process_may_use():
    machine = detect_machine("cpu")
    assert machine.cores >= 1 and machine.mem_mib > 256


@pytest.mark.parametrize("text,jobs", [("1", 1), ("2", 2), ("0", 0), ("16", 16)])
def test_j_takes_a_count(text, jobs):
    assert parse_jobs(text) == jobs


@pytest.mark.parametrize("text", ["-1", "two", "", "1.5"])
def test_a_bad_j_is_one_clear_error(text):
    with pytest.raises(PipelineError, match=r"-j/--jobs .*: expected a number of tasks at once"):
        parse_jobs(text)


def test_run_with_a_bad_j_fails_with_one_error_line(tmp_path):
    from click.testing import CliRunner

    from pipeline.cli import main

    result = CliRunner().invoke(main, ["--artifacts", str(tmp_path), "run", "all", "--config", "smoke", "-j", "-2"])
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.splitlines() == [
        "error: -j/--jobs '-2': expected a number of tasks at once (1, 2, ...; "
        "0: as many as the machine's cores, GPUs and memory allow)"
    ]
    assert not tmp_path.joinpath("sample").exists()


def test_without_cuda_visible_devices_each_nvidia_device_node_is_a_gpu(monkeypatch, tmp_path):
    import pipeline.runners.local.resources as resources

    for name in ("nvidia0", "nvidia1", "nvidiactl", "nvidia-uvm"):
        (tmp_path / name).touch()
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(resources, "_DEVICES", tmp_path)
    assert detect_machine("auto").gpus == ("0", "1")
