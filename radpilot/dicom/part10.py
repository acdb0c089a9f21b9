"""Strict parsing of DICOM Part 10 files as they arrive from the network, and their layout.

pydicom is lenient: it accepts a file cut short in the middle of an element and
hands back the shorter value.  An archive must not, so :func:`parse_part10`
checks that every top-level element is complete before anything is stored.

A Part 10 file is a 128-byte preamble, ``DICM``, the file meta group (group 0002,
explicit VR little endian, opened by its group length) and the dataset.
:func:`dataset_offset` says where the dataset starts; :func:`normalize_part10`
gives a file written without preamble (or without group length) that layout.
"""

from __future__ import annotations

import io
import re
import zlib
from dataclasses import dataclass

import pydicom
from pydicom.datadict import dictionary_has_tag, dictionary_VR
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import data_element_generator
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import DeflatedExplicitVRLittleEndian, ImplicitVRLittleEndian

from radpilot.dicom.fast_metadata import read_plain_instance
from radpilot.dicom.json_model import BINARY_VRS, DEFAULT_BULK_DATA_THRESHOLD, is_deferred, read_metadata_header

UID_PATTERN = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
REQUIRED_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")
UNDEFINED_LENGTH = 0xFFFFFFFF
# A deflated dataset may inflate to no more than this unless the caller says otherwise (Settings.max_inflated_bytes).
DEFAULT_MAX_INFLATED_BYTES = 512 * 1024**2
# Inflation is checked in steps of this many output bytes, so checking a bomb holds no more than one step.
INFLATE_STEP = 8 * 1024 * 1024
INFLATE_FEED = 64 * 1024
NESTED_TOO_DEEP = "unreadable DICOM file: sequences nested too deeply"

PREAMBLE_LENGTH = 128
DICM_MARKER = b"DICM"
META_START = PREAMBLE_LENGTH + len(DICM_MARKER)  # offset of the file meta group
GROUP_LENGTH_ELEMENT_LENGTH = 12  # (0002,0000) UL: tag, VR, 2-byte length, 4-byte value
FILE_META_GROUP = b"\x02\x00"  # group 0002, little endian
# Explicit VRs whose length field is 4 bytes after 2 reserved bytes (PS3.5 7.1.2).
LONG_LENGTH_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"})


class MalformedDicomError(ValueError):
    """The bytes are not a complete, usable DICOM instance; the message says why."""


@dataclass(frozen=True)
class ParsedInstance:
    """A validated instance: its dataset, values above ``defer_size`` bytes left unread, and its transfer syntax.

    ``metadata`` is the instance's WADO-RS metadata when :mod:`radpilot.dicom.fast_metadata` read
    the instance from its bytes; it then also vouches that every value decodes (``decode_values``
    need not run), and ``dataset`` is the header that read gave: the file meta group and every
    top-level element of at most ``defer_size`` bytes, the larger ones left out.
    """

    dataset: Dataset
    transfer_syntax_uid: str
    metadata: bytes | None = None

    @property
    def sop_instance_uid(self) -> str:
        return str(self.dataset.SOPInstanceUID)


def is_valid_uid(value: object) -> bool:
    """Return True for a syntactically valid DICOM UID (PS3.5 9.1)."""
    text = str(value) if value is not None else ""
    return 0 < len(text) <= 64 and bool(UID_PATTERN.match(text))


