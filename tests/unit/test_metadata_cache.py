"""WADO-RS metadata kept at ingest: the same answer as reading the file, without reading it — on SQLite and PostgreSQL."""

from __future__ import annotations

import io
import json
import zlib
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import DigitalXRayImageStorageForPresentation, ExplicitVRBigEndian, ExplicitVRLittleEndian, generate_uid
from sqlalchemy import delete, func, select

from radpilot.archive import Archive, StoreOutcome
from radpilot.archive.models import InstanceMetadata
from radpilot.dicom.json_model import DEFAULT_BULK_DATA_THRESHOLD, attribute_json, dataset_to_json, tag_key, with_bulk_base
from radpilot.pacs.dicomweb import make_dicomweb_router
from tests.factories import make_ct_dataset, make_ct_series, to_part10_bytes
from tests.helpers import shared_data_path

BASE = "http://testserver/dicomweb"
ACCEPT = {"Accept": "application/dicom+json"}


@pytest.fixture(params=["sqlite", "postgresql"])
def archive(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Archive]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'index.sqlite3'}"
    else:
        url = request.getfixturevalue("fresh_postgres_url")
    store = Archive(tmp_path / "dicom", url, durability="none")
    yield store
    store.close()


def make_client(archive: Archive, **options: int) -> TestClient:
    app = FastAPI()
    app.include_router(make_dicomweb_router(archive, **options), prefix="/dicomweb")
    return TestClient(app)


def reference_metadata(path: Path, transfer_syntax: str, url: str, threshold: int = DEFAULT_BULK_DATA_THRESHOLD) -> bytes:
    """One instance's metadata as WADO-RS built it before metadata was kept: read from the file on every request."""
    dataset = pydicom.dcmread(path, defer_size=None if transfer_syntax == "1.2.840.10008.1.2.1.99" else threshold)
    result = dataset_to_json(
        dataset,
        bulk_data_uri=lambda bulk_path: f"{url}/bulk/{bulk_path}",
        threshold=threshold,
        little_endian=transfer_syntax != ExplicitVRBigEndian,
    )
    result[tag_key(0x00083002)] = attribute_json("UI", transfer_syntax)
    return json.dumps(dict(sorted(result.items())), separators=(",", ":")).encode("utf-8")


def store(archive: Archive, data: bytes, **kwargs: object) -> Dataset:
    result = archive.store_file_bytes(data, **kwargs)
    assert result.outcome is StoreOutcome.STORED, result.message
    return pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)


def series_url(ds: Dataset) -> str:
    return f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"


def expected_series_metadata(archive: Archive, ds: Dataset, threshold: int = DEFAULT_BULK_DATA_THRESHOLD) -> bytes:
    """The series' metadata array as reading every file gives it, in the archive's order."""
    parts = []
    for instance in archive.instances_of(str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)):
        url = f"{BASE}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{instance.sop_instance_uid}"
        parts.append(reference_metadata(archive.path_of(instance), instance.transfer_syntax_uid, url, threshold))
    return b"[" + b",".join(parts) + b"]"


def kept_rows(archive: Archive) -> int:
    with archive.session() as session:
        return session.scalar(select(func.count()).select_from(InstanceMetadata)) or 0


def forget_kept_metadata(archive: Archive) -> None:
    """Make the archive look like one filled before metadata was kept at ingest."""
    with archive.session() as session, session.begin():
        session.execute(delete(InstanceMetadata))


def moved_away(archive: Archive, ds: Dataset) -> list[tuple[Path, Path]]:
    """Rename every file of the series, so that any attempt to read one fails."""
    moves = []
    for instance in archive.instances_of(str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)):
        path = archive.path_of(instance)
        hidden = path.with_name(path.name + ".away")
        path.rename(hidden)
        moves.append((path, hidden))
    return moves


