"""DICOMweb (PS3.18): QIDO-RS search, WADO-RS retrieve and STOW-RS store over the archive.

:func:`make_dicomweb_router` returns a FastAPI router that the web app mounts under
``/dicomweb``. Resources (relative to that root):

QIDO-RS, ``application/dicom+json`` (200 with ``[]`` when nothing matches)
    ``GET /studies``, ``/series``, ``/instances``, ``/studies/{study}/series``,
    ``/studies/{study}/instances``, ``/studies/{study}/series/{series}/instances``.
    Matching keys by keyword or tag (``PatientID=X`` or ``00100020=X``), ``*``/``?``
    wildcards, date and time ranges, UID lists (comma or backslash), ``includefield``
    (repeated, comma separated, or ``all``), ``limit``, ``offset``; ``fuzzymatching``
    is accepted and ignored. Valid attributes the index cannot match on are ignored
    and named in a ``Warning: 299`` header. A bad parameter gives 400.

WADO-RS
    ``GET /studies/{s}``, ``/studies/{s}/series/{se}``, ``/studies/{s}/series/{se}/instances/{i}``:
    ``multipart/related; type="application/dicom"``, each file streamed as stored
    (``transfer-syntax=*`` or none); a request for Explicit VR Little Endian is met by
    transcoding Implicit VR and Deflated files; other syntaxes the archive does not
    hold give 406. ``Accept: application/dicom`` (single part) works for one instance.

    ``GET .../metadata`` at study, series and instance level: ``application/dicom+json``,
    the whole header of every instance; binary values above 1 KiB and all pixel data
    become ``BulkDataURI`` pointing at ``.../instances/{i}/bulk/{path}``.

    ``GET .../instances/{i}/frames/{1,2,...}``: ``multipart/related``; native pixel data
    (any native transfer syntax, big endian and deflated included) as little endian
    ``application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1``; encapsulated
    frames as stored, as the media type of their syntax (``image/jpeg``, ``image/jls``,
    ``image/jp2``, ``image/jpx``, ``image/jphc``, ``image/dicom-rle``) or, when asked
    ``type=application/octet-stream; transfer-syntax=*`` (OHIF's default), as
    ``application/octet-stream`` — always with the ``transfer-syntax`` parameter.

    ``GET .../instances/{i}/bulk/{path}``: one bulk data value (pixel data as its frames).

STOW-RS
    ``POST /studies`` and ``POST /studies/{study}`` with
    ``multipart/related; type="application/dicom"``: each part is stored through
    :meth:`Archive.store_file_bytes`. The answer is the PS3.18 store response in
    ``application/dicom+json``: ReferencedSOPSequence for stored (and identical
    re-sent) instances, FailedSOPSequence with FailureReason (0xC000 unreadable or wrong
    part type, 0xA900 conflicting re-send or wrong study, 0xA700 storage failure) and
    the human-readable reason in **TextValue (0040,A160)** (UT, so no length limit).
    HTTP 200 when all parts were stored, 202 when some failed, 409 when all failed;
    400 for a body that cannot be parsed or has no parts, 413 above the size limit,
    415 for a request that is not ``multipart/related`` of ``application/dicom``.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import logging
import mmap
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.routing import APIRoute
from pydicom.dataset import Dataset
from pydicom.encaps import get_frame
from pydicom.pixels.utils import get_expected_length
from starlette.concurrency import run_in_threadpool

from radpilot.archive.models import Instance
from radpilot.archive.query import (
    COMPUTED_ATTRIBUTES,
    INDEXED_ATTRIBUTES,
    NON_MATCHING_KEYS,
    Query,
    QueryError,
    QueryLevel,
    vr_of,
)
from radpilot.archive.store import Archive, StoreOutcome, StoreResult
from radpilot.dicom import status as dimse_status
from radpilot.dicom.json_model import (
    DEFAULT_BULK_DATA_THRESHOLD,
    PIXEL_DATA_TAGS,
    DicomJsonError,
    attribute_json,
    dataset_to_json,
    little_endian_bytes,
    resolve_attribute,
    resolve_bulk_path,
    tag_key,
    vr_for,
)
from radpilot.dicom.part10 import MalformedDicomError, normalize_part10, parse_part10
from radpilot.pacs.multipart import (
    MediaType,
    MultipartError,
    Part,
    boundary_of,
    media_range_matches,
    new_boundary,
    parse_accept,
    parse_media_type,
    parse_multipart,
    stream_multipart,
)

logger = logging.getLogger(__name__)

DICOM_JSON = "application/dicom+json"
APPLICATION_DICOM = "application/dicom"
OCTET_STREAM = "application/octet-stream"
DEFAULT_MAX_STOW_BYTES = 2 * 1024**3
STOW_SOURCE = "STOW-RS"
CHUNK_SIZE = 1024 * 1024
SPOOL_IN_MEMORY_BYTES = 64 * 1024 * 1024

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

STUDY_RETURN_KEYS = (
    "StudyDate", "StudyTime", "AccessionNumber", "ModalitiesInStudy", "ReferringPhysicianName", "PatientName",
    "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyID", "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances", "StudyDescription",
)  # fmt: skip
SERIES_RETURN_KEYS = (
    "StudyInstanceUID", "Modality", "SeriesDescription", "SeriesNumber", "SeriesInstanceUID",
    "NumberOfSeriesRelatedInstances", "SeriesDate", "SeriesTime", "BodyPartExamined",
)  # fmt: skip
INSTANCE_RETURN_KEYS = (
    "StudyInstanceUID", "SeriesInstanceUID", "SOPClassUID", "SOPInstanceUID", "InstanceNumber", "Rows", "Columns",
    "NumberOfFrames",
)  # fmt: skip
# Headers a reverse proxy adds; without them a Host header lacking a port is taken to be incomplete.
FORWARDING_HEADERS = ("forwarded", "x-forwarded-host", "x-forwarded-for", "x-forwarded-proto")
DEFAULT_PORTS = {"http": 80, "https": 443}


# -- errors ------------------------------------------------------------------------


class DicomWebError(Exception):
    """A request that is answered with an HTTP error status and a JSON body naming the problem.

    Parameters
    ----------
    status_code
        The HTTP status.
    message
        What is wrong, in words a user can act on.
    parameter
        The query parameter or header at fault, if one is.
    """

    def __init__(self, status_code: int, message: str, parameter: str | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.parameter = parameter

    def response(self) -> JSONResponse:
        body: dict[str, Any] = {"error": self.message, "status": self.status_code}
        if self.parameter:
            body["parameter"] = self.parameter
        return JSONResponse(body, status_code=self.status_code)


class _DicomWebRoute(APIRoute):
    """A route whose :class:`DicomWebError` becomes its JSON error response."""

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except DicomWebError as exc:
                logger.info(
                    "DICOMweb request refused",
                    extra={"path": request.url.path, "status": exc.status_code, "reason": exc.message},
                )
                return exc.response()

        return handle


def _not_acceptable(what: str, offered: str, accept: str | None) -> DicomWebError:
    return DicomWebError(
        406,
        f"cannot send {what} in any media type the Accept header allows ({accept!r}); available: {offered}",
        "Accept",
    )


def _accept_ranges(request: Request) -> list[MediaType]:
    try:
        return parse_accept(request.headers.get("accept"))
    except MultipartError as exc:
        raise DicomWebError(400, f"unreadable Accept header: {exc}", "Accept") from exc


def _require_json_accept(request: Request) -> None:
    ranges = _accept_ranges(request)
    if not any(r.matches(DICOM_JSON) or r.matches("application/json") for r in ranges):
        raise _not_acceptable("this resource", DICOM_JSON, request.headers.get("accept"))


def _service_base(request: Request) -> str:
    """Absolute URL of the DICOMweb root as the client addressed it (e.g. ``http://host:8000/dicomweb``).

    Built from the Host header, so RetrieveURL and BulkDataURI values work through a
    reverse proxy. dicomweb-client sends ``Host`` without the port, though; when the
    header has no port, no proxy is involved (no Forwarded / X-Forwarded-* header) and
    the server listens on a non-default port, that port is added.
    """
    url = request.url_for("qido_studies")
    host_header = request.headers.get("host", "")
    has_port = ":" in host_header.rsplit("]", 1)[-1]
    server = request.scope.get("server")
    proxied = any(h in request.headers for h in FORWARDING_HEADERS)
    if not has_port and not proxied and server and server[1] and server[1] != DEFAULT_PORTS.get(url.scheme):
        url = url.replace(port=int(server[1]))
    return str(url).rsplit("/studies", 1)[0]


# -- QIDO-RS -----------------------------------------------------------------------


@dataclass
class QidoRequest:
    """A parsed QIDO-RS query string."""

    keys: dict[str, str] = field(default_factory=dict)
    include: set[str] = field(default_factory=set)
    include_all: bool = False
    limit: int | None = None
    offset: int = 0
    ignored: list[str] = field(default_factory=list)


def _non_negative_int(name: str, text: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise DicomWebError(400, f"{name} must be a non-negative integer, not {text!r}", name) from None
    if value < 0:
        raise DicomWebError(400, f"{name} must not be negative (got {value})", name)
    return value


def _attribute_keyword(name: str, parameter: str) -> str:
    try:
        tag, keyword = resolve_attribute(name)
    except DicomJsonError as exc:
        raise DicomWebError(400, f"unknown attribute in {parameter}: {exc}", parameter) from None
    return keyword or tag_key(tag)


def _add_includefields(qido: QidoRequest, value: str) -> None:
    for name in (n.strip() for n in value.split(",")):
        if not name:
            continue
        if name.lower() == "all":
            qido.include_all = True
            continue
        qido.include.add(_attribute_keyword(name, "includefield"))


def _add_match_key(qido: QidoRequest, name: str, value: str) -> None:
    if "." in name:  # a sequence path such as ReferencedSeriesSequence.SeriesInstanceUID
        for component in name.split("."):
            _attribute_keyword(component, name)
        qido.ignored.append(name)
        return
    keyword = _attribute_keyword(name, name)
    if keyword in NON_MATCHING_KEYS:
        return
    matchable = keyword in INDEXED_ATTRIBUTES or keyword == "ModalitiesInStudy"
    if not matchable:
        qido.ignored.append(keyword)
        qido.include.add(keyword)
        return
    vr = vr_of(keyword) or vr_for(resolve_attribute(keyword)[0])
    if vr == "UI":
        value = value.replace(",", "\\")
    if keyword in qido.keys:
        if vr != "UI":
            raise DicomWebError(400, f"matching key {keyword} is given more than once", name)
        value = f"{qido.keys[keyword]}\\{value}"
    qido.keys[keyword] = value
    qido.include.add(keyword)


def parse_qido_parameters(items: Iterable[tuple[str, str]]) -> QidoRequest:
    """Parse QIDO-RS query parameters (PS3.18 8.3.4).

    Raises
    ------
    DicomWebError
        (400) For an unknown attribute, a malformed ``limit``/``offset``/``fuzzymatching``
        or a repeated non-UID matching key.
    """
    qido = QidoRequest()
    for raw_name, value in items:
        name = raw_name.strip()
        lower = name.lower()
        if lower == "limit":
            qido.limit = _non_negative_int("limit", value)
        elif lower == "offset":
            qido.offset = _non_negative_int("offset", value)
        elif lower == "includefield":
            _add_includefields(qido, value)
        elif lower == "fuzzymatching":
            if value.strip().lower() not in ("", "true", "false"):
                raise DicomWebError(400, f"fuzzymatching must be true or false, not {value!r}", "fuzzymatching")
        else:
            _add_match_key(qido, name, value)
    return qido


def _default_return_keys(level: QueryLevel) -> list[str]:
    """Default return attributes of a QIDO-RS level (PS3.18 Table 6.7.1-2).

    Like Orthanc and C-FIND, a series or instance result also carries the patient and
    study attributes the index holds, and an instance result the series attributes,
    whether or not the study (or series) is named in the path.
    """
    keys: list[str] = list(STUDY_RETURN_KEYS)
    if level >= QueryLevel.SERIES:
        keys += SERIES_RETURN_KEYS
    if level >= QueryLevel.IMAGE:
        keys += INSTANCE_RETURN_KEYS
    return keys


def _all_return_keys(level: QueryLevel) -> list[str]:
    keys = [k for k, a in INDEXED_ATTRIBUTES.items() if a.level <= level]
    return keys + [k for k, (lvl, _) in COMPUTED_ATTRIBUTES.items() if lvl <= level]  # absent ones are skipped


def _retrieve_url(base: str, level: QueryLevel, result: dict[str, Any]) -> str:
    url = f"{base}/studies/{result['StudyInstanceUID']}"
    if level >= QueryLevel.SERIES:
        url += f"/series/{result['SeriesInstanceUID']}"
    if level >= QueryLevel.IMAGE:
        url += f"/instances/{result['SOPInstanceUID']}"
    return url


def qido_result_json(result: dict[str, Any], return_keys: Iterable[str], level: QueryLevel, base: str) -> dict:
    """One QIDO-RS result (a dict from :meth:`Archive.find`) as a DICOM JSON object."""
    attributes: dict[str, dict] = {}
    for keyword in return_keys:
        if keyword not in result:
            continue  # not held by the index: left out rather than sent empty
        tag, _ = resolve_attribute(keyword)
        attributes[tag_key(tag)] = attribute_json(vr_of(keyword) or vr_for(tag), result[keyword])
    attributes[tag_key(0x00081190)] = attribute_json("UR", _retrieve_url(base, level, result))
    attributes[tag_key(0x00080056)] = attribute_json("CS", "ONLINE")  # InstanceAvailability
    if level == QueryLevel.IMAGE and result.get("_transfer_syntax_uid"):
        attributes[tag_key(0x00083002)] = attribute_json("UI", result["_transfer_syntax_uid"])
    return dict(sorted(attributes.items()))


def _qido(request: Request, archive: Archive, level: QueryLevel, fixed: dict[str, str]) -> Response:
    _require_json_accept(request)
    qido = parse_qido_parameters(request.query_params.multi_items())
    keys = {**qido.keys, **fixed}
    try:
        results = archive.find(Query(level, keys, limit=qido.limit, offset=qido.offset))
    except QueryError as exc:
        raise DicomWebError(400, str(exc), _parameter_in(str(exc), keys)) from None
    return_keys = _all_return_keys(level) if qido.include_all else _default_return_keys(level)
    return_keys = list(dict.fromkeys([*return_keys, *sorted(qido.include)]))
    base = _service_base(request)
    body = [qido_result_json(r, return_keys, level, base) for r in results]
    headers = {}
    if qido.ignored:
        names = ", ".join(sorted(set(qido.ignored)))
        headers["Warning"] = f'299 radpilot "The following attributes are not supported for matching: {names}"'
    return JSONResponse(body, media_type=DICOM_JSON, headers=headers)


def _parameter_in(message: str, keys: dict[str, str]) -> str | None:
    """The matching key a QueryError message names, if any."""
    for keyword in keys:
        if message.startswith(keyword) or f" {keyword} " in f" {message} ":
            return keyword
    if "limit" in message:
        return "limit"
    if "offset" in message:
        return "offset"
    return None


# -- finding instances ---------------------------------------------------------------


def _instances_or_404(
    archive: Archive, study: str, series: str | None = None, sop: str | None = None
) -> list[Instance]:
    instances = archive.instances_of(study, series, sop)
    if instances:
        return instances
    if not archive.instances_of(study):
        raise DicomWebError(404, f"study {study} is not in the archive")
    if series is not None and not archive.instances_of(study, series):
        raise DicomWebError(404, f"series {series} is not in study {study}")
    raise DicomWebError(404, f"instance {sop} is not in series {series} of study {study}")


def _instance_url(base: str, instance: Instance, study: str, series: str) -> str:
    return f"{base}/studies/{study}/series/{series}/instances/{instance.sop_instance_uid}"


# -- WADO-RS: instances -------------------------------------------------------------------


@dataclass(frozen=True)
class _PartChoice:
    """How to send a set of parts: the media type, the transfer syntax, single or multipart."""

    media_type: str
    transfer_syntax: str | None  # None: each part as stored
    multipart: bool


def _requested_part(media_range: MediaType) -> tuple[str, str | None, bool]:
    """(part type, transfer-syntax parameter, multipart?) of one Accept media range."""
    if media_range.type == "multipart/related":
        return media_range.params.get("type", "*/*").lower(), media_range.params.get("transfer-syntax"), True
    if media_range.type in ("*/*", "multipart/*", "*"):
        return "*/*", None, True
    return media_range.type, media_range.params.get("transfer-syntax"), False


def _choose_instance_encoding(ranges: Sequence[MediaType], syntaxes: set[str], count: int) -> _PartChoice | None:
    for media_range in ranges:
        part_type, syntax, multipart = _requested_part(media_range)
        if not media_range_matches(part_type, APPLICATION_DICOM) or (not multipart and count != 1):
            continue
        if syntax in (None, "*"):
            return _PartChoice(APPLICATION_DICOM, None, multipart)
        if all(
            s == syntax or (syntax == EXPLICIT_VR_LITTLE_ENDIAN and s in TRANSCODABLE_TO_EXPLICIT_LE) for s in syntaxes
        ):
            return _PartChoice(APPLICATION_DICOM, syntax, multipart)
    return None


def _file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_SIZE):
            yield chunk


def transcode_to_explicit_le(path: Path) -> bytes:
    """Rewrite an Implicit VR or Deflated Little Endian file as Explicit VR Little Endian."""
    dataset = pydicom.dcmread(path)
    dataset.file_meta.TransferSyntaxUID = EXPLICIT_VR_LITTLE_ENDIAN
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _instance_part(archive: Archive, instance: Instance, syntax: str | None) -> tuple[str, Iterable[bytes]]:
    path = archive.path_of(instance)
    if syntax is None or syntax == instance.transfer_syntax_uid:
        return f"{APPLICATION_DICOM}; transfer-syntax={instance.transfer_syntax_uid}", _LazyChunks(
            lambda: _file_chunks(path)
        )
    return f"{APPLICATION_DICOM}; transfer-syntax={syntax}", _LazyChunks(lambda: iter([transcode_to_explicit_le(path)]))


class _LazyChunks:
    """An iterable whose chunks are produced only when the part is being sent."""

    def __init__(self, produce: Callable[[], Iterator[bytes]]) -> None:
        self._produce = produce

    def __iter__(self) -> Iterator[bytes]:
        return self._produce()


def _multipart_response(parts: Iterable[tuple[str, Iterable[bytes]]], part_type: str, syntax: str | None) -> Response:
    boundary = new_boundary()
    media_type = f'multipart/related; type="{part_type}"; boundary={boundary}'
    if syntax:
        media_type += f"; transfer-syntax={syntax}"
    return StreamingResponse(stream_multipart(boundary, parts), media_type=media_type)


def _wado_instances(request: Request, archive: Archive, instances: list[Instance]) -> Response:
    ranges = _accept_ranges(request)
    syntaxes = {i.transfer_syntax_uid for i in instances}
    choice = _choose_instance_encoding(ranges, syntaxes, len(instances))
    if choice is None:
        offered = f'multipart/related; type="application/dicom" with transfer-syntax=* or one of {sorted(syntaxes)}'
        raise _not_acceptable("these instances", offered, request.headers.get("accept"))
    missing = [i.sop_instance_uid for i in instances if not archive.path_of(i).is_file()]
    if missing:
        logger.error("indexed instances have no file", extra={"sop_instance_uids": missing[:10]})
        raise DicomWebError(500, f"{len(missing)} indexed instance(s) have no file in the archive, e.g. {missing[0]}")
    if not choice.multipart:
        part_type, chunks = _instance_part(archive, instances[0], choice.transfer_syntax)
        return StreamingResponse(iter(chunks), media_type=part_type)
    parts = (_instance_part(archive, i, choice.transfer_syntax) for i in instances)
    return _multipart_response(parts, APPLICATION_DICOM, None)


# -- WADO-RS: metadata ------------------------------------------------------------------


def read_header(path: Path, transfer_syntax: str, threshold: int = DEFAULT_BULK_DATA_THRESHOLD) -> Dataset:
    """Read an instance with values above ``threshold`` bytes deferred (not loaded).

    Deflated files are read whole: a deferred value cannot be found again in the deflated stream.
    """
    defer = None if transfer_syntax == DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN else threshold
    return pydicom.dcmread(path, defer_size=defer)


def instance_metadata(archive: Archive, instance: Instance, instance_url: str, threshold: int) -> dict[str, Any]:
    """The DICOM JSON metadata of one instance, bulk data as URIs under ``instance_url``/bulk/."""
    dataset = read_header(archive.path_of(instance), instance.transfer_syntax_uid, threshold)
    little_endian = instance.transfer_syntax_uid != EXPLICIT_VR_BIG_ENDIAN
    result = dataset_to_json(
        dataset,
        bulk_data_uri=lambda path: f"{instance_url}/bulk/{path}",
        threshold=threshold,
        little_endian=little_endian,
    )
    result[tag_key(0x00083002)] = attribute_json("UI", instance.transfer_syntax_uid)  # AvailableTransferSyntaxUID
    return dict(sorted(result.items()))


def _metadata_stream(archive: Archive, instances: list[Instance], urls: list[str], threshold: int) -> Iterator[bytes]:
    yield b"["
    first = True
    for instance, url in zip(instances, urls, strict=True):
        try:
            item = instance_metadata(archive, instance, url, threshold)
        except Exception as exc:  # noqa: BLE001 - one unreadable file must not cut the whole answer short
            logger.error(
                "metadata of an instance could not be read",
                extra={"sop_instance_uid": instance.sop_instance_uid, "error": str(exc)},
            )
            continue
        yield (b"" if first else b",") + json.dumps(item, separators=(",", ":")).encode("utf-8")
        first = False
    yield b"]"


def _wado_metadata(
    request: Request, archive: Archive, study: str, series: str | None, sop: str | None, threshold: int
) -> Response:
    _require_json_accept(request)
    instances = _instances_or_404(archive, study, series, sop)
    base = _service_base(request)
    series_uids = _series_uids(archive, study, instances, series)
    urls = [_instance_url(base, i, study, series_uids[i.id]) for i in instances]
    return StreamingResponse(_metadata_stream(archive, instances, urls, threshold), media_type=DICOM_JSON)


def _series_uids(archive: Archive, study: str, instances: list[Instance], series: str | None) -> dict[int, str]:
    """SeriesInstanceUID of each instance (by row id), from the index."""
    if series is not None:
        return {i.id: series for i in instances}
    results = archive.find(Query(QueryLevel.IMAGE, {"StudyInstanceUID": study}))
    by_sop = {r["SOPInstanceUID"]: r["SeriesInstanceUID"] for r in results}
    return {i.id: by_sop.get(i.sop_instance_uid, "") for i in instances}


# -- WADO-RS: frames and bulk data -------------------------------------------------------


def parse_frame_list(text: str) -> list[int]:
    """Frame numbers of a ``frames/{list}`` path segment (``1``, ``1,3,5``); raises 400 when malformed."""
    try:
        numbers = [int(n) for n in text.split(",")]
    except ValueError:
        raise DicomWebError(
            400, f"frame list {text!r} must be comma-separated frame numbers (1, 2, ...)", "frames"
        ) from None
    if not numbers or any(n < 1 for n in numbers):
        raise DicomWebError(400, f"frame list {text!r}: frame numbers start at 1", "frames")
    return numbers


@dataclass(frozen=True)
class PixelSource:
    """Where an instance's pixel data is and how it is laid out."""

    path: Path
    transfer_syntax: str
    dataset: Dataset  # read with large values deferred
    tag: int
    number_of_frames: int

    @property
    def encapsulated(self) -> bool:
        return self.transfer_syntax not in NATIVE_SYNTAXES


def open_pixel_source(path: Path, transfer_syntax: str) -> PixelSource | None:
    """The pixel data of the instance at ``path`` (None when it has none)."""
    dataset = read_header(path, transfer_syntax)
    tag = next((t for t in (0x7FE00010, 0x7FE00008, 0x7FE00009) if t in dataset), None)
    if tag is None:
        return None
    try:
        frames = int(dataset.get("NumberOfFrames") or 1)
    except (TypeError, ValueError):
        frames = 1
    return PixelSource(path, transfer_syntax, dataset, tag, max(frames, 1))


def _raw_value(source: PixelSource, tag: int) -> Any:
    return source.dataset.get_item(tag, keep_deferred=True)


def _value_bytes(source: PixelSource, start: int, length: int) -> bytes:
    """``length`` bytes of the pixel data value from ``start``, read from the file where it was deferred."""
    raw = _raw_value(source, source.tag)
    value = getattr(raw, "value", None)
    if value is None:
        with source.path.open("rb") as handle:
            handle.seek(raw.value_tell + start)
            data = handle.read(length)
    else:
        data = bytes(value[start : start + length])
    if len(data) < length:
        raise DicomWebError(500, f"pixel data of {source.path.name} is shorter than its attributes say")
    return data


def _byte_swapped(data: bytes, unit: int) -> bytes:
    if unit <= 1:
        return data
    return np.frombuffer(data, dtype=f">u{unit}").astype(f"<u{unit}").tobytes()


def _swap_unit(source: PixelSource) -> int:
    """Size of the values whose bytes a big endian file holds reversed (1: none)."""
    if source.transfer_syntax != EXPLICIT_VR_BIG_ENDIAN:
        return 1
    bits = int(source.dataset.get("BitsAllocated") or 8)
    if source.tag != 0x7FE00010:
        return 4 if source.tag == 0x7FE00008 else 8
    vr = _raw_value(source, source.tag).VR
    return max(bits // 8, 2 if vr == "OW" else 1)


def native_frames(source: PixelSource, numbers: Sequence[int]) -> list[bytes]:
    """Native frames (1-based numbers) as little endian bytes, read from the file frame by frame."""
    dataset = source.dataset
    bits = int(dataset.get("BitsAllocated") or 8)
    if bits == 1:
        return _bit_frames(source, numbers)
    frame_length = get_expected_length(dataset, "bytes") // source.number_of_frames
    unit = _swap_unit(source)
    return [_byte_swapped(_value_bytes(source, (n - 1) * frame_length, frame_length), unit) for n in numbers]


def _bit_frames(source: PixelSource, numbers: Sequence[int]) -> list[bytes]:
    """Frames of 1-bit pixel data, which need not start on a byte boundary."""
    dataset = source.dataset
    frame_bits = int(dataset.Rows) * int(dataset.Columns) * int(dataset.get("SamplesPerPixel") or 1)
    total = (frame_bits * source.number_of_frames + 7) // 8
    data = _byte_swapped(_value_bytes(source, 0, total), _swap_unit(source))
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8), bitorder="little")
    return [np.packbits(bits[(n - 1) * frame_bits : n * frame_bits], bitorder="little").tobytes() for n in numbers]


