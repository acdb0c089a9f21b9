"""C-ECHO and C-STORE into a running RadPilot node, with pynetdicom as the peer.

Every test runs against both receivers: the main DIMSE port (pynetdicom) and the store
port (``dicom_store_port``, dcmtk's network layer), which must keep the same semantics.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, StoragePresentationContexts, _config, build_context
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.sop_class import Verification

from radpilot.archive import Archive
from radpilot.archive.query import Query, QueryLevel
from tests.factories import make_ct_dataset, make_ct_series, to_part10_bytes
from tests.fixtures.receivers import RECEIVERS, Receiver, start_receiver
from tests.helpers import wait_for

# Local pydicom test files, one (at least) per transfer syntax RadPilot must keep as received.
TRANSFER_SYNTAX_FILES = {
    "1.2.840.10008.1.2": "MR_small_implicit.dcm",
    "1.2.840.10008.1.2.1": "CT_small.dcm",
    "1.2.840.10008.1.2.2": "MR_small_bigendian.dcm",
    "1.2.840.10008.1.2.1.99": "image_dfl.dcm",
    "1.2.840.10008.1.2.4.50": "SC_rgb_jpeg_dcmtk.dcm",
    "1.2.840.10008.1.2.4.51": "JPEG-lossy.dcm",
    "1.2.840.10008.1.2.4.57": "SC_rgb_jpeg_gdcm.dcm",  # a .70 stream is a valid .57 stream: relabelled below
    "1.2.840.10008.1.2.4.70": "SC_rgb_jpeg_gdcm.dcm",
    "1.2.840.10008.1.2.4.80": "MR_small_jpeg_ls_lossless.dcm",
    "1.2.840.10008.1.2.4.81": "JPEGLSNearLossless_16.dcm",
    "1.2.840.10008.1.2.4.90": "MR_small_jp2klossless.dcm",
    "1.2.840.10008.1.2.4.91": "JPEG2000.dcm",
    "1.2.840.10008.1.2.5": "SC_rgb_rle.dcm",
}

SOP_CLASSES = {
    "CT": "1.2.840.10008.5.1.4.1.1.2",
    "MR": "1.2.840.10008.5.1.4.1.1.4",
    "CR": "1.2.840.10008.5.1.4.1.1.1",
    "DX": "1.2.840.10008.5.1.4.1.1.1.1",
    "SC": "1.2.840.10008.5.1.4.1.1.7",
    "SEG": "1.2.840.10008.5.1.4.1.1.66.4",
    "BasicTextSR": "1.2.840.10008.5.1.4.1.1.88.11",
    "EnhancedSR": "1.2.840.10008.5.1.4.1.1.88.22",
    "ComprehensiveSR": "1.2.840.10008.5.1.4.1.1.88.33",
    "Comprehensive3DSR": "1.2.840.10008.5.1.4.1.1.88.34",
    "GSPS": "1.2.840.10008.5.1.4.1.1.11.1",
}
NON_IMAGE_CLASSES = {"BasicTextSR", "EnhancedSR", "ComprehensiveSR", "Comprehensive3DSR", "GSPS"}


@pytest.fixture(params=RECEIVERS)
def radpilot(request: pytest.FixtureRequest, radpilot_factory) -> Receiver:  # noqa: ANN001
    """The node's main DIMSE port, then its dcmtk store port."""
    return start_receiver(request.param, radpilot_factory)


def dataset_offset(data: bytes) -> int:
    """Offset of the dataset after the Part 10 preamble and file meta group."""
    return 144 + int.from_bytes(data[140:144], "little")


def local_test_file(name: str) -> Path:
    path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"pydicom test file {name} is not available locally")
    return Path(path)