def parse_part10(
    data: bytes,
    *,
    max_inflated_bytes: int = DEFAULT_MAX_INFLATED_BYTES,
    defer_size: int = DEFAULT_BULK_DATA_THRESHOLD,
    decode: bool = True,
) -> ParsedInstance:
    """Parse and validate a DICOM Part 10 file held in memory.

    Parameters
    ----------
    data
        The whole file: 128-byte preamble, ``DICM``, file meta information, dataset.
    max_inflated_bytes
        Largest size a Deflated Explicit VR Little Endian dataset may inflate to: a
        deflate bomb (kilobytes that inflate to gigabytes) is refused after inflating
        this much, in steps, before pydicom (which inflates all of it at once) reads it.
    defer_size
        Binary values longer than this (pixel data, icons, bulk private data) are left
        unread in ``data``, as reading the file for WADO-RS metadata leaves them, so the
        archive builds an instance's metadata from this very dataset (one read, one
        decoding). A deflated dataset is read whole: a deferred value could not be found
        again in the deflated stream.
    decode
        Decode every value now (see :func:`decode_values`). False leaves that to the
        caller, who must call :func:`decode_values` before it trusts the instance: the
        archive does so while the file is being synced, to hide the cost.

    Returns
    -------
    ParsedInstance
        The dataset (every value decoded when ``decode``, except deferred binary ones), the
        transfer syntax, and the metadata when the fast path read it.

    Raises
    ------
    MalformedDicomError
        If the bytes are not DICOM, are truncated, lack a required UID, hold an element
        that cannot be decoded, or inflate beyond ``max_inflated_bytes``.
    """
    if len(data) < META_START or data[PREAMBLE_LENGTH:META_START] != DICM_MARKER:
        raise MalformedDicomError("not a DICOM Part 10 file: no 'DICM' marker after the 128-byte preamble")
    transfer_syntax, meta_end = declared_transfer_syntax(data)
    # The UID anywhere in the meta group counts too: pydicom must never be the one to inflate a bomb.
    if transfer_syntax == DeflatedExplicitVRLittleEndian or DeflatedExplicitVRLittleEndian.encode() in data[META_START:meta_end]:
        check_inflated_size(memoryview(data)[meta_end:], max_inflated_bytes)
    # The common case is read in one walk over the bytes, which also vouches for what the checks below establish.
    plain = None
    if transfer_syntax and meta_end == _dataset_offset_or_none(data):
        plain = read_plain_instance(data, META_START, meta_end, transfer_syntax, defer_size)
    try:
        # Else read exactly as WADO-RS reads a stored file for its metadata, so the archive can keep this dataset's.
        dataset = plain.header if plain is not None else read_metadata_header(data, transfer_syntax or "", defer_size)
        for _ in dataset.file_meta.iterall():
            pass
        # Decoded here, within reach of the handlers below, even when the other values are decoded later.
        required = {keyword: dataset.get(keyword) for keyword in REQUIRED_UIDS}
    except RecursionError:
        raise MalformedDicomError(NESTED_TOO_DEEP) from None
    except Exception as exc:  # noqa: BLE001 - pydicom raises a dozen types for hostile bytes (struct.error, OSError, ...)
        raise _unreadable(exc) from exc
    meta: FileMetaDataset = dataset.file_meta
    transfer_syntax = str(meta.get("TransferSyntaxUID", "") or "")
    if not is_valid_uid(transfer_syntax):
        raise MalformedDicomError("file meta information lacks a valid TransferSyntaxUID (0002,0010)")
    metadata = plain.document if plain is not None else None
    if metadata is None:
        _check_complete(data, transfer_syntax)
    _check_required_uids(required)
    meta_sop = meta.get("MediaStorageSOPInstanceUID")
    if meta_sop and str(meta_sop) != str(dataset.SOPInstanceUID):
        raise MalformedDicomError(
            f"MediaStorageSOPInstanceUID {meta_sop} differs from the dataset's SOPInstanceUID {dataset.SOPInstanceUID}"
        )
    if decode and metadata is None:
        decode_values(dataset)
    return ParsedInstance(dataset=dataset, transfer_syntax_uid=transfer_syntax, metadata=metadata)


def decode_values(dataset: Dataset) -> None:
    """Decode every value of a dataset read by :func:`parse_part10`, so that a bad one is refused now.

    pydicom decodes a value when it is first read: without this, a bad value would be met
    later by the index, the engine or a viewer instead of refusing the instance.

    Raises
    ------
    MalformedDicomError
        If a value cannot be decoded; the message names what pydicom found.
    """
    try:
        _decode_values(dataset)
    except RecursionError:
        raise MalformedDicomError(NESTED_TOO_DEEP) from None
    except Exception as exc:  # noqa: BLE001 - as in parse_part10
        raise _unreadable(exc) from exc


def _unreadable(exc: Exception) -> MalformedDicomError:
    if isinstance(exc, MalformedDicomError):
        return exc
    if isinstance(exc, (InvalidDicomError, zlib.error)):
        return MalformedDicomError(f"unreadable DICOM file: {exc}")
    return MalformedDicomError(f"unreadable DICOM file: {type(exc).__name__}: {str(exc)[:300]}")


def _decode_values(dataset: Dataset) -> None:
    """Decode every value of ``dataset`` and its sequence items, except deferred binary values (bytes need no decoding)."""
    for tag in list(dataset.keys()):
        raw = dataset.get_item(tag, keep_deferred=True)
        if is_deferred(raw) and _is_binary(raw.VR, tag):
            continue
        element = dataset[tag]
        if element.VR == "SQ":
            for item in element.value or ():
                _decode_values(item)


def _is_binary(vr: str | None, tag: int) -> bool:
    if vr is None:  # implicit VR: the dictionary's (an unknown private tag is UN)
        vr = dictionary_VR(tag) if dictionary_has_tag(tag) else "UN"
    return any(choice in BINARY_VRS for choice in vr.split(" or "))