def encapsulated_frames(source: PixelSource, numbers: Sequence[int]) -> list[bytes]:
    """Compressed frames (1-based numbers) as stored, found through the offset tables."""
    extended = None
    if 0x7FE00001 in source.dataset and 0x7FE00002 in source.dataset:
        extended = (bytes(source.dataset[0x7FE00001].value), bytes(source.dataset[0x7FE00002].value))
    raw = _raw_value(source, source.tag)
    frames: list[bytes] = []
    with source.path.open("rb") as handle:
        buffer: Any = handle
        if raw.value is None:
            handle.seek(raw.value_tell)
        else:
            buffer = io.BytesIO(bytes(raw.value))
        for number in numbers:
            try:
                frames.append(
                    get_frame(buffer, number - 1, number_of_frames=source.number_of_frames, extended_offsets=extended)
                )
            except (ValueError, EOFError) as exc:
                raise DicomWebError(
                    500, f"frame {number} cannot be read from the encapsulated pixel data: {exc}"
                ) from exc
    return frames


def read_frames(path: Path, transfer_syntax: str, numbers: Sequence[int] | None) -> tuple[list[bytes], str]:
    """Frames (1-based ``numbers``; None for all) of the instance at ``path`` and the syntax they are in.

    Raises
    ------
    DicomWebError
        404 when the instance has no pixel data or a frame number is out of range.
    """
    source = open_pixel_source(path, transfer_syntax)
    if source is None:
        raise DicomWebError(404, "the instance has no pixel data, so it has no frames")
    if numbers is None:
        numbers = list(range(1, source.number_of_frames + 1))
    beyond = [n for n in numbers if n > source.number_of_frames]
    if beyond:
        raise DicomWebError(
            404, f"frame {beyond[0]} does not exist: the instance has {source.number_of_frames} frame(s)", "frames"
        )
    if source.encapsulated:
        return encapsulated_frames(source, numbers), transfer_syntax
    return native_frames(source, numbers), EXPLICIT_VR_LITTLE_ENDIAN