def prepare_transfer_syntax_file(syntax: str, folder: Path) -> Path:
    """A Part 10 file in ``syntax`` with all the UIDs the archive needs."""
    source = local_test_file(TRANSFER_SYNTAX_FILES[syntax])
    ds = pydicom.dcmread(source)
    if str(ds.file_meta.TransferSyntaxUID) == syntax and all(k in ds for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")):
        data = source.read_bytes()
        if (len(data) - dataset_offset(data)) % 2 == 0:
            return source
        # pydicom's deflated test file ends on an odd byte; PS3.5 A.5 pads the deflated stream with one NULL
        # (and PS3.8 Annex E wants even fragments, which dcmtk's receiver insists on).
        target = folder / f"{syntax}.dcm"
        target.write_bytes(data + b"\0")
        return target
    # Relabel (.70 -> .57) or add the UIDs a test file lacks; pixel data stays as it is.
    ds.file_meta.TransferSyntaxUID = syntax
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID"):
        if keyword not in ds:
            setattr(ds, keyword, generate_uid())
    target = folder / f"{syntax}.dcm"
    ds.save_as(target, enforce_file_format=True)
    return target


def stored_files(archive: Archive) -> list[Path]:
    return sorted(p for p in archive.storage_dir.rglob("*.dcm") if ".incoming" not in p.parts)


@contextmanager
def association(node, contexts=None, ae_title: str = "TESTSCU", max_pdu: int = 16382) -> Iterator:  # noqa: ANN001
    ae = AE(ae_title=ae_title)
    assoc = ae.associate(
        "127.0.0.1",
        node.dicom_port,
        contexts=contexts or [build_context(Verification), *StoragePresentationContexts[:100]],
        ae_title=node.ae_title,
        max_pdu=max_pdu,
    )
    assert assoc.is_established, "RadPilot did not accept the association"
    try:
        yield assoc
    finally:
        if assoc.is_established:
            assoc.release()


@pytest.fixture
def send_files_as_stored(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make pynetdicom stream a file's encoded dataset as it is (no decode / re-encode)."""
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)


def test_echo_answers_success(radpilot) -> None:  # noqa: ANN001
    with association(radpilot, [build_context(Verification)]) as assoc:
        assert assoc.send_c_echo().Status == 0x0000


@pytest.mark.parametrize("syntax", sorted(TRANSFER_SYNTAX_FILES))
def test_store_keeps_the_dataset_bytes_of_every_transfer_syntax(
    radpilot,
    tmp_path: Path,
    syntax: str,
    send_files_as_stored: None,  # noqa: ANN001
) -> None:
    path = prepare_transfer_syntax_file(syntax, tmp_path)
    sent = path.read_bytes()
    header = pydicom.dcmread(path, stop_before_pixels=True)
    context = build_context(header.SOPClassUID, [syntax])

    with association(radpilot, [context]) as assoc:
        status = assoc.send_c_store(path)

    assert status.Status == 0x0000, status
    (stored,) = stored_files(radpilot.archive)
    kept = stored.read_bytes()
    assert kept[dataset_offset(kept) :] == sent[dataset_offset(sent) :]
    assert str(pydicom.dcmread(stored, stop_before_pixels=True).file_meta.TransferSyntaxUID) == syntax


@pytest.mark.parametrize("syntax", ["1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.5"])
def test_store_of_a_decoded_dataset_keeps_compressed_pixel_data_identical(
    radpilot,
    tmp_path: Path,
    syntax: str,  # noqa: ANN001
) -> None:
    ds = pydicom.dcmread(prepare_transfer_syntax_file(syntax, tmp_path))
    context = build_context(ds.SOPClassUID, [syntax])

    with association(radpilot, [context]) as assoc:
        assert assoc.send_c_store(ds).Status == 0x0000

    (stored,) = stored_files(radpilot.archive)
    assert pydicom.dcmread(stored).PixelData == ds.PixelData


def make_instance_of_class(kind: str) -> Dataset:
    """A minimal instance of a storage SOP class (image classes keep the factory's pixel data)."""
    ds = make_ct_dataset(modality={"SEG": "SEG", "GSPS": "PR"}.get(kind, "SR" if "SR" in kind else kind))
    ds.SOPClassUID = SOP_CLASSES[kind]
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    if kind in NON_IMAGE_CLASSES:
        for keyword in (
            "PixelData",
            "Rows",
            "Columns",
            "BitsAllocated",
            "BitsStored",
            "HighBit",
            "PixelRepresentation",
            "SamplesPerPixel",
            "PhotometricInterpretation",
        ):
            delattr(ds, keyword)
    if "SR" in kind:
        ds.ValueType = "CONTAINER"
        ds.ContinuityOfContent = "SEPARATE"
        ds.CompletionFlag = "COMPLETE"
        ds.VerificationFlag = "UNVERIFIED"
    return ds


@pytest.mark.parametrize("kind", sorted(SOP_CLASSES))
def test_store_accepts_each_storage_sop_class(radpilot, kind: str) -> None:  # noqa: ANN001
    ds = make_instance_of_class(kind)

    with association(radpilot, [build_context(ds.SOPClassUID)]) as assoc:
        assert assoc.send_c_store(ds).Status == 0x0000

    (match,) = radpilot.archive.find(Query(QueryLevel.IMAGE, {"SOPInstanceUID": ds.SOPInstanceUID}))
    assert match["SOPClassUID"] == SOP_CLASSES[kind]


def test_identical_resend_succeeds_and_stores_one_copy(radpilot) -> None:  # noqa: ANN001
    ds = make_ct_dataset()

    with association(radpilot) as assoc:
        statuses = [assoc.send_c_store(ds).Status for _ in range(3)]

    assert statuses == [0x0000, 0x0000, 0x0000]
    assert radpilot.archive.instance_count() == 1
    assert len(stored_files(radpilot.archive)) == 1


def test_conflicting_resend_is_refused_and_the_first_copy_kept(radpilot) -> None:  # noqa: ANN001
    first = make_ct_dataset(patient_name="FIRST^COPY")
    second = make_ct_dataset(
        sop_uid=first.SOPInstanceUID, study_uid=first.StudyInstanceUID, series_uid=first.SeriesInstanceUID, patient_name="OTHER^CONTENT"
    )

    with association(radpilot) as assoc:
        assert assoc.send_c_store(first).Status == 0x0000
        (path,) = stored_files(radpilot.archive)
        before = path.read_bytes()
        response = assoc.send_c_store(second)

    assert response.Status == 0xA900
    assert "different content" in response.ErrorComment
    assert stored_files(radpilot.archive) == [path]
    assert path.read_bytes() == before
    assert radpilot.archive.instance_count() == 1


def test_dataset_without_study_uid_is_refused_naming_the_attribute(radpilot) -> None:  # noqa: ANN001
    ds = make_ct_dataset()
    del ds.StudyInstanceUID

    with association(radpilot) as assoc:
        response = assoc.send_c_store(ds)

    assert response.Status == 0xC000
    assert "StudyInstanceUID" in response.ErrorComment
    assert radpilot.archive.instance_count() == 0
    assert stored_files(radpilot.archive) == []


def test_dataset_without_sop_instance_uid_is_refused_naming_the_attribute(
    radpilot,
    tmp_path: Path,
    send_files_as_stored: None,  # noqa: ANN001
) -> None:
    # The command set carries an Affected SOP Instance UID (from the file meta), the dataset none.
    ds = make_ct_dataset()
    del ds.SOPInstanceUID
    path = tmp_path / "no-sop-uid.dcm"
    ds.save_as(path, enforce_file_format=True)

    with association(radpilot, [build_context(ds.SOPClassUID, [ExplicitVRLittleEndian])]) as assoc:
        response = assoc.send_c_store(path)

    assert response.Status == 0xC000
    assert "SOPInstanceUID" in response.ErrorComment
    assert radpilot.archive.instance_count() == 0
    assert stored_files(radpilot.archive) == []


def partial_store_pdus(ds: Dataset, context_id: int, max_pdu: int) -> list:
    """The P-DATA primitives of a C-STORE request for ``ds``, without its last fragment."""
    request = C_STORE()
    request.MessageID = 1
    request.AffectedSOPClassUID = ds.SOPClassUID
    request.AffectedSOPInstanceUID = ds.SOPInstanceUID
    request.Priority = 0x0002
    encoded = to_part10_bytes(ds)
    request.DataSet = io.BytesIO(encoded[dataset_offset(encoded) :])
    message = C_STORE_RQ()
    message.primitive_to_message(request)
    pdus = list(message.encode_msg(context_id, max_pdu))
    assert len(pdus) > 4
    return pdus[:-1]


@pytest.mark.parametrize("how", ["abort", "close-socket"])
def test_peer_that_stops_mid_transfer_leaves_the_archive_unchanged(radpilot, how: str) -> None:  # noqa: ANN001
    (stored_before,) = make_ct_series(1)
    big = make_ct_dataset(rows=256, columns=256)  # 128 KiB of pixels: many 16 KiB fragments
    ae = AE(ae_title="TESTSCU")
    assoc = ae.associate("127.0.0.1", radpilot.dicom_port, contexts=[build_context(big.SOPClassUID)], ae_title="RADPILOT")
    assert assoc.is_established
    assert assoc.send_c_store(stored_before).Status == 0x0000
    files_before = stored_files(radpilot.archive)

    context_id = assoc.accepted_contexts[0].context_id
    for pdu in partial_store_pdus(big, context_id, 16382):
        assoc.dul.send_pdu(pdu)
    if how == "abort":
        assoc.abort()
    else:
        assoc.dul.socket.socket.shutdown(2)
        assoc.kill()

    # The node is still serving, and nothing of the unfinished instance was kept.
    with association(radpilot) as check:
        assert check.send_c_echo().Status == 0x0000
    assert radpilot.archive.instance_count() == 1
    assert stored_files(radpilot.archive) == files_before
    assert not any(radpilot.archive.tmp_dir.iterdir())


def test_stop_keeps_every_acknowledged_instance(radpilot) -> None:  # noqa: ANN001
    series = make_ct_series(40)
    acknowledged: list[str] = []
    half_sent = threading.Event()

    def sender() -> None:
        ae = AE(ae_title="TESTSCU")
        assoc = ae.associate("127.0.0.1", radpilot.dicom_port, contexts=[build_context(series[0].SOPClassUID)], ae_title="RADPILOT")
        for index, ds in enumerate(series):
            if index == 10:
                half_sent.set()
            if not assoc.is_established:
                break
            response = assoc.send_c_store(ds)
            if response is not None and response.get("Status") == 0x0000:
                acknowledged.append(ds.SOPInstanceUID)
        half_sent.set()
        if assoc.is_established:
            assoc.release()

    thread = threading.Thread(target=sender)
    thread.start()
    assert half_sent.wait(30)
    radpilot.stop()
    thread.join(30)

    assert len(acknowledged) >= 10
    found = {m["SOPInstanceUID"] for m in radpilot.archive.find(Query(QueryLevel.IMAGE, {}))}
    assert set(acknowledged) <= found


@pytest.mark.parametrize("kind", RECEIVERS)
def test_stop_cuts_a_transfer_still_stalled_when_the_drain_ends(radpilot_factory, kind: str) -> None:  # noqa: ANN001
    # The peer stalls mid-dataset; the network timeout (30 s) would wait, the drain (1 s) must not.
    import time

    radpilot = start_receiver(kind, radpilot_factory, dicom_drain_timeout=1.0, dicom_network_timeout=30.0)
    big = make_ct_dataset(rows=256, columns=256)
    assoc = AE(ae_title="TESTSCU").associate(
        "127.0.0.1", radpilot.dicom_port, contexts=[build_context(big.SOPClassUID)], ae_title="RADPILOT"
    )
    assert assoc.is_established
    for pdu in partial_store_pdus(big, assoc.accepted_contexts[0].context_id, 16382):
        assoc.dul.send_pdu(pdu)
    time.sleep(0.3)

    started = time.monotonic()
    radpilot.stop()
    assert time.monotonic() - started < 8
    wait_for(lambda: not assoc.is_established, 10.0, "the receiver to end the stalled association")
    assert radpilot.archive.instance_count() == 0
    assert stored_files(radpilot.archive) == []


def test_stop_does_not_wait_for_a_connection_that_never_requests_an_association(radpilot) -> None:  # noqa: ANN001
    import socket
    import time

    with socket.create_connection(("127.0.0.1", radpilot.dicom_port)):
        time.sleep(0.2)  # accepted, waiting for an A-ASSOCIATE-RQ that never comes
        started = time.monotonic()
        radpilot.stop()
        assert time.monotonic() - started < 5
