"""The metadata read straight from an instance's bytes is the pydicom path's answer or no answer, never another one."""

from __future__ import annotations

import io
import warnings
from contextlib import nullcontext
from pathlib import Path
from unittest import mock

import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from sqlalchemy import select

from radpilot.archive import Archive, StoreOutcome
from radpilot.archive.models import Instance, InstanceMetadata, Patient, Series, Study
from radpilot.dicom import part10
from radpilot.dicom.fast_metadata import read_plain_instance
from radpilot.dicom.json_model import DEFAULT_BULK_DATA_THRESHOLD, instance_metadata_document, read_metadata_header
from radpilot.dicom.part10 import (
    META_START,
    MalformedDicomError,
    _check_complete,
    _dataset_offset_or_none,
    declared_transfer_syntax,
    decode_values,
    parse_part10,
)
from tests.factories import as_implicit_vr, make_ct_dataset, to_part10_bytes
from tests.fuzz_support import deflated, mutated_part10, nested_sequence_dataset, with_transfer_syntax
from tests.helpers import shared_data_path

THRESHOLD = DEFAULT_BULK_DATA_THRESHOLD
PYDICOM_FILES = Path(get_testdata_file("MR_small.dcm")).parent


def fast(data: bytes, threshold: int = THRESHOLD) -> bytes | None:
    """The fast path's document, asked only where parse_part10 asks it: the meta group ends where its group length says."""
    transfer_syntax, meta_end = declared_transfer_syntax(data)
    if meta_end != _dataset_offset_or_none(data):
        return None
    plain = read_plain_instance(data, META_START, meta_end, transfer_syntax or "", threshold)
    return plain.document if plain is not None else None


def by_pydicom(data: bytes, threshold: int = THRESHOLD) -> bytes:
    """The metadata as the archive builds it through pydicom, with every check the fast path vouches for."""
    transfer_syntax = str(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).file_meta.TransferSyntaxUID)
    _check_complete(data, transfer_syntax)
    dataset = read_metadata_header(data, transfer_syntax, threshold)
    decode_values(dataset)
    return instance_metadata_document(dataset, transfer_syntax, threshold)


def part10_files() -> list[Path]:
    folders = (PYDICOM_FILES, PYDICOM_FILES.parent / "charset_files")
    return sorted(p for folder in folders for p in folder.rglob("*") if p.is_file() and p.read_bytes()[128:132] == b"DICM")


def real_ct_explicit_le(count: int) -> list[bytes]:
    """Real CT slices (stored deflated in the shared data) as a scanner sends them: explicit VR little endian."""
    files = sorted((shared_data_path() / "ct-lung" / "LUNGCT-001" / "dicom").glob("*.dcm"))[:count]
    if not files:
        pytest.skip("no CT in the shared data")
    out = []
    for path in files:
        ds = pydicom.dcmread(path)
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        out.append(buffer.getvalue())
    return out


@pytest.mark.parametrize("path", part10_files(), ids=lambda p: p.relative_to(PYDICOM_FILES.parent).as_posix())
def test_pydicom_test_files_get_the_pydicom_paths_document_or_none(path: Path) -> None:
    data = path.read_bytes()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        document = fast(data)
        if document is None:
            return
        assert document == by_pydicom(data)


def implicit_copies() -> list[tuple[str, bytes]]:
    """Every pydicom test file with native pixel data (or none) that pydicom writes again with implicit VR."""
    copies = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in part10_files():
            try:
                ds = pydicom.dcmread(path)
                if ds.file_meta.TransferSyntaxUID.is_compressed:
                    continue
                copies.append((path.relative_to(PYDICOM_FILES.parent).as_posix(), as_implicit_vr(path.read_bytes())))
            except Exception:  # noqa: BLE001,S112 - a file pydicom cannot write again is no sample
                continue
    return copies


@pytest.mark.parametrize(("name", "data"), implicit_copies(), ids=lambda v: v if isinstance(v, str) else "")
def test_implicit_vr_copies_of_pydicom_test_files_get_the_pydicom_paths_document_or_none(name: str, data: bytes) -> None:
    # Below and above the size at which pydicom defers a value: a deferred one takes its VR from the public dictionary.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for threshold in (16, THRESHOLD):
            document = fast(data, threshold)
            if document is not None:
                assert document == by_pydicom(data, threshold), (name, threshold)


def test_real_ct_sent_with_implicit_vr_is_answered_by_the_fast_path_identically() -> None:
    for data in [as_implicit_vr(ct) for ct in real_ct_explicit_le(8)] + [_korean_with_nested_sequences_implicit()]:
        for threshold in (16, THRESHOLD):
            document = fast(data, threshold)
            assert document is not None, "a plain implicit VR CT went to the pydicom path"
            assert document == by_pydicom(data, threshold)


