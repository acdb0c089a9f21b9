"""The Part 10 layout: where the dataset starts, and files written without preamble or group length.

Whole-file validation (truncation, missing UIDs) is covered through the archive in
tests/unit/test_archive_store.py; these are the byte-level helpers it and STOW-RS share.
"""

from __future__ import annotations

import io

import pydicom
import pytest

from radpilot.dicom.part10 import (
    MalformedDicomError,
    dataset_offset,
    file_meta_end,
    normalize_part10,
    parse_part10,
    part10_bytes,
)
from tests.factories import make_ct_dataset, to_part10_bytes


def test_dataset_offset_is_after_the_group_length_and_the_meta_group() -> None:
    data = to_part10_bytes(make_ct_dataset())
    offset = dataset_offset(data)
    # The archive's stored content hashes were taken from here: it must not move.
    assert offset == 144 + int.from_bytes(data[140:144], "little")
    meta_only = pydicom.dcmread(io.BytesIO(data[:offset]), force=True)
    assert "TransferSyntaxUID" in meta_only.file_meta and "PatientID" not in meta_only
    assert data[offset : offset + 2] == b"\x08\x00", "the dataset starts with group 0008"


@pytest.mark.parametrize(
    "case, mangle, fragment",
    [
        ("empty", lambda d: b"", "does not start with (0002,0000)"),
        ("cut inside the group length", lambda d: d[:138], "does not start with (0002,0000)"),
        ("no group length", lambda d: d[:132] + d[144:], "does not start with (0002,0000)"),
        ("group length past the end", lambda d: d[:140] + (10**6).to_bytes(4, "little") + d[144:], "truncated"),
        ("cut inside the meta group", lambda d: d[:150], "truncated"),
    ],
)
def test_dataset_offset_refuses_a_broken_meta_group(case: str, mangle, fragment: str) -> None:  # noqa: ANN001
    data = mangle(to_part10_bytes(make_ct_dataset()))
    with pytest.raises(MalformedDicomError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        dataset_offset(data)


def test_file_meta_end_walks_meta_without_group_length() -> None:
    data = to_part10_bytes(make_ct_dataset())
    bare = data[132:]  # meta group from its first element, as written without preamble
    assert file_meta_end(bare) == dataset_offset(data) - 132
    without_group_length = bare[12:]
    assert file_meta_end(without_group_length) == dataset_offset(data) - 144


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x08\x00\x05\x00CS\x0a\x00ISO_IR 100",  # a dataset element, not group 0002
        b"\x02\x00\x10\x00UI\x40\x00" + b"1.2" * 3,  # value longer than what is left
        b"\x02\x00\x01\x00OB\x00\x00\x02",  # cut inside the 4-byte length of a long VR
    ],
)
def test_file_meta_end_gives_none_for_what_is_not_a_whole_meta_group(data: bytes) -> None:
    assert file_meta_end(data) is None


def test_normalize_gives_a_file_without_preamble_its_layout() -> None:
    ds = make_ct_dataset()
    data = to_part10_bytes(ds)
    assert normalize_part10(data) is data
    assert normalize_part10(data[128:]) == b"\0" * 128 + data[128:]
    written = io.BytesIO()
    pydicom.dcmwrite(written, ds)  # no preamble, no DICM, no group length
    assert not written.getvalue().startswith(b"DICM")
    normalized = normalize_part10(written.getvalue())
    assert parse_part10(normalized).sop_instance_uid == ds.SOPInstanceUID
    assert normalized[dataset_offset(normalized) :] == data[dataset_offset(data) :]


@pytest.mark.parametrize(
    "data",
    [b"", b"garbage", b"\x02\x00\x10\x00UI\x40\x00" + b"1.2" * 3, b"\x02\x00\x10\x00UI\x04\x00\xff\xfe"],
)
def test_normalize_leaves_what_it_cannot_mend_for_the_strict_parser(data: bytes) -> None:
    normalized = normalize_part10(data)
    with pytest.raises(MalformedDicomError):
        parse_part10(normalized)


@pytest.mark.parametrize(
    "sop_class, sop_instance, transfer_syntax",
    [
        ("1.2.840.10008.5.1.4.1.1.2", "1.2.3.4", "1.2.840.10008.1.2.1"),  # even and odd lengths both
        ("1.2.840.10008.5.1.4.1.1.1.1", "1.2.826.0.1.3680043.8.498.12345678901234567890", "1.2.840.10008.1.2.4.50"),
        ("1.2.840.10008.5.1.4.1.1.4", "2.25.1", "1.2.840.10008.1.2"),
    ],
)
def test_part10_bytes_are_the_file_pydicom_and_pynetdicom_write(sop_class: str, sop_instance: str, transfer_syntax: str) -> None:
    from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION
    from pynetdicom.dsutils import create_file_meta, encode_file_meta

    body = b"\x08\x00\x16\x00UI\x04\x001.2\x00"
    expected = (
        b"\0" * 128
        + b"DICM"
        + encode_file_meta(create_file_meta(sop_class_uid=sop_class, sop_instance_uid=sop_instance, transfer_syntax=transfer_syntax))
        + body
    )
    built = part10_bytes(
        body,
        sop_class_uid=sop_class,
        sop_instance_uid=sop_instance,
        transfer_syntax=transfer_syntax,
        implementation_uid=PYNETDICOM_IMPLEMENTATION_UID,
        implementation_version=PYNETDICOM_IMPLEMENTATION_VERSION,
    )
    assert built == expected
    assert dataset_offset(built) == len(built) - len(body)