def choose_frame_media_type(ranges: Sequence[MediaType], stored_syntax: str, count: int) -> _PartChoice | None:
    """The media type to send frames of ``stored_syntax`` in, as the Accept ranges allow, or None (406)."""
    native = stored_syntax in NATIVE_SYNTAXES
    syntax = EXPLICIT_VR_LITTLE_ENDIAN if native else stored_syntax
    natural = OCTET_STREAM if native else FRAME_MEDIA_TYPES.get(stored_syntax, OCTET_STREAM)
    for media_range in ranges:
        part_type, wanted, multipart = _requested_part(media_range)
        if not multipart and count != 1:
            continue
        if wanted not in (None, "*") and wanted != syntax:
            continue
        if media_range_matches(part_type, natural):
            return _PartChoice(natural, syntax, multipart)
        if part_type == OCTET_STREAM and (native or wanted is not None):
            return _PartChoice(OCTET_STREAM, syntax, multipart)
    return None


def _frames_response(request: Request, frames: list[bytes], syntax: str) -> Response:
    ranges = _accept_ranges(request)
    choice = choose_frame_media_type(ranges, syntax, len(frames))
    if choice is None:
        natural = FRAME_MEDIA_TYPES.get(syntax, OCTET_STREAM)
        offered = (
            f'multipart/related; type="{natural}" or type="{OCTET_STREAM}" with transfer-syntax={syntax} '
            "(the frames are stored in that syntax and are not decompressed)"
        )
        raise _not_acceptable("these frames", offered, request.headers.get("accept"))
    part_type = f"{choice.media_type}; transfer-syntax={choice.transfer_syntax}"
    if not choice.multipart:
        return Response(frames[0], media_type=part_type)
    return _multipart_response(((part_type, [frame]) for frame in frames), choice.media_type, choice.transfer_syntax)


