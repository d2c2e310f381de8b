"""Faults during training: time-out and pre-emption signals, a corrupted checkpoint, a NaN loss.

Trainings here run longer than smoke's three epochs (``--set``), so a signal sent as soon as the
first checkpoint appears lands with most epochs still to go; their undisturbed runs are computed
once per module and compared byte for byte.
"""

from __future__ import annotations

import csv
import re
import signal
from pathlib import Path

import pytest

from tests.faults._harness import (
    check,
    digests,
    last_error_line,
    manifests,
    ok,
    one_line_error,
    pipeline,
    sha256,
    snapshot,
    spawn,
    wait_for,
)

pytestmark = pytest.mark.faults

# One task each: the CAE, and the AAE of one attack (its baselines and other attacks left out).
LONG = {
    "train-cae": ("cae", ["--set", "cae.optim.epochs=40"]),
    "train-aae": (
        "aae",
        ["--set", "aae.optim.epochs=14", "--set", "attack.names=[fgsm]", "--set", "evaluate.methods=[identity,ours]"],
    ),
}
BAR = re.compile(r"train:\s+\d+%\|[^|]*\|\s*(\d+)/(\d+) ")


@pytest.fixture(scope="module")
def long_runs(reference, tmp_path_factory):
    """Per step: the undisturbed run of its longer training (root, the new artifact's key, digests)."""
    out = {}
    for step, (_, overrides) in LONG.items():
        cwd = tmp_path_factory.mktemp(f"long-{step}")
        root = reference.clone(cwd / "artifacts")
        ok(pipeline(cwd, root, "run", step, "--config", str(reference.config), *overrides))
        (key,) = {k for s, k in manifests(root) if s == step} - reference.keys(step)
        out[step] = {"key": key, "digests": digests(root, [step])}
    return out


def _history(path: Path) -> list[dict[str, str]]:
    with open(path) as handle:
        return list(csv.DictReader(handle))


def _interrupt(reference, tmp_path, step, sig):
    """Start the long training of ``step``, send ``sig`` once its first checkpoint is written; returns
    (root, checkpoint path, exit code, the process)."""
    root = reference.clone(tmp_path / "artifacts")
    proc = spawn(
        tmp_path, root, "run", step, "--config", str(reference.config), *LONG[step][1], log=tmp_path / "interrupted"
    )
    assert wait_for(lambda: any((root / step).glob(".work-*/checkpoint.pt")), proc), proc.stderr[-3000:]
    assert proc.send(sig), "the training finished before the signal"
    code = proc.finish()
    (checkpoint,) = (root / step).glob(".work-*/checkpoint.pt")
    return root, checkpoint, code, proc


