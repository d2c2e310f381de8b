"""Helpers of the fault suite: run the CLI, kill it, fingerprint artifact roots, check invariants.

Pipeline commands are forked from a preloaded process (``_forkserver.py``; FAULTS_NO_FORKSERVER=1
runs each as a fresh ``pipeline`` process instead). Every pipeline process runs with ``GIT_DIR``
pointing nowhere, so the code version recorded in manifests and tables is the same (``None``) in
every run of the session: people committing to this checkout while the suite runs must not show up
as differences between runs.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

# The installed console script (``python -m pipeline.cli`` would run cli.py as __main__, a second copy)
_SCRIPT = Path(sys.executable).parent / "pipeline"
PIPELINE = [str(_SCRIPT)] if _SCRIPT.is_file() else [sys.executable, "-m", "pipeline.cli"]

# The smoke config, narrowed so that the tier fits its time budget on two shared cores: every step
# and every kind of task still runs (two attacks so the unseen protocol pairs them; one trained
# baseline; one training seed, no AAE or CAE variants; one victim per role, trained for two epochs instead
# of ten).
# Written as a file that extends smoke.
FAULTS_CONFIG = {
    "extends": "smoke",
    "seeds": [0],
    "aae": {"variants": {}},
    "cae": {"variants": {}},
    "ablation": {"variants": []},
    "victim": {"aae_train": {"epochs": 2}, "test": {"epochs": 2}, "noise_seeds": []},
    "attack": {"names": ["fgsm", "pgd"]},
    "evaluate": {"methods": ["identity", "cae", "ours", "plain_ae"]},
    "tables": {"bootstrap": 10},
    "runtime": {"jobs": 1},  # in-process, whatever the machine allows (test_parallel_faults.py runs -j 2)
}


def env(extra: dict[str, str] | None = None) -> dict[str, str]:
    out = {**os.environ, "GIT_DIR": "/nonexistent/faults-suite-pins-the-code-version", "PYTHONUNBUFFERED": "1"}
    out.pop("PIPELINE_ARTIFACTS", None)
    return {**out, **(extra or {})}


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, (
        f"{' '.join(map(str, result.args[len(PIPELINE) :]))} failed ({result.returncode}):\n"
        f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    return result


def one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> str:
    """The run failed with exactly one stderr line ``error: ...`` holding every fragment."""
    assert result.returncode != 0, f"expected a failure:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), f"not one 'error:' line:\n{result.stderr[-3000:]}"
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in: {lines[0]}"
    return lines[0]


def last_error_line(result: subprocess.CompletedProcess) -> str:
    """The final stderr line, which must be the ``error: ...`` line (progress bars may precede it)."""
    lines = result.stderr.replace("\r", "\n").strip().splitlines()
    assert result.returncode != 0 and lines and lines[-1].startswith("error: "), result.stderr[-3000:]
    assert sum(line.startswith(("error: ", "Traceback")) for line in lines) == 1, result.stderr[-3000:]
    return lines[-1]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- artifact roots -------------------------------------------------------------------------------


def manifests(root: Path) -> dict[tuple[str, str], dict]:
    """(step, key) -> manifest of every published artifact under ``root``."""
    out = {}
    for path in sorted(root.glob("*/*/MANIFEST.json")):
        try:
            out[(path.parent.parent.name, path.parent.name)] = json.loads(path.read_text())
        except ValueError:  # a manifest the test corrupted on purpose
            continue
    return out


def digests(root: Path, steps: Iterable[str] | None = None) -> dict[str, str]:
    """``step/key/file`` -> sha256 of the bytes on disk, for every file every manifest lists."""
    wanted = set(steps) if steps is not None else None
    out = {}
    for (step, key), manifest in manifests(root).items():
        if wanted is None or step in wanted:
            for name in manifest["files"]:
                path = root / step / key / name
                out[f"{step}/{key}/{name}"] = sha256(path) if path.is_file() else "missing"
    return out


def folder_digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): sha256(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def snapshot(root: Path) -> dict[str, str]:
    """Every path under ``root`` with its sha256 (``dir`` for directories). Lock files are left out:
    they are empty, hold no data, and ``execute`` creates one per task it tries (``submit`` and
    ``cancel`` one for the submission records)."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if rel.startswith(".locks/") or rel == ".submissions/lock":
            continue
        out[rel] = "dir" if path.is_dir() else sha256(path)
    return out


def diff(before: dict[str, str], after: dict[str, str]) -> list[str]:
    return [
        f"{'+' if k not in before else '-' if k not in after else '~'} {k}"
        for k in sorted(set(before) | set(after))
        if before.get(k) != after.get(k)
    ]


