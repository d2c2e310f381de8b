"""The summary table of injected faults, shared by the fault tier and the Slurm tier.

Each test records the faults it injected with the ``fault_log`` fixture; at the end of the session
one table prints one row per fault: how many were injected, how many were survived, how many
finished files were lost. ``FAULTS_SUMMARY=results/reliability.md`` also writes it as Markdown,
for ``pipeline readme``. Both tiers' conftests import the fixture and the hooks from here.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass
class Record:
    fault: str
    count: int = 0
    survived: int = 0
    lost: int = 0
    note: str = ""
    failed: bool = False  # the test that injected it failed (an invariant or the recovery)


RECORDS: list[Record] = []
_PRINTED: list[bool] = []


@pytest.fixture
def fault_log(request) -> Callable[..., Record]:
    """``fault_log(name, survived=True, lost=0, note="")`` adds one injected fault to the table
    (``count=False``: only the note)."""
    mine: list[Record] = []

    def add(fault: str, survived: bool = True, lost: int = 0, note: str = "", count: bool = True) -> Record:
        record = next((r for r in mine if r.fault == fault), None)
        if record is None:
            record = Record(fault)
            mine.append(record)
            RECORDS.append(record)
        record.count += count
        record.survived += bool(survived) and count
        record.lost += lost
        if note and note not in record.note:
            record.note = f"{record.note}; {note}" if record.note else note
        return record

    yield add
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        for record in mine:
            record.failed = True


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item.rep_call = report


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not RECORDS or _PRINTED:  # both tiers' conftests register this hook: print once
        return
    _PRINTED.append(True)
    rows: dict[str, Record] = {}
    for r in RECORDS:
        row = rows.setdefault(r.fault, Record(r.fault))
        row.count += r.count
        row.survived += r.survived
        row.lost += r.lost
        row.failed |= r.failed
        if r.note and r.note not in row.note:
            row.note = f"{row.note}; {r.note}" if row.note else r.note
    width = max(len(f) for f in rows) + 2
    tr = terminalreporter
    tr.section("fault injection summary")
    tr.write_line(f"{'fault':<{width}}{'count':>6}  {'survived':>9}  {'data lost':>9}  notes")
    for row in rows.values():
        survived = f"{row.survived}/{row.count}" + ("!" if row.failed or row.survived < row.count else "")
        tr.write_line(f"{row.fault:<{width}}{row.count:>6}  {survived:>9}  {row.lost:>9}  {row.note}")
    total = Record(
        "total",
        sum(r.count for r in rows.values()),
        sum(r.survived for r in rows.values()),
        sum(r.lost for r in rows.values()),
    )
    tr.write_line(
        f"{'total':<{width}}{total.count:>6}  {f'{total.survived}/{total.count}':>9}  "
        f"{total.lost:>9}  ('!': not survived or its test failed)"
    )
    markdown = os.environ.get("FAULTS_SUMMARY")  # e.g. results/reliability.md, for `pipeline readme`
    if markdown:
        lines = ["| fault | count | survived | data lost | how |", "|---|---|---|---|---|"]
        lines += [f"| {r.fault} | {r.count} | {r.survived}/{r.count} | {r.lost} | {r.note} |" for r in rows.values()]
        lines.append(f"| **total** | {total.count} | {total.survived}/{total.count} | {total.lost} | |")
        Path(markdown).write_text("\n".join(lines) + "\n")