@pytest.mark.parametrize(
    "step,sig",
    [
        ("train-cae", signal.SIGTERM),
        ("train-cae", signal.SIGUSR1),
        ("train-cae", signal.SIGINT),
        ("train-aae", signal.SIGUSR2),
        ("train-aae", signal.SIGTERM),
    ],
    ids=lambda v: v.name if isinstance(v, signal.Signals) else v,
)
def test_signal_during_training_resumes_from_checkpoint(step, sig, reference, long_runs, tmp_path, fault_log):
    from pipeline.training import _load_checkpoint

    long = long_runs[step]
    before = digests(reference.root)
    root, checkpoint, code, proc = _interrupt(reference, tmp_path, step, sig)
    # SIGINT: KeyboardInterrupt, click says "Aborted!" (exit 1); the others end the process
    assert code == (1 if sig == signal.SIGINT else -sig), (code, proc.stderr[-2000:])
    saved = _load_checkpoint(checkpoint)
    done, epochs = saved["epochs_done"], saved["spec"]["epochs"]
    assert 1 <= done < epochs and len(saved["history"]) == done
    found = check(root, before, {**reference.digests, **long["digests"]})
    assert not (root / step / long["key"]).exists()

    rerun = ok(
        pipeline(tmp_path, root, "run", step, "--config", str(reference.config), *LONG[step][1], tty=True)
    )  # on a terminal, so the progress bar shows where training starts
    first_bar = BAR.search(rerun.stderr)
    assert first_bar and (int(first_bar[1]), int(first_bar[2])) == (done, epochs), rerun.stderr[:500]
    assert digests(root, [step]) == long["digests"]  # same weights, history and curve as never stopped
    history = _history(root / step / long["key"] / "history.csv")
    assert [int(r["epoch"]) for r in history] == list(range(epochs))
    assert [float(r["total"]) for r in history[:done]] == [h["total"] for h in saved["history"]]
    fault_log(
        f"{sig.name} during {step}",
        survived=found.survived,
        lost=len(found.lost),
        note="resumed at the checkpoint's epoch",
    )
    assert found.survived, (found.lost, found.half_published)


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_corrupted_checkpoint_is_refused_naming_the_file(damage, reference, long_runs, tmp_path, fault_log):
    step = "train-cae"
    long = long_runs[step]
    root, checkpoint, code, _ = _interrupt(reference, tmp_path, step, signal.SIGKILL)
    raw = bytearray(checkpoint.read_bytes())
    if damage == "flip":  # one byte in the middle: inside the tensors, same size
        raw[len(raw) // 2] ^= 0x40
    else:
        del raw[len(raw) * 2 // 3 :]
    checkpoint.write_bytes(bytes(raw))
    before = snapshot(root)
    failed = pipeline(tmp_path, root, "run", step, "--config", str(reference.config), *LONG[step][1])
    one_line_error(failed, str(checkpoint))
    assert snapshot(root) == before, "the failed run changed the artifact root"

    # what the message tells the user: delete it and train from the start
    checkpoint.unlink()
    ok(pipeline(tmp_path, root, "run", step, "--config", str(reference.config), *LONG[step][1]))
    same = digests(root, [step]) == long["digests"]
    fault_log(f"corrupted checkpoint ({damage})", survived=same, note="refused naming the file; rebuilt after delete")
    assert same


def test_nan_loss_stops_naming_epoch_and_term_and_keeps_the_checkpoint(reference, tmp_path, fault_log):
    root = reference.clone(tmp_path / "artifacts")
    before = digests(root)
    args = (
        "run",
        "train-aae",
        "--config",
        str(reference.config),
        "--set",
        "aae.optim.lr=1e6",
        "--set",
        "aae.optim.clip_grad_norm=null",
    )
    failed = pipeline(tmp_path, root, *args)
    line = last_error_line(failed)
    match = re.fullmatch(r"error: training diverged at epoch (\d+): loss term '(\w+)' is (nan|inf|-inf); (.*)", line)
    assert match, line
    epoch = int(match[1])
    checkpoints = list((root / "train-aae").glob(".work-*/checkpoint.pt"))
    if epoch == 0:
        assert checkpoints == [] and match[4] == "the last checkpoint is left as it was"
    else:
        from pipeline.training import _load_checkpoint

        (checkpoint,) = checkpoints
        assert match[4] == f"the last checkpoint ({checkpoint}) is left as it was"
        saved = _load_checkpoint(checkpoint)
        assert saved["epochs_done"] == epoch and all(
            v == v and abs(v) != float("inf") for row in saved["history"] for k, v in row.items() if k != "epoch"
        )
        kept = sha256(checkpoint)
    found = check(root, before, reference.digests)
    assert found.new == 0  # the diverged task published nothing

    again = pipeline(tmp_path, root, *args)  # resumes from the last good checkpoint, diverges the same way
    assert last_error_line(again) == line
    if epoch:
        assert sha256(checkpoint) == kept
    fault_log(
        "NaN loss (lr=1e6, no clipping)",
        survived=found.survived,
        lost=len(found.lost),
        note=f"stopped at epoch {epoch}, term {match[2]}",
    )
    assert found.survived