def declared_transfer_syntax(data: bytes) -> tuple[str | None, int]:
    """The Transfer Syntax UID (0002,0010) of a Part 10 file and the offset after its file meta group, read without pydicom.

    The UID is None when the meta group does not name one; the offset is where pydicom
    starts reading the dataset (after the last group 0002 element).
    """
    position, transfer_syntax = META_START, None
    while position + 8 <= len(data) and data[position : position + 2] == FILE_META_GROUP:
        vr = data[position + 4 : position + 6]
        if vr in LONG_LENGTH_VRS:
            start, length = position + 12, int.from_bytes(data[position + 8 : position + 12], "little")
        else:
            start, length = position + 8, int.from_bytes(data[position + 6 : position + 8], "little")
        if data[position + 2 : position + 4] == b"\x10\x00":
            transfer_syntax = data[start : start + length].rstrip(b"\x00 ").decode("latin-1")
        position = start + length
    return transfer_syntax, min(position, len(data))


def check_inflated_size(deflated: bytes | memoryview, limit: int) -> int:
    """Inflate a raw deflate stream in bounded steps and return its inflated size.

    Raises
    ------
    MalformedDicomError
        If it inflates beyond ``limit`` bytes (checked without ever holding more than
        one step of output), cannot be inflated, or has no end.
    """
    decompressor = zlib.decompressobj(-zlib.MAX_WBITS)
    source = memoryview(deflated)
    total = 0
    try:
        # Fed in small pieces: the unconsumed rest of a piece is copied at every step.
        for start in range(0, len(source), INFLATE_FEED):
            pending: bytes | memoryview = source[start : start + INFLATE_FEED]
            while pending and not decompressor.eof:
                total += len(decompressor.decompress(pending, INFLATE_STEP))
                if total > limit:
                    raise MalformedDicomError(
                        f"deflate bomb refused: the dataset inflates beyond {limit} bytes "
                        f"(max_inflated_bytes) from {len(source)} bytes received"
                    )
                pending = decompressor.unconsumed_tail
            if decompressor.eof:
                break
    except zlib.error as exc:
        raise MalformedDicomError(f"deflated dataset cannot be inflated: {exc}") from exc
    if not decompressor.eof:
        raise MalformedDicomError("deflated dataset is truncated (deflate stream has no end)")
    return total


def _check_required_uids(values: dict[str, object]) -> None:
    for keyword, value in values.items():
        if value is None or str(value) == "":
            raise MalformedDicomError(f"dataset is missing the required attribute {keyword}")
        if not is_valid_uid(value):
            raise MalformedDicomError(f"{keyword} {str(value)[:80]!r} is not a valid UID")


def dataset_offset(data: bytes) -> int:
    """Offset of the dataset in a Part 10 file: after the preamble, ``DICM`` and the file meta group.

    The end of the file meta group is taken from its group length (0002,0000), which
    a Part 10 file must have; the archive hashes what follows, so this is the one
    place that decides where that is.

    Raises
    ------
    MalformedDicomError
        If the file meta group does not start with its group length, or the file ends inside it.
    """
    header = data[META_START : META_START + GROUP_LENGTH_ELEMENT_LENGTH]
    if len(header) < GROUP_LENGTH_ELEMENT_LENGTH or header[0:4] != FILE_META_GROUP + b"\x00\x00":
        raise MalformedDicomError("file meta information does not start with (0002,0000) group length")
    group_length = int.from_bytes(header[8:12], "little")
    start = META_START + GROUP_LENGTH_ELEMENT_LENGTH + group_length
    if start > len(data):
        raise MalformedDicomError("file is truncated inside its file meta information")
    return start


def part10_bytes(
    dataset: bytes, *, sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str, implementation_uid: str, implementation_version: str
) -> bytes:
    """A Part 10 file around an encoded dataset: :func:`part10_header`, then the dataset."""
    header = part10_header(
        sop_class_uid=sop_class_uid,
        sop_instance_uid=sop_instance_uid,
        transfer_syntax=transfer_syntax,
        implementation_uid=implementation_uid,
        implementation_version=implementation_version,
    )
    return b"".join((header, dataset))


def part10_header(
    *, sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str, implementation_uid: str, implementation_version: str
) -> bytes:
    """What precedes the dataset in a Part 10 file: preamble, ``DICM`` and a file meta group, as pydicom writes one.

    The group holds the version, the media storage SOP class and instance, the transfer syntax
    and the implementation: the bytes ``pydicom.filewriter.write_file_meta_info`` writes for the
    same values (tests/unit/test_part10.py compares them), a hundredth of its cost.
    """
    elements = (
        _meta_element(0x0001, b"OB", b"\x00\x01"),
        _meta_element(0x0002, b"UI", _padded(sop_class_uid, b"\x00")),
        _meta_element(0x0003, b"UI", _padded(sop_instance_uid, b"\x00")),
        _meta_element(0x0010, b"UI", _padded(transfer_syntax, b"\x00")),
        _meta_element(0x0012, b"UI", _padded(implementation_uid, b"\x00")),
        _meta_element(0x0013, b"SH", _padded(implementation_version, b" ")),
    )
    group = b"".join(elements)
    return b"".join((b"\0" * PREAMBLE_LENGTH, DICM_MARKER, _meta_element(0x0000, b"UL", len(group).to_bytes(4, "little")), group))


