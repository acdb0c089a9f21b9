"""The DICOMweb routes (PS3.18): QIDO-RS search, WADO-RS retrieve and STOW-RS store over the archive.

:func:`make_dicomweb_router` returns a FastAPI router that the web app mounts under
``/dicomweb``. This module is the HTTP side only: it negotiates media types, builds
the responses and is the one place where the errors of :mod:`.qido`, :mod:`.wado`,
:mod:`.frames` and :mod:`.stow` become HTTP statuses. Resources (relative to the root):

QIDO-RS, ``application/dicom+json`` (200 with ``[]`` when nothing matches)
    ``GET /studies``, ``/series``, ``/instances``, ``/studies/{study}/series``,
    ``/studies/{study}/instances``, ``/studies/{study}/series/{series}/instances``.
    The parameters are those of :mod:`.qido`. Valid attributes the index cannot
    match on are ignored and named in a ``Warning: 299`` header. A bad parameter gives 400.

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
    ``multipart/related; type="application/dicom"``: each part is stored (see
    :mod:`.stow`) and the answer is the PS3.18 store response in ``application/dicom+json``.
    HTTP 200 when all parts were stored, 202 when some failed, 409 when all failed, 503 (with
    Retry-After) when none was stored and the archive was out of space for one (0xA700);
    400 for a body that cannot be parsed or has no parts, 413 above the size limit,
    415 for a request that is not ``multipart/related`` of ``application/dicom``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool

from radpilot.archive.models import Instance
from radpilot.archive.query import QueryLevel
from radpilot.archive.store import Archive
from radpilot.dicom import status as dimse_status
from radpilot.dicom.json_model import DEFAULT_BULK_DATA_THRESHOLD, PIXEL_DATA_TAGS, tag_key
from radpilot.pacs.dicomweb import qido as qido_rs
from radpilot.pacs.dicomweb import stow as stow_rs
from radpilot.pacs.dicomweb import wado as wado_rs
from radpilot.pacs.dicomweb.frames import FrameError, FrameErrorKind, parse_frame_list, read_frames
from radpilot.pacs.dicomweb.media import (
    APPLICATION_DICOM,
    DICOM_JSON,
    FRAME_MEDIA_TYPES,
    OCTET_STREAM,
    accepts_bulk_data,
    choose_frame_media_type,
    choose_instance_encoding,
)
from radpilot.pacs.multipart import MediaType, MultipartError, new_boundary, parse_accept, stream_multipart

logger = logging.getLogger(__name__)

DEFAULT_MAX_STOW_BYTES = 2 * 1024**3
DEFAULT_BODY_IDLE_TIMEOUT_S = 30.0
# Seconds a STOW-RS sender is asked to wait after a 503 (archive out of space) before it retries.
STOW_RETRY_AFTER_S = 60
# Headers a reverse proxy adds; without them a Host header lacking a port is taken to be incomplete.
FORWARDING_HEADERS = ("forwarded", "x-forwarded-host", "x-forwarded-for", "x-forwarded-proto")
DEFAULT_PORTS = {"http": 80, "https": 443}

# HTTP status (and the request parameter at fault) of each kind of frame error.
FRAME_ERROR_STATUS: dict[FrameErrorKind, tuple[int, str | None]] = {
    FrameErrorKind.MALFORMED_FRAME_LIST: (400, "frames"),
    FrameErrorKind.NO_PIXEL_DATA: (404, None),
    FrameErrorKind.NO_SUCH_FRAME: (404, "frames"),
    FrameErrorKind.UNREADABLE: (500, None),
}
STOW_ERROR_STATUS: dict[stow_rs.StowRequestErrorKind, int] = {
    stow_rs.StowRequestErrorKind.MALFORMED: 400,
    stow_rs.StowRequestErrorKind.UNSUPPORTED_MEDIA_TYPE: 415,
}
DOMAIN_ERRORS = (
    qido_rs.QidoError,
    wado_rs.ResourceNotFoundError,
    wado_rs.MissingFileError,
    FrameError,
    stow_rs.StowRequestError,
)


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


def http_error(exc: Exception) -> DicomWebError:
    """The HTTP answer to an error of the DICOMweb services (one of :data:`DOMAIN_ERRORS`)."""
    if isinstance(exc, DicomWebError):
        return exc
    if isinstance(exc, qido_rs.QidoError):
        return DicomWebError(400, exc.message, exc.parameter)
    if isinstance(exc, wado_rs.ResourceNotFoundError):
        return DicomWebError(404, exc.message, exc.parameter)
    if isinstance(exc, wado_rs.MissingFileError):
        return DicomWebError(500, str(exc))
    if isinstance(exc, FrameError):
        status, parameter = FRAME_ERROR_STATUS[exc.kind]
        return DicomWebError(status, exc.message, parameter)
    if isinstance(exc, stow_rs.StowRequestError):
        return DicomWebError(STOW_ERROR_STATUS[exc.kind], exc.message, exc.header)
    raise TypeError(f"no HTTP status is defined for {type(exc).__name__}: {exc}")


class _DicomWebRoute(APIRoute):
    """A route whose :class:`DicomWebError` (or error of a DICOMweb service) becomes its JSON error response."""

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except (DicomWebError, *DOMAIN_ERRORS) as exc:
                error = http_error(exc)
                logger.info(
                    "DICOMweb request refused",
                    extra={"path": request.url.path, "status": error.status_code, "reason": error.message},
                )
                return error.response()

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


def _multipart_response(parts: Iterable[tuple[str, Iterable[bytes]]], part_type: str, syntax: str | None) -> Response:
    boundary = new_boundary()
    media_type = f'multipart/related; type="{part_type}"; boundary={boundary}'
    if syntax:
        media_type += f"; transfer-syntax={syntax}"
    return StreamingResponse(stream_multipart(boundary, parts), media_type=media_type)


# -- QIDO-RS -----------------------------------------------------------------------


def _qido(request: Request, archive: Archive, level: QueryLevel, fixed: dict[str, str]) -> Response:
    _require_json_accept(request)
    qido = qido_rs.parse_qido_parameters(request.query_params.multi_items())
    body = qido_rs.search(archive, level, fixed, qido, _service_base(request))
    headers = {}
    if qido.ignored:
        names = ", ".join(sorted(set(qido.ignored)))
        headers["Warning"] = f'299 radpilot "The following attributes are not supported for matching: {names}"'
    return JSONResponse(body, media_type=DICOM_JSON, headers=headers)


# -- WADO-RS -------------------------------------------------------------------------


def _wado_instances(request: Request, archive: Archive, instances: list[Instance]) -> Response:
    ranges = _accept_ranges(request)
    syntaxes = {i.transfer_syntax_uid for i in instances}
    choice = choose_instance_encoding(ranges, syntaxes, len(instances))
    if choice is None:
        offered = f'multipart/related; type="application/dicom" with transfer-syntax=* or one of {sorted(syntaxes)}'
        raise _not_acceptable("these instances", offered, request.headers.get("accept"))
    wado_rs.require_files(archive, instances)
    if not choice.multipart:
        part_type, chunks = wado_rs.instance_part(archive, instances[0], choice.transfer_syntax)
        return StreamingResponse(iter(chunks), media_type=part_type)
    parts = (wado_rs.instance_part(archive, i, choice.transfer_syntax) for i in instances)
    return _multipart_response(parts, APPLICATION_DICOM, None)


def _wado_metadata(request: Request, archive: Archive, study: str, series: str | None, sop: str | None, threshold: int) -> Response:
    _require_json_accept(request)
    entries = wado_rs.find_metadata(archive, study, series, sop)
    base = _service_base(request)
    urls = [wado_rs.instance_url(base, e.instance, study, e.series_instance_uid) for e in entries]
    return StreamingResponse(wado_rs.metadata_stream(archive, entries, urls, threshold), media_type=DICOM_JSON)


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


def _bulk_response(request: Request, data: bytes) -> Response:
    if not accepts_bulk_data(_accept_ranges(request)):
        raise _not_acceptable("bulk data", f'multipart/related; type="{OCTET_STREAM}"', request.headers.get("accept"))
    return _multipart_response([(OCTET_STREAM, [data])], OCTET_STREAM, None)


# -- STOW-RS -------------------------------------------------------------------------


async def _read_body(request: Request, limit: int, idle_timeout: float) -> stow_rs.SpooledBody:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise DicomWebError(413, f"the request body ({int(declared)} bytes) exceeds the STOW-RS limit of {limit} bytes")
    body = stow_rs.SpooledBody()
    chunks = request.stream()
    try:
        while True:
            try:
                chunk = await asyncio.wait_for(anext(chunks), idle_timeout)
            except StopAsyncIteration:
                break
            except TimeoutError:
                raise DicomWebError(
                    408, f"the request body sent nothing for {idle_timeout:g} s after {body.size} bytes; nothing stored"
                ) from None
            body.write(chunk)
            if body.size > limit:
                raise DicomWebError(413, f"the request body exceeds the STOW-RS limit of {limit} bytes")
    except BaseException:
        body.close()
        raise
    return body


async def _stow(request: Request, archive: Archive, study: str | None, limit: int, idle_timeout: float) -> Response:
    boundary = stow_rs.stow_boundary(request.headers.get("content-type"))
    base = _service_base(request)
    body = await _read_body(request, limit, idle_timeout)
    try:
        answer = await run_in_threadpool(stow_rs.process_stow, archive, body.buffer(), boundary, study, base)
    finally:
        body.close()
    parts = len(answer.outcomes)
    status = 200 if answer.stored == parts else (202 if answer.stored else 409)
    headers = {}
    if not answer.stored and any(o.status == dimse_status.OUT_OF_RESOURCES for o in answer.outcomes):
        # The archive could not store (disk full, index down): the sender should retry, not give up.
        status, headers = 503, {"Retry-After": str(STOW_RETRY_AFTER_S)}
    logger.info(
        "STOW-RS request handled",
        extra={"parts": parts, "stored": answer.stored, "failed": parts - answer.stored, "http_status": status},
    )
    return JSONResponse(answer.body, status_code=status, media_type=DICOM_JSON, headers=headers)


# -- the router ----------------------------------------------------------------------


def make_dicomweb_router(
    archive: Archive,
    *,
    max_stow_bytes: int = DEFAULT_MAX_STOW_BYTES,
    bulk_data_threshold: int = DEFAULT_BULK_DATA_THRESHOLD,
    body_idle_timeout_s: float = DEFAULT_BODY_IDLE_TIMEOUT_S,
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
    body_idle_timeout_s
        A STOW-RS body that sends nothing for this long is refused with 408 (a slow-loris).
    """
    router = APIRouter(route_class=_DicomWebRoute, tags=["DICOMweb"])
    _add_qido_routes(router, archive)
    _add_wado_routes(router, archive, bulk_data_threshold)
    _add_stow_routes(router, archive, max_stow_bytes, body_idle_timeout_s)
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
        return _wado_instances(request, archive, wado_rs.find_instances(archive, study))

    @router.get("/studies/{study}/series/{series}", name="wado_series")
    def retrieve_series(request: Request, study: str, series: str) -> Response:
        return _wado_instances(request, archive, wado_rs.find_instances(archive, study, series))

    @router.get("/studies/{study}/series/{series}/instances/{sop}", name="wado_instance")
    def retrieve_instance(request: Request, study: str, series: str, sop: str) -> Response:
        return _wado_instances(request, archive, wado_rs.find_instances(archive, study, series, sop))

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
        instance = wado_rs.find_instances(archive, study, series, sop)[0]
        data, syntax = read_frames(archive.path_of(instance), instance.transfer_syntax_uid, numbers)
        return _frames_response(request, data, syntax)

    @router.get("/studies/{study}/series/{series}/instances/{sop}/bulk/{path:path}", name="wado_bulk")
    def retrieve_bulk(request: Request, study: str, series: str, sop: str, path: str) -> Response:
        instance = wado_rs.find_instances(archive, study, series, sop)[0]
        file_path = archive.path_of(instance)
        if path.strip("/").upper() in {tag_key(t) for t in PIXEL_DATA_TAGS}:
            data, syntax = read_frames(file_path, instance.transfer_syntax_uid, None)  # pixel data: all its frames
            return _frames_response(request, data, syntax)
        value = wado_rs.bulk_value(file_path, instance.transfer_syntax_uid, path)
        return _bulk_response(request, value)


def _add_stow_routes(router: APIRouter, archive: Archive, limit: int, idle_timeout: float) -> None:
    @router.post("/studies", name="stow_studies")
    async def store_instances(request: Request) -> Response:
        return await _stow(request, archive, None, limit, idle_timeout)

    @router.post("/studies/{study}", name="stow_study")
    async def store_study_instances(request: Request, study: str) -> Response:
        return await _stow(request, archive, study, limit, idle_timeout)
