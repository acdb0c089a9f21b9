"""A researcher never sees a patient's name, ID or birth date: not on a page, not in /api, not over
DICOMweb (QIDO-RS, WADO-RS metadata, WADO-RS instances), so not in OHIF, which reads only those."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from fastapi.testclient import TestClient
from pydicom.dataset import Dataset

from radpilot.archive import Archive
from radpilot.config import Settings
from radpilot.pacs.multipart import parse_media_type, parse_multipart
from radpilot.security.principal import Role
from radpilot.security.pseudonyms import Pseudonymizer
from radpilot.web.app import create_app
from tests.factories import make_ct_series, to_part10_bytes
from tests.fixtures.auth import all_routes, auth_headers, bearer_token

NAME, PATIENT_ID, BIRTH_DATE, OTHER_ID = "SECRETSON^WILHELMINA", "MRN-99887766", "19450317", "OLDMRN-4455"
SECRETS = ("SECRETSON", "WILHELMINA", PATIENT_ID, BIRTH_DATE, "1945-03-17", OTHER_ID)
ACCEPTS = (
    "application/json",
    "application/dicom+json",
    'multipart/related; type="application/dicom"; transfer-syntax=*',
    "application/dicom",
    "text/html",
    "*/*",
)


def identified_series() -> list[Dataset]:
    series = make_ct_series(2, rows=8, columns=8, patient_id=PATIENT_ID, patient_name=NAME)
    for ds in series:
        ds.PatientBirthDate = BIRTH_DATE
        ds.OtherPatientIDs = OTHER_ID
        item = Dataset()
        item.PatientID = OTHER_ID
        ds.OtherPatientIDsSequence = [item]
    return series


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[TestClient, Archive, list[Dataset]]]:
    settings = Settings(data_dir=tmp_path / "data", ohif_dir=tmp_path / "no-ohif")
    archive = Archive.from_settings(settings)
    series = identified_series()
    for ds in series:
        assert archive.store_file_bytes(to_part10_bytes(ds)).outcome.accepted
    with TestClient(create_app(settings, archive), follow_redirects=False) as client:
        yield client, archive, series
    archive.close()


def concrete(path: str, ds: Dataset) -> str:
    values = {"study": ds.StudyInstanceUID, "series": ds.SeriesInstanceUID, "sop": ds.SOPInstanceUID, "frames": "1", "path": "x"}
    values |= {"study_instance_uid": ds.StudyInstanceUID, "study_uid": ds.StudyInstanceUID, "uid": ds.StudyInstanceUID}
    return re.sub(r"\{([^}:]+)(:[^}]*)?\}", lambda m: str(values.get(m.group(1), "1")), path)


def leaks(body: bytes) -> list[str]:
    text = body.decode("latin-1")
    return [s for s in SECRETS if s in text or s.replace("^", " ") in text]


def test_no_route_shows_a_researcher_the_patients_identity(setup) -> None:  # noqa: ANN001
    client, archive, series = setup
    researcher = auth_headers(bearer_token(archive.engine, Role.RESEARCHER))
    radiologist = auth_headers(bearer_token(archive.engine, Role.RADIOLOGIST))
    answered = 0
    seen_by_radiologist = 0
    for method, path in all_routes(client.app):
        # /ui/events is a stream that never ends by itself; its events carry study UIDs, states and readers only.
        if method != "GET" or path == "/ui/events":
            continue
        url = concrete(path, series[0])
        for accept in ACCEPTS:
            response = client.get(url, headers={**researcher, "Accept": accept})
            assert not leaks(response.content), (url, accept, response.status_code, leaks(response.content))
            answered += response.status_code == 200
            control = client.get(url, headers={**radiologist, "Accept": accept})
            seen_by_radiologist += bool(leaks(control.content))
    # The same routes do show the identity to a radiologist: the check above can fail.
    assert answered > 10 and seen_by_radiologist > 10


def test_study_list_page_and_api_show_the_pseudonym(setup) -> None:  # noqa: ANN001
    client, archive, series = setup
    researcher = auth_headers(bearer_token(archive.engine, Role.RESEARCHER))
    pseudonym = client.app.state.pseudonymizer.patient_id(PATIENT_ID)
    page = client.get("/ui/", headers={**researcher, "Accept": "text/html"})
    assert page.status_code == 200 and pseudonym in page.text and not leaks(page.content)
    (study,) = client.get("/api/studies", headers=researcher).json()["studies"]
    assert study["patient_id"] == pseudonym and study["patient_birth_date"] == ""
    assert study["study_instance_uid"] == series[0].StudyInstanceUID


def test_dicomweb_gives_one_consistent_pseudonym_and_unchanged_pixels(setup) -> None:  # noqa: ANN001
    client, archive, series = setup
    researcher = auth_headers(bearer_token(archive.engine, Role.RESEARCHER))
    pseudonymizer: Pseudonymizer = client.app.state.pseudonymizer
    ds = series[0]
    (study,) = client.get("/dicomweb/studies", headers=researcher).json()
    assert study["00100020"]["Value"] == [pseudonymizer.patient_id(PATIENT_ID)]
    assert study["00100010"]["Value"] == [{"Alphabetic": pseudonymizer.patient_name(PATIENT_ID)}]
    metadata = client.get(f"/dicomweb/studies/{ds.StudyInstanceUID}/metadata", headers=researcher).json()
    assert {m["00100020"]["Value"][0] for m in metadata} == {pseudonymizer.patient_id(PATIENT_ID)}
    assert all("Value" not in m.get("00100030", {}) for m in metadata)
    url = f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
    response = client.get(url, headers={**researcher, "Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'})
    media = parse_media_type(response.headers["content-type"])
    (part,) = parse_multipart(response.content, media.params["boundary"])
    served = pydicom.dcmread(io.BytesIO(part.content(response.content)))
    assert served.PatientID == pseudonymizer.patient_id(PATIENT_ID) and str(served.PatientName) == pseudonymizer.patient_name(PATIENT_ID)
    assert "PatientBirthDate" not in served and "OtherPatientIDs" not in served and "OtherPatientIDsSequence" not in served
    assert served.PixelData == ds.PixelData and served.SOPInstanceUID == ds.SOPInstanceUID
    # The archive keeps the original: only what the researcher is sent changes.
    (instance,) = [i for i in archive.instances_of(ds.StudyInstanceUID) if i.sop_instance_uid == ds.SOPInstanceUID]
    assert pydicom.dcmread(archive.path_of(instance)).PatientID == PATIENT_ID


@pytest.mark.parametrize(
    "url",
    [
        f"/dicomweb/studies?PatientName={NAME}",
        f"/dicomweb/studies?PatientID={PATIENT_ID}",
        f"/dicomweb/studies?00100030={BIRTH_DATE}",
        f"/dicomweb/series?PatientID={PATIENT_ID}",
        f"/api/studies?patient_name={NAME}",
        f"/api/studies?patient_id={PATIENT_ID}",
        f"/ui/?patient_id={PATIENT_ID}",
    ],
)
def test_a_researcher_may_not_search_by_identity(setup, url: str) -> None:  # noqa: ANN001
    client, archive, _ = setup
    response = client.get(url, headers=auth_headers(bearer_token(archive.engine, Role.RESEARCHER)))
    assert response.status_code == 403 and "de-identified" in response.json()["detail"]
    assert client.get(url, headers=auth_headers(bearer_token(archive.engine, Role.RADIOLOGIST))).status_code == 200


def test_pseudonyms_depend_on_the_secret() -> None:
    first, second = Pseudonymizer(b"a" * 32), Pseudonymizer(b"b" * 32)
    assert first.patient_id(PATIENT_ID) == first.patient_id(PATIENT_ID) != second.patient_id(PATIENT_ID)
    assert first.patient_id(PATIENT_ID) != first.patient_id("MRN-99887767")