def _padded(text: str, pad: bytes) -> bytes:
    value = text.encode("latin-1")
    return value + pad if len(value) % 2 else value


def _meta_element(element: int, vr: bytes, value: bytes) -> bytes:
    head = FILE_META_GROUP + element.to_bytes(2, "little") + vr
    if vr in LONG_LENGTH_VRS:
        return head + b"\0\0" + len(value).to_bytes(4, "little") + value
    return head + len(value).to_bytes(2, "little") + value


def _dataset_offset_or_none(data: bytes) -> int | None:
    try:
        return dataset_offset(data)
    except MalformedDicomError:
        return None  # the pydicom path reads such a file and words what is wrong with it


def file_meta_end(data: bytes) -> int | None:
    """Offset after the group 0002 elements at the start of ``data``, found element by element.

    For file meta written without preamble and perhaps without the group length that
    :func:`dataset_offset` needs. Returns None when ``data`` ends inside an element
    or does not start with a group 0002 element.
    """
    position = 0
    while position + 8 <= len(data) and data[position : position + 2] == FILE_META_GROUP:
        vr = data[position + 4 : position + 6]
        if vr in LONG_LENGTH_VRS:
            if position + 12 > len(data):
                return None
            position += 12 + int.from_bytes(data[position + 8 : position + 12], "little")
        else:
            position += 8 + int.from_bytes(data[position + 6 : position + 8], "little")
    return position if 0 < position <= len(data) else None


def normalize_part10(data: bytes) -> bytes:
    """Give a DICOM file written without preamble (``dcmwrite(..., enforce_file_format=False)``) one.

    A file that starts with ``DICM`` gets the 128-byte preamble; one that starts with
    file meta elements but lacks the group length gets a preamble, ``DICM`` and a
    rewritten file meta group. Anything else is returned unchanged (and judged by
    :func:`parse_part10`).
    """
    if len(data) >= META_START and data[PREAMBLE_LENGTH:META_START] == DICM_MARKER:
        return data
    if data[: len(DICM_MARKER)] == DICM_MARKER:
        return b"\0" * PREAMBLE_LENGTH + data
    if data[: len(FILE_META_GROUP)] != FILE_META_GROUP:
        return data
    end = file_meta_end(data)
    if end is None:
        return data
    try:
        meta = pydicom.dcmread(io.BytesIO(data[:end]), force=True).file_meta
    except Exception:  # noqa: BLE001 - unreadable meta: leave the bytes for the strict parser to refuse
        return data
    buffer = io.BytesIO()
    buffer.write(b"\0" * PREAMBLE_LENGTH + DICM_MARKER)
    write_file_meta_info(buffer, FileMetaDataset(meta), enforce_standard=True)
    return buffer.getvalue() + data[end:]


def _dataset_stream(data: bytes, transfer_syntax: str) -> tuple[io.BytesIO, bool, bool]:
    """Return a stream positioned at the dataset after the file meta group."""
    body = data[dataset_offset(data) :]
    if transfer_syntax == DeflatedExplicitVRLittleEndian:
        try:
            decompressor = zlib.decompressobj(-zlib.MAX_WBITS)
            body = decompressor.decompress(body) + decompressor.flush()
        except zlib.error as exc:
            raise MalformedDicomError(f"deflated dataset cannot be inflated: {exc}") from exc
        if not decompressor.eof:
            raise MalformedDicomError("deflated dataset is truncated (deflate stream has no end)")
    implicit = transfer_syntax == ImplicitVRLittleEndian
    little = transfer_syntax != "1.2.840.10008.1.2.2"
    return io.BytesIO(body), implicit, little


def _check_complete(data: bytes, transfer_syntax: str) -> None:
    """Walk the top-level elements and fail if any value is shorter than declared."""
    stream, implicit, little = _dataset_stream(data, transfer_syntax)
    total = len(stream.getbuffer())
    try:
        for element in data_element_generator(stream, implicit, little, defer_size=None):
            length = getattr(element, "length", None)
            if length is None:
                continue  # an undefined-length sequence, already parsed to its delimiter by pydicom
            if length != UNDEFINED_LENGTH:
                value = element.value or b""
                if len(value) < length:
                    raise MalformedDicomError(f"file is truncated inside element {element.tag} ({len(value)} of {length} bytes present)")
    except MalformedDicomError:
        raise
    except (EOFError, ValueError, KeyError, NotImplementedError) as exc:
        raise MalformedDicomError(f"dataset cannot be parsed: {exc}") from exc
    if stream.tell() < total:
        raise MalformedDicomError(f"dataset has {total - stream.tell()} trailing bytes that are not DICOM elements")