def _bulk_response(request: Request, path: Path, transfer_syntax: str, bulk_path: str) -> Response:
    dataset = pydicom.dcmread(path)
    try:
        element = resolve_bulk_path(dataset, bulk_path)
    except DicomJsonError as exc:
        raise DicomWebError(404, str(exc), "path") from None
    requested = [_requested_part(r) for r in _accept_ranges(request)]
    if not any(media_range_matches(part_type, OCTET_STREAM) for part_type, _, _ in requested):
        raise _not_acceptable("bulk data", f'multipart/related; type="{OCTET_STREAM}"', request.headers.get("accept"))
    value = element.value
    if isinstance(value, (list, tuple)):
        value = b"".join(bytes(v) for v in value)
    data = bytes(value or b"")
    data = little_endian_bytes(data, element.VR, transfer_syntax != EXPLICIT_VR_BIG_ENDIAN)
    return _multipart_response([(OCTET_STREAM, [data])], OCTET_STREAM, None)


# -- STOW-RS -------------------------------------------------------------------------


class _SpooledBody:
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


def _stow_content_type(request: Request) -> MediaType:
    header = request.headers.get("content-type")
    if not header:
        raise DicomWebError(
            415, 'STOW-RS needs Content-Type: multipart/related; type="application/dicom"', "Content-Type"
        )
    try:
        content_type = parse_media_type(header)
    except MultipartError as exc:
        raise DicomWebError(400, f"unreadable Content-Type: {exc}", "Content-Type") from None
    if content_type.type != "multipart/related":
        raise DicomWebError(
            415,
            f'Content-Type {content_type.type} is not supported: send multipart/related; type="application/dicom"',
            "Content-Type",
        )
    declared = content_type.params.get("type", APPLICATION_DICOM).lower()
    if declared != APPLICATION_DICOM:
        raise DicomWebError(
            415, f"multipart/related type {declared!r} is not supported: only application/dicom parts", "Content-Type"
        )
    return content_type


