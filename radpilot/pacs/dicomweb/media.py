"""What a DICOMweb answer is sent as: media types, transfer syntaxes and the choice among the Accept ranges.

The choosers take the parsed Accept header and say what to send, or None when
nothing the client accepts can be offered (the router answers that with 406).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from radpilot.pacs.multipart import MediaType, media_range_matches

DICOM_JSON = "application/dicom+json"
APPLICATION_DICOM = "application/dicom"
OCTET_STREAM = "application/octet-stream"

IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1.99"
EXPLICIT_VR_BIG_ENDIAN = "1.2.840.10008.1.2.2"
NATIVE_SYNTAXES = frozenset(
    {IMPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_LITTLE_ENDIAN, DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_BIG_ENDIAN}
)
# Syntaxes pydicom can rewrite as Explicit VR Little Endian without touching pixel data.
TRANSCODABLE_TO_EXPLICIT_LE = frozenset({IMPLICIT_VR_LITTLE_ENDIAN, DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN})

# Media type of a compressed frame for each encapsulated transfer syntax (PS3.18 Table 8.7.3-5).
FRAME_MEDIA_TYPES: dict[str, str] = {
    "1.2.840.10008.1.2.5": "image/dicom-rle",
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.4.92": "image/jpx",
    "1.2.840.10008.1.2.4.93": "image/jpx",
    "1.2.840.10008.1.2.4.201": "image/jphc",
    "1.2.840.10008.1.2.4.202": "image/jphc",
    "1.2.840.10008.1.2.4.203": "image/jphc",
    "1.2.840.10008.1.2.4.110": "image/jxl",
    "1.2.840.10008.1.2.4.111": "image/jxl",
    "1.2.840.10008.1.2.4.112": "image/jxl",
    "1.2.840.10008.1.2.4.100": "video/mpeg",
    "1.2.840.10008.1.2.4.101": "video/mpeg",
    "1.2.840.10008.1.2.4.102": "video/mp4",
    "1.2.840.10008.1.2.4.103": "video/mp4",
    "1.2.840.10008.1.2.4.104": "video/mp4",
    "1.2.840.10008.1.2.4.105": "video/mp4",
    "1.2.840.10008.1.2.4.106": "video/mp4",
}


@dataclass(frozen=True)
class PartChoice:
    """How to send a set of parts: the media type, the transfer syntax, single or multipart."""

    media_type: str
    transfer_syntax: str | None  # None: each part as stored
    multipart: bool


def requested_part(media_range: MediaType) -> tuple[str, str | None, bool]:
    """(part type, transfer-syntax parameter, multipart?) of one Accept media range."""
    if media_range.type == "multipart/related":
        return media_range.params.get("type", "*/*").lower(), media_range.params.get("transfer-syntax"), True
    if media_range.type in ("*/*", "multipart/*", "*"):
        return "*/*", None, True
    return media_range.type, media_range.params.get("transfer-syntax"), False


def choose_instance_encoding(ranges: Sequence[MediaType], syntaxes: set[str], count: int) -> PartChoice | None:
    """How to send ``count`` instances stored in ``syntaxes``, as the Accept ranges allow, or None (406)."""
    for media_range in ranges:
        part_type, syntax, multipart = requested_part(media_range)
        if not media_range_matches(part_type, APPLICATION_DICOM) or (not multipart and count != 1):
            continue
        if syntax in (None, "*"):
            return PartChoice(APPLICATION_DICOM, None, multipart)
        if all(s == syntax or (syntax == EXPLICIT_VR_LITTLE_ENDIAN and s in TRANSCODABLE_TO_EXPLICIT_LE) for s in syntaxes):
            return PartChoice(APPLICATION_DICOM, syntax, multipart)
    return None


def choose_frame_media_type(ranges: Sequence[MediaType], stored_syntax: str, count: int) -> PartChoice | None:
    """The media type to send frames of ``stored_syntax`` in, as the Accept ranges allow, or None (406)."""
    native = stored_syntax in NATIVE_SYNTAXES
    syntax = EXPLICIT_VR_LITTLE_ENDIAN if native else stored_syntax
    natural = OCTET_STREAM if native else FRAME_MEDIA_TYPES.get(stored_syntax, OCTET_STREAM)
    for media_range in ranges:
        part_type, wanted, multipart = requested_part(media_range)
        if not multipart and count != 1:
            continue
        if wanted not in (None, "*") and wanted != syntax:
            continue
        if media_range_matches(part_type, natural):
            return PartChoice(natural, syntax, multipart)
        if part_type == OCTET_STREAM and (native or wanted is not None):
            return PartChoice(OCTET_STREAM, syntax, multipart)
    return None


def accepts_bulk_data(ranges: Sequence[MediaType]) -> bool:
    """True when the Accept ranges allow bulk data (sent as ``application/octet-stream`` parts)."""
    return any(media_range_matches(requested_part(r)[0], OCTET_STREAM) for r in ranges)
