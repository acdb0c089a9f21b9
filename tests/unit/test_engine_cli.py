"""`radpilot route`, `analyze`, `jobs` and a bad rules file at `serve`."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from radpilot.archive import Archive
from radpilot.cli import app
from tests.factories import make_ct_series, to_part10_bytes

runner = CliRunner()


@pytest.fixture
def study(tmp_path: Path, monkeypatch) -> str:
    monkeypatch.setenv("RADPILOT_DATA_DIR", str(tmp_path / "data"))
    archive = Archive(tmp_path / "data" / "dicom", f"sqlite:///{(tmp_path / 'data' / 'index.sqlite3')}")
    series = make_ct_series(25, rows=32, columns=32)
    for ds in series:
        archive.store_file_bytes(to_part10_bytes(ds))
    scout = make_ct_series(2, study_uid=series[0].StudyInstanceUID, series_number=2, rows=32, columns=32)
    for ds in scout:
        ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
        archive.store_file_bytes(to_part10_bytes(ds))
    archive.close()
    return str(series[0].StudyInstanceUID)


def test_route_dry_run_explains_matches_and_misses(study: str) -> None:
    result = runner.invoke(app, ["route", study])
    assert result.exit_code == 0, result.output
    assert "→ lung_ct_quant (rule chest-ct-lung-quantification" in result.output
    assert "NumberOfSlices is 2; rule needs at least 20" in result.output
    assert "no rule matches this series" in result.output


def test_analyze_queues_once_and_jobs_lists_it(study: str) -> None:
    first = runner.invoke(app, ["analyze", study, "--priority", "stat"])
    assert first.exit_code == 0, first.output
    assert "queued" in first.output
    again = runner.invoke(app, ["analyze", study])
    assert "already exists (same inputs and version)" in again.output
    listing = runner.invoke(app, ["jobs", "--json"])
    assert listing.exit_code == 0
    assert '"state": "queued"' in listing.output and '"priority": "stat"' in listing.output
    assert listing.output.count('"analysis": "lung_ct_quant"') == 1


def test_unknown_study_and_bad_state_are_clear_errors(study: str) -> None:
    assert "is not in the archive" in runner.invoke(app, ["route", "1.2.3.4"]).output
    bad = runner.invoke(app, ["jobs", "--state", "sleeping"])
    assert bad.exit_code == 2 and "unknown state 'sleeping'" in bad.output


def test_serve_rejects_a_broken_rules_file_with_line_and_reason(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - name: a\n    match:\n      Colour: red\n    analyses: [lung_ct_quant]\n")
    result = runner.invoke(
        app, ["serve", "--data-dir", str(tmp_path / "d"), "--rules-file", str(rules), "--dicom-port", "0", "--http-port", "0"]
    )
    assert result.exit_code == 1
    # The console wraps long lines anywhere, inside the path too: compare without whitespace.
    assert "".join(f"{rules}, line 4: unknown attribute 'Colour'".split()) in "".join(result.output.split())
