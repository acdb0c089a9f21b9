"""Structure-aware mutations of valid DICOM Part 10 files, and the ingest invariant they are checked against.

Shared by the short fuzz run in CI (tests/unit/test_ingest_fuzz.py) and the long one
(benchmarks/fuzz_ingest.py). The mutations know where the elements of an explicit VR
little endian file are, so that a mutation hits a tag, a VR or a length field instead of
pixel noise that any parser shrugs off.
"""

from __future__ import annotations

import functools
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
)
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from radpilot.archive import Archive, StoreOutcome, StoreResult
from radpilot.archive.store import OPEN_MARKER
from radpilot.dicom.part10 import LONG_LENGTH_VRS, META_START, dataset_offset
from tests.factories import as_implicit_vr, make_ct_dataset, to_part10_bytes

TRANSFER_SYNTAXES = (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    ExplicitVRBigEndian,
    DeflatedExplicitVRLittleEndian,
    RLELossless,
    JPEG2000Lossless,
    "1.2.840.10008.1.2.4.999",  # unknown to everyone
    "1.2.3.",  # not a UID
    "",
    "1.2.840.10008.1.2.1\x00",
)
HOSTILE_LENGTHS = (0, 1, 3, 0x7FFF, 0xFFFE, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFE, 0xFFFFFFFF, 0x10000000)
# Two-letter codes that are VRs, look like one, or are not: pydicom must meet each in a place it does not expect.
VR_CODES = (b"SQ", b"OB", b"OW", b"UN", b"UT", b"UI", b"US", b"UL", b"FD", b"AT", b"DS", b"IS", b"PN", b"XX", b"\x00\x00", b"ox")


@dataclass(frozen=True)
class Element:
    """Where one top-level element of a little endian byte string sits (no VR field when written with implicit VR)."""

    offset: int
    vr_offset: int | None
    length_offset: int
    length_size: int


def explicit_le_elements(data: bytes, start: int) -> list[Element]:
    """The top-level elements from ``start`` (file meta or dataset, explicit VR little endian)."""
    elements = []
    position = start
    while position + 8 <= len(data):
        vr = data[position + 4 : position + 6]
        if vr in LONG_LENGTH_VRS:
            length = int.from_bytes(data[position + 8 : position + 12], "little")
            elements.append(Element(position, position + 4, position + 8, 4))
            if length == 0xFFFFFFFF:
                break  # an undefined length: its end is found only by parsing it
            position += 12 + length
        else:
            elements.append(Element(position, position + 4, position + 6, 2))
            position += 8 + int.from_bytes(data[position + 6 : position + 8], "little")
    return elements


def implicit_le_elements(data: bytes, start: int) -> list[Element]:
    """The top-level elements from ``start`` of a dataset written with implicit VR little endian."""
    elements = []
    position = start
    while position + 8 <= len(data):
        length = int.from_bytes(data[position + 4 : position + 8], "little")
        elements.append(Element(position, None, position + 4, 4))
        if length == 0xFFFFFFFF:
            break  # an undefined length: its end is found only by parsing it
        position += 8 + length
    return elements


@functools.cache
def nested_sequence_dataset(depth: int, *, undefined_length: bool) -> bytes:
    """A valid CT instance carrying a sequence nested ``depth`` items deep."""
    ds = make_ct_dataset(rows=4, columns=4)
    inner = Dataset()
    inner.CodeValue = "X"
    for _ in range(depth):
        outer = Dataset()
        outer.ContentSequence = Sequence([inner])
        inner = outer
    ds.ContentSequence = inner.ContentSequence
    if undefined_length:
        ds["ContentSequence"].is_undefined_length = True
        for item in _items(ds.ContentSequence):
            item.is_undefined_length_sequence_item = True
            if "ContentSequence" in item:
                item["ContentSequence"].is_undefined_length = True
    return to_part10_bytes(ds)


def raw_nested_sequences(depth: int) -> bytes:
    """A valid CT instance with Content Sequences nested ``depth`` deep, written byte by byte (pydicom's writer recurses)."""
    data = to_part10_bytes(make_ct_dataset(rows=4, columns=4))
    opening = b"\x40\x00\x30\xa7SQ\x00\x00\xff\xff\xff\xff" + b"\xfe\xff\x00\xe0\xff\xff\xff\xff"
    closing = b"\xfe\xff\x0d\xe0\x00\x00\x00\x00" + b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
    innermost = b"\x08\x00\x00\x01SH\x02\x00X "
    sequence = opening * depth + innermost + closing * depth
    pixel_data = data.index(b"\xe0\x7f\x10\x00", dataset_offset(data))
    return data[:pixel_data] + sequence + data[pixel_data:]


def _items(sequence: Sequence) -> list[Dataset]:
    found: list[Dataset] = []
    stack = list(sequence)
    while stack:
        item = stack.pop()
        found.append(item)
        stack.extend(item.get("ContentSequence") or [])
    return found