def test_implicit_vr_pixel_data_that_pydicom_does_not_defer_goes_to_pydicom() -> None:
    # Native pixel data is OB or OW by the dictionary; pydicom settles it only when the value is read.
    small = as_implicit_vr(to_part10_bytes(make_ct_dataset(rows=4, columns=4)))
    assert fast(small, THRESHOLD) is None
    assert fast(small, 16) == by_pydicom(small, 16)


def _korean_with_nested_sequences_implicit() -> bytes:
    """A 32 x 32 CT (its pixel data beyond the threshold) with UTF-8 names and undefined-length nested sequences, implicit VR."""
    ds = pydicom.dcmread(io.BytesIO(nested_sequence_dataset(4, undefined_length=True)))
    big = make_ct_dataset(rows=32, columns=32)
    ds.Rows, ds.Columns, ds.PixelData = big.Rows, big.Columns, big.PixelData
    ds.SpecificCharacterSet, ds.PatientName, ds.StudyDescription = "ISO_IR 192", "김^민수=金^敏洙", "흉부 CT"
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return as_implicit_vr(buffer.getvalue())


@pytest.mark.parametrize(("pixel_representation", "padding"), [(0, 0xFFF0), (1, -2000)])
def test_implicit_vr_pixel_values_are_us_or_ss_as_pixel_representation_says(pixel_representation: int, padding: int) -> None:
    ds = make_ct_dataset(rows=8, columns=8)
    ds.PixelRepresentation = pixel_representation
    ds.add_new(0x00280120, "US" if pixel_representation == 0 else "SS", padding)  # Pixel Padding Value
    data = as_implicit_vr(to_part10_bytes(ds))
    document = fast(data, 16)
    assert document is not None and document == by_pydicom(data, 16)
    assert f'"00280120":{{"vr":"{"US" if pixel_representation == 0 else "SS"}","Value":[{padding}]}}' in document.decode()


def test_implicit_vr_private_elements_get_their_creators_vr_or_stay_unknown() -> None:
    ds = make_ct_dataset(rows=8, columns=8)
    ds.add_new(0x00430010, "LO", "GEMS_PARM_01")  # a creator pydicom's private dictionary knows
    ds.add_new(0x00431031, "DS", ["-52.8", "18"])
    ds.add_new(0x00090010, "LO", "RADPILOT TEST")  # one it does not
    ds.add_new(0x00091001, "UN", b"\x01\x02")
    data = as_implicit_vr(to_part10_bytes(ds))
    document = fast(data, 16)
    assert document is not None and document == by_pydicom(data, 16)
    assert b'"00431031":{"vr":"DS","Value":[-52.8,18]}' in document and b'"00091001":{"vr":"UN","InlineBinary":"AQI="}' in document


@pytest.mark.parametrize(
    "name", ["MR_small.dcm", "CT_small.dcm", "liver_1frame.dcm", "SC_rgb_small_odd.dcm", "JPEG2000.dcm", "SC_rgb_rle.dcm"]
)
def test_plain_instances_native_and_encapsulated_are_answered_by_the_fast_path(name: str) -> None:
    data = Path(get_testdata_file(name)).read_bytes()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert fast(data) == by_pydicom(data)


def test_real_ct_and_nested_sequences_are_answered_identically() -> None:
    samples = [
        *real_ct_explicit_le(8),
        to_part10_bytes(make_ct_dataset()),
        nested_sequence_dataset(6, undefined_length=True),
        nested_sequence_dataset(3, undefined_length=False),
    ]
    for data in samples:
        assert fast(data) == by_pydicom(data)


@pytest.mark.parametrize("threshold", [0, 16, 1024, 10**6])
def test_bulk_data_threshold_decides_inline_or_bulk_as_the_pydicom_path_does(threshold: int) -> None:
    ds = make_ct_dataset(rows=8, columns=8)
    item = Dataset()
    item.add_new(0x00091010, "OB", b"\x07" * 300)
    ds.add_new(0x00091001, "LO", "RADPILOT TEST")
    ds.add_new(0x00091002, "SQ", pydicom.Sequence([item]))
    ds.add_new(0x00282000, "OB", bytes(range(256)) * 2)
    data = to_part10_bytes(ds)
    assert fast(data, threshold) == by_pydicom(data, threshold)


def _with_lut_descriptor_in_a_sequence() -> bytes:
    ds = make_ct_dataset(rows=8, columns=8)
    item = Dataset()
    item.add_new(0x00283002, "US", [256, 0, 16])  # LUT Descriptor: US or SS, settled from elsewhere in the dataset
    item.add_new(0x00283006, "US", list(range(256)))
    ds.add_new(0x00283010, "SQ", pydicom.Sequence([item]))  # VOI LUT Sequence
    return to_part10_bytes(ds)