async def _read_body(request: Request, limit: int) -> _SpooledBody:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise DicomWebError(413, f"the request body ({int(declared)} bytes) exceeds the STOW-RS limit of {limit} bytes")
    body = _SpooledBody()
    try:
        async for chunk in request.stream():
            body.write(chunk)
            if body.size > limit:
                raise DicomWebError(413, f"the request body exceeds the STOW-RS limit of {limit} bytes")
    except BaseException:
        body.close()
        raise
    return body


def _best_effort_uids(data: bytes) -> tuple[str, str]:
    """SOP Class and Instance UID of a refused part, where they can be read at all (for the failure item)."""
    try:
        dataset = pydicom.dcmread(
            io.BytesIO(data), force=True, stop_before_pixels=True, specific_tags=["SOPClassUID", "SOPInstanceUID"]
        )
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
    if study is not None:
        refusal = _study_mismatch(part.index, data, study)
        if refusal is not None:
            return refusal
    result = archive.store_file_bytes(data, source_ae_title=STOW_SOURCE)
    return _outcome(part.index, result, data)


def _study_mismatch(index: int, data: bytes, study: str) -> StowOutcome | None:
    try:
        parsed = parse_part10(data)
    except MalformedDicomError as exc:
        sop_class, sop_instance = _best_effort_uids(data)
        return StowOutcome(index, False, dimse_status.CANNOT_UNDERSTAND, sop_class, sop_instance, message=str(exc))
    uid = str(parsed.dataset.StudyInstanceUID)
    if uid == study:
        return None
    return StowOutcome(
        index,
        False,
        dimse_status.CONFLICT,
        str(parsed.dataset.SOPClassUID),
        parsed.sop_instance_uid,
        uid,
        message=f"instance belongs to study {uid}, not to study {study} named in the request URL; not stored",
    )


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


