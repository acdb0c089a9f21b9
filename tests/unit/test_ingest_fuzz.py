"""Hostile bytes at the ingest path: stored or refused with a reason, never a crash, never a partial file.

The fuzz run is the short one CI affords (derandomized: the same examples every run);
``benchmarks/fuzz_ingest.py`` runs the long one. The cases after it are the findings of
those runs, kept as regressions, and the deflate bomb.
"""

from __future__ import annotations

import tracemalloc
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from radpilot.archive import Archive, StoreOutcome
from radpilot.dicom import status as dimse_status
from radpilot.dicom.part10 import META_START, MalformedDicomError, check_inflated_size, dataset_offset, parse_part10
from tests.factories import make_ct_dataset, to_part10_bytes
from tests.fuzz_support import (
    check_ingest,
    deflate_bomb,
    deflated,
    explicit_le_elements,
    mutated_part10,
    nested_sequence_dataset,
    on_disk,
    open_fuzz_archive,
    raw_nested_sequences,
    seeds,
)

CI_EXAMPLES = 200


@pytest.fixture
def archive(tmp_path: Path) -> Iterator[Archive]:
    store = open_fuzz_archive(tmp_path)
    yield store
    store.close()


def test_mutated_dicom_is_stored_or_refused_never_crashes_nor_leaves_partial_files(archive: Archive) -> None:
    outcomes: dict[str, int] = {}

    @settings(
        max_examples=CI_EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(mutated_part10())
    def ingest(data: bytes) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom warns about each odd value it meets; the verdict is what counts
            result = check_ingest(archive, data)
        outcomes[result.outcome.value] = outcomes.get(result.outcome.value, 0) + 1

    ingest()
    # The run must reach both sides of the contract, or it tests nothing.
    assert outcomes.get("malformed", 0) > CI_EXAMPLES // 4, outcomes
    assert outcomes.get("stored", 0) + outcomes.get("duplicate", 0) > 0, outcomes
    stored = {p for p in on_disk(archive) if p.endswith(".dcm")}
    assert len(stored) == archive.instance_count(), "every file on disk has its index row and no row lacks its file"


def _element(data: bytes, tag: bytes) -> int:
    """Offset of the top-level element with this (little endian) tag in the dataset of ``data``."""
    for element in explicit_le_elements(data, dataset_offset(data)):
        if data[element.offset : element.offset + 4] == tag:
            return element.offset
    raise AssertionError(f"no element {tag!r}")


PATIENT_ID = b"\x10\x00\x20\x00"
ROWS = b"\x28\x00\x10\x00"


def _unknown_vr() -> bytes:
    data = to_part10_bytes(make_ct_dataset())
    at = _element(data, PATIENT_ID) + 4
    return data[:at] + b"XX" + data[at + 2 :]


def _unknown_vr_in_file_meta() -> bytes:
    data = to_part10_bytes(make_ct_dataset())
    [element] = [e for e in explicit_le_elements(data, META_START) if data[e.offset : e.offset + 4] == b"\x02\x00\x03\x00"]
    return data[: element.vr_offset] + b"XX" + data[element.vr_offset + 2 :]


def _odd_length_us() -> bytes:
    # Rows (US) with 3 bytes: the length and the value both changed, so every element stays complete.
    data = to_part10_bytes(make_ct_dataset())
    at = _element(data, ROWS)
    return data[: at + 6] + (3).to_bytes(2, "little") + b"\x20\x00\x00" + data[at + 10 :]


def _sequence_without_items_end() -> bytes:
    data = nested_sequence_dataset(3, undefined_length=True)
    pixel = data.rindex(b"\xe0\x7f\x10\x00")
    return data[: pixel - 40] + data[pixel:]


def _nested_too_deep() -> bytes:
    return raw_nested_sequences(2000)


# Findings of the fuzz runs: each escaped the archive as an exception before it was fixed.
FINDINGS = {
    "unknown VR decoded only when the index read it (NotImplementedError)": _unknown_vr,
    "US value of odd length (BytesLengthException)": _odd_length_us,
    "unknown VR in the file meta group (NotImplementedError)": _unknown_vr_in_file_meta,
    "undefined-length sequence cut before its delimiter (OSError: No tag to read)": _sequence_without_items_end,
    "sequences nested 2000 deep (RecursionError)": _nested_too_deep,
}


@pytest.mark.parametrize("finding", sorted(FINDINGS))
def test_fuzz_findings_are_refused_as_malformed_with_a_reason(archive: Archive, finding: str) -> None:
    data = FINDINGS[finding]()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = check_ingest(archive, data)
    assert result.outcome is StoreOutcome.MALFORMED, result
    assert result.status == dimse_status.CANNOT_UNDERSTAND
    assert "unreadable DICOM file" in result.message or "cannot be parsed" in result.message
    assert archive.instance_count() == 0


@pytest.mark.parametrize("finding", sorted(FINDINGS))
def test_fuzz_findings_leave_no_file_nor_folder_when_their_values_are_judged_during_the_sync(tmp_path: Path, finding: str) -> None:
    # With fsync on, values are decoded while the file is written: a bad one must take that file back.
    archive = Archive(tmp_path / "dicom", f"sqlite:///{tmp_path / 'index.sqlite3'}", durability="file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = archive.store_file_bytes(FINDINGS[finding]())
        left = sorted(p.relative_to(archive.storage_dir).as_posix() for p in archive.storage_dir.rglob("*"))
    finally:
        archive.close()
    assert result.outcome is StoreOutcome.MALFORMED, result
    assert left == [".incoming"]


def test_deflated_instance_within_the_limit_is_stored(archive: Archive) -> None:
    data = deflated(to_part10_bytes(make_ct_dataset()))
    assert check_ingest(archive, data).outcome is StoreOutcome.STORED


def test_deflate_bomb_is_refused_in_bounded_memory_and_nothing_is_stored(tmp_path: Path) -> None:
    limit = 32 * 1024**2
    bomb = deflate_bomb(2 * 1024**3)  # about 2 MB that inflate to 2 GiB
    assert len(bomb) < 4 * 1024**2
    archive = Archive(tmp_path / "dicom", f"sqlite:///{tmp_path / 'index.sqlite3'}", durability="none", max_inflated_bytes=limit)
    try:
        tracemalloc.start()
        try:
            result = archive.store_file_bytes(bomb, source_ae_title="BOMBER")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert result.outcome is StoreOutcome.MALFORMED and result.status == dimse_status.CANNOT_UNDERSTAND
        assert f"inflates beyond {limit} bytes" in result.message
        assert peak < limit, f"checking the bomb held {peak} bytes"
        assert archive.instance_count() == 0 and not on_disk(archive)
    finally:
        archive.close()


def test_deflate_bomb_just_under_the_limit_is_stored(tmp_path: Path) -> None:
    data = deflate_bomb(8 * 1024**2)
    archive = Archive(tmp_path / "dicom", f"sqlite:///{tmp_path / 'index.sqlite3'}", durability="none", max_inflated_bytes=16 * 1024**2)
    try:
        assert archive.store_file_bytes(data).outcome is StoreOutcome.STORED
    finally:
        archive.close()


def test_inflated_size_check_refuses_truncated_and_corrupt_streams() -> None:
    data = deflate_bomb(8 * 1024**2)
    body = data[dataset_offset(data) :]
    assert check_inflated_size(body, 16 * 1024**2) > 8 * 1024**2
    with pytest.raises(MalformedDicomError, match="truncated"):
        check_inflated_size(body[: len(body) // 2], 16 * 1024**2)
    with pytest.raises(MalformedDicomError, match="cannot be inflated"):
        check_inflated_size(b"\xff" * 64, 16 * 1024**2)


def test_deflated_uid_hidden_in_the_meta_group_is_still_checked_before_pydicom_inflates() -> None:
    bomb = deflate_bomb(256 * 1024**2)
    assert bomb[META_START:].find(b"1.2.840.10008.1.2.1.99") > 0
    with pytest.raises(MalformedDicomError, match="deflate bomb"):
        parse_part10(bomb, max_inflated_bytes=1024**2)


def test_nesting_that_pydicom_can_read_is_stored(archive: Archive) -> None:
    assert check_ingest(archive, raw_nested_sequences(20)).outcome is StoreOutcome.STORED


def test_seed_files_are_valid_so_that_mutations_start_from_real_dicom(archive: Archive) -> None:
    for data in seeds():
        assert check_ingest(archive, data).outcome is StoreOutcome.STORED