def _with_private_outside_a_block() -> bytes:
    ds = make_ct_dataset(rows=8, columns=8)
    ds.add_new(0x00090001, "UN", b"\x01\x02")
    return to_part10_bytes(ds)


def _with(**attributes: object) -> bytes:
    ds = make_ct_dataset(rows=8, columns=8)
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return to_part10_bytes(ds)


@pytest.mark.parametrize(
    "case, data",
    [
        (
            "implicit VR declared, explicit VR written",
            lambda: with_transfer_syntax(to_part10_bytes(make_ct_dataset(rows=8, columns=8)), ImplicitVRLittleEndian),
        ),
        ("implicit VR with an ambiguous VR in a sequence", lambda: as_implicit_vr(_with_lut_descriptor_in_a_sequence())),
        ("implicit VR with a private element outside a block", lambda: as_implicit_vr(_with_private_outside_a_block())),
        ("big endian", lambda: with_transfer_syntax(to_part10_bytes(make_ct_dataset(rows=8, columns=8)), ExplicitVRBigEndian)),
        ("deflated", lambda: deflated(to_part10_bytes(make_ct_dataset(rows=8, columns=8)))),
        ("text beyond ASCII in a VR read as ISO 8859-1", lambda: _with(SpecificCharacterSet="ISO_IR 192", BodyPartExamined="CHÉST")),
        (
            "UTF-8 text that does not decode",
            lambda: _with(SpecificCharacterSet="ISO_IR 192", PatientID="P\xa0").replace(b"P\xc2\xa0", b"P\xa0\xa0"),
        ),
        ("ISO 2022 character set", lambda: _with(SpecificCharacterSet=["", "ISO 2022 IR 149"], PatientName="Kim^Minsu")),
        ("person name with four component groups", lambda: _with(PatientName="Kim^Minsu=Kim^Minsu=Kim=Kim")),
        ("decimal pydicom must guess at", lambda: _with(SliceThickness="9.75").replace(b"9.75", b"9,75")),
        ("integer string with a fraction", lambda: _with(InstanceNumber="1.5")),
        ("cut short", lambda: to_part10_bytes(make_ct_dataset(rows=8, columns=8))[:-3]),
        ("trailing bytes", lambda: to_part10_bytes(make_ct_dataset(rows=8, columns=8)) + b"\x00\x00"),
    ],
)
def test_what_the_fast_path_does_not_answer_for_goes_to_pydicom(case: str, data) -> None:  # noqa: ANN001
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert fast(data()) is None, case


@pytest.mark.parametrize(
    "charset, name", [("ISO_IR 192", "Müller^Jürgen"), ("ISO_IR 192", "김^민수"), ("ISO_IR 100", "Müller^Jürgen"), (None, "Müller^Jürgen")]
)
def test_latin1_and_utf8_text_is_answered_as_pydicom_decodes_it(charset: str | None, name: str) -> None:
    ds = make_ct_dataset(rows=8, columns=8)
    if charset:
        ds.SpecificCharacterSet = charset
    ds.PatientName, ds.StudyDescription = name, f"CT {name}"
    data = to_part10_bytes(ds)
    document = fast(data)
    assert document is not None
    assert document == by_pydicom(data)


def _with_private(creator: str, tag: int, vr: str, value: bytes, *, creator_vr: str = "LO") -> bytes:
    ds = make_ct_dataset(rows=8, columns=8)
    ds.add_new(tag >> 16 << 16 | 0x0010, creator_vr, creator if creator_vr == "LO" else creator.encode())
    ds.add_new(tag, vr, value)
    return to_part10_bytes(ds)


def _with_public_un() -> bytes:
    # Study Description (LO) re-encoded as UN, as a router that lost the VR writes it (pydicom itself would not write it so).
    data = _with(StudyDescription="CT ABDOMEN")
    as_lo = b"\x08\x00\x30\x10LO\x0a\x00CT ABDOMEN"
    assert data.count(as_lo) == 1
    return data.replace(as_lo, b"\x08\x00\x30\x10UN\x00\x00\x0a\x00\x00\x00CT ABDOMEN")


def test_private_un_elements_of_a_creator_pydicom_does_not_know_are_answered_as_bytes() -> None:
    # What a PACS forwards when it does not know a private tag: UN, which pydicom keeps as bytes.
    for value in (b"\x01\x02", b"\x07" * 2000):  # inline, and beyond the bulk threshold
        data = _with_private("RADPILOT TEST", 0x00091001, "UN", value)
        document = fast(data)
        assert document is not None
        assert document == by_pydicom(data)