def with_transfer_syntax(data: bytes, transfer_syntax: str) -> bytes:
    """``data`` with its (0002,0010) value replaced, lengths kept consistent."""
    elements = explicit_le_elements(data, META_START)
    for element in elements:
        if data[element.offset : element.offset + 4] == b"\x02\x00\x10\x00":
            value = transfer_syntax.encode("latin-1")
            if len(value) % 2:
                value += b"\x00"
            old_length = int.from_bytes(data[element.length_offset : element.length_offset + 2], "little")
            head = data[: element.length_offset] + len(value).to_bytes(2, "little")
            rebuilt = head + value + data[element.length_offset + 2 + old_length :]
            group_length = int.from_bytes(rebuilt[META_START + 8 : META_START + 12], "little") + len(value) - old_length
            return rebuilt[: META_START + 8] + (group_length & 0xFFFFFFFF).to_bytes(4, "little") + rebuilt[META_START + 12 :]
    return data


def deflated(data: bytes) -> bytes:
    """The same instance in Deflated Explicit VR Little Endian."""
    start = dataset_offset(data)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    body = compressor.compress(data[start:]) + compressor.flush()
    return with_transfer_syntax(data[:start], DeflatedExplicitVRLittleEndian) + body


def deflate_bomb(inflated_size: int, *, rows: int = 8, columns: int = 8) -> bytes:
    """A Deflated Explicit VR Little Endian CT instance whose dataset inflates to about ``inflated_size`` bytes.

    A valid header followed by a Pixel Data value of zeros. Built from one compressed
    block of zeros repeated: a full flush makes each copy independent of the last, so a
    bomb of gigabytes costs milliseconds and a few megabytes to build.
    """
    ds = make_ct_dataset(rows=rows, columns=columns)
    del ds.PixelData
    plain = to_part10_bytes(ds)
    start = dataset_offset(plain)
    block = 8 * 1024 * 1024
    copies = max(1, inflated_size // block)
    length = copies * block
    header = plain[start:] + b"\xe0\x7f\x10\x00OB\x00\x00" + min(length, 0xFFFFFFFE).to_bytes(4, "little")
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    head = compressor.compress(header) + compressor.flush(zlib.Z_FULL_FLUSH)
    zeros = compressor.compress(bytes(block)) + compressor.flush(zlib.Z_FULL_FLUSH)
    tail = compressor.flush(zlib.Z_FINISH)
    return with_transfer_syntax(plain[:start], DeflatedExplicitVRLittleEndian) + head + zeros * copies + tail


@functools.cache
def seeds() -> tuple[bytes, ...]:
    """Valid instances the mutations start from: plain, deflated, with nested sequences of either length kind, implicit VR."""
    plain = to_part10_bytes(make_ct_dataset(rows=8, columns=8))
    return (
        plain,
        deflated(to_part10_bytes(make_ct_dataset(rows=8, columns=8))),
        nested_sequence_dataset(6, undefined_length=True),
        nested_sequence_dataset(3, undefined_length=False),
        # its own instance, its pixel data beyond the bulk data threshold: the fast path reads it
        as_implicit_vr(to_part10_bytes(make_ct_dataset(rows=32, columns=32))),
        as_implicit_vr(nested_sequence_dataset(3, undefined_length=True)),
    )


@st.composite
def mutated_part10(draw: st.DrawFn) -> bytes:
    """One of :func:`seeds` with one to three structure-aware mutations applied."""
    data = bytearray(draw(st.sampled_from(seeds())))
    for _ in range(draw(st.integers(1, 3))):
        data = bytearray(_mutate(draw, bytes(data)))
    return bytes(data)


def _mutate(draw: st.DrawFn, data: bytes) -> bytes:
    kind = draw(st.sampled_from(("truncate", "flip", "length", "vr", "transfer_syntax", "insert", "delete_element", "nest")))
    if kind == "truncate":
        return data[: draw(st.integers(0, max(len(data) - 1, 0)))]
    if kind == "flip":
        if not data:
            return data
        position = draw(st.integers(0, len(data) - 1))
        return data[:position] + bytes([data[position] ^ draw(st.integers(1, 255))]) + data[position + 1 :]
    if kind == "insert":
        position = draw(st.integers(0, len(data)))
        return data[:position] + draw(st.binary(min_size=1, max_size=16)) + data[position:]
    if kind == "transfer_syntax":
        return with_transfer_syntax(data, draw(st.sampled_from(TRANSFER_SYNTAXES)))
    if kind == "nest":
        return nested_sequence_dataset(draw(st.integers(1, 120)), undefined_length=draw(st.booleans()))
    elements = _elements_of(data)
    if not elements:
        return data
    element = draw(st.sampled_from(elements))
    if kind == "length":
        length = draw(st.sampled_from(HOSTILE_LENGTHS) | st.integers(0, 0xFFFFFFFF))
        size = element.length_size
        length &= (1 << (8 * size)) - 1
        return data[: element.length_offset] + length.to_bytes(size, "little") + data[element.length_offset + size :]
    if kind == "vr":
        if element.vr_offset is None:  # written with implicit VR: put a VR where pydicom expects the length
            return data[: element.length_offset] + draw(st.sampled_from(VR_CODES)) + data[element.length_offset + 2 :]
        return data[: element.vr_offset] + draw(st.sampled_from(VR_CODES)) + data[element.vr_offset + 2 :]
    # delete_element: the next element's bytes follow straight on
    following = [e.offset for e in elements if e.offset > element.offset]
    end = following[0] if following else len(data)
    return data[: element.offset] + data[end:]


def _elements_of(data: bytes) -> list[Element]:
    elements = explicit_le_elements(data, META_START) if len(data) > META_START else []
    try:
        start = dataset_offset(data)
        explicit = data[start + 4 : start + 6].isalpha()  # an implicit VR dataset has a length there
        elements += (explicit_le_elements if explicit else implicit_le_elements)(data, start)
    except Exception:  # noqa: BLE001 - a mutated meta group: mutate what can be found
        pass
    return elements


def on_disk(archive: Archive) -> set[str]:
    """Every file under the archive's storage folder (temporaries included, the open marker not), relative."""
    files = {p.relative_to(archive.storage_dir).as_posix() for p in archive.storage_dir.rglob("*") if p.is_file()}
    return files - {OPEN_MARKER}


class IngestInvariantError(AssertionError):
    """The archive broke its contract on one input."""


def check_ingest(archive: Archive, data: bytes) -> StoreResult:
    """Store ``data`` and check the ingest contract; raises IngestInvariantError (or the escaped exception) when broken.

    The contract: the archive stores the instance or refuses it with a reason, never raises;
    no temporary file is left; a stored instance reads back byte for byte; a refused one
    changes neither the files nor the index.
    """
    before_files = on_disk(archive)
    before_count = archive.instance_count()
    result = archive.store_file_bytes(data, source_ae_title="FUZZ")
    after_files = on_disk(archive)
    if any(name.startswith(".incoming/") for name in after_files):
        raise IngestInvariantError(f"temporary file left behind after {result.outcome}: {sorted(after_files - before_files)}")
    if result.outcome is StoreOutcome.STORED:
        [instance] = archive.instances_by_uid([result.sop_instance_uid])
        if archive.read_bytes(instance) != data:
            raise IngestInvariantError("stored file differs from the bytes received")
        if archive.instance_count() != before_count + 1 or len(after_files - before_files) != 1:
            raise IngestInvariantError("a stored instance must add exactly one file and one index row")
    else:
        if not result.message:
            raise IngestInvariantError(f"{result.outcome} without a reason")
        if after_files != before_files or archive.instance_count() != before_count:
            raise IngestInvariantError(f"{result.outcome} changed the archive: {sorted(after_files ^ before_files)}")
    if result.outcome is StoreOutcome.FAILED:
        raise IngestInvariantError(f"storage failure on a healthy disk: {result.message}")
    return result


def open_fuzz_archive(folder: Path) -> Archive:
    """A scratch archive (SQLite, no fsync): the invariant, not the disk, is under test."""
    return Archive(folder / "dicom", f"sqlite:///{folder / 'index.sqlite3'}", durability="none")


@dataclass
class ApiFuzzReport:
    """What a schemathesis run found: per operation, the requests made and the failures."""

    operations: int = 0
    requests: int = 0
    failures: dict[str, str] = field(default_factory=dict)


# A server error is a crash; a response whose body breaks its documented schema misleads a client.
# Undocumented 4xx statuses and media types (FastAPI documents only 200 and 422) are left out.
API_CHECKS = (not_a_server_error, response_schema_conformance)


def fuzz_api(app: Any, headers: dict[str, str], max_examples: int, *, derandomize: bool = True) -> ApiFuzzReport:
    """Run schemathesis in process against every operation of ``app``'s OpenAPI schema (/api and /dicomweb)."""
    schema = schemathesis.openapi.from_asgi("/api/openapi.json", app, headers=headers)
    report = ApiFuzzReport()
    for result in schema.get_all_operations():
        operation = result.ok()
        report.operations += 1

        @given(case=operation.as_strategy())
        @settings(
            max_examples=max_examples,
            deadline=None,
            derandomize=derandomize,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def call(case: Any) -> None:
            report.requests += 1
            case.call_and_validate(headers=headers, checks=list(API_CHECKS))

        try:
            call()
        except Exception as exc:  # noqa: BLE001 - a failure of one operation is recorded; the others still run
            report.failures[operation.label] = f"{type(exc).__name__}: {str(exc)[:2000]}"
    return report
