"""The reading-room JSON API: /api/studies (search, paging), /api/studies/{uid}, /api/status."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from radpilot.archive import Archive
from radpilot.config import Settings
from radpilot.web.api import SearchError, StudySearch, format_person_name, parse_date, to_query_keys
from radpilot.web.app import create_app
from tests.factories import make_ct_dataset, make_ct_series, to_part10_bytes
from tests.fixtures.auth import authenticate

STUDIES = [
    dict(patient_id="P1", patient_name="DOE^JANE", study_date="20240102", accession="A1", modality="CT"),
    dict(patient_id="P1", patient_name="DOE^JANE", study_date="20230615", accession="A2", modality="MR"),
    dict(patient_id="P2", patient_name="SMITH^JOHN", study_date="20240301", accession="A3", modality="CT"),
    dict(patient_id="Q77", patient_name="MÜLLER^ANNA", study_date="20220510", accession="A4", modality="DX"),
]


@pytest.fixture
def archive(tmp_path: Path) -> Iterator[Archive]:
    store = Archive(tmp_path / "dicom", f"sqlite:///{tmp_path / 'index.db'}", durability="none")
    store.uids = {}
    for attrs in STUDIES:
        series = make_ct_series(2, rows=8, columns=8, **attrs)
        for ds in series:
            assert store.store_file_bytes(to_part10_bytes(ds)).outcome.accepted
        store.uids[attrs["accession"]] = str(series[0].StudyInstanceUID)
    yield store
    store.close()


@pytest.fixture
def client(archive: Archive, tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(data_dir=tmp_path / "data", ohif_dir=tmp_path / "no-ohif")
    with TestClient(create_app(settings, archive)) as test_client:
        yield authenticate(test_client, archive.engine)


def accessions(response) -> list[str]:  # noqa: ANN001 - httpx.Response
    assert response.status_code == 200, response.text
    return [s["accession_number"] for s in response.json()["studies"]]


def test_lists_all_studies_newest_first(client: TestClient) -> None:
    body = client.get("/api/studies").json()
    assert [s["accession_number"] for s in body["studies"]] == ["A3", "A1", "A2", "A4"]
    assert body["has_more"] is False and body["next_offset"] is None and body["count"] == 4
    first = body["studies"][0]
    assert first["patient_name"] == "SMITH^JOHN" and first["patient_name_display"] == "SMITH, JOHN"
    assert first["study_date"] == "2024-03-01"
    assert first["modalities"] == ["CT"]
    assert first["series_count"] == 1 and first["instance_count"] == 2
    assert first["viewer_url"] == f"/viewer?StudyInstanceUIDs={first['study_instance_uid']}"


def test_paging(client: TestClient) -> None:
    page1 = client.get("/api/studies", params={"limit": 2}).json()
    assert [s["accession_number"] for s in page1["studies"]] == ["A3", "A1"]
    assert page1["has_more"] is True and page1["next_offset"] == 2
    page2 = client.get("/api/studies", params={"limit": 2, "offset": 2}).json()
    assert [s["accession_number"] for s in page2["studies"]] == ["A2", "A4"]
    assert page2["has_more"] is False
    assert client.get("/api/studies", params={"offset": 10}).json()["studies"] == []


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 100000}, {"offset": -1}, {"limit": "x"}])
def test_bad_paging_is_422(client: TestClient, params: dict) -> None:
    assert client.get("/api/studies", params=params).status_code == 422


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"patient_name": "doe"}, ["A1", "A2"]),
        ({"patient_name": "jane"}, ["A1", "A2"]),
        ({"patient_name": "SMI*"}, ["A3"]),
        ({"patient_name": "anna"}, ["A4"]),
        ({"patient_id": "P1"}, ["A1", "A2"]),
        ({"patient_id": "77"}, ["A4"]),
        ({"modality": "ct"}, ["A3", "A1"]),
        ({"modality": "MR"}, ["A2"]),
        ({"date_from": "2024-01-01"}, ["A3", "A1"]),
        ({"date_to": "2023-12-31"}, ["A2", "A4"]),
        ({"date_from": "2023-01-01", "date_to": "20240201"}, ["A1", "A2"]),
        ({"date_from": "2024-01-02", "date_to": "2024-01-02"}, ["A1"]),
        ({"accession_number": "A3"}, ["A3"]),
        ({"patient_name": "doe", "modality": "CT"}, ["A1"]),
        ({"patient_name": "nobody"}, []),
        ({"patient_name": "100%_"}, []),
    ],
)
def test_filters(client: TestClient, params: dict, expected: list[str]) -> None:
    assert accessions(client.get("/api/studies", params=params)) == expected


@pytest.mark.parametrize(
    "params", [{"date_from": "yesterday"}, {"date_to": "2024-02-30"}, {"date_from": "2024-05-01", "date_to": "2024-01-01"}]
)
def test_bad_dates_are_400_with_a_reason(client: TestClient, params: dict) -> None:
    response = client.get("/api/studies", params=params)
    assert response.status_code == 400
    assert "date" in response.json()["detail"]


def test_study_detail_lists_series(client: TestClient, archive: Archive) -> None:
    uid = archive.uids["A1"]
    extra = make_ct_dataset(
        study_uid=uid,
        patient_id="P1",
        patient_name="DOE^JANE",
        study_date="20240102",
        accession="A1",
        modality="SR",
        series_number=99,
        series_description="AI RESULTS",
    )
    archive.store_file_bytes(to_part10_bytes(extra))
    body = client.get(f"/api/studies/{uid}").json()
    assert body["study_instance_uid"] == uid and body["accession_number"] == "A1"
    assert body["modalities"] == ["CT", "SR"] and body["series_count"] == 2 and body["instance_count"] == 3
    assert [(s["series_number"], s["modality"], s["instance_count"]) for s in body["series"]] == [(1, "CT", 2), (99, "SR", 1)]
    assert body["series"][1]["series_description"] == "AI RESULTS"


def test_unknown_study_is_404(client: TestClient) -> None:
    response = client.get("/api/studies/1.2.3.999")
    assert response.status_code == 404 and "1.2.3.999" in response.json()["detail"]


def test_status_counts_and_conflicts(client: TestClient, archive: Archive) -> None:
    body = client.get("/api/status").json()
    assert (body["studies"], body["series"], body["instances"]) == (4, 4, 8)
    assert body["conflict_count"] == 0 and body["conflicts"] == []
    assert body["viewer_installed"] is False
    original = make_ct_dataset(rows=8, columns=8, seed=1)
    archive.store_file_bytes(to_part10_bytes(original))
    changed = make_ct_dataset(
        rows=8,
        columns=8,
        seed=2,
        sop_uid=original.SOPInstanceUID,
        study_uid=original.StudyInstanceUID,
        series_uid=original.SeriesInstanceUID,
    )
    archive.store_file_bytes(to_part10_bytes(changed), source_ae_title="MODALITY")
    body = client.get("/api/status").json()
    assert body["instances"] == 9 and body["conflict_count"] == 1
    (conflict,) = body["conflicts"]
    assert conflict["sop_instance_uid"] == original.SOPInstanceUID
    assert conflict["source_ae_title"] == "MODALITY" and conflict["count"] == 1


def test_search_helpers() -> None:
    assert parse_date("2024-01-02", "d") == "20240102" and parse_date("20240102", "d") == "20240102"
    assert parse_date("", "d") == ""
    with pytest.raises(SearchError):
        parse_date("2024-13-01", "d")
    assert to_query_keys(StudySearch(patient_name="doe", modality="ct", date_from="2024-01-01")) == {
        "PatientName": "*doe*",
        "ModalitiesInStudy": "CT",
        "StudyDate": "20240101-",
    }
    assert to_query_keys(StudySearch(date_to="2024-01-01")) == {"StudyDate": "-20240101"}
    assert format_person_name("DOE^JANE^Q^DR") == "DOE, JANE Q"
    assert format_person_name("DOE") == "DOE" and format_person_name(None) == ""
    assert format_person_name("Yamada^Tarou=山田^太郎") == "Yamada, Tarou"
