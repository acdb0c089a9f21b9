"""The synthetic worklist of benchmarks/worklist_first_page.py: the asked size, and a first page the worklist can serve."""

from __future__ import annotations

from pathlib import Path

from benchmarks.worklist_first_page import generate
from radpilot.archive import Archive
from radpilot.worklist.query import WorklistQuery, worklist_page


def test_generated_worklist_has_the_asked_size_and_puts_urgent_studies_first(tmp_path: Path) -> None:
    archive = Archive(tmp_path / "dicom", f"sqlite:///{tmp_path / 'index.db'}", durability="none")
    try:
        generate(archive.engine, 200)
        page = worklist_page(archive.engine, WorklistQuery(limit=200))
        assert page.total == 200 == archive.counts().studies
        urgent = [row.stat or row.critical for row in page.rows]
        assert any(urgent) and not any(urgent[urgent.index(False) :])  # every STAT or critical study before the others
        assert {a.state for row in page.rows for a in row.ai} >= {"done", "failed", "queued", "running"}
        assert any(row.reading == "read" for row in page.rows) and any(row.claimed_by for row in page.rows)
    finally:
        archive.close()
