"""STOW-RS (PS3.18 10.5): the parts of a ``multipart/related`` request stored in the archive.

Each part is stored through :meth:`Archive.store_file_bytes` and its outcome kept
with the DIMSE status the archive gave it (:mod:`radpilot.dicom.status`). The answer
is the PS3.18 Store Instances Response in DICOM JSON: ReferencedSOPSequence for
stored (and identical re-sent) instances, FailedSOPSequence with FailureReason
(0xC000 unreadable or wrong part type, 0xA900 conflicting re-send or wrong study,
0xA700 storage failure) and the human-readable reason in **TextValue (0040,A160)**
(UT, so no length limit).

A request that cannot be handled at all raises :class:`StowRequestError`.
"""

from __future__ import annotations

import base64
import binascii
import enum
import io
import logging
import mmap
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pydicom
from pydicom.uid import DeflatedExplicitVRLittleEndian

from radpilot.archive.query import Query, QueryLevel
from radpilot.archive.store import Archive, StoreOutcome, StoreResult
from radpilot.dicom import status as dimse_status
from radpilot.dicom.json_model import attribute_json
from radpilot.dicom.part10 import declared_transfer_syntax, normalize_part10
from radpilot.pacs.dicomweb.media import APPLICATION_DICOM
from radpilot.pacs.multipart import MultipartError, Part, boundary_of, parse_media_type, parse_multipart

logger = logging.getLogger(__name__)

STOW_SOURCE = "STOW-RS"
SPOOL_IN_MEMORY_BYTES = 64 * 1024 * 1024


class StowRequestErrorKind(enum.Enum):
    MALFORMED = "malformed"  # a Content-Type or body that cannot be parsed, or a body without parts
    UNSUPPORTED_MEDIA_TYPE = "unsupported media type"  # not multipart/related of application/dicom parts