def stow_response_json(
    outcomes: Sequence[StowOutcome], base: str, study: str | None, series_of: dict[str, str]
) -> dict:
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
                url = (
                    f"{base}/studies/{outcome.study_instance_uid}/series/{series}/instances/{outcome.sop_instance_uid}"
                )
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


def process_stow(archive: Archive, buffer: bytes | mmap.mmap, boundary: str, study: str | None, base: str) -> Response:
    """Parse a STOW-RS body, store its parts, and build the response (blocking; run in a thread)."""
    try:
        parts = parse_multipart(buffer, boundary)
    except MultipartError as exc:
        raise DicomWebError(400, f"the multipart/related body cannot be parsed: {exc}") from None
    if not parts:
        raise DicomWebError(400, "the multipart/related body has no parts: nothing to store")
    outcomes = [store_part(archive, part, buffer, study) for part in parts]
    if all(o.not_dicom for o in outcomes):
        raise DicomWebError(415, "no part of the request is application/dicom; " + outcomes[0].message, "Content-Type")
    body = stow_response_json(outcomes, base, study, _series_of_stored(archive, outcomes))
    accepted = sum(o.accepted for o in outcomes)
    status = 200 if accepted == len(outcomes) else (202 if accepted else 409)
    logger.info(
        "STOW-RS request handled",
        extra={"parts": len(outcomes), "stored": accepted, "failed": len(outcomes) - accepted, "http_status": status},
    )
    for outcome in outcomes:
        if not outcome.accepted:
            logger.warning(
                "STOW-RS part refused",
                extra={"part": outcome.part, "status": hex(outcome.status), "reason": outcome.message},
            )
    return JSONResponse(body, status_code=status, media_type=DICOM_JSON)


