"""The DICOMweb router in process (FastAPI TestClient over a temporary archive).

These cover what a real client rarely sends: bad parameters, Accept negotiation,
frames of every pixel data layout, bulk data paths and broken STOW-RS requests.
The same services over real HTTP with dicomweb-client are in
tests/integration/test_dicomweb_client.py.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

from radpilot.archive import Archive
from radpilot.dicom.part10 import normalize_part10
from radpilot.pacs.dicomweb import make_dicomweb_router
from radpilot.pacs.multipart import parse_media_type, parse_multipart
from tests.factories import make_ct_dataset, make_ct_series, to_part10_bytes

OHIF_ACCEPT = "multipart/related; type=application/octet-stream; transfer-syntax=*"
DICOM_PART = 'multipart/related; type="application/dicom"'


@pytest.fixture
def archive(tmp_path: Path) -> Iterator[Archive]:
    store = Archive(tmp_path / "dicom", f"sqlite:///{tmp_path / 'index.sqlite3'}", durability="none")
    yield store
    store.close()


def make_client(archive: Archive, **options) -> TestClient:
    app = FastAPI()
    app.include_router(make_dicomweb_router(archive, **options), prefix="/dicomweb")
    return TestClient(app)


@pytest.fixture
def client(archive: Archive) -> TestClient:
    return make_client(archive)


def store(archive: Archive, data: bytes) -> Dataset:
    result = archive.store_file_bytes(data)
    assert result.outcome.accepted, result.message
    return pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)


def store_testfile(archive: Archive, name: str) -> tuple[Dataset, Path]:
    path = Path(get_testdata_file(name))
    return store(archive, path.read_bytes()), path


def instance_path(ds: Dataset) -> str:
    return f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"


def multipart_parts(response) -> list[tuple[dict[str, str], bytes]]:  # noqa: ANN001 - httpx Response
    media = parse_media_type(response.headers["content-type"])
    assert media.type == "multipart/related"
    parts = parse_multipart(response.content, media.params["boundary"])
    return [(p.headers, p.content(response.content)) for p in parts]


def stow_body(parts: list[tuple[str, bytes]], boundary: str = "stowboundary") -> bytes:
    out = b""
    for content_type, data in parts:
        out += f"--{boundary}\r\nContent-Type: {content_type}\r\n\r\n".encode() + data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


def post_stow(client: TestClient, parts: list[tuple[str, bytes]], url: str = "/dicomweb/studies"):  # noqa: ANN201
    return client.post(url, content=stow_body(parts), headers={"Content-Type": f'{DICOM_PART}; boundary="stowboundary"'})


# -- QIDO-RS ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query, parameter, fragment",
    [
        ("StudyDate=2024-01-02", "StudyDate", "is not a date"),
        ("limit=-1", "limit", "must not be negative"),
        ("offset=abc", "offset", "non-negative integer"),
        ("NoSuchAttribute=1", "NoSuchAttribute", "neither a DICOM attribute keyword"),
        ("includefield=Bogus", "includefield", "Bogus"),
        ("fuzzymatching=maybe", "fuzzymatching", "true or false"),
        ("SeriesInstanceUID=1.2.3", "SeriesInstanceUID", "series-level key"),
        ("PatientID=A&PatientID=B", "PatientID", "more than once"),
    ],
)
def test_bad_query_parameters_give_400(client: TestClient, query: str, parameter: str, fragment: str) -> None:
    response = client.get(f"/dicomweb/studies?{query}")
    assert response.status_code == 400
    body = response.json()
    assert body["parameter"] == parameter
    assert fragment in body["error"]


def test_tag_keys_uid_lists_includefield_and_warning(archive: Archive, client: TestClient) -> None:
    first = store(archive, to_part10_bytes(make_ct_dataset(patient_id="P1")))
    second = store(archive, to_part10_bytes(make_ct_dataset(patient_id="P2")))
    store(archive, to_part10_bytes(make_ct_dataset(patient_id="P3")))
    response = client.get(
        "/dicomweb/studies",
        params=[
            ("0020000D", f"{first.StudyInstanceUID},{second.StudyInstanceUID}"),
            ("includefield", "00100020,StudyDescription"),
            ("includefield", "PatientBirthDate"),
            ("PatientComments", "x"),  # a valid attribute the index cannot match on
            ("fuzzymatching", "false"),
        ],
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/dicom+json"
    assert sorted(r["00100020"]["Value"][0] for r in response.json()) == ["P1", "P2"]
    assert "PatientComments" in response.headers["warning"]


def test_no_match_is_200_with_empty_array(client: TestClient) -> None:
    response = client.get("/dicomweb/studies?PatientID=nobody")
    assert response.status_code == 200
    assert response.json() == []


def test_qido_refuses_xml_only_accept(client: TestClient) -> None:
    response = client.get("/dicomweb/studies", headers={"Accept": "application/dicom+xml"})
    assert response.status_code == 406
    assert "application/dicom+json" in response.json()["error"]


def test_all_series_carry_study_attributes(archive: Archive, client: TestClient) -> None:
    ds = store(archive, to_part10_bytes(make_ct_dataset()))
    (series,) = client.get("/dicomweb/series").json()
    assert series["00100020"]["Value"] == [ds.PatientID]
    assert series["0020000E"]["Value"] == [ds.SeriesInstanceUID]
    assert series["00081190"]["Value"][0].endswith(f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}")


# -- WADO-RS: instances and negotiation -----------------------------------------------


def test_single_part_instance_and_unknown_resources(archive: Archive, client: TestClient) -> None:
    data = to_part10_bytes(make_ct_dataset())
    ds = store(archive, data)
    response = client.get(instance_path(ds), headers={"Accept": "application/dicom"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/dicom")
    assert response.content == data
    assert client.get(f"/dicomweb/studies/{ds.StudyInstanceUID}/series/1.2.3").status_code == 404
    missing = client.get(f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/9.9")
    assert missing.status_code == 404
    assert "instance 9.9 is not in series" in missing.json()["error"]
    # a whole series cannot be one bare application/dicom body
    other = store(archive, to_part10_bytes(make_ct_dataset(study_uid=ds.StudyInstanceUID, series_uid=ds.SeriesInstanceUID)))
    assert other.SeriesInstanceUID == ds.SeriesInstanceUID
    series_url = f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
    assert client.get(series_url, headers={"Accept": "application/dicom"}).status_code == 406


def test_implicit_vr_instance_is_transcoded_on_request(archive: Archive, client: TestClient) -> None:
    source = make_ct_dataset()
    source.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    ds = store(archive, to_part10_bytes(source))
    accept = f"{DICOM_PART}; transfer-syntax={ExplicitVRLittleEndian}"
    ((headers, data),) = multipart_parts(client.get(instance_path(ds), headers={"Accept": accept}))
    assert f"transfer-syntax={ExplicitVRLittleEndian}" in headers["content-type"]
    back = pydicom.dcmread(io.BytesIO(data))
    assert back.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert back.PixelData == source.PixelData
    jpeg = f"{DICOM_PART}; transfer-syntax=1.2.840.10008.1.2.4.50"
    refused = client.get(instance_path(ds), headers={"Accept": jpeg})
    assert refused.status_code == 406
    assert ImplicitVRLittleEndian in refused.json()["error"]


# -- WADO-RS: frames ---------------------------------------------------------------------


def test_frames_of_big_endian_and_deflated_files_are_little_endian(archive: Archive, client: TestClient) -> None:
    for name in ("MR_small_bigendian.dcm", "image_dfl.dcm"):
        ds, path = store_testfile(archive, name)
        expected = pydicom.dcmread(path).pixel_array
        response = client.get(instance_path(ds) + "/frames/1", headers={"Accept": OHIF_ACCEPT})
        ((headers, frame),) = multipart_parts(response)
        assert headers["content-type"] == f"application/octet-stream; transfer-syntax={ExplicitVRLittleEndian}"
        dtype = expected.dtype.newbyteorder("<")
        assert np.array_equal(np.frombuffer(frame, dtype=dtype).reshape(expected.shape), expected), name


def test_rle_multiframe_frames_as_stored(archive: Archive, client: TestClient) -> None:
    ds, path = store_testfile(archive, "SC_rgb_rle_2frame.dcm")
    stored = list(generate_frames(pydicom.dcmread(path).PixelData, number_of_frames=2))
    parts = multipart_parts(client.get(instance_path(ds) + "/frames/2,1", headers={"Accept": OHIF_ACCEPT}))
    assert [p[1] for p in parts] == [stored[1], stored[0]]
    assert parts[0][0]["content-type"] == "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.5"
    natural = multipart_parts(client.get(instance_path(ds) + "/frames/1"))
    assert natural[0][0]["content-type"] == "image/dicom-rle; transfer-syntax=1.2.840.10008.1.2.5"
    plain = client.get(instance_path(ds) + "/frames/1", headers={"Accept": 'multipart/related; type="application/octet-stream"'})
    assert plain.status_code == 406, "compressed frames are not decompressed"


def test_one_bit_frames_that_do_not_start_on_a_byte(archive: Archive, client: TestClient) -> None:
    ds = make_ct_dataset(rows=5, columns=5)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 1, 1, 0, 0
    for keyword in ("RescaleIntercept", "RescaleSlope", "WindowCenter", "WindowWidth"):
        delattr(ds, keyword)
    ds.NumberOfFrames = 3
    bits = np.random.default_rng(1).integers(0, 2, size=3 * 25, dtype=np.uint8)
    ds.PixelData = np.packbits(bits, bitorder="little").tobytes()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    stored = store(archive, to_part10_bytes(ds))
    parts = multipart_parts(client.get(instance_path(stored) + "/frames/2,3", headers={"Accept": OHIF_ACCEPT}))
    assert len(parts) == 2
    for (_, frame), number in zip(parts, (2, 3), strict=True):
        unpacked = np.unpackbits(np.frombuffer(frame, np.uint8), bitorder="little")[:25]
        assert np.array_equal(unpacked, bits[(number - 1) * 25 : number * 25])


def test_frame_errors(archive: Archive, client: TestClient) -> None:
    source = make_ct_dataset()
    ds = store(archive, to_part10_bytes(source))
    beyond = client.get(instance_path(ds) + "/frames/2")
    assert beyond.status_code == 404
    assert "frame 2 does not exist: the instance has 1 frame(s)" in beyond.json()["error"]
    assert client.get(instance_path(ds) + "/frames/0").status_code == 400
    assert client.get(instance_path(ds) + "/frames/a,b").status_code == 400
    jpeg_only = client.get(instance_path(ds) + "/frames/1", headers={"Accept": 'multipart/related; type="image/jpeg"'})
    assert jpeg_only.status_code == 406
    single = client.get(instance_path(ds) + "/frames/1", headers={"Accept": "application/octet-stream"})
    assert single.status_code == 200
    assert single.content == source.PixelData
    assert single.headers["content-type"] == f"application/octet-stream; transfer-syntax={ExplicitVRLittleEndian}"


# -- WADO-RS: metadata and bulk data -------------------------------------------------


def test_metadata_bulk_uris_resolve(archive: Archive, client: TestClient) -> None:
    source = make_ct_dataset()
    source.add_new(0x00282000, "OB", bytes(range(256)) * 8)  # ICC profile, 2 KiB
    item = Dataset()
    item.add_new(0x00091010, "OB", b"\x07" * 3000)
    source.add_new(0x00091001, "LO", "RADPILOT TEST")
    source.add_new(0x00540016, "SQ", pydicom.Sequence([item]))
    ds = store(archive, to_part10_bytes(source))
    (metadata,) = client.get(instance_path(ds) + "/metadata").json()
    assert metadata["00083002"]["Value"] == [ExplicitVRLittleEndian]
    icc_uri = metadata["00282000"]["BulkDataURI"]
    nested_uri = metadata["00540016"]["Value"][0]["00091010"]["BulkDataURI"]
    assert nested_uri.endswith("/bulk/00540016/0/00091010")
    for url, expected in ((icc_uri, bytes(range(256)) * 8), (nested_uri, b"\x07" * 3000)):
        ((headers, value),) = multipart_parts(client.get(url))
        assert headers["content-type"] == "application/octet-stream"
        assert value == expected
    ((_, pixels),) = multipart_parts(client.get(metadata["7FE00010"]["BulkDataURI"]))
    assert pixels == source.PixelData
    assert client.get(instance_path(ds) + "/bulk/00540016/5/00091010").status_code == 404


def test_metadata_of_unknown_study_is_404(client: TestClient) -> None:
    response = client.get("/dicomweb/studies/1.2.3/metadata")
    assert response.status_code == 404
    assert response.json()["error"] == "study 1.2.3 is not in the archive"


# -- STOW-RS ---------------------------------------------------------------------------


def test_stow_wrong_content_types(client: TestClient) -> None:
    assert client.post("/dicomweb/studies", content=b"x", headers={"Content-Type": "application/dicom"}).status_code == 415
    assert client.post("/dicomweb/studies", content=b"x").status_code == 415
    json_type = client.post(
        "/dicomweb/studies",
        content=b"x",
        headers={"Content-Type": 'multipart/related; type="application/dicom+json"; boundary=a'},
    )
    assert json_type.status_code == 415
    no_boundary = client.post("/dicomweb/studies", content=b"x", headers={"Content-Type": DICOM_PART})
    assert no_boundary.status_code == 400
    assert "no boundary" in no_boundary.json()["error"]


def test_stow_unparseable_or_empty_bodies(client: TestClient) -> None:
    headers = {"Content-Type": f"{DICOM_PART}; boundary=stowboundary"}
    garbage = client.post("/dicomweb/studies", content=b"garbage", headers=headers)
    assert garbage.status_code == 400
    assert "never appears" in garbage.json()["error"]
    truncated = client.post("/dicomweb/studies", content=stow_body([("application/dicom", b"x" * 50)])[:-30], headers=headers)
    assert truncated.status_code == 400
    assert "truncated" in truncated.json()["error"]
    empty = client.post("/dicomweb/studies", content=b"--stowboundary--\r\n", headers=headers)
    assert empty.status_code == 400
    assert "no parts" in empty.json()["error"]
    assert client.post("/dicomweb/studies", content=b"", headers=headers).status_code == 400


def test_stow_body_over_the_limit_is_413(archive: Archive) -> None:
    small = make_client(archive, max_stow_bytes=1000)
    body = stow_body([("application/dicom", to_part10_bytes(make_ct_dataset()))])
    response = small.post("/dicomweb/studies", content=body, headers={"Content-Type": f"{DICOM_PART}; boundary=stowboundary"})
    assert response.status_code == 413
    assert "1000 bytes" in response.json()["error"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit is checked while reading
        yield body[:600]
        yield body[600:]

    streamed = small.post("/dicomweb/studies", content=chunks(), headers={"Content-Type": f"{DICOM_PART}; boundary=stowboundary"})
    assert streamed.status_code == 413
    assert archive.instance_count() == 0


def test_stow_non_dicom_parts(archive: Archive, client: TestClient) -> None:
    only_text = post_stow(client, [("text/plain", b"hello")])
    assert only_text.status_code == 415
    good = to_part10_bytes(make_ct_dataset())
    mixed = post_stow(client, [("text/plain", b"hello"), ("application/dicom", good)])
    assert mixed.status_code == 202
    failed = mixed.json()["00081198"]["Value"]
    assert failed[0]["00081197"]["Value"] == [0xC000]
    assert "text/plain" in failed[0]["0040A160"]["Value"][0]
    assert archive.instance_count() == 1


def test_stow_to_a_study_refuses_other_studies(archive: Archive, client: TestClient) -> None:
    series = make_ct_series(2)
    stranger = make_ct_dataset()
    study = series[0].StudyInstanceUID
    response = post_stow(
        client,
        [("application/dicom", to_part10_bytes(ds)) for ds in [*series, stranger]],
        url=f"/dicomweb/studies/{study}",
    )
    assert response.status_code == 202
    body = response.json()
    assert body["00081190"]["Value"][0].endswith(f"/dicomweb/studies/{study}")
    (failed,) = body["00081198"]["Value"]
    assert failed["00081155"]["Value"] == [stranger.SOPInstanceUID]
    assert failed["00081197"]["Value"] == [0xA900]
    assert study in failed["0040A160"]["Value"][0]
    assert len(body["00081199"]["Value"]) == 2
    assert archive.instance_count() == 2
    assert archive.instances_of(stranger.StudyInstanceUID) == []


def test_stow_base64_part_and_missing_preamble(archive: Archive, client: TestClient) -> None:
    first, second = make_ct_dataset(), make_ct_dataset()
    without_preamble = io.BytesIO()
    pydicom.dcmwrite(without_preamble, second)  # no preamble, no DICM, no group length
    encoded = base64.b64encode(to_part10_bytes(first))
    body = (
        b"--stowboundary\r\nContent-Type: application/dicom\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + encoded
        + b"\r\n--stowboundary\r\n\r\n"  # no headers at all: the type parameter applies
        + without_preamble.getvalue()
        + b"\r\n--stowboundary--"
    )
    response = client.post("/dicomweb/studies", content=body, headers={"Content-Type": f"{DICOM_PART}; boundary=stowboundary"})
    assert response.status_code == 200, response.text
    assert archive.instance_count() == 2


def test_normalize_part10_leaves_real_files_alone() -> None:
    data = to_part10_bytes(make_ct_dataset())
    assert normalize_part10(data) is data
    assert normalize_part10(data[128:])[128:] == data[128:]
    assert normalize_part10(b"garbage") == b"garbage"


def test_stow_duplicate_is_success_and_conflict_is_409(archive: Archive, client: TestClient) -> None:
    ds = make_ct_dataset()
    data = to_part10_bytes(ds)
    assert post_stow(client, [("application/dicom", data)]).status_code == 200
    assert post_stow(client, [("application/dicom", data)]).status_code == 200
    ds.PatientName = "CHANGED^NAME"
    conflict = post_stow(client, [("application/dicom", to_part10_bytes(ds))])
    assert conflict.status_code == 409
    (failed,) = conflict.json()["00081198"]["Value"]
    assert failed["00081197"]["Value"] == [0xA900]
    assert archive.instance_count() == 1
    (instance,) = archive.instances_of(ds.StudyInstanceUID)
    assert archive.read_bytes(instance) == data


def test_uids_in_retrieve_urls_of_generated_studies(archive: Archive, client: TestClient) -> None:
    ds = make_ct_dataset(study_uid=generate_uid())
    response = post_stow(client, [("application/dicom", to_part10_bytes(ds))])
    (item,) = response.json()["00081199"]["Value"]
    assert item["00081190"]["Value"][0].endswith(instance_path(ds))