class StowRequestError(Exception):
    """A STOW-RS request that is refused as a whole; ``kind`` says why.

    Parameters
    ----------
    kind
        What is wrong with the request.
    message
        The same, in words a user can act on.
    header
        The request header at fault, if one is.
    """

    def __init__(self, kind: StowRequestErrorKind, message: str, header: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.header = header


class SpooledBody:
    """A request body kept in memory up to a size, then in an anonymous temporary file."""

    def __init__(self, memory_limit: int = SPOOL_IN_MEMORY_BYTES) -> None:
        self._memory_limit = memory_limit
        self._chunks: list[bytes] = []
        self._file: Any = None
        self._map: mmap.mmap | None = None
        self.size = 0

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self._file is None and self.size > self._memory_limit:
            self._file = tempfile.TemporaryFile(prefix="radpilot-stow-")
            self._file.writelines(self._chunks)
            self._chunks = []
        if self._file is not None:
            self._file.write(chunk)
        else:
            self._chunks.append(chunk)

    def buffer(self) -> bytes | mmap.mmap:
        if self._file is None:
            return b"".join(self._chunks)
        self._file.flush()
        self._map = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
        return self._map

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
        if self._file is not None:
            self._file.close()
        self._chunks = []


@dataclass(frozen=True)
class StowOutcome:
    """What happened to one part of a STOW-RS request."""

    part: int
    accepted: bool
    status: int
    sop_class_uid: str = ""
    sop_instance_uid: str = ""
    study_instance_uid: str = ""
    message: str = ""
    not_dicom: bool = False  # refused for its Content-Type, not for its content


@dataclass(frozen=True)
class StowAnswer:
    """The outcome of every part of a request and the Store Instances Response that reports them."""

    outcomes: list[StowOutcome]
    body: dict

    @property
    def stored(self) -> int:
        return sum(o.accepted for o in self.outcomes)


def stow_boundary(content_type: str | None) -> str:
    """The multipart boundary of a STOW-RS request with this Content-Type header.

    Raises
    ------
    StowRequestError
        UNSUPPORTED_MEDIA_TYPE when the request is not ``multipart/related`` of
        ``application/dicom``; MALFORMED when the header or its boundary cannot be parsed.
    """
    if not content_type:
        raise StowRequestError(
            StowRequestErrorKind.UNSUPPORTED_MEDIA_TYPE,
            'STOW-RS needs Content-Type: multipart/related; type="application/dicom"',
            "Content-Type",
        )
    try:
        media_type = parse_media_type(content_type)
    except MultipartError as exc:
        raise StowRequestError(StowRequestErrorKind.MALFORMED, f"unreadable Content-Type: {exc}", "Content-Type") from None
    if media_type.type != "multipart/related":
        raise StowRequestError(
            StowRequestErrorKind.UNSUPPORTED_MEDIA_TYPE,
            f'Content-Type {media_type.type} is not supported: send multipart/related; type="application/dicom"',
            "Content-Type",
        )
    declared = media_type.params.get("type", APPLICATION_DICOM).lower()
    if declared != APPLICATION_DICOM:
        raise StowRequestError(
            StowRequestErrorKind.UNSUPPORTED_MEDIA_TYPE,
            f"multipart/related type {declared!r} is not supported: only application/dicom parts",
            "Content-Type",
        )
    try:
        return boundary_of(media_type)
    except MultipartError as exc:
        raise StowRequestError(StowRequestErrorKind.MALFORMED, str(exc), "Content-Type") from None


def _best_effort_uids(data: bytes) -> tuple[str, str]:
    """SOP Class and Instance UID of a refused part, where they can be read at all (for the failure item)."""
    transfer_syntax, meta_end = declared_transfer_syntax(data)
    if transfer_syntax == DeflatedExplicitVRLittleEndian or DeflatedExplicitVRLittleEndian.encode() in data[:meta_end]:
        # pydicom would inflate all of a refused (perhaps a bomb's) dataset: the file meta names the instance too.
        try:
            meta = pydicom.dcmread(io.BytesIO(data[:meta_end]), force=True).file_meta
            return str(meta.get("MediaStorageSOPClassUID", "") or ""), str(meta.get("MediaStorageSOPInstanceUID", "") or "")
        except Exception:  # noqa: BLE001 - the part is already refused; the UIDs are a courtesy
            return "", ""
    try:
        dataset = pydicom.dcmread(io.BytesIO(data), force=True, stop_before_pixels=True, specific_tags=["SOPClassUID", "SOPInstanceUID"])
        return str(dataset.get("SOPClassUID", "") or ""), str(dataset.get("SOPInstanceUID", "") or "")
    except Exception:  # noqa: BLE001 - the part is already refused; the UIDs are a courtesy
        return "", ""


def _wrong_type(part: Part) -> str | None:
    """Why a part is not an application/dicom part (None when it is, or declares no type)."""
    declared = part.content_type
    if not declared:
        return None  # the type parameter of the request applies
    try:
        media_type = parse_media_type(declared).type
    except MultipartError as exc:
        return f"part {part.index}: unreadable Content-Type: {exc}"
    if media_type != APPLICATION_DICOM:
        return f"part {part.index} has Content-Type {media_type}; only application/dicom parts are stored"
    return None


def _part_payload(part: Part, buffer: bytes | mmap.mmap) -> tuple[bytes | None, str]:
    """The DICOM bytes of a part (transfer encoding undone), or (None, why they cannot be had)."""
    data = part.content(buffer)
    encoding = part.headers.get("content-transfer-encoding", "binary").strip().lower()
    if encoding == "base64":
        try:
            data = base64.b64decode(data, validate=False)
        except binascii.Error as exc:
            return None, f"part {part.index}: base64 content cannot be decoded: {exc}"
    elif encoding not in ("binary", "8bit", "7bit"):
        return None, f"part {part.index}: Content-Transfer-Encoding {encoding!r} is not supported"
    return data, ""


def store_part(archive: Archive, part: Part, buffer: bytes | mmap.mmap, study: str | None) -> StowOutcome:
    """Store one STOW-RS part and say what happened; never raises for bad content."""
    wrong_type = _wrong_type(part)
    if wrong_type is not None:
        return StowOutcome(part.index, False, dimse_status.CANNOT_UNDERSTAND, message=wrong_type, not_dicom=True)
    data, problem = _part_payload(part, buffer)
    if data is None:
        return StowOutcome(part.index, False, dimse_status.CANNOT_UNDERSTAND, message=problem)
    data = normalize_part10(data)
    result = archive.store_file_bytes(data, source_ae_title=STOW_SOURCE, study_instance_uid=study)
    return _outcome(part.index, result, data)


def _outcome(index: int, result: StoreResult, data: bytes) -> StowOutcome:
    sop_class, sop_instance = result.sop_class_uid, result.sop_instance_uid
    if not sop_instance and result.outcome is StoreOutcome.MALFORMED:
        sop_class, sop_instance = _best_effort_uids(data)
    return StowOutcome(
        index,
        result.outcome.accepted,
        result.status,
        sop_class,
        sop_instance,
        result.study_instance_uid,
        result.message,
    )


def _referenced_item(outcome: StowOutcome) -> dict[str, Any]:
    item: dict[str, Any] = {}
    if outcome.sop_class_uid:
        item["00081150"] = attribute_json("UI", outcome.sop_class_uid)
    if outcome.sop_instance_uid:
        item["00081155"] = attribute_json("UI", outcome.sop_instance_uid)
    return item


def stow_response_json(outcomes: Sequence[StowOutcome], base: str, study: str | None, series_of: dict[str, str]) -> dict:
    """The PS3.18 Store Instances Response (Table 10.5.3-3) as DICOM JSON."""
    stored = [o for o in outcomes if o.accepted]
    failed = [o for o in outcomes if not o.accepted]
    studies = {o.study_instance_uid for o in stored}
    study_url = study or (next(iter(studies)) if len(studies) == 1 else None)
    response: dict[str, Any] = {"00081190": attribute_json("UR", f"{base}/studies/{study_url}" if study_url else None)}
    if failed:
        items = []
        for outcome in failed:
            item = _referenced_item(outcome)
            item["00081197"] = attribute_json("US", outcome.status)  # FailureReason
            item["0040A160"] = attribute_json("UT", outcome.message)  # TextValue: the reason in words
            items.append(dict(sorted(item.items())))
        response["00081198"] = {"vr": "SQ", "Value": items}
    if stored:
        items = []
        for outcome in stored:
            item = _referenced_item(outcome)
            series = series_of.get(outcome.sop_instance_uid)
            if series:
                url = f"{base}/studies/{outcome.study_instance_uid}/series/{series}/instances/{outcome.sop_instance_uid}"
                item["00081190"] = attribute_json("UR", url)
            items.append(dict(sorted(item.items())))
        response["00081199"] = {"vr": "SQ", "Value": items}
    return dict(sorted(response.items()))


def _series_of_stored(archive: Archive, outcomes: Sequence[StowOutcome]) -> dict[str, str]:
    """SeriesInstanceUID of each stored instance (by SOP Instance UID), for its RetrieveURL."""
    series_of: dict[str, str] = {}
    for study in {o.study_instance_uid for o in outcomes if o.accepted}:
        for result in archive.find(Query(QueryLevel.IMAGE, {"StudyInstanceUID": study})):
            series_of[result["SOPInstanceUID"]] = result["SeriesInstanceUID"]
    return series_of


def process_stow(archive: Archive, buffer: bytes | mmap.mmap, boundary: str, study: str | None, base: str) -> StowAnswer:
    """Parse a STOW-RS body, store its parts, and build the response (blocking; run in a thread).

    Parameters
    ----------
    study
        The study the request URL names (``POST /studies/{study}``); parts of another are refused.
    base
        Absolute URL of the DICOMweb root, for the RetrieveURLs of the response.

    Raises
    ------
    StowRequestError
        MALFORMED when the body cannot be parsed or has no parts, UNSUPPORTED_MEDIA_TYPE
        when no part is ``application/dicom``.
    """
    try:
        parts = parse_multipart(buffer, boundary)
    except MultipartError as exc:
        raise StowRequestError(StowRequestErrorKind.MALFORMED, f"the multipart/related body cannot be parsed: {exc}") from None
    if not parts:
        raise StowRequestError(StowRequestErrorKind.MALFORMED, "the multipart/related body has no parts: nothing to store")
    outcomes = [store_part(archive, part, buffer, study) for part in parts]
    if all(o.not_dicom for o in outcomes):
        raise StowRequestError(
            StowRequestErrorKind.UNSUPPORTED_MEDIA_TYPE,
            "no part of the request is application/dicom; " + outcomes[0].message,
            "Content-Type",
        )
    for outcome in outcomes:
        if not outcome.accepted:
            logger.warning(
                "STOW-RS part refused",
                extra={"part": outcome.part, "status": hex(outcome.status), "reason": outcome.message},
            )
    body = stow_response_json(outcomes, base, study, _series_of_stored(archive, outcomes))
    return StowAnswer(outcomes, body)
