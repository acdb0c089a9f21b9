"""The synthetic archive index of benchmarks/qido_scale.py: what it generates is what QIDO-RS finds, on PostgreSQL."""

from __future__ import annotations

from pathlib import Path

from benchmarks.qido_scale import generate
from radpilot.archive import Archive, StoreOutcome
from radpilot.archive.query import QueryLevel
from radpilot.pacs.dicomweb import qido as qido_rs
from tests.factories import make_ct_dataset, to_part10_bytes


def study_search(archive: Archive, *items: tuple[str, str]) -> list[dict]:
    return qido_rs.search(archive, QueryLevel.STUDY, {}, qido_rs.parse_qido_parameters(list(items)), "http://test/dicomweb")


def test_generated_index_has_the_asked_size_and_answers_the_common_searches(fresh_postgres_url: str, tmp_path: Path) -> None:
    archive = Archive(tmp_path / "dicom", fresh_postgres_url, durability="none")
    try:
        drawn = generate(fresh_postgres_url, studies=40, instances=4000)
        counts = archive.counts()
        assert (counts.studies, counts.instances) == (40, 4000)
        assert counts.series >= 40
        [study] = study_search(archive, ("AccessionNumber", drawn["accessions"][7]))
        assert study["00080050"]["Value"] == [drawn["accessions"][7]]
        assert study["00201208"]["Value"] == [100]  # NumberOfStudyRelatedInstances
        month = drawn["dates"][0][:6]
        in_month = study_search(archive, ("StudyDate", f"{month}01-{month}31"))
        assert len(in_month) == sum(d.startswith(month) for d in drawn["dates"])
        by_patient = study_search(archive, ("PatientID", drawn["patient_ids"][0]))
        assert all(s["00100020"]["Value"] == [drawn["patient_ids"][0]] for s in by_patient)
        assert len(study_search(archive, ("ModalitiesInStudy", "CT"), ("limit", "3"))) <= 3
        # The id sequences were moved past the generated rows: a real instance can still be stored.
        assert archive.store_file_bytes(to_part10_bytes(make_ct_dataset(patient_id="REAL"))).outcome is StoreOutcome.STORED
    finally:
        archive.close()