@pytest.mark.parametrize(
    "case, data",
    [
        ("public tag", lambda: _with_public_un()),
        ("private creator", lambda: _with_private("RADPILOT TEST", 0x00091001, "UN", b"\x01\x02", creator_vr="UN")),
        ("creator pydicom knows", lambda: _with_private("SIEMENS CSA HEADER", 0x00291010, "UN", b"\x00" * 8)),
        (
            "undefined length",
            lambda: _with_private("RADPILOT TEST", 0x00091001, "UN", b"\x01\x02").replace(
                b"\x09\x00\x01\x10UN\x00\x00\x02\x00\x00\x00", b"\x09\x00\x01\x10UN\x00\x00\xff\xff\xff\xff"
            ),
        ),
    ],
)
def test_un_elements_pydicom_reads_with_another_vr_go_to_pydicom(case: str, data) -> None:  # noqa: ANN001
    raw = data()
    assert b"UN" in raw
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert fast(raw) is None, case


def test_archive_keeps_the_same_document_whichever_path_built_it(tmp_path: Path) -> None:
    data = to_part10_bytes(make_ct_dataset())
    parsed = parse_part10(data)
    assert parsed.metadata is not None and parsed.metadata == by_pydicom(data)
    odd = _with(SpecificCharacterSet=["", "ISO 2022 IR 149"], PatientName="Kim^Minsu")
    assert parse_part10(odd).metadata is None


@settings(
    max_examples=300,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(mutated_part10())
def test_fuzzed_bytes_the_fast_path_answers_get_the_pydicom_paths_document(data: bytes) -> None:
    # A document vouches that the bytes are complete and every value decodes: the pydicom path must agree.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            parsed = parse_part10(data)
        except MalformedDicomError:
            return
        if parsed.metadata is not None:
            assert parsed.metadata == by_pydicom(data)


def _index_rows(archive: Archive) -> dict[str, list[tuple]]:
    """Every index row, by table, without the columns that differ between two archives (ids, times)."""
    skipped = {"id", "patient_fk", "study_fk", "series_fk", "instance_fk", "created_at", "updated_at", "received_at"}
    rows = {}
    with archive.engine.connect() as connection:
        for model in (Patient, Study, Series, Instance, InstanceMetadata):
            table = model.__table__
            columns = [c for c in table.columns if c.name not in skipped]
            rows[table.name] = sorted(tuple(row) for row in connection.execute(select(*columns)))
    return rows


def _with_request_attributes() -> bytes:
    ds = make_ct_dataset(rows=8, columns=8)
    ds.PatientName, ds.PatientBirthDate, ds.PatientSex = "Doe^Jane", "19700101", "F"
    ds.AccessionNumber, ds.StudyID, ds.StudyDescription, ds.ReferringPhysicianName = "ACC1", "S1", "CT chest", "Ref^Doctor"
    ds.BodyPartExamined, ds.SeriesDescription, ds.SeriesNumber = "CHEST", "lung 1mm", 3
    item = Dataset()
    item.RequestedProcedurePriority = "STAT"
    ds.RequestAttributesSequence = pydicom.Sequence([item])
    return to_part10_bytes(ds)


def test_archive_index_is_the_same_whichever_path_read_the_instance(tmp_path: Path) -> None:
    # The fast path's header stands in for pydicom's in the index: every row must come out the same.
    korean = _with(SpecificCharacterSet="ISO_IR 192", PatientName="김^민수=金^敏洙", PatientID="P-KR", StudyDescription="흉부 CT")
    private = _with_private("RADPILOT TEST", 0x00091001, "UN", b"\x01\x02")
    samples = [_with_request_attributes(), korean, private, *real_ct_explicit_le(4), nested_sequence_dataset(3, undefined_length=True)]
    samples += [_korean_with_nested_sequences_implicit(), *(as_implicit_vr(data) for data in real_ct_explicit_le(6)[4:])]
    samples += [get_testdata_file_bytes(name) for name in ("MR_small.dcm", "CT_small.dcm", "liver_1frame.dcm", "JPEG2000.dcm")]
    assert all(fast(data) is not None for data in samples)
    archives = {}
    for path_taken in ("fast", "pydicom"):
        archive = Archive(tmp_path / path_taken / "dicom", f"sqlite:///{tmp_path / path_taken / 'index.sqlite3'}", durability="none")
        with mock.patch.object(part10, "read_plain_instance", lambda *args: None) if path_taken == "pydicom" else nullcontext():
            for data in samples:
                assert archive.store_file_bytes(data).outcome is StoreOutcome.STORED
        archives[path_taken] = archive
    try:
        fast_rows, pydicom_rows = (_index_rows(archives[name]) for name in ("fast", "pydicom"))
        assert fast_rows == pydicom_rows
        assert any(row[-1] == "STAT" for row in fast_rows["study"])
        assert any(row[1] == "김^민수=金^敏洙" for row in fast_rows["patient"])
    finally:
        for archive in archives.values():
            archive.close()


def get_testdata_file_bytes(name: str) -> bytes:
    return Path(get_testdata_file(name)).read_bytes()
