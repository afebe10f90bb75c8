"""results/: the bench runs the README quotes, as data. Every file reads back as a BenchRecord named by its content,
and the README's speed table is exactly what `handmesh bench --table results/` renders from them."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest

from handmesh.bench.record import PACKAGES, read_records
from handmesh.bench.table import SPEED_TABLE_END, SPEED_TABLE_START, readme_block, speed_table_block

REPOSITORY = Path(__file__).resolve().parents[1]
RESULTS = REPOSITORY / "results"


def test_results_files_are_records_named_by_their_content():
    paths = sorted(RESULTS.glob("*.json"))
    records = read_records(RESULTS)
    assert {record.what for record in records} >= {"model", "eval", "data"}
    for path, record in zip(paths, records):
        assert path.name == record.file_name, "a results file is named by what, machine and torch version"
        assert record.machine.cpu and record.machine.usable_cpus >= 1 and record.machine.logical_cpus >= 1
        assert set(PACKAGES) <= set(record.software) and record.software["torch"] and record.software["python"]
        assert datetime.fromisoformat(record.date).utcoffset().total_seconds() == 0  # UTC
        assert record.measurements and record.settings["what"] == record.what
        assert json.loads(path.read_text())["under_load"] == record.load.under_load


def test_readme_speed_table_is_rendered_from_results():
    readme = (REPOSITORY / "README.md").read_text(encoding="utf-8")
    expected = speed_table_block(read_records(RESULTS))
    found = readme_block(readme)
    if found is None:
        pytest.fail(f"README.md has no {SPEED_TABLE_START} ... {SPEED_TABLE_END} block: put the output of "
                    f"`handmesh bench --table results/` in its speed section:\n{expected}")
    assert found == expected, ("README.md's speed table differs from results/: paste the output of "
                               "`handmesh bench --table results/` between its markers (or rerun the bench)")
