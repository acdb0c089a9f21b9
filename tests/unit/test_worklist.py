"""The worklist: triage order (STAT and critical flags first), filters, search, sorting, AI status, priority from the header."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.dataset import Dataset

from radpilot.archive import Archive
from radpilot.archive.store import study_priority
from radpilot.engine.jobs import ErrorKind
from radpilot.worklist.query import WorklistQuery, WorklistQueryError, worklist_page, worklist_row
from tests.unit.worklist_support import add_job, store_study


@pytest.fixture
def archive(tmp_path: Path) -> Iterator[Archive]:
    store = Archive(tmp_path / "dicom", f"sqlite:///{tmp_path / 'index.db'}", durability="none")
    yield store
    store.close()


def uids(archive: Archive, **query) -> list[str]:
    return [row.study_instance_uid for row in worklist_page(archive.engine, WorklistQuery(**query)).rows]


@pytest.fixture
def studies(archive: Archive) -> dict[str, tuple[str, str]]:
    """Five studies: old STAT, newest routine, a critical-flagged one, a non-critical-flagged one, an MR."""
    made = {
        "stat_old": store_study(archive, patient_id="P1", patient_name="STAT^OLD", study_date="20230101", priority="STAT"),
        "newest": store_study(archive, patient_id="P2", patient_name="NEW^EST", study_date="20240601", accession="ACC-NEW"),
        "critical": store_study(archive, patient_id="P3", patient_name="CRIT^ICAL", study_date="20230301"),
        "flagged": store_study(archive, patient_id="P4", patient_name="FLAG^GED", study_date="20240301"),
        "mr": store_study(archive, patient_id="P5", patient_name="KIM^MINJI", study_date="20240401", modality="MR", description="MR BRAIN"),
    }
    add_job(archive, *made["critical"], "chest_xray", state="done", flags=[("nodule_candidates", True)])
    add_job(archive, *made["flagged"], "lung_ct_quant", state="done", flags=[("emphysema", False)])
    add_job(archive, *made["newest"], "lung_ct_quant", state="running")
    add_job(archive, *made["mr"], "lung_ct_quant", state="failed", error_kind=ErrorKind.NOT_APPLICABLE)
    add_job(archive, *made["stat_old"], "lung_ct_quant", state="failed")
    return made


def test_stat_and_critical_studies_come_first_then_the_newest(archive: Archive, studies) -> None:
    order = uids(archive)
    names = {v[0]: k for k, v in studies.items()}
    assert [names[u] for u in order] == ["stat_old", "critical", "newest", "mr", "flagged"]
    page = worklist_page(archive.engine, WorklistQuery())
    assert page.rows[0].stat and not page.rows[0].critical
    assert page.rows[1].critical and page.rows[1].flags[0].name == "nodule_candidates"
    assert page.total == 5


def test_ai_status_per_analysis_shows_queued_running_done_failed_and_not_applicable(archive: Archive, studies) -> None:
    def status(key: str) -> list[tuple[str, str]]:
        row = worklist_row(archive.engine, studies[key][0])
        return [(a.analysis, a.state) for a in row.ai]

    assert status("newest") == [("lung_ct_quant", "running")]
    assert status("flagged") == [("lung_ct_quant", "done")]
    assert status("mr") == [("lung_ct_quant", "not_applicable")]
    assert status("stat_old") == [("lung_ct_quant", "failed")]
    add_job(archive, *studies["flagged"][:1], studies["flagged"][1], "chest_xray", state="queued")
    assert status("flagged") == [("chest_xray", "queued"), ("lung_ct_quant", "done")]
    assert "not a chest CT" in worklist_row(archive.engine, studies["mr"][0]).ai[0].detail


def test_filters_search_and_sorts(archive: Archive, studies) -> None:
    key = {v[0]: k for k, v in studies.items()}
    assert [key[u] for u in uids(archive, modality="mr")] == ["mr"]
    assert [key[u] for u in uids(archive, text="minji")] == ["mr"]  # patient name, any case
    assert [key[u] for u in uids(archive, text="acc-new")] == ["newest"]  # accession number
    assert [key[u] for u in uids(archive, text="brain")] == ["mr"]  # description
    assert [key[u] for u in uids(archive, text="P4")] == ["flagged"]  # patient ID
    assert sorted(key[u] for u in uids(archive, flagged=True)) == ["critical", "flagged"]
    assert [key[u] for u in uids(archive, priority="STAT")] == ["stat_old"]
    assert [key[u] for u in uids(archive, ai="running")] == ["newest"]
    assert [key[u] for u in uids(archive, ai="not_applicable")] == ["mr"]
    assert [key[u] for u in uids(archive, ai="failed")] == ["stat_old"]
    assert [key[u] for u in uids(archive, date_from="2024-03-01", date_to="2024-04-30", sort="date")] == ["mr", "flagged"]
    assert [key[u] for u in uids(archive, sort="date", descending=False)] == ["stat_old", "critical", "flagged", "mr", "newest"]
    assert [key[u] for u in uids(archive, sort="patient", descending=False)][:2] == ["critical", "flagged"]
    assert uids(archive, reading="read") == []
    assert len(uids(archive, reading="unread")) == 5
    assert [key[u] for u in uids(archive, limit=2, offset=4)] == ["flagged"]


def test_search_text_with_sql_wildcards_matches_literally(archive: Archive, studies) -> None:
    assert uids(archive, text="%") == [] and uids(archive, text="_") == []


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"sort": "bogus"}, "sort 'bogus' is not one of"),
        ({"reading": "done"}, "reading 'done' is not one of"),
        ({"ai": "exploded"}, "ai 'exploded'"),
        ({"priority": "urgent"}, "priority 'URGENT'"),
        ({"date_from": "2024-02-30"}, "date_from '2024-02-30' is not a date"),
        ({"date_from": "2024-05-01", "date_to": "2024-01-01"}, "is after date_to"),
        ({"limit": 0}, "limit must be between"),
        ({"offset": -1}, "offset must not be negative"),
    ],
)
def test_bad_parameters_are_refused_with_their_name(params: dict, message: str) -> None:
    with pytest.raises(WorklistQueryError, match=message):
        WorklistQuery(**params)


def test_a_superseding_job_takes_the_flags_of_the_job_it_replaces(archive: Archive, studies) -> None:
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from radpilot.engine.flags import record_flags
    from radpilot.engine.jobs_models import AiFlag, Job

    study_uid = studies["critical"][0]
    with Session(archive.engine) as session, session.begin():
        old_job = session.scalar(select(Job.id).where(Job.study_instance_uid == study_uid))
        record_flags(session, old_job, study_uid, [], supersedes_job_id=old_job)
    with Session(archive.engine) as session:
        assert session.scalars(select(AiFlag).where(AiFlag.study_instance_uid == study_uid)).all() == []
    assert uids(archive)[0] == studies["stat_old"][0] and uids(archive)[1] != study_uid


def _with(**attributes) -> Dataset:
    ds = Dataset()
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


def test_priority_is_read_from_the_header_where_modalities_send_it() -> None:
    assert study_priority(_with(RequestedProcedurePriority="STAT")) == "STAT"
    item = _with(RequestedProcedurePriority="high")
    assert study_priority(_with(RequestAttributesSequence=[_with(), item])) == "HIGH"
    assert study_priority(_with(StudyPriorityID="MED")) == "MEDIUM"
    assert study_priority(_with(StudyPriorityID="whenever")) == ""
    assert study_priority(_with()) == ""


def test_a_stored_study_keeps_its_priority(archive: Archive) -> None:
    uid, _ = store_study(archive, patient_id="P9", priority="STAT")
    assert worklist_row(archive.engine, uid).priority == "STAT"
    assert worklist_row(archive.engine, "1.2.3.4") is None
