"""Imported once by the fork server that the parallel runner's workers are forked from: torch and
every step's module, so that no worker imports them again (importing torch alone takes seconds)."""

import torch  # noqa: F401

from pipeline.dag import discover

discover()
