"""The pieces of ``pipeline accounting`` that need no cluster: a task's own peak memory and CPU time,
Slurm's units, and the profile values suggested from measured maxima."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.accounting import mebibytes, suggest_mem, suggest_time
from pipeline.usage import Meter

pytestmark = pytest.mark.unit


def test_each_task_measures_its_own_peak_memory_and_cpu_time():
    first = Meter()
    block = np.ones(300 * 2**20 // 8)  # 300 MiB, touched
    big = first.read()
    del block
    second = Meter()  # a later task in the same worker process
    sum(range(3_000_000))
    small = second.read()
    assert big["peak_rss_scope"] == small["peak_rss_scope"] == "task"
    assert big["peak_rss_mib"] > small["peak_rss_mib"] + 250
    assert small["cpu_s"] > 0


@pytest.mark.parametrize(
    "text, mib",
    [
        ("3G", 3072),
        ("512M", 512),
        ("323572K", 323572 / 1024),
        ("4000Mn", 4000),
        ("16", 16),
        ("1.5G", 1536),
        ("", None),
        ("0", 0),
    ],
)
def test_slurm_memory_sizes(text, mib):
    assert mebibytes(text) == mib


@pytest.mark.parametrize(
    "seconds, limit", [(0, "00:01:00"), (61, "00:02:00"), (5400, "01:30:00"), (30 * 3600 + 1, "30:01:00")]
)
def test_suggested_time_limits(seconds, limit):
    assert suggest_time(seconds) == limit


@pytest.mark.parametrize(
    "mib, mem", [(10, "256M"), (300, "512M"), (768, "768M"), (858, "1G"), (1025, "2G"), (20000, "20G")]
)
def test_suggested_memory(mib, mem):
    assert suggest_mem(mib) == mem
