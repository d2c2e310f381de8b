"""Imported once by the fork server that the parallel runner's workers are forked from: torch, the
steps, and every module the steps import when they run (read from their source, imports inside
functions included), so that no worker imports them again: torch, torchvision and torchattacks alone
take seconds, which each worker would otherwise spend on its first tasks. It computes nothing with torch:
torch fixes its CPU kernels at its first computation, and each worker pins them after the fork
(``pipeline/kernels.py``), over the environment the fork server inherited."""

from __future__ import annotations

import ast
import contextlib
import importlib
import inspect
from types import ModuleType

import torch  # noqa: F401

from pipeline.dag import discover


def imported_by(module: ModuleType) -> set[str]:
    """The absolute module names ``module`` imports anywhere in its source."""
    names = set()
    for node in ast.walk(ast.parse(inspect.getsource(module))):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def preload() -> None:
    """Import what the steps' modules import, and what the modules of their package they use import."""
    steps = {module for step in discover().values() if (module := inspect.getmodule(step.run)) is not None}
    package = {m.__name__.partition(".")[0] for m in steps}
    seen: set[str] = set()
    todo = [m.__name__ for m in steps]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        # a speed-up only: a module that cannot be imported here fails in the task that needs it, clearly
        with contextlib.suppress(Exception):
            module = importlib.import_module(name)
            if name.partition(".")[0] in package:
                todo.extend(imported_by(module))


preload()
