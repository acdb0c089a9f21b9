"""RadPilot as a DICOM client (SCU): C-ECHO, C-STORE, C-FIND and C-MOVE to a configured node.

Every function takes the settings (our AE title, timeouts) and a node (a
:class:`~radpilot.config.RemoteNode`, or its name or AE title as configured),
sets TCP_NODELAY on its connection, and raises :class:`DicomNetworkError` (with
a message naming the node) when the node cannot be reached or refuses the
request.  Files are sent exactly as they are stored: their encoded datasets are
streamed from disk in the file's own transfer syntax, never decoded and
re-encoded (a deflated file whose syntax the peer refuses is the one exception:
it is sent inflated, which pynetdicom does losslessly).
"""

from __future__ import annotations

import errno
import logging
import socket
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pydicom
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID
from pynetdicom import AE, _config, build_context, evt
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from radpilot.archive.query import QueryLevel
from radpilot.dicom import status as dimse_status
from radpilot.pacs.dimse import (
    DimseService,
    DimseTimeouts,
    configure_ae,
    describe_node,
    set_tcp_nodelay,
    split_pairs,
    storage_contexts_for,
)

if TYPE_CHECKING:
    from pynetdicom.association import Association

from radpilot.archive.store import Archive
from radpilot.config import RemoteNode, Settings

logger = logging.getLogger(__name__)

# send_c_store(path) streams the file's encoded dataset instead of decoding and
# re-encoding it (and so needs a context with exactly the file's transfer syntax,
# which is what RadPilot proposes). RadPilot never sends a path expecting re-encoding.
_config.STORE_SEND_CHUNKED_DATASET = True

MOVE_TIMEOUT_S = 600.0
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"  # between two C-MOVE responses; a peer may say nothing while it sends

ProgressCallback = Callable[["FileResult"], None]


# -- errors ------------------------------------------------------------------------------


