"""``export_tree``: an export into ``results/<config>/`` replaces only the files it wrote before."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs.artifacts import EXPORTED, export_tree

pytestmark = pytest.mark.unit


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def _contents(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


def test_an_export_keeps_other_exports_and_removes_only_its_own_stale_files(tmp_path):
    results = tmp_path / "results" / "matched"
    tables = {"table_ii.csv": "ii", "table_iii.csv": "iii", "figs/fig6.png": "6"}
    export_tree(_tree(tmp_path / "tabulate-1", tables), results)
    export_tree(_tree(tmp_path / "ablations", {"fig4.csv": "4", "fig5.csv": "5"}), results / "ablations")
    _tree(results, {"victim_noise/spread.csv": "later export", "NOTES.txt": "by hand"})
    # a later tabulation: one table changed, one file gone (e.g. a figure the config no longer asks for)
    export_tree(_tree(tmp_path / "tabulate-2", {"table_ii.csv": "ii, again", "table_iii.csv": "iii"}), results)
    assert _contents(results) == {
        EXPORTED: "table_ii.csv\ntable_iii.csv\n",
        "NOTES.txt": "by hand",
        "ablations/.exported": "fig4.csv\nfig5.csv\n",
        "ablations/fig4.csv": "4",
        "ablations/fig5.csv": "5",
        "table_ii.csv": "ii, again",
        "table_iii.csv": "iii",
        "victim_noise/spread.csv": "later export",
    }
    assert not (results / "figs").exists()  # the folder its stale file left empty
    assert sorted(p.name for p in results.parent.iterdir()) == ["matched"]  # no staging left beside it


def test_files_of_an_older_export_are_replaced_but_kept_when_no_record_names_them(tmp_path):
    results = _tree(tmp_path / "results", {"table_ii.csv": "committed", "fig7.png": "committed"})
    export_tree(_tree(tmp_path / "new", {"table_ii.csv": "new"}), results)
    assert _contents(results) == {EXPORTED: "table_ii.csv\n", "table_ii.csv": "new", "fig7.png": "committed"}


def test_a_record_naming_a_path_outside_the_folder_removes_nothing_there(tmp_path):
    results = _tree(tmp_path / "results", {EXPORTED: "../keep.txt\nold.csv\n", "old.csv": "stale"})
    _tree(tmp_path, {"keep.txt": "outside"})
    export_tree(_tree(tmp_path / "new", {"new.csv": "new"}), results)
    assert (tmp_path / "keep.txt").read_text() == "outside"
    assert _contents(results) == {EXPORTED: "new.csv\n", "new.csv": "new"}


def test_a_killed_export_is_finished_by_the_next_one(tmp_path):
    results = tmp_path / "results"
    export_tree(_tree(tmp_path / "one", {"a.csv": "1", "b.csv": "1"}), results)
    # killed after moving its files in: its staging beside the folder, its record the union
    _tree(tmp_path, {".results.tmp-0badf00d/c.csv": "2"})
    _tree(results, {"c.csv": "2", EXPORTED: "a.csv\nb.csv\nc.csv\n"})
    export_tree(_tree(tmp_path / "three", {"a.csv": "3"}), results)
    assert _contents(results) == {EXPORTED: "a.csv\n", "a.csv": "3"}
    assert not list(tmp_path.glob(".results.*"))