def dx_with_trailing_padding() -> bytes:
    """A MONOCHROME1 DX with an ICC profile (bulk), a private sequence and an element after the pixel data."""
    ds = make_ct_dataset(modality="DX", rows=16, columns=16)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = DigitalXRayImageStorageForPresentation
    ds.PhotometricInterpretation, ds.PresentationLUTShape = "MONOCHROME1", "INVERSE"
    ds.add_new(0x00282000, "OB", bytes(range(256)) * 8)
    item = Dataset()
    item.add_new(0x00091010, "OB", b"\x07" * 3000)
    ds.add_new(0x00091001, "LO", "RADPILOT TEST")
    ds.add_new(0x00540016, "SQ", pydicom.Sequence([item]))
    ds.add_new(0xFFFCFFFC, "OB", b"\0" * 64)  # Data Set Trailing Padding: after the pixel data
    return to_part10_bytes(ds)


def real_ct_files(count: int) -> list[bytes]:
    folder = shared_data_path() / "ct-lung" / "LUNGCT-002" / "dicom"
    files = sorted(folder.glob("*.dcm"))[:count]
    if not files:
        pytest.skip(f"no CT under {folder}")
    return [f.read_bytes() for f in files]


def with_new_uids(data: bytes, study: str, series: str) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


SAMPLES = {
    # pydicom's own test files: real MR (in three transfer syntaxes), a SEG and an SR (derived objects).
    "mr_explicit": "MR_small.dcm",
    "mr_big_endian": "MR_small_bigendian.dcm",
    "mr_implicit": "MR_small_implicit.dcm",
    "seg": "liver_1frame.dcm",
    "seg_big_endian": "liver_expb_1frame.dcm",
    "sr": "test-SR.dcm",
}


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_kept_metadata_is_byte_identical_to_reading_the_file(archive: Archive, name: str) -> None:
    data = Path(get_testdata_file(SAMPLES[name])).read_bytes()
    ds = store(archive, data, derived=name.startswith(("seg", "sr")))
    assert kept_rows(archive) == 1
    expected = expected_series_metadata(archive, ds)
    moves = moved_away(archive, ds)  # served from what was kept, or this request fails
    response = make_client(archive).get(series_url(ds) + "/metadata", headers=ACCEPT)
    for path, hidden in moves:
        hidden.rename(path)
    assert response.status_code == 200
    assert response.content == expected


def served_without_files(archive: Archive, client: TestClient, ds: Dataset) -> bytes:
    """The series' metadata as served while every file of the series is renamed away."""
    moves = moved_away(archive, ds)
    try:
        response = client.get(series_url(ds) + "/metadata", headers=ACCEPT)
    finally:
        for path, hidden in moves:
            hidden.rename(path)
    assert response.status_code == 200
    return response.content


def test_real_ct_series_and_dx_metadata_match_reading_the_files_with_files_gone(archive: Archive) -> None:
    study, series = generate_uid(), generate_uid()
    for data in real_ct_files(8):  # deflated as shipped: the whole dataset is read, nothing deferred
        store(archive, with_new_uids(data, study, series))
    ct = Dataset()
    ct.StudyInstanceUID, ct.SeriesInstanceUID = study, series
    dx = store(archive, dx_with_trailing_padding())
    client = make_client(archive)
    for ds in (ct, dx):
        assert served_without_files(archive, client, ds) == expected_series_metadata(archive, ds)
    assert len(client.get(series_url(ct) + "/metadata", headers=ACCEPT).json()) == 8
    (dx_json,) = client.get(series_url(dx) + "/metadata", headers=ACCEPT).json()
    assert dx_json["FFFCFFFC"]["vr"] == "OB" and "InlineBinary" in dx_json["FFFCFFFC"]  # after the pixel data, still there
    assert dx_json["00540016"]["Value"][0]["00091010"]["BulkDataURI"].endswith(f"/instances/{dx.SOPInstanceUID}/bulk/00540016/0/00091010")


