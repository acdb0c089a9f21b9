"""C-FIND / QIDO-RS matching rules against the archive index (SQLite and PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

import pytest

from radpilot.archive import Archive
from radpilot.archive.query import Query, QueryError, QueryLevel
from tests.factories import make_ct_dataset, to_part10_bytes


@pytest.fixture(params=["sqlite", "postgresql"])
def archive(request, tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'i.db'}" if request.param == "sqlite" else request.getfixturevalue("fresh_postgres_url")
    store = Archive(tmp_path / "dicom", url)
    studies = [
        dict(patient_id="P1", patient_name="DOE^JANE", study_date="20240102", study_time="101500", accession="A1", modality="CT"),
        dict(patient_id="P1", patient_name="DOE^JANE", study_date="20230615", study_time="083000", accession="A2", modality="MR"),
        dict(patient_id="P2", patient_name="SMITH^JOHN", study_date="20240301", study_time="231000", accession="A3", modality="CT"),
        dict(patient_id="P3", patient_name="MÜLLER^JÖRG", study_date="20220101", study_time="090000", accession="A4", modality="CT"),
    ]
    store.uids = []
    for index, attrs in enumerate(studies):
        first = make_ct_dataset(**attrs)
        store.store_file_bytes(to_part10_bytes(first))
        second = make_ct_dataset(study_uid=first.StudyInstanceUID, series_uid=first.SeriesInstanceUID, instance_number=2, **attrs)
        store.store_file_bytes(to_part10_bytes(second))
        if index == 0:
            sr = make_ct_dataset(study_uid=first.StudyInstanceUID, series_number=99, **{**attrs, "modality": "SR"})
            store.store_file_bytes(to_part10_bytes(sr))
        store.uids.append(str(first.StudyInstanceUID))
    yield store
    store.close()


def studies(archive: Archive, **keys: str) -> list[str]:
    return [r["AccessionNumber"] for r in archive.find(Query(QueryLevel.STUDY, keys))]


@pytest.mark.parametrize(
    "keys, expected",
    [
        ({}, ["A3", "A1", "A2", "A4"]),
        ({"PatientID": "P1"}, ["A1", "A2"]),
        ({"PatientID": ""}, ["A3", "A1", "A2", "A4"]),
        ({"PatientID": "*"}, ["A3", "A1", "A2", "A4"]),
        ({"PatientName": "müller*"}, ["A4"]),
        ({"PatientName": "MÜLLER"}, ["A4"]),
        ({"PatientName": "DOE*"}, ["A1", "A2"]),
        ({"PatientName": "doe^jane"}, ["A1", "A2"]),
        ({"PatientName": "SMITH"}, ["A3"]),
        ({"PatientName": "?MITH*"}, ["A3"]),
        ({"PatientID": "p1"}, []),
        ({"StudyDate": "20240101-20241231"}, ["A3", "A1"]),
        ({"StudyDate": "-20231231"}, ["A2", "A4"]),
        ({"StudyDate": "20240201-"}, ["A3"]),
        ({"StudyDate": "20230615"}, ["A2"]),
        ({"StudyTime": "0800-1100"}, ["A1", "A2", "A4"]),
        ({"AccessionNumber": "A1\\A3"}, ["A3", "A1"]),
        ({"ModalitiesInStudy": "MR"}, ["A2"]),
        ({"ModalitiesInStudy": "SR\\MR"}, ["A1", "A2"]),
        ({"PatientID": "P1", "StudyDate": "2024*"}, ["A1"]),
        ({"AccessionNumber": "A_"}, []),
    ],
)
def test_study_level_matching(archive: Archive, keys: dict, expected: list[str]) -> None:
    assert studies(archive, **keys) == expected


def test_uid_list_matching(archive: Archive) -> None:
    wanted = "\\".join([archive.uids[0], archive.uids[2], "1.2.3.999"])
    assert sorted(studies(archive, StudyInstanceUID=wanted)) == ["A1", "A3"]


def test_computed_study_attributes(archive: Archive) -> None:
    [row] = archive.find(Query(QueryLevel.STUDY, {"AccessionNumber": "A1"}))
    assert row["ModalitiesInStudy"] == ["CT", "SR"]
    assert row["NumberOfStudyRelatedSeries"] == 2
    assert row["NumberOfStudyRelatedInstances"] == 3


def test_patient_level_counts(archive: Archive) -> None:
    rows = {r["PatientID"]: r for r in archive.find(Query(QueryLevel.PATIENT, {}))}
    assert rows["P1"]["NumberOfPatientRelatedStudies"] == 2
    assert rows["P1"]["NumberOfPatientRelatedInstances"] == 5
    assert rows["P2"]["NumberOfPatientRelatedSeries"] == 1


def test_series_and_image_level(archive: Archive) -> None:
    series = archive.find(Query(QueryLevel.SERIES, {"StudyInstanceUID": archive.uids[0]}))
    assert sorted(r["Modality"] for r in series) == ["CT", "SR"]
    assert {r["Modality"]: r["NumberOfSeriesRelatedInstances"] for r in series} == {"CT": 2, "SR": 1}
    images = archive.find(Query(QueryLevel.IMAGE, {"StudyInstanceUID": archive.uids[0], "Modality": "CT"}))
    assert [r["InstanceNumber"] for r in images] == [1, 2]
    assert all(r["_file_path"].endswith(".dcm") for r in images)


def test_limit_and_offset_page_through_results(archive: Archive) -> None:
    first = archive.find(Query(QueryLevel.STUDY, {}, limit=2))
    rest = archive.find(Query(QueryLevel.STUDY, {}, limit=2, offset=2))
    assert [r["AccessionNumber"] for r in first + rest] == ["A3", "A1", "A2", "A4"]


@pytest.mark.parametrize(
    "level, keys, message",
    [
        (QueryLevel.STUDY, {"StudyDate": "2024-01-01"}, "StudyDate"),
        (QueryLevel.STUDY, {"StudyDate": "-"}, "StudyDate"),
        (QueryLevel.STUDY, {"SeriesNumber": "1"}, "series-level key"),
        (QueryLevel.SERIES, {"SeriesNumber": "one"}, "not an integer"),
        (QueryLevel.STUDY, {"StudyTime": "ab"}, "StudyTime"),
    ],
)
def test_bad_queries_name_the_problem(archive: Archive, level, keys, message) -> None:
    with pytest.raises(QueryError, match=message):
        archive.find(Query(level, keys))


def test_unknown_level_is_rejected() -> None:
    with pytest.raises(ValueError, match="QueryRetrieveLevel"):
        QueryLevel.parse("FRAME")
