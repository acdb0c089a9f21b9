"""DICOMweb over real HTTP: a started RadPilot node driven by the dicomweb-client package.

Every test talks to http://127.0.0.1:<port>/dicomweb of the ``radpilot`` fixture
(archive + DIMSE + uvicorn), the way a PACS, a script or the OHIF viewer would.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import httpx
import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.uid import JPEG2000, ExplicitVRLittleEndian, JPEGBaseline8Bit

from radpilot.pacs.multipart import parse_media_type, parse_multipart
from tests.factories import make_ct_dataset, make_ct_series, to_part10_bytes

pytestmark = pytest.mark.integration

OHIF_ACCEPT = "multipart/related; type=application/octet-stream; transfer-syntax=*"


@pytest.fixture
def client(radpilot) -> DICOMwebClient:  # noqa: ANN001 - RunningNode from tests/fixtures/radpilot.py
    return radpilot.dicomweb_client()


def stow_raw(node, parts: list[tuple[str, bytes]], boundary: str = "rp-test-boundary") -> httpx.Response:  # noqa: ANN001 - RunningNode
    """POST a hand-built multipart/related body (dicomweb-client only sends well-formed datasets)."""
    body = b""
    for content_type, data in parts:
        body += f"--{boundary}\r\nContent-Type: {content_type}\r\n\r\n".encode() + data + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    headers = {"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}', **node.headers}
    return httpx.post(f"{node.dicomweb_url}/studies", content=body, headers=headers, timeout=60)


def file_digests(archive) -> dict[str, str]:  # noqa: ANN001 - Archive
    return {str(p.relative_to(archive.storage_dir)): hashlib.sha256(p.read_bytes()).hexdigest() for p in archive.storage_dir.rglob("*.dcm")}


def pydicom_testfile(name: str) -> Path:
    path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"pydicom test file {name} is not available")
    return Path(path)


# -- STOW-RS + WADO-RS round trip ---------------------------------------------------------


def test_store_then_retrieve_byte_identical_pixels(radpilot, client: DICOMwebClient) -> None:  # noqa: ANN001
    series = make_ct_series(3)
    response = client.store_instances(series)
    assert len(response.ReferencedSOPSequence) == 3
    assert "FailedSOPSequence" not in response
    assert response.RetrieveURL == f"{radpilot.dicomweb_url}/studies/{series[0].StudyInstanceUID}"
    assert radpilot.archive.instance_count() == 3
    for original in series:
        retrieved = client.retrieve_instance(original.StudyInstanceUID, original.SeriesInstanceUID, original.SOPInstanceUID)
        assert retrieved.SOPInstanceUID == original.SOPInstanceUID
        assert retrieved.PixelData == original.PixelData
    whole = client.retrieve_study(series[0].StudyInstanceUID)
    assert sorted(d.SOPInstanceUID for d in whole) == sorted(d.SOPInstanceUID for d in series)
    item = response.ReferencedSOPSequence[0]
    assert item.RetrieveURL.startswith(f"{radpilot.dicomweb_url}/studies/{series[0].StudyInstanceUID}/series/")


def test_retrieved_file_is_the_stored_file(radpilot, client: DICOMwebClient) -> None:  # noqa: ANN001
    data = pydicom_testfile("CT_small.dcm").read_bytes()
    ds = pydicom.dcmread(io.BytesIO(data))
    assert stow_raw(radpilot, [("application/dicom", data)]).status_code == 200
    series_url = f"{radpilot.dicomweb_url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
    url = f"{series_url}/instances/{ds.SOPInstanceUID}"
    response = requests.get(
        url, headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*', **radpilot.headers}, timeout=30
    )
    media = parse_media_type(response.headers["Content-Type"])
    (part,) = parse_multipart(response.content, media.params["boundary"])
    assert part.content(response.content) == data


# -- QIDO-RS ---------------------------------------------------------------------------


@pytest.fixture
def three_studies(client: DICOMwebClient) -> list[list[Dataset]]:
    studies = [
        make_ct_series(2, patient_id="QIDO1", patient_name="SMITH^ANNA", study_date="20230105", accession="A1"),
        make_ct_series(1, patient_id="QIDO2", patient_name="SMITHERS^BOB", study_date="20230610", accession="A2"),
        make_ct_series(3, patient_id="QIDO3", patient_name="JONES^CARL", study_date="20240220", accession="A3"),
    ]
    for study in studies:
        client.store_instances(study)
    return studies


def values(results: list[dict], tag: str) -> list:
    return [r[tag]["Value"][0] for r in results]


def test_search_for_studies(client: DICOMwebClient, three_studies: list[list[Dataset]]) -> None:
    assert values(client.search_for_studies(search_filters={"PatientID": "QIDO2"}), "00100020") == ["QIDO2"]
    smiths = client.search_for_studies(search_filters={"PatientName": "SMITH*"})
    assert sorted(values(smiths, "00100020")) == ["QIDO1", "QIDO2"]
    assert smiths[0]["00100010"]["Value"][0]["Alphabetic"].startswith("SMITH")
    in_2023 = client.search_for_studies(search_filters={"StudyDate": "20230101-20231231"})
    assert sorted(values(in_2023, "00100020")) == ["QIDO1", "QIDO2"]
    (result,) = client.search_for_studies(search_filters={"00100020": "QIDO3"})
    assert result["00201208"]["Value"] == [3]  # NumberOfStudyRelatedInstances
    assert result["00201206"]["Value"] == [1]  # NumberOfStudyRelatedSeries
    assert result["00080061"]["Value"] == ["CT"]  # ModalitiesInStudy
    assert result["00081190"]["Value"][0].endswith(f"/studies/{three_studies[2][0].StudyInstanceUID}")


def test_paging_and_fields(client: DICOMwebClient, three_studies: list[list[Dataset]]) -> None:
    everything = client.search_for_studies()
    assert len(everything) == 3
    pages = [client.search_for_studies(limit=2, offset=offset) for offset in (0, 2, 4)]
    assert [len(p) for p in pages] == [2, 1, 0]
    assert sorted(values(pages[0] + pages[1], "0020000D")) == sorted(values(everything, "0020000D"))
    assert len(client.search_for_studies(limit=1, get_remaining=True)) == 3
    (with_fields,) = client.search_for_studies(search_filters={"PatientID": "QIDO1"}, fields=["StudyDescription", "00200010"])
    assert with_fields["00081030"]["Value"] == ["CT CHEST"]
    assert with_fields["00200010"]["Value"] == ["1"]
    all_fields = client.search_for_instances(search_filters={"PatientID": "QIDO1"}, fields=["all"])
    assert len(all_fields) == 2
    assert {"00100020", "00080021", "00180015", "00280011"} <= set(all_fields[0])  # patient, series and image keys


def test_search_for_series_and_instances(client: DICOMwebClient, three_studies: list[list[Dataset]]) -> None:
    study = three_studies[2]
    (series,) = client.search_for_series(study[0].StudyInstanceUID)
    assert series["0020000E"]["Value"] == [study[0].SeriesInstanceUID]
    assert series["00201209"]["Value"] == [3]  # NumberOfSeriesRelatedInstances
    assert series["00080060"]["Value"] == ["CT"]
    assert len(client.search_for_series(search_filters={"Modality": "CT"})) == 3
    instances = client.search_for_instances(study[0].StudyInstanceUID, study[0].SeriesInstanceUID)
    assert sorted(values(instances, "00080018")) == sorted(d.SOPInstanceUID for d in study)
    assert values(instances, "00200013") == [1, 2, 3]
    assert values(instances, "00280010") == [32, 32, 32]
    (second,) = client.search_for_instances(search_filters={"InstanceNumber": "2", "PatientID": "QIDO3"})
    assert second["00080018"]["Value"] == [study[1].SOPInstanceUID]
    assert len(client.search_for_instances(study[0].StudyInstanceUID)) == 3
    assert client.search_for_instances(search_filters={"PatientID": "nobody"}) == []


def test_bad_query_is_400_with_reason(radpilot) -> None:  # noqa: ANN001
    response = httpx.get(f"{radpilot.dicomweb_url}/studies", params={"StudyDate": "2023-01-05"}, headers=radpilot.headers)
    assert response.status_code == 400
    assert response.json()["parameter"] == "StudyDate"
    with pytest.raises(requests.HTTPError) as raised:
        radpilot.dicomweb_client().search_for_studies(search_filters={"NotAnAttribute": "x"})
    assert raised.value.response.status_code == 400
    assert "NotAnAttribute" in raised.value.response.json()["error"]


# -- metadata, frames, bulk data ---------------------------------------------------------


def test_retrieve_series_metadata(radpilot, client: DICOMwebClient) -> None:  # noqa: ANN001
    series = make_ct_series(2)
    client.store_instances(series)
    metadata = client.retrieve_series_metadata(series[0].StudyInstanceUID, series[0].SeriesInstanceUID)
    assert len(metadata) == 2
    datasets = [Dataset.from_json(m, bulk_data_uri_handler=lambda uri: b"") for m in metadata]
    by_uid = {d.SOPInstanceUID: d for d in datasets}
    for original in series:
        header = by_uid[original.SOPInstanceUID]
        for keyword in ("PatientName", "ImagePositionPatient", "PixelSpacing", "Rows", "RescaleIntercept", "ImageType"):
            assert header[keyword].value == original[keyword].value, keyword
    pixel_uri = metadata[0]["7FE00010"]["BulkDataURI"]
    assert pixel_uri.startswith(radpilot.dicomweb_url)
    (pixels,) = client.retrieve_bulkdata(pixel_uri)
    assert bytes(pixels) in {s.PixelData for s in series}
    study_metadata = client.retrieve_study_metadata(series[0].StudyInstanceUID)
    assert len(study_metadata) == 2
    (one,) = [client.retrieve_instance_metadata(series[0].StudyInstanceUID, series[0].SeriesInstanceUID, series[0].SOPInstanceUID)]
    assert one["00080018"]["Value"] == [series[0].SOPInstanceUID]


def test_native_frames(client: DICOMwebClient) -> None:
    ds = make_ct_dataset(rows=64, columns=48)
    client.store_instances([ds])
    uids = (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    (frame,) = client.retrieve_instance_frames(*uids, frame_numbers=[1])
    assert frame == ds.PixelData
    (octet,) = client.retrieve_instance_frames(
        *uids, frame_numbers=[1], media_types=(("application/octet-stream", ExplicitVRLittleEndian),)
    )
    assert octet == ds.PixelData


@pytest.mark.parametrize(
    "name, syntax, media_type",
    [("SC_rgb_jpeg_dcmtk.dcm", JPEGBaseline8Bit, "image/jpeg"), ("JPEG2000.dcm", JPEG2000, "image/jp2")],
)
def test_compressed_frames(radpilot, client: DICOMwebClient, name: str, syntax: str, media_type: str) -> None:  # noqa: ANN001
    path = pydicom_testfile(name)
    original = pydicom.dcmread(path)
    assert original.file_meta.TransferSyntaxUID == syntax
    expected = next(generate_frames(original.PixelData, number_of_frames=int(original.get("NumberOfFrames") or 1)))
    assert stow_raw(radpilot, [("application/dicom", path.read_bytes())]).status_code == 200
    uids = (original.StudyInstanceUID, original.SeriesInstanceUID, original.SOPInstanceUID)
    (default,) = client.retrieve_instance_frames(*uids, frame_numbers=[1])
    assert default == expected
    (typed,) = client.retrieve_instance_frames(*uids, frame_numbers=[1], media_types=((media_type, syntax),))
    assert typed == expected
    url = f"{radpilot.dicomweb_url}/studies/{uids[0]}/series/{uids[1]}/instances/{uids[2]}/frames/1"
    response = requests.get(url, headers={"Accept": OHIF_ACCEPT, **radpilot.headers}, timeout=30)  # what OHIF v3 sends
    assert response.status_code == 200
    media = parse_media_type(response.headers["Content-Type"])
    (part,) = parse_multipart(response.content, media.params["boundary"])
    assert part.headers["content-type"] == f"application/octet-stream; transfer-syntax={syntax}"
    assert part.content(response.content) == expected


def test_unknown_instance_is_404(radpilot, client: DICOMwebClient) -> None:  # noqa: ANN001
    with pytest.raises(requests.HTTPError) as raised:
        client.retrieve_instance("1.2.3", "1.2.3.4", "1.2.3.4.5")
    assert raised.value.response.status_code == 404
    assert "study 1.2.3 is not in the archive" in raised.value.response.text


# -- STOW-RS failures -------------------------------------------------------------------


def test_broken_parts_beside_good_ones(radpilot) -> None:  # noqa: ANN001
    earlier = make_ct_dataset()
    assert stow_raw(radpilot, [("application/dicom", to_part10_bytes(earlier))]).status_code == 200
    before = file_digests(radpilot.archive)
    good = make_ct_series(2)
    truncated_ds = make_ct_dataset()
    truncated = to_part10_bytes(truncated_ds)[:-100]
    no_uid = make_ct_dataset()
    del no_uid.SOPInstanceUID
    parts = [
        ("application/dicom", to_part10_bytes(good[0])),
        ("application/dicom", truncated),
        ("application/dicom", b"this is not DICOM at all" * 20),
        ("application/dicom", to_part10_bytes(no_uid)),
        ("application/dicom", to_part10_bytes(good[1])),
    ]
    response = stow_raw(radpilot, parts)
    assert response.status_code == 202
    assert response.headers["content-type"] == "application/dicom+json"
    result = Dataset.from_json(response.json())
    assert sorted(i.ReferencedSOPInstanceUID for i in result.ReferencedSOPSequence) == sorted(d.SOPInstanceUID for d in good)
    failed = result.FailedSOPSequence
    assert len(failed) == 3
    assert [f.FailureReason for f in failed] == [0xC000, 0xC000, 0xC000]
    reasons = [f.TextValue for f in failed]
    assert "truncated" in reasons[0]
    assert failed[0].ReferencedSOPInstanceUID == truncated_ds.SOPInstanceUID
    assert "DICM" in reasons[1]
    assert "SOPInstanceUID" in reasons[2]
    assert radpilot.archive.instance_count() == 3
    after = file_digests(radpilot.archive)
    assert {k: v for k, v in after.items() if k in before} == before, "earlier files must not change"
    assert len(after) == 3


def test_conflicting_resend_keeps_first_copy(radpilot, client: DICOMwebClient) -> None:  # noqa: ANN001
    ds = make_ct_dataset()
    first = to_part10_bytes(ds)
    assert stow_raw(radpilot, [("application/dicom", first)]).status_code == 200
    ds.PixelData = bytes(len(ds.PixelData))
    response = stow_raw(radpilot, [("application/dicom", to_part10_bytes(ds))])
    assert response.status_code == 409
    (failed,) = Dataset.from_json(response.json()).FailedSOPSequence
    assert failed.FailureReason == 0xA900
    assert failed.ReferencedSOPInstanceUID == ds.SOPInstanceUID
    assert "already stored with different content" in failed.TextValue
    with pytest.raises(requests.HTTPError):
        client.store_instances([ds])  # dicomweb-client raises on 409
    kept = client.retrieve_instance(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    assert kept.PixelData == pydicom.dcmread(io.BytesIO(first)).PixelData
    assert radpilot.archive.instance_count() == 1