def test_study_metadata_joins_series_in_order_with_their_own_urls(archive: Archive) -> None:
    first = make_ct_series(3, series_number=1)
    study = str(first[0].StudyInstanceUID)
    second = make_ct_series(2, study_uid=study, series_number=2)
    for ds in second + first:
        store(archive, to_part10_bytes(ds))
    response = make_client(archive).get(f"/dicomweb/studies/{study}/metadata", headers=ACCEPT)
    assert response.status_code == 200
    parts = []
    for instance in archive.instances_of(study):
        series = next(ds.SeriesInstanceUID for ds in first + second if ds.SOPInstanceUID == instance.sop_instance_uid)
        url = f"{BASE}/studies/{study}/series/{series}/instances/{instance.sop_instance_uid}"
        parts.append(reference_metadata(archive.path_of(instance), instance.transfer_syntax_uid, url))
    assert response.content == b"[" + b",".join(parts) + b"]"
    assert [m["00200013"]["Value"][0] for m in response.json()] == [1, 2, 3, 1, 2]


def test_instance_stored_before_metadata_was_kept_is_read_once_then_kept(archive: Archive) -> None:
    series = make_ct_series(3)
    for ds in series:
        store(archive, to_part10_bytes(ds))
    forget_kept_metadata(archive)
    client = make_client(archive)
    expected = expected_series_metadata(archive, series[0])

    response = client.get(series_url(series[0]) + "/metadata", headers=ACCEPT)
    assert response.status_code == 200 and response.content == expected
    assert kept_rows(archive) == 3

    moves = moved_away(archive, series[0])
    again = client.get(series_url(series[0]) + "/metadata", headers=ACCEPT)
    for path, hidden in moves:
        hidden.rename(path)
    assert again.content == expected


def test_old_instance_whose_file_is_gone_is_left_out_and_nothing_is_kept(archive: Archive) -> None:
    series = make_ct_series(2)
    for ds in series:
        store(archive, to_part10_bytes(ds))
    forget_kept_metadata(archive)
    gone = archive.path_of(archive.instances_by_uid([str(series[0].SOPInstanceUID)])[0])
    gone.rename(gone.with_name("away"))
    try:
        response = make_client(archive).get(series_url(series[0]) + "/metadata", headers=ACCEPT)
    finally:
        gone.with_name("away").rename(gone)
    assert response.status_code == 200
    assert [m["00080018"]["Value"][0] for m in response.json()] == [str(series[1].SOPInstanceUID)]
    assert kept_rows(archive) == 1


def test_conflicting_resend_keeps_the_first_copys_metadata(archive: Archive) -> None:
    ds = make_ct_dataset(patient_name="FIRST^COPY")
    store(archive, to_part10_bytes(ds))
    ds.PatientName = "SECOND^COPY"
    assert archive.store_file_bytes(to_part10_bytes(ds)).outcome is StoreOutcome.CONFLICT
    (metadata,) = make_client(archive).get(series_url(ds) + "/metadata", headers=ACCEPT).json()
    assert metadata["00100010"]["Value"] == [{"Alphabetic": "FIRST^COPY"}]
    assert kept_rows(archive) == 1


def test_malformed_instance_keeps_no_metadata(archive: Archive) -> None:
    good = to_part10_bytes(make_ct_dataset())
    for bad in (b"", b"\0" * 128 + b"DICM" + b"\x02\x00", good[: len(good) - 100], good.replace(b"DICM", b"DICX", 1)):
        assert archive.store_file_bytes(bad).outcome is StoreOutcome.MALFORMED
    assert kept_rows(archive) == 0


def test_deleting_instances_deletes_their_kept_metadata(archive: Archive) -> None:
    series = make_ct_series(2)
    for ds in series:
        store(archive, to_part10_bytes(ds))
    assert kept_rows(archive) == 2
    archive.delete_instances([str(series[0].SOPInstanceUID)])
    assert kept_rows(archive) == 1
    archive.delete_instances([str(series[1].SOPInstanceUID)])
    assert kept_rows(archive) == 0