async def _stow(request: Request, archive: Archive, study: str | None, limit: int) -> Response:
    content_type = _stow_content_type(request)
    try:
        boundary = boundary_of(content_type)
    except MultipartError as exc:
        raise DicomWebError(400, str(exc), "Content-Type") from None
    base = _service_base(request)
    body = await _read_body(request, limit)
    try:
        return await run_in_threadpool(process_stow, archive, body.buffer(), boundary, study, base)
    finally:
        body.close()


# -- the router ----------------------------------------------------------------------


def make_dicomweb_router(
    archive: Archive,
    *,
    max_stow_bytes: int = DEFAULT_MAX_STOW_BYTES,
    bulk_data_threshold: int = DEFAULT_BULK_DATA_THRESHOLD,
) -> APIRouter:
    """The DICOMweb router (QIDO-RS, WADO-RS, STOW-RS) over ``archive``; mount it under ``/dicomweb``.

    Parameters
    ----------
    archive
        The archive to search, read and store into.
    max_stow_bytes
        Largest STOW-RS request body accepted (413 above it).
    bulk_data_threshold
        Binary values longer than this many bytes are sent as BulkDataURI in metadata.
    """
    router = APIRouter(route_class=_DicomWebRoute, tags=["DICOMweb"])
    _add_qido_routes(router, archive)
    _add_wado_routes(router, archive, bulk_data_threshold)
    _add_stow_routes(router, archive, max_stow_bytes)
    return router