@dataclass
class Check:
    """The invariants after a fault: what they found."""

    lost: list[str] = field(default_factory=list)  # finished before the fault, gone or changed after
    half_published: list[str] = field(default_factory=list)  # published but incomplete or unlike the reference
    new: int = 0  # artifacts finished during the disturbed run

    @property
    def survived(self) -> bool:
        return not self.lost and not self.half_published


def check(root: Path, before: dict[str, str], reference: dict[str, str], damaged: Path | None = None) -> Check:
    """After a fault: every artifact directory has a manifest, every listed file is there with the
    manifest's sha256 and equals the reference's file, and nothing finished before is lost; the
    artifact directory ``damaged`` (by the test, on purpose) is left out."""
    if damaged is not None:
        prefix = f"{damaged.relative_to(root)}/"
        before = {k: v for k, v in before.items() if not k.startswith(prefix)}
    return _check(root, before, reference, damaged)


def _check(root: Path, before: dict[str, str], reference: dict[str, str], damaged: Path | None) -> Check:
    result = Check()
    for step_dir in (p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for art in (p for p in step_dir.iterdir() if not p.name.startswith(".") and p != damaged):
            if not (art / "MANIFEST.json").is_file():
                result.half_published.append(f"{art} has no MANIFEST.json")
    for (step, key), manifest in manifests(root).items():
        if root / step / key == damaged:
            continue
        for name, meta in manifest["files"].items():
            path, label = root / step / key / name, f"{step}/{key}/{name}"
            if not path.is_file() or path.stat().st_size != meta["size"] or sha256(path) != meta["sha256"]:
                result.half_published.append(f"{label} does not match its manifest")
            elif label in reference and reference[label] != meta["sha256"]:
                result.half_published.append(f"{label} differs from the undisturbed run")
    now = digests(root)
    if damaged is not None:
        now = {k: v for k, v in now.items() if not k.startswith(f"{damaged.relative_to(root)}/")}
    result.lost = [label for label, digest in before.items() if now.get(label) != digest]
    artifacts = lambda labels: {tuple(k.split("/")[:2]) for k in labels}  # noqa: E731
    result.new = len(artifacts(now) - artifacts(before))
    return result


def leftovers(root: Path) -> list[str]:
    """Dot-directories inside step folders (staging, replaced artifacts, scratch)."""
    return sorted(str(p.relative_to(root)) for p in root.glob("*/.*"))


# --- the undisturbed reference run ----------------------------------------------------------------


@dataclass
class Reference:
    cwd: Path
    config: Path
    root: Path
    digests: dict[str, str]
    seconds: dict[tuple[str, str], float]  # (step, key) -> seconds its task took
    results: dict[str, str]  # results/<config>/ file -> sha256

    def clone(self, dest: Path, drop: Sequence[str] = ()) -> Path:
        """A copy of the reference root without the artifacts of the ``drop`` steps."""
        shutil.copytree(self.root, dest)
        for step in drop:
            shutil.rmtree(dest / step, ignore_errors=True)
        return dest

    def keys(self, step: str) -> set[str]:
        return {key for s, key in self.seconds if s == step}

    def remaining_seconds(self, root: Path, step: str) -> float:
        return sum(
            s
            for (st, key), s in self.seconds.items()
            if st == step and not (root / step / key / "MANIFEST.json").is_file()
        )

    def results_dir(self, cwd: Path) -> Path:
        return cwd / "results" / self.config.stem


def make_reference(base: Path) -> Reference:
    config = base / "faults.yaml"
    config.write_text(yaml.safe_dump(FAULTS_CONFIG, sort_keys=False))
    root = base / "artifacts"
    ok(pipeline(base, root, "run", "all", "--config", str(config)))
    seconds = {k: m["seconds"] for k, m in manifests(root).items()}
    return Reference(base, config, root, digests(root), seconds, folder_digests(base / "results" / config.stem))


# --- processes ------------------------------------------------------------------------------------


class Proc:
    """A running ``pipeline`` command: a child of the fork server, or a fresh process."""

    def __init__(self, args: Sequence[str], cwd: Path, log: Path, fsize: int | None = None, tty: bool = False):
        self.args, self.log, self.returncode, self._tty = list(args), log, None, None
        out, err = f"{log}.out", f"{log}.err"
        if _server() is None:

            def limit() -> None:
                # as from a terminal: a test run in the background of a non-interactive shell would
                # otherwise pass SIGINT on ignored, and Ctrl-C would not reach the command
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                if fsize is not None:
                    import resource

                    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
                    resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

            stderr = self._stderr = open(err, "wb")  # kept open for the terminal's copier
            if tty:  # stderr a terminal (progress bars on), copied into the err file
                from tests.faults._forkserver import tty_copier

                self._tty = tty_copier(stderr.fileno())
            self._popen = subprocess.Popen(
                [*PIPELINE, *self.args],
                cwd=cwd,
                env=env(),
                stdout=open(out, "w"),
                stderr=self._tty.slave if tty else stderr,
                start_new_session=True,
                preexec_fn=limit,
            )
            self.pid = self._popen.pid
        else:
            self._popen = None
            self.pid = _server().call(
                op="run", args=self.args, cwd=str(cwd), env=env(), out=out, err=err, fsize=fsize, tty=tty
            )["pid"]

    def wait(self, timeout: float | None = None) -> int:
        """The return code (-N: ended by signal N); raises subprocess.TimeoutExpired."""
        if self.returncode is None:
            if self._popen is not None:
                self.returncode = self._popen.wait(timeout)
                if self._tty is not None:
                    self._tty.close()
            else:
                self.returncode = _server().call(op="wait", pid=self.pid, timeout=timeout)["code"]
                if self.returncode is None:
                    raise subprocess.TimeoutExpired(self.args, timeout)
        return self.returncode

    def poll(self) -> int | None:
        try:
            return self.wait(0)
        except subprocess.TimeoutExpired:
            return None

    def send(self, sig: int) -> bool:
        """Send ``sig`` to the command (alone in its session); False if it had already ended."""
        if self.poll() is not None:
            return False
        os.killpg(self.pid, sig)
        return True

    def finish(self, timeout: float = 600) -> int:
        try:
            return self.wait(timeout)
        except subprocess.TimeoutExpired:
            self.send(signal.SIGKILL)
            raise

    @property
    def stdout(self) -> str:
        return Path(f"{self.log}.out").read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return Path(f"{self.log}.err").read_text(errors="replace")

    def result(self) -> subprocess.CompletedProcess:
        return subprocess.CompletedProcess(["pipeline", *self.args], self.wait(), self.stdout, self.stderr)


_LOGS = itertools.count()


def spawn(
    cwd: Path, root: Path, *args: str, log: Path | None = None, fsize: int | None = None, tty: bool = False
) -> Proc:
    """Start ``pipeline --artifacts ROOT ARGS`` in ``cwd``; output goes to ``log``.out/.err; with
    ``fsize``, under RLIMIT_FSIZE; with ``tty``, stderr is a terminal (so progress bars show)."""
    log = log or cwd / f".pipeline-{next(_LOGS)}"
    return Proc(["--artifacts", str(root), *args], cwd, log, fsize, tty)


def pipeline(
    cwd: Path, root: Path, *args: str, timeout: float = 600, fsize: int | None = None, tty: bool = False
) -> subprocess.CompletedProcess:
    """Run ``pipeline --artifacts ROOT ARGS`` in ``cwd`` to its end; never raises on a failing exit."""
    proc = spawn(cwd, root, *args, fsize=fsize, tty=tty)
    proc.finish(timeout)
    return proc.result()


def wait_for(condition: Callable[[], bool], proc: Proc, timeout: float = 120) -> bool:
    """Poll ``condition`` every 5 ms until it holds (True) or ``proc`` ends (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if proc.poll() is not None:
            return condition()
        time.sleep(0.005)
    proc.send(signal.SIGKILL)
    raise AssertionError(f"timed out after {timeout} s waiting for a condition")


class ForkServer:
    """Client of ``_forkserver.py`` (started once per session)."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("_forkserver.py"))],
            cwd=Path(__file__).resolve().parents[2],
            env=env(),
            text=True,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            start_new_session=True,
        )
        ready = json.loads(self.proc.stdout.readline() or "{}")
        if "ready" not in ready:
            raise RuntimeError("the fork server did not start")

    def call(self, **request) -> dict:
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        reply = json.loads(self.proc.stdout.readline() or '{"error": "the fork server died"}')
        if "error" in reply:
            raise RuntimeError(reply["error"])
        return reply

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


_SERVER: list[ForkServer | None] = []


def _server() -> ForkServer | None:
    if not _SERVER:
        _SERVER.append(None if os.environ.get("FAULTS_NO_FORKSERVER") else ForkServer())
    return _SERVER[0]


def close_server() -> None:
    if _SERVER and _SERVER[0] is not None:
        _SERVER.pop().close()