class DicomNetworkError(RuntimeError):
    """A DICOM exchange with a remote node failed; the message names the node and says why."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class AssociationError(DicomNetworkError):
    """The node could not be reached, or it rejected or aborted the association."""


class NoAcceptedContextError(AssociationError):
    """The node accepted the association but none of the proposed presentation contexts."""


class DimseStatusError(DicomNetworkError):
    """The node answered a request with a failure status (``.status``)."""


# -- reports -----------------------------------------------------------------------------


@dataclass(frozen=True)
class FileResult:
    """What happened to one file given to :func:`send`.

    ``outcome`` is ``"sent"`` (status success or warning), ``"failed"`` (the peer
    refused it or it could not be sent) or ``"skipped"`` (not a DICOM file).
    """

    path: Path
    outcome: str
    status: int | None = None
    sop_instance_uid: str = ""
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome == "sent"


@dataclass
class SendReport:
    """Per-file results of :func:`send`, in the order the files were given."""

    node: str
    results: list[FileResult] = field(default_factory=list)
    associations: int = 0
    seconds: float = 0.0

    @property
    def sent(self) -> int:
        return sum(r.outcome == "sent" for r in self.results)

    @property
    def failed(self) -> int:
        return sum(r.outcome == "failed" for r in self.results)

    @property
    def skipped(self) -> int:
        return sum(r.outcome == "skipped" for r in self.results)

    @property
    def ok(self) -> bool:
        """True when no DICOM file failed (skipped non-DICOM files do not count)."""
        return self.failed == 0


@dataclass
class MoveReport:
    """The outcome of a C-MOVE (:func:`pull`), from the final response of the node."""

    node: str
    status: int
    completed: int = 0
    failed: int = 0
    warning: int = 0
    remaining: int = 0
    failed_sop_instance_uids: list[str] = field(default_factory=list)
    received: int | None = None  # instances our temporary listener stored, when one was started
    comment: str = ""

    @property
    def ok(self) -> bool:
        return self.status == dimse_status.SUCCESS and self.failed == 0


# -- associations ------------------------------------------------------------------------


def resolve_node(settings: Settings, node: RemoteNode | str) -> RemoteNode:
    """``node`` itself, or the configured node with that name or AE title (KeyError lists the known ones)."""
    if isinstance(node, str):
        return settings.node(node)
    return node


def _association_failure(assoc: Association, node: RemoteNode, settings: Settings, connected: bool) -> str:
    who = f"DICOM node {describe_node(node)}"
    if not connected:
        return f"cannot connect to {who}: no DICOM service answered at {node.host}:{node.port}"
    if assoc.is_rejected:
        primitive = assoc.acceptor.primitive
        reason = primitive.reason_str if primitive is not None else "no reason given"
        hint = ""
        if primitive is not None and primitive.result_source == 1 and primitive.diagnostic == 3:
            hint = f"; is our AE title {settings.ae_title!r} configured on it?"
        elif primitive is not None and primitive.result_source == 1 and primitive.diagnostic == 7:
            hint = f"; is its AE title really {node.ae_title!r}?"
        return f"{who} rejected the association ({reason}){hint}"
    if assoc.is_aborted and assoc.rejected_contexts and not assoc.accepted_contexts:
        refused = ", ".join(
            f"{UID(cx.abstract_syntax).name} in {'/'.join(UID(ts).name for ts in cx.transfer_syntax)}" for cx in assoc.rejected_contexts[:5]
        )
        more = f" and {len(assoc.rejected_contexts) - 5} more" if len(assoc.rejected_contexts) > 5 else ""
        return f"{who} accepted none of the proposed presentation contexts ({refused}{more})"
    if assoc.is_aborted:
        return f"{who} aborted the association request"
    return f"{who} did not answer the association request"


@contextmanager
def associate(
    settings: Settings,
    node: RemoteNode,
    contexts: Sequence[PresentationContext],
    *,
    timeouts: DimseTimeouts | None = None,
) -> Iterator[Association]:
    """An established association with ``node`` proposing ``contexts``; released on exit.

    Raises
    ------
    AssociationError
        If the node cannot be reached, rejects or aborts the association, or
        accepts none of the presentation contexts.
    """
    ae = configure_ae(AE(ae_title=settings.ae_title), timeouts or DimseTimeouts.from_settings(settings))
    connected: list[bool] = []
    assoc = ae.associate(
        node.host,
        node.port,
        contexts=list(contexts),
        ae_title=node.ae_title,
        max_pdu=0,
        evt_handlers=[(evt.EVT_CONN_OPEN, set_tcp_nodelay), (evt.EVT_CONN_OPEN, lambda event: connected.append(True))],
    )
    if not assoc.is_established:
        message = _association_failure(assoc, node, settings, bool(connected))
        if assoc.rejected_contexts and not assoc.accepted_contexts:
            raise NoAcceptedContextError(message)
        raise AssociationError(message)
    try:
        yield assoc
    finally:
        if assoc.is_established:
            assoc.release()


def _status_of(response: Dataset | None, node: RemoteNode, what: str) -> int:
    if response is None or "Status" not in response:
        raise DicomNetworkError(f"DICOM node {describe_node(node)} sent no valid {what} response (association aborted or timed out)")
    return int(response.Status)


def _comment(response: Dataset) -> str:
    comment = response.get("ErrorComment")
    return f": {comment}" if comment else ""


# -- C-ECHO --------------------------------------------------------------------------------


def echo(settings: Settings, node: RemoteNode | str) -> int:
    """Verify that ``node`` answers (C-ECHO).

    Parameters
    ----------
    settings
        Our AE title and timeouts.
    node
        The node, or its configured name or AE title.

    Returns
    -------
    int
        The C-ECHO status (0x0000 when the node is fine).

    Raises
    ------
    DicomNetworkError
        If the node cannot be reached, rejects the association or sends no response.
    """
    node = resolve_node(settings, node)
    with associate(settings, node, [build_context(Verification)]) as assoc:
        return _status_of(assoc.send_c_echo(), node, "C-ECHO")


# -- C-STORE -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Header:
    path: Path
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str

    @property
    def pair(self) -> tuple[str, str]:
        return self.sop_class_uid, self.transfer_syntax_uid


def read_header(path: Path) -> _Header | FileResult:
    """The SOP class, SOP instance and transfer syntax of a file, or why it cannot be sent."""
    try:
        with path.open("rb") as handle:
            prefix = handle.read(132)
        if len(prefix) < 132 or prefix[128:132] != b"DICM":
            return FileResult(path, "skipped", message="not a DICOM file (no DICM marker)")
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID", "SOPInstanceUID"])
    except (OSError, InvalidDicomError, ValueError, EOFError, KeyError, TypeError) as exc:
        return FileResult(path, "failed", message=f"unreadable DICOM file: {exc}")
    meta = ds.file_meta
    missing = [kw for kw in ("MediaStorageSOPClassUID", "MediaStorageSOPInstanceUID", "TransferSyntaxUID") if not meta.get(kw)]
    if missing:
        return FileResult(path, "failed", message=f"file meta information lacks {', '.join(missing)}")
    if str(meta.MediaStorageSOPClassUID) == MEDIA_STORAGE_DIRECTORY:
        return FileResult(path, "skipped", message="a DICOMDIR (media index), not an instance")
    return _Header(
        path=path,
        sop_class_uid=str(meta.MediaStorageSOPClassUID),
        sop_instance_uid=str(meta.MediaStorageSOPInstanceUID),
        transfer_syntax_uid=str(meta.TransferSyntaxUID),
    )


def _store_one(assoc: Association, header: _Header, node: RemoteNode) -> FileResult:
    """C-STORE one file as stored; falls back to an inflated copy of a deflated file."""
    path, uid = header.path, header.sop_instance_uid
    try:
        try:
            response = assoc.send_c_store(path)
        except ValueError as exc:
            if "presentation context" not in str(exc):
                raise
            if UID(header.transfer_syntax_uid).is_compressed or not _has_convertible_context(assoc, header):
                name = UID(header.sop_class_uid).name
                syntax = UID(header.transfer_syntax_uid).name
                return FileResult(path, "failed", sop_instance_uid=uid, message=f"{node.name} does not accept {name} in {syntax}")
            response = assoc.send_c_store(pydicom.dcmread(path))
    except (OSError, ValueError, AttributeError, RuntimeError) as exc:
        return FileResult(path, "failed", sop_instance_uid=uid, message=f"could not send: {exc}")
    if response is None or "Status" not in response:
        return FileResult(path, "failed", sop_instance_uid=uid, message="no response (association aborted or timed out)")
    status = int(response.Status)
    if status == dimse_status.SUCCESS or status in dimse_status.WARNING_STATUSES:
        return FileResult(path, "sent", status=status, sop_instance_uid=uid, message=_comment(response).lstrip(": "))
    return FileResult(path, "failed", status=status, sop_instance_uid=uid, message=f"status 0x{status:04X}{_comment(response)}")


def _has_convertible_context(assoc: Association, header: _Header) -> bool:
    return any(
        cx.abstract_syntax == header.sop_class_uid
        and not UID(cx.transfer_syntax[0]).is_compressed
        and UID(cx.transfer_syntax[0]).is_little_endian
        for cx in assoc.accepted_contexts
    )


def _send_group(
    settings: Settings, node: RemoteNode, headers: list[_Header], report: SendReport, on_result: Callable[[FileResult], None]
) -> None:
    """Send files whose (SOP class, transfer syntax) pairs fit one association; reconnect if it drops."""
    contexts = storage_contexts_for(h.pair for h in headers)
    pending = list(headers)
    while pending:
        try:
            with associate(settings, node, contexts) as assoc:
                report.associations += 1
                while pending and assoc.is_established:
                    on_result(_store_one(assoc, pending.pop(0), node))
        except NoAcceptedContextError:
            for header in pending:  # this group only: other groups may well be accepted
                name, syntax = UID(header.sop_class_uid).name, UID(header.transfer_syntax_uid).name
                on_result(
                    FileResult(
                        header.path,
                        "failed",
                        sop_instance_uid=header.sop_instance_uid,
                        message=f"{node.name} does not accept {name} in {syntax}",
                    )
                )
            return
        except AssociationError as exc:
            if report.associations == 0:
                raise  # could not send anything: the node is down or refuses us
            for header in pending:  # it went away part way: report what was not sent
                on_result(FileResult(header.path, "failed", sop_instance_uid=header.sop_instance_uid, message=str(exc)))
            return


def send(
    settings: Settings,
    node: RemoteNode | str,
    files: Sequence[Path],
    progress_callback: ProgressCallback | None = None,
) -> SendReport:
    """C-STORE files to ``node`` as they are stored (no re-encoding).

    Presentation contexts are built from the SOP classes and transfer syntaxes
    of the files (headers read without pixel data); more than 128 of them are
    spread over several associations. Non-DICOM files are reported as skipped.

    Parameters
    ----------
    settings
        Our AE title and timeouts.
    node
        The destination, or its configured name or AE title.
    files
        DICOM Part 10 files.
    progress_callback
        Called with each file's :class:`FileResult` as soon as it is known.

    Returns
    -------
    SendReport
        One :class:`FileResult` per file, in the order given.

    Raises
    ------
    DicomNetworkError
        If the node cannot be reached or rejects the association.
    """
    node = resolve_node(settings, node)
    started = time.monotonic()
    report = SendReport(node=describe_node(node))
    results: dict[Path, FileResult] = {}

    def on_result(result: FileResult) -> None:
        results[result.path] = result
        if progress_callback is not None:
            progress_callback(result)

    headers: list[_Header] = []
    for path in map(Path, files):
        header = read_header(path)
        if isinstance(header, FileResult):
            on_result(header)
        else:
            headers.append(header)
    for group in split_pairs(h.pair for h in headers):
        members = set(group)
        _send_group(settings, node, [h for h in headers if h.pair in members], report, on_result)
    report.results = [results[Path(p)] for p in files]
    report.seconds = time.monotonic() - started
    logger.info(
        "send finished",
        extra={
            "node": node.name,
            "sent": report.sent,
            "failed": report.failed,
            "skipped": report.skipped,
            "seconds": round(report.seconds, 3),
        },
    )
    return report


# -- C-FIND --------------------------------------------------------------------------------


def _identifier_value(value: Any, vr: str) -> Any:
    if value is None or value == "":
        return [] if vr == "SQ" else None
    if vr in ("US", "UL", "SS", "SL"):
        return int(value)
    if isinstance(value, (list, tuple)):
        return "\\".join(str(v) for v in value)
    return str(value)


def build_identifier(level: QueryLevel, keys: Mapping[str, Any]) -> Dataset:
    """A query identifier: QueryRetrieveLevel plus ``keys`` (keyword -> value, '' = return this key)."""
    identifier = Dataset()
    identifier.QueryRetrieveLevel = level.name
    non_ascii = False
    for keyword, value in keys.items():
        tag = tag_for_keyword(keyword)
        if tag is None:
            raise ValueError(f"{keyword!r} is not a DICOM attribute keyword")
        vr = dictionary_VR(tag)
        converted = _identifier_value(value, vr)
        non_ascii = non_ascii or (isinstance(converted, str) and not converted.isascii())
        identifier.add_new(tag, vr, converted)
    if non_ascii:
        identifier.SpecificCharacterSet = "ISO_IR 192"
    return identifier


def find(settings: Settings, node: RemoteNode | str, level: QueryLevel | str, keys: Mapping[str, Any]) -> list[Dataset]:
    """C-FIND on ``node`` (Study Root; Patient Root for a PATIENT-level query).

    Parameters
    ----------
    settings
        Our AE title and timeouts.
    node
        The node, or its configured name or AE title.
    level
        ``PATIENT``, ``STUDY``, ``SERIES`` or ``IMAGE``.
    keys
        Keyword -> value to match ('' asks for the attribute without matching on it);
        wildcards, UID lists (``a\\b``) and date ranges as DICOM defines them.

    Returns
    -------
    list of Dataset
        The identifiers of the matches.

    Raises
    ------
    DicomNetworkError
        If the association fails or the node answers with a failure status.
    ValueError
        If a key is not a DICOM keyword.
    """
    node = resolve_node(settings, node)
    level = level if isinstance(level, QueryLevel) else QueryLevel.parse(level)
    model = PatientRootQueryRetrieveInformationModelFind if level is QueryLevel.PATIENT else StudyRootQueryRetrieveInformationModelFind
    identifier = build_identifier(level, keys)
    matches: list[Dataset] = []
    with associate(settings, node, [build_context(model)]) as assoc:
        for response, match in assoc.send_c_find(identifier, model):
            status = _status_of(response, node, "C-FIND")
            if status in dimse_status.PENDING_STATUSES:
                if match is not None:
                    matches.append(match)
                continue
            if status in (dimse_status.SUCCESS, dimse_status.CANCEL):
                break
            raise DimseStatusError(
                f"DICOM node {describe_node(node)} refused the C-FIND with status 0x{status:04X}{_comment(response)}",
                status=status,
            )
    return matches


# -- C-MOVE (pull) -------------------------------------------------------------------------


def port_is_free(host: str, port: int) -> bool:
    """True when nothing listens on ``host:port`` (tested by binding, as the listener would).

    Binding rather than connecting: a probe connection would leave a running
    listener an association that waits for a request that never comes.
    """
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
            raise
    return True


@contextmanager
def _receiving(settings: Settings, archive: Archive | None) -> Iterator[DimseService | None]:
    """A temporary storage listener on ``settings.dicom_port``, or None when one already listens there."""
    if not port_is_free(settings.bind_address, settings.dicom_port):
        logger.info("a listener runs on our DICOM port: it receives the pull", extra={"port": settings.dicom_port})
        yield None
        return
    store = Archive.from_settings(settings) if archive is None else archive
    service = DimseService(settings, store)
    try:
        service.start()
        logger.info("temporary DICOM listener for a pull", extra={"port": service.port})
        yield service
    finally:
        service.stop()
        if archive is None:
            store.close()


def _as_list(value: Any) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value if v]


def _move_counts(report: MoveReport, response: Dataset) -> None:
    for attribute, keyword in (
        ("completed", "NumberOfCompletedSuboperations"),
        ("failed", "NumberOfFailedSuboperations"),
        ("warning", "NumberOfWarningSuboperations"),
        ("remaining", "NumberOfRemainingSuboperations"),
    ):
        value = response.get(keyword)
        if value is not None:
            setattr(report, attribute, int(value))


def pull(
    settings: Settings,
    node: RemoteNode | str,
    study_uid: str,
    series_uid: str | None = None,
    *,
    archive: Archive | None = None,
) -> MoveReport:
    """C-MOVE a study (or one series) from ``node`` to us (move destination: our AE title).

    ``node`` must know our AE title with our host and ``settings.dicom_port``. If
    nothing listens on that port (no ``radpilot serve`` running), a temporary
    storage listener is started there for the duration of the move, storing into
    ``archive`` (default: the archive of ``settings``).

    Returns
    -------
    MoveReport
        Sub-operation counts from the node's final response.

    Raises
    ------
    DicomNetworkError
        If the association fails, or the node refuses the move before sending
        anything (e.g. 0xA801: it does not know our AE title).
    """
    node = resolve_node(settings, node)
    if settings.dicom_port == 0:
        raise ValueError("pull needs a fixed DICOM port (settings.dicom_port is 0) for the node to send to")
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "SERIES" if series_uid else "STUDY"
    identifier.StudyInstanceUID = study_uid
    if series_uid:
        identifier.SeriesInstanceUID = series_uid
    base = DimseTimeouts.from_settings(settings)
    timeouts = DimseTimeouts(
        acse=base.acse,
        dimse=max(base.dimse, MOVE_TIMEOUT_S),
        network=max(base.network, MOVE_TIMEOUT_S),
        connection=base.connection,
    )
    model = StudyRootQueryRetrieveInformationModelMove
    report = MoveReport(node=describe_node(node), status=dimse_status.SUCCESS)
    with _receiving(settings, archive) as listener:
        with associate(settings, node, [build_context(model)], timeouts=timeouts) as assoc:
            for response, failed in assoc.send_c_move(identifier, settings.ae_title, model):
                report.status = _status_of(response, node, "C-MOVE")
                _move_counts(report, response)
                report.comment = str(response.get("ErrorComment", "") or "")
                if failed is not None and "FailedSOPInstanceUIDList" in failed:
                    report.failed_sop_instance_uids = _as_list(failed.FailedSOPInstanceUIDList)
        if listener is not None:
            report.received = listener.instances_stored
    _raise_if_refused(report, node, settings)
    logger.info(
        "pull finished",
        extra={
            "node": node.name,
            "study_uid": study_uid,
            "status": f"0x{report.status:04X}",
            "completed": report.completed,
            "failed": report.failed,
        },
    )
    return report


def _raise_if_refused(report: MoveReport, node: RemoteNode, settings: Settings) -> None:
    status = report.status
    if status in (dimse_status.SUCCESS, dimse_status.CANCEL):
        return
    if status in dimse_status.PENDING_STATUSES or status in dimse_status.WARNING_STATUSES:
        return
    if report.completed or report.failed or report.warning:
        return  # it ran; the report says what failed
    comment = f": {report.comment}" if report.comment else ""
    if status == dimse_status.MOVE_DESTINATION_UNKNOWN:
        raise DimseStatusError(
            f"DICOM node {describe_node(node)} does not know the move destination {settings.ae_title!r} "
            f"(status 0xA801); configure {settings.ae_title} with our host and port {settings.dicom_port} on it",
            status=status,
        )
    raise DimseStatusError(
        f"DICOM node {describe_node(node)} refused the C-MOVE with status 0x{status:04X}{comment} "
        f"(does it know our AE title {settings.ae_title!r} as a move destination, with our host and port "
        f"{settings.dicom_port}?)",
        status=status,
    )
