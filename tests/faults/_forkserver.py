"""A zygote for pipeline processes: imports the pipeline and its heavy dependencies once, then forks
one child per command. Each child is a real process running the real CLI (``pipeline.cli.main``)
in its own session, cwd, environment and output files, so it can be signalled or killed at any
point like ``pipeline`` started from a shell; it just starts in milliseconds instead of the 2-5 s
that importing torch takes on two shared cores (the fault tier starts over a hundred processes).

Protocol: one JSON request per line on stdin, one JSON reply per line on stdout.
  {"op": "run", "args": [...], "cwd": ..., "env": {...}, "out": path, "err": path,
   "fsize": bytes or null, "tty": bool}                       -> {"pid": pid}
  {"op": "wait", "pid": pid, "timeout": seconds or null}      -> {"code": returncode or null}
A returncode follows ``subprocess``: the exit status, or -N for a child ended by signal N.
Set FAULTS_NO_FORKSERVER=1 to run every command as a fresh ``pipeline`` process instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
import traceback


def preload() -> None:
    import h5py  # noqa: F401
    import matplotlib.figure  # noqa: F401
    import pandas  # noqa: F401
    import PIL.Image  # noqa: F401
    import torch  # noqa: F401
    import torchattacks  # noqa: F401

    import pipeline.attacks.custom  # noqa: F401
    import pipeline.cli  # noqa: F401
    import pipeline.figures  # noqa: F401
    import pipeline.losses  # noqa: F401
    import pipeline.methods  # noqa: F401
    import pipeline.metrics  # noqa: F401
    import pipeline.models  # noqa: F401
    import pipeline.tables  # noqa: F401
    import pipeline.training  # noqa: F401
    import pipeline.victims  # noqa: F401
    from pipeline.dag import discover

    discover()


def child(request: dict) -> None:
    """Become ``pipeline ARGS`` (never returns)."""
    code = 1
    try:
        os.setsid()
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        signal.signal(signal.SIGINT, signal.default_int_handler)
        if request.get("fsize") is not None:
            import resource

            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
            resource.setrlimit(resource.RLIMIT_FSIZE, (request["fsize"], request["fsize"]))
        stdin = os.open(os.devnull, os.O_RDONLY)
        out = os.open(request["out"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        err = os.open(request["err"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        if request.get("tty"):  # stderr is a terminal (progress bars on), copied into the err file
            drain = tty_copier(err)
            err = os.dup(drain.slave)
        for fd, target in ((stdin, 0), (out, 1), (err, 2)):
            os.dup2(fd, target)
            os.close(fd)
        sys.stdin = open(0, closefd=False)
        sys.stdout = open(1, "w", buffering=1, closefd=False)
        sys.stderr = open(2, "w", buffering=1, closefd=False)
        sys.argv = ["pipeline", *request["args"]]
        from pipeline.cli import main

        try:
            main.main(args=request["args"], prog_name="pipeline", standalone_mode=True)
            code = 0
        except SystemExit as exit_:
            if exit_.code is None or isinstance(exit_.code, int):
                code = exit_.code or 0
            else:
                print(exit_.code, file=sys.stderr)
        except BaseException:  # what the interpreter would print for an uncaught exception
            traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        if request.get("tty"):
            os.close(2)
            drain.close()
        os._exit(code)


class tty_copier:
    """A pseudo-terminal whose output a thread copies into ``fd`` until ``close``."""

    def __init__(self, fd: int) -> None:
        import fcntl
        import pty
        import struct
        import termios
        import threading

        self.master, self.slave = pty.openpty()
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 160, 0, 0))  # 0 columns: empty bars
        self.fd = fd
        self.thread = threading.Thread(target=self._copy, daemon=True)
        self.thread.start()

    def _copy(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:  # EIO: every writer has closed the terminal
                return
            if not data:
                return
            os.write(self.fd, data)

    def close(self) -> None:
        os.close(self.slave)
        self.thread.join(timeout=5)


def wait(pid: int, timeout: float | None) -> int | None:
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if deadline is not None and time.monotonic() >= deadline:
            return None
        time.sleep(0.005)


def serve() -> None:
    preload()
    replies = sys.stdout
    print(json.dumps({"ready": os.getpid()}), file=replies, flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        if request["op"] == "run":
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                child(request)
            reply = {"pid": pid}
        elif request["op"] == "wait":
            reply = {"code": wait(request["pid"], request.get("timeout"))}
        else:
            reply = {"error": f"unknown op {request['op']!r}"}
        print(json.dumps(reply), file=replies, flush=True)


if __name__ == "__main__":
    serve()
