"""Strict parsing of DICOM Part 10 files as they arrive from the network.

pydicom is lenient: it accepts a file cut short in the middle of an element and
hands back the shorter value.  An archive must not, so :func:`parse_part10`
checks that every top-level element is complete before anything is stored.
"""

from __future__ import annotations

import io
import re
import zlib
from dataclasses import dataclass

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import data_element_generator
from pydicom.uid import DeflatedExplicitVRLittleEndian, ImplicitVRLittleEndian

UID_PATTERN = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
REQUIRED_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")
UNDEFINED_LENGTH = 0xFFFFFFFF


class MalformedDicomError(ValueError):
    """The bytes are not a complete, usable DICOM instance; the message says why."""


@dataclass(frozen=True)
class ParsedInstance:
    """A validated instance: its header (without pixel data) and its transfer syntax."""

    dataset: Dataset
    transfer_syntax_uid: str

    @property
    def sop_instance_uid(self) -> str:
        return str(self.dataset.SOPInstanceUID)


def is_valid_uid(value: object) -> bool:
    """Return True for a syntactically valid DICOM UID (PS3.5 9.1)."""
    text = str(value) if value is not None else ""
    return 0 < len(text) <= 64 and bool(UID_PATTERN.match(text))


def parse_part10(data: bytes) -> ParsedInstance:
    """Parse and validate a DICOM Part 10 file held in memory.

    Parameters
    ----------
    data
        The whole file: 128-byte preamble, ``DICM``, file meta information, dataset.

    Returns
    -------
    ParsedInstance
        The header dataset (pixel data not loaded) and the transfer syntax.

    Raises
    ------
    MalformedDicomError
        If the bytes are not DICOM, are truncated, or lack a required UID.
    """
    if len(data) < 132 or data[128:132] != b"DICM":
        raise MalformedDicomError("not a DICOM Part 10 file: no 'DICM' marker after the 128-byte preamble")
    try:
        dataset = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    except (InvalidDicomError, EOFError, ValueError, KeyError, TypeError, NotImplementedError, zlib.error) as exc:
        raise MalformedDicomError(f"unreadable DICOM file: {exc}") from exc
    meta: FileMetaDataset = dataset.file_meta
    transfer_syntax = str(meta.get("TransferSyntaxUID", "") or "")
    if not is_valid_uid(transfer_syntax):
        raise MalformedDicomError("file meta information lacks a valid TransferSyntaxUID (0002,0010)")
    _check_complete(data, transfer_syntax)
    _check_required_uids(dataset)
    meta_sop = meta.get("MediaStorageSOPInstanceUID")
    if meta_sop and str(meta_sop) != str(dataset.SOPInstanceUID):
        raise MalformedDicomError(
            f"MediaStorageSOPInstanceUID {meta_sop} differs from the dataset's SOPInstanceUID {dataset.SOPInstanceUID}"
        )
    return ParsedInstance(dataset=dataset, transfer_syntax_uid=transfer_syntax)


def _check_required_uids(dataset: Dataset) -> None:
    for keyword in REQUIRED_UIDS:
        value = dataset.get(keyword)
        if value is None or str(value) == "":
            raise MalformedDicomError(f"dataset is missing the required attribute {keyword}")
        if not is_valid_uid(value):
            raise MalformedDicomError(f"{keyword} {str(value)[:80]!r} is not a valid UID")


def _dataset_stream(data: bytes, transfer_syntax: str) -> tuple[io.BytesIO, bool, bool]:
    """Return a stream positioned at the dataset after the file meta group."""
    stream = io.BytesIO(data)
    stream.seek(132)
    # Group 0002 is always explicit VR little endian; skip it using its group length.
    header = stream.read(12)
    if len(header) < 12 or header[0:4] != b"\x02\x00\x00\x00":
        raise MalformedDicomError("file meta information does not start with (0002,0000) group length")
    group_length = int.from_bytes(header[8:12], "little")
    start = 132 + 12 + group_length
    if start > len(data):
        raise MalformedDicomError("file is truncated inside its file meta information")
    body = data[start:]
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
                    raise MalformedDicomError(
                        f"file is truncated inside element {element.tag} "
                        f"({len(value)} of {length} bytes present)"
                    )
    except MalformedDicomError:
        raise
    except (EOFError, ValueError, KeyError, NotImplementedError) as exc:
        raise MalformedDicomError(f"dataset cannot be parsed: {exc}") from exc
    if stream.tell() < total:
        raise MalformedDicomError(f"dataset has {total - stream.tell()} trailing bytes that are not DICOM elements")