def _add_qido_routes(router: APIRouter, archive: Archive) -> None:
    @router.get("/studies", name="qido_studies")
    def search_studies(request: Request) -> Response:
        return _qido(request, archive, QueryLevel.STUDY, {})

    @router.get("/series", name="qido_series")
    def search_series(request: Request) -> Response:
        return _qido(request, archive, QueryLevel.SERIES, {})

    @router.get("/instances", name="qido_instances")
    def search_instances(request: Request) -> Response:
        return _qido(request, archive, QueryLevel.IMAGE, {})

    @router.get("/studies/{study}/series", name="qido_study_series")
    def search_study_series(request: Request, study: str) -> Response:
        return _qido(request, archive, QueryLevel.SERIES, {"StudyInstanceUID": study})

    @router.get("/studies/{study}/instances", name="qido_study_instances")
    def search_study_instances(request: Request, study: str) -> Response:
        return _qido(request, archive, QueryLevel.IMAGE, {"StudyInstanceUID": study})

    @router.get("/studies/{study}/series/{series}/instances", name="qido_series_instances")
    def search_series_instances(request: Request, study: str, series: str) -> Response:
        return _qido(request, archive, QueryLevel.IMAGE, {"StudyInstanceUID": study, "SeriesInstanceUID": series})


def _add_wado_routes(router: APIRouter, archive: Archive, threshold: int) -> None:
    @router.get("/studies/{study}", name="wado_study")
    def retrieve_study(request: Request, study: str) -> Response:
        return _wado_instances(request, archive, _instances_or_404(archive, study))

    @router.get("/studies/{study}/series/{series}", name="wado_series")
    def retrieve_series(request: Request, study: str, series: str) -> Response:
        return _wado_instances(request, archive, _instances_or_404(archive, study, series))

    @router.get("/studies/{study}/series/{series}/instances/{sop}", name="wado_instance")
    def retrieve_instance(request: Request, study: str, series: str, sop: str) -> Response:
        return _wado_instances(request, archive, _instances_or_404(archive, study, series, sop))

    @router.get("/studies/{study}/metadata", name="wado_study_metadata")
    def study_metadata(request: Request, study: str) -> Response:
        return _wado_metadata(request, archive, study, None, None, threshold)

    @router.get("/studies/{study}/series/{series}/metadata", name="wado_series_metadata")
    def series_metadata(request: Request, study: str, series: str) -> Response:
        return _wado_metadata(request, archive, study, series, None, threshold)

    @router.get("/studies/{study}/series/{series}/instances/{sop}/metadata", name="wado_instance_metadata")
    def instance_metadata_route(request: Request, study: str, series: str, sop: str) -> Response:
        return _wado_metadata(request, archive, study, series, sop, threshold)

    @router.get("/studies/{study}/series/{series}/instances/{sop}/frames/{frames}", name="wado_frames")
    def retrieve_frames(request: Request, study: str, series: str, sop: str, frames: str) -> Response:
        numbers = parse_frame_list(frames)
        instance = _instances_or_404(archive, study, series, sop)[0]
        data, syntax = read_frames(archive.path_of(instance), instance.transfer_syntax_uid, numbers)
        return _frames_response(request, data, syntax)

    @router.get("/studies/{study}/series/{series}/instances/{sop}/bulk/{path:path}", name="wado_bulk")
    def retrieve_bulk(request: Request, study: str, series: str, sop: str, path: str) -> Response:
        instance = _instances_or_404(archive, study, series, sop)[0]
        file_path = archive.path_of(instance)
        if path.strip("/").upper() in {tag_key(t) for t in PIXEL_DATA_TAGS}:
            data, syntax = read_frames(file_path, instance.transfer_syntax_uid, None)  # pixel data: all its frames
            return _frames_response(request, data, syntax)
        return _bulk_response(request, file_path, instance.transfer_syntax_uid, path)


def _add_stow_routes(router: APIRouter, archive: Archive, limit: int) -> None:
    @router.post("/studies", name="stow_studies")
    async def store_instances(request: Request) -> Response:
        return await _stow(request, archive, None, limit)

    @router.post("/studies/{study}", name="stow_study")
    async def store_study_instances(request: Request, study: str) -> Response:
        return await _stow(request, archive, study, limit)