def test_kept_metadata_is_compressed_and_holds_bare_bulk_paths(archive: Archive) -> None:
    ds = store(archive, dx_with_trailing_padding())
    with archive.session() as session:
        threshold, document = session.execute(select(InstanceMetadata.bulk_data_threshold, InstanceMetadata.document)).one()
    assert threshold == DEFAULT_BULK_DATA_THRESHOLD
    text = zlib.decompress(document)
    assert len(document) < len(text)
    assert json.loads(text)["7FE00010"]["BulkDataURI"] == "7FE00010"
    assert str(ds.SOPInstanceUID).encode() in text


def test_router_with_another_bulk_threshold_reads_the_file(archive: Archive) -> None:
    ds = store(archive, dx_with_trailing_padding())
    client = make_client(archive, bulk_data_threshold=4096)
    response = client.get(series_url(ds) + "/metadata", headers=ACCEPT)
    assert response.content == expected_series_metadata(archive, ds, threshold=4096)
    (metadata,) = response.json()
    assert "InlineBinary" in metadata["00282000"]  # 2 KiB: inline under a 4 KiB threshold, bulk under the kept 1 KiB one


def test_bulk_base_is_json_escaped_and_touches_only_bulk_uris() -> None:
    document = b'{"00081030":{"vr":"LO","Value":["\\"BulkDataURI\\":\\""]},"7FE00010":{"vr":"OW","BulkDataURI":"7FE00010"}}'
    served = json.loads(with_bulk_base(document, 'http://h/d"w\\b/studies/1'))
    assert served["00081030"]["Value"] == ['"BulkDataURI":"']
    assert served["7FE00010"]["BulkDataURI"] == 'http://h/d"w\\b/studies/1/bulk/7FE00010'


@pytest.mark.parametrize("big_endian", [False, True])
def test_explicit_big_endian_ct_bulk_values_survive(archive: Archive, big_endian: bool) -> None:
    ds = make_ct_dataset()
    if big_endian:
        ds.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
    data = to_part10_bytes(ds)
    stored = store(archive, data)
    assert stored.file_meta.TransferSyntaxUID == (ExplicitVRBigEndian if big_endian else ExplicitVRLittleEndian)
    response = make_client(archive).get(series_url(stored) + "/metadata", headers=ACCEPT)
    assert response.content == expected_series_metadata(archive, stored)


def test_keeping_metadata_another_request_kept_first_keeps_the_first(archive: Archive) -> None:
    ds = make_ct_dataset()
    store(archive, to_part10_bytes(ds))
    forget_kept_metadata(archive)
    [instance] = archive.instances_of(str(ds.StudyInstanceUID))
    assert archive.keep_metadata({instance.id: b'{"first":1}'}, DEFAULT_BULK_DATA_THRESHOLD) == 1
    assert archive.keep_metadata({instance.id: b'{"second":2}'}, DEFAULT_BULK_DATA_THRESHOLD) == 0
    [entry] = archive.metadata_entries(str(ds.StudyInstanceUID))
    assert entry.document == b'{"first":1}'


def test_long_text_values_deferred_at_ingest_are_kept_whole(archive: Archive) -> None:
    ds = make_ct_dataset()
    ds.ImageComments = "LONG COMMENT " * 200  # LT above the bulk data threshold: read deferred, still text
    ds.add_new(0x00400280, "ST", "x" * 1020)
    stored = store(archive, to_part10_bytes(ds))
    assert kept_rows(archive) == 1
    client = make_client(archive)
    assert served_without_files(archive, client, stored) == expected_series_metadata(archive, stored)
    (metadata,) = client.get(series_url(stored) + "/metadata", headers=ACCEPT).json()
    assert metadata["00204000"]["Value"] == [("LONG COMMENT " * 200).rstrip()]
