"""RadPilot's DIMSE service (pynetdicom): the DICOM listener beside the PACS.

:class:`DimseService` answers

* C-ECHO (Verification);
* C-STORE for every storage SOP class pynetdicom knows, in every transfer
  syntax it knows.  The dataset is stored exactly as it arrived (the encoded
  bytes, never decoded and re-encoded) and the archive's status is returned:
  0x0000 stored or identical duplicate, 0xA900 conflict, 0xC000 malformed,
  0xA700 storage failure, with the reason in *Error Comment*;
* C-FIND, C-MOVE and C-GET for the Patient Root, Study Root and
  Patient/Study Only information models, answered from the archive index.

Associations
------------
Any *called* AE title is accepted (common practice: a modality configured with
a typo still gets its images filed).  When ``settings.allowed_peers`` is not
``None`` only the calling AE titles listed there (from the listed host, where
one is given) may associate; others get A-ASSOCIATE-RJ "calling AE title not
recognised".  Every socket, accepted or opened for a C-MOVE sub-association,
has TCP_NODELAY set, and the maximum PDU we receive is unlimited.

One log line (INFO) is written per association when it ends, with the calling
AE title, host, port, number of instances stored and the duration.

Every access is audited (``security.audit``) with the calling AE title and its
address: one ``dimse.store`` row per study received on an association (when it ends,
with the instances stored and refused), one ``dimse.find``, ``dimse.move`` or
``dimse.get`` row per request, and ``dimse.associate.rejected`` for a refused peer.

:meth:`DimseService.stop` stops accepting, lets associations in progress finish
(an idle association is aborted after a short grace period; a C-STORE is only
acknowledged after the instance is stored, so nothing acknowledged is lost)
and returns.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import (
    AE,
    ALL_TRANSFER_SYNTAXES,
    PYNETDICOM_IMPLEMENTATION_UID,
    PYNETDICOM_IMPLEMENTATION_VERSION,
    AllStoragePresentationContexts,
    _config,
    build_context,
    evt,
)
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    PatientStudyOnlyQueryRetrieveInformationModelFind,
    PatientStudyOnlyQueryRetrieveInformationModelGet,
    PatientStudyOnlyQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)
from pynetdicom.transport import ThreadedAssociationServer

from radpilot.archive.query import INDEXED_ATTRIBUTES, NON_MATCHING_KEYS, Query, QueryError, QueryLevel, vr_of
from radpilot.dicom import status as dimse_status
from radpilot.dicom.part10 import part10_bytes
from radpilot.security import audit
from radpilot.security.tls import TlsFiles

if TYPE_CHECKING:
    from pynetdicom.association import Association
    from pynetdicom.events import Event

    from radpilot.archive.store import Archive
    from radpilot.config import RemoteNode, Settings

logger = logging.getLogger(__name__)

# pynetdicom's standard handlers format every PDU for its logger; RadPilot logs associations itself.
_config.LOG_HANDLER_LEVEL = "none"

ERROR_COMMENT_MAX = 64  # VR LO

# A-ASSOCIATE-RJ: rejected-permanent, DUL service-user, calling AE title not recognised.
REJECT_CALLING_AE = (0x01, 0x01, 0x03)

UNCOMPRESSED_LITTLE_ENDIAN = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)

MAX_REQUESTED_CONTEXTS = 128
# An A-ASSOCIATE-RQ (up to 128 presentation contexts of long UIDs) may exceed a small maximum PDU length.
ASSOCIATION_PDU_ALLOWANCE = 256 * 1024
PDU_HEADER_LENGTH = 6
P_DATA_TF = 0x04
RECV_CHUNK = 64 * 1024
LISTENER_POLL_S = 0.05
GC_EVERY_POLLS = int(60 / LISTENER_POLL_S)

# Proposed when a C-MOVE only needs an association with its destination to report a failure.
_ANY_DESTINATION_CONTEXTS = [
    build_context(Verification),
    build_context("1.2.840.10008.5.1.4.1.1.2"),  # CT Image Storage
    build_context("1.2.840.10008.5.1.4.1.1.7"),  # Secondary Capture Image Storage
]  # PS3.8: presentation context IDs are odd numbers 1..255

# Query/retrieve information models: SOP class UID -> the levels it allows.
_ALL_LEVELS = frozenset(QueryLevel)
_STUDY_ROOT_LEVELS = frozenset({QueryLevel.STUDY, QueryLevel.SERIES, QueryLevel.IMAGE})
_PATIENT_STUDY_ONLY_LEVELS = frozenset({QueryLevel.PATIENT, QueryLevel.STUDY})
FIND_MODELS: dict[str, frozenset[QueryLevel]] = {
    PatientRootQueryRetrieveInformationModelFind: _ALL_LEVELS,
    StudyRootQueryRetrieveInformationModelFind: _STUDY_ROOT_LEVELS,
    PatientStudyOnlyQueryRetrieveInformationModelFind: _PATIENT_STUDY_ONLY_LEVELS,
}
MOVE_MODELS: dict[str, frozenset[QueryLevel]] = {
    PatientRootQueryRetrieveInformationModelMove: _ALL_LEVELS,
    StudyRootQueryRetrieveInformationModelMove: _STUDY_ROOT_LEVELS,
    PatientStudyOnlyQueryRetrieveInformationModelMove: _PATIENT_STUDY_ONLY_LEVELS,
}
GET_MODELS: dict[str, frozenset[QueryLevel]] = {
    PatientRootQueryRetrieveInformationModelGet: _ALL_LEVELS,
    StudyRootQueryRetrieveInformationModelGet: _STUDY_ROOT_LEVELS,
    PatientStudyOnlyQueryRetrieveInformationModelGet: _PATIENT_STUDY_ONLY_LEVELS,
}

# The unique key of each level (PS3.4 C.3); a retrieve matches on these only.
UNIQUE_KEYS: dict[QueryLevel, str] = {
    QueryLevel.PATIENT: "PatientID",
    QueryLevel.STUDY: "StudyInstanceUID",
    QueryLevel.SERIES: "SeriesInstanceUID",
    QueryLevel.IMAGE: "SOPInstanceUID",
}


@dataclass(frozen=True)
class DimseTimeouts:
    """Network timeouts in seconds (pynetdicom's ACSE, DIMSE and network timeouts).

    ``drain`` bounds how long :meth:`DimseService.stop` waits for associations in
    progress; ``idle_grace`` is how long an association may sit idle (no PDU, no
    request being answered) during a stop before it is aborted.
    """

    acse: float = 30.0
    dimse: float = 60.0
    network: float = 60.0
    connection: float = 10.0
    drain: float = 60.0
    idle_grace: float = 0.5

    @classmethod
    def from_settings(cls, settings: Settings) -> DimseTimeouts:
        """Timeouts from optional settings ``dicom_acse_timeout``, ``dicom_dimse_timeout``, ... (else defaults)."""
        defaults = cls()
        return cls(
            **{
                name: float(getattr(settings, f"dicom_{name}_timeout", None) or getattr(defaults, name))
                for name in ("acse", "dimse", "network", "connection", "drain")
            }
        )


def set_tcp_nodelay(event: Event) -> None:
    """EVT_CONN_OPEN handler: disable Nagle's algorithm on the association's socket.

    Without it every small PDU (a C-STORE response, the last fragment of a
    dataset) waits for the peer's delayed ACK, tens of milliseconds each.
    """
    sock = getattr(getattr(event.assoc.dul, "socket", None), "socket", None)
    if sock is None:
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError as exc:  # e.g. a socket already closed by the peer
        logger.debug("could not set TCP_NODELAY", extra={"error": str(exc)})


class BoundedPduReader:
    """Replaces the ``recv`` of one accepted association's socket: every PDU must arrive in bounded time and size.

    pynetdicom reads a PDU's 6-byte header, then as many bytes as the header declares,
    blocking until they are all there: a peer that trickles one byte at a time (a
    slow-loris), or declares a 4 GiB PDU, would hold a thread and its memory for ever.
    Here each read has a deadline of ``timeout`` seconds plus its length at
    ``min_rate`` bytes per second, and a PDU longer than ``max_pdu`` (the maximum
    RadPilot announced, plus room for an association request) ends the connection, as
    does a dataset whose fragments add up to more than ``max_dataset`` bytes.
    A read that misses its deadline raises TimeoutError, which pynetdicom answers
    by closing the connection (no instance half-received is ever stored).
    """

    def __init__(self, raw: socket.socket, timeout: float, min_rate: int, max_pdu: int, max_dataset: int) -> None:
        self._raw = raw
        self._timeout = timeout
        self._min_rate = min_rate
        self._max_pdu = max_pdu
        self._max_dataset = max_dataset
        self._pdu_type: int | None = None  # the type of the PDU whose body is read next
        self._dataset_bytes = 0  # of the dataset being received, over all its P-DATA-TF PDUs

    def __call__(self, nr_bytes: int) -> bytearray:
        received = self._read(nr_bytes)
        if self._pdu_type is None:
            self._pdu_type = received[0] if len(received) == PDU_HEADER_LENGTH else None
        else:
            if self._pdu_type == P_DATA_TF:
                self._count_dataset(received)
            self._pdu_type = None
        return received

    def _count_dataset(self, body: bytearray) -> None:
        """Add the dataset fragments of a P-DATA-TF PDU; refuse once a dataset grows beyond ``max_dataset`` bytes.

        pynetdicom keeps a dataset's fragments in memory until its last one: without a
        limit a peer could send fragments for ever. Each PDV item is a 4-byte length,
        the presentation context ID and a control byte (bit 0: command, bit 1: last fragment).
        """
        position = 0
        while position + 6 <= len(body):
            length = int.from_bytes(body[position : position + 4], "big")
            control = body[position + 5]
            if not control & 0x01:
                self._dataset_bytes += max(length - 2, 0)
                if self._dataset_bytes > self._max_dataset:
                    logger.warning(
                        "peer sent a dataset larger than allowed; connection closed",
                        extra={"dataset_bytes": self._dataset_bytes, "limit": self._max_dataset},
                    )
                    raise OSError(f"dataset beyond the limit of {self._max_dataset} bytes (dicom_max_dataset_bytes)")
                if control & 0x02:
                    self._dataset_bytes = 0
            position += 4 + length

    def _read(self, nr_bytes: int) -> bytearray:
        if nr_bytes > self._max_pdu + ASSOCIATION_PDU_ALLOWANCE:
            logger.warning("peer sent a PDU longer than allowed; connection closed", extra={"pdu_bytes": nr_bytes, "limit": self._max_pdu})
            raise OSError(f"PDU of {nr_bytes} bytes exceeds the limit of {self._max_pdu} bytes (dicom_max_pdu_bytes)")
        deadline = time.monotonic() + self._timeout + nr_bytes / self._min_rate
        previous = self._raw.gettimeout()
        received = bytearray()
        try:
            while len(received) < nr_bytes:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    logger.warning(
                        "peer too slow to send a PDU; connection closed", extra={"pdu_bytes": nr_bytes, "received": len(received)}
                    )
                    raise TimeoutError(f"{len(received)} of {nr_bytes} bytes of a PDU received in time")
                self._raw.settimeout(remaining)
                chunk = self._raw.recv(min(nr_bytes - len(received), RECV_CHUNK))
                if not chunk:
                    break  # closed by the peer: pynetdicom judges the short read
                received += chunk
        finally:
            self._raw.settimeout(previous)
        return received


def configure_ae(ae: AE, timeouts: DimseTimeouts) -> AE:
    """Apply RadPilot's network settings to a pynetdicom AE (timeouts, unlimited receive PDU)."""
    ae.acse_timeout = timeouts.acse
    ae.dimse_timeout = timeouts.dimse
    ae.network_timeout = timeouts.network
    ae.connection_timeout = timeouts.connection
    ae.maximum_pdu_size = 0
    return ae


def status_dataset(status: int, comment: str = "") -> Dataset:
    """A DIMSE status with an optional *Error Comment* (trimmed to a valid LO value)."""
    ds = Dataset()
    ds.Status = status
    comment = error_comment(comment)
    if comment:
        ds.ErrorComment = comment
    return ds


def error_comment(text: str) -> str:
    """``text`` as a valid LO value: one line, no backslash, at most 64 characters."""
    cleaned = " ".join(str(text).replace("\\", "/").split())
    if len(cleaned) > ERROR_COMMENT_MAX:
        cleaned = cleaned[: ERROR_COMMENT_MAX - 3].rstrip() + "..."
    return cleaned


def storage_contexts_for(pairs: Iterable[tuple[str, str]]) -> list[PresentationContext]:
    """Presentation contexts to *send* instances of these (SOP class, transfer syntax) pairs as they are.

    One context per pair with exactly that transfer syntax, so nothing needs
    re-encoding; plus, for a SOP class with a deflated instance, one context with
    the plain little endian syntaxes to fall back on (pynetdicom converts
    between those). Pairs beyond 128 contexts are left out: the caller splits
    them over several associations (:func:`split_pairs`).
    """
    contexts: list[PresentationContext] = []
    fallback_classes: list[str] = []
    for sop_class, syntax in dict.fromkeys(pairs):
        contexts.append(build_context(sop_class, [syntax]))
        if UID(syntax) == DeflatedExplicitVRLittleEndian and sop_class not in fallback_classes:
            fallback_classes.append(sop_class)
    for sop_class in fallback_classes:
        contexts.append(build_context(sop_class, list(UNCOMPRESSED_LITTLE_ENDIAN)))
    return contexts[:MAX_REQUESTED_CONTEXTS]


def split_pairs(pairs: Iterable[tuple[str, str]], limit: int = MAX_REQUESTED_CONTEXTS) -> list[list[tuple[str, str]]]:
    """Split (SOP class, transfer syntax) pairs into groups that fit one association each."""
    unique = list(dict.fromkeys(pairs))
    groups: list[list[tuple[str, str]]] = [[]]
    for pair in unique:
        if len(storage_contexts_for([*groups[-1], pair])) > limit or len(groups[-1]) >= limit:
            groups.append([])
        groups[-1].append(pair)
    return [g for g in groups if g]


def describe_node(node: RemoteNode) -> str:
    """``name (AE@host:port)``, the way error messages name a node."""
    return f"{node.name!r} ({node.ae_title}@{node.host}:{node.port})"


@dataclass
class AssociationRecord:
    """What one accepted association did, for its log line and for a clean stop."""

    host: str
    port: int
    started: float = field(default_factory=time.monotonic)
    calling_ae: str = ""
    stored: int = 0
    refused: int = 0
    requests: int = 0
    busy: int = 0
    last_activity: float = field(default_factory=time.monotonic)
    studies: dict[str, list[int]] = field(default_factory=dict)  # study UID -> [stored, refused]

    @property
    def source(self) -> str:
        return f"{self.calling_ae}@{self.host}:{self.port}"


class DimseService:
    """The DICOM listener: pynetdicom AE with RadPilot's handlers bound to it.

    Parameters
    ----------
    settings
        ``ae_title``, ``bind_address``, ``dicom_port`` (0 picks a free port),
        ``nodes`` (C-MOVE destinations) and ``allowed_peers``.
    archive
        Where received instances are stored and queries are answered from.
    timeouts
        Network timeouts; default :meth:`DimseTimeouts.from_settings`.
    """

    def __init__(self, settings: Settings, archive: Archive, *, timeouts: DimseTimeouts | None = None) -> None:
        self.settings = settings
        self.archive = archive
        self.timeouts = timeouts or DimseTimeouts.from_settings(settings)
        self.ae = self._make_ae()
        self._server: ThreadedAssociationServer | None = None
        self._tls_server: ThreadedAssociationServer | None = None
        self._records: dict[int, AssociationRecord] = {}
        self._records_lock = threading.Lock()
        self._stored_lock = threading.Lock()
        self.instances_stored = 0  # instances stored or found identical since start, over all associations

    # -- lifecycle -----------------------------------------------------------------

    @property
    def port(self) -> int:
        """The port we listen on (the actual one when ``settings.dicom_port`` is 0)."""
        if self._server is not None:
            return int(self._server.server_address[1])
        return self.settings.dicom_port

    @property
    def tls_port(self) -> int | None:
        """The DICOM TLS port (the actual one when ``settings.dicom_tls_port`` is 0), None without one."""
        if self._tls_server is not None:
            return int(self._tls_server.server_address[1])
        return self.settings.dicom_tls_port

    @property
    def is_running(self) -> bool:
        return self._server is not None

    def start(self) -> None:
        """Start listening; returns once connections are accepted."""
        if self._server is not None:
            return
        tls = TlsFiles.from_settings(self.settings) if self.settings.dicom_tls_port is not None else None
        context = tls.server_context() if tls is not None else None  # a bad certificate fails before anything listens
        self._server = self._listen(self.settings.dicom_port, None)
        if context is not None and self.settings.dicom_tls_port is not None:
            try:
                self._tls_server = self._listen(self.settings.dicom_tls_port, context)
            except OSError:
                self.stop()
                raise
        logger.info(
            "DICOM listener started",
            extra={
                "ae_title": self.settings.ae_title,
                "address": f"{self.settings.bind_address}:{self.port}",
                "tls_address": f"{self.settings.bind_address}:{self.tls_port}" if self._tls_server is not None else None,
                "mutual_tls": bool(tls and tls.require_client_cert),
            },
        )

    def _listen(self, port: int, context: ssl.SSLContext | None) -> ThreadedAssociationServer:
        address = (self.settings.bind_address, port)
        kind = "DICOM TLS" if context is not None else "DICOM"
        try:
            server = self.ae.make_server(
                address, evt_handlers=self._handlers(), server_class=ThreadedAssociationServer, ssl_context=context
            )
        except OSError as exc:
            raise OSError(exc.errno, f"cannot listen for {kind} on {address[0]}:{address[1]}: {exc.strerror or exc}") from exc
        # pynetdicom runs a full gc.collect() every 60 polls of its accept loop (every 3 s at a 50 ms poll), holding
        # the GIL for tens to hundreds of ms in a large process while associations wait to be read; Python's own
        # generational collector already frees dead association threads, so a sweep once a minute is plenty.
        server._gc = [0, GC_EVERY_POLLS]  # noqa: SLF001 - pynetdicom has no setting for it
        # As AE.start_server(block=False) does, but polling for shutdown every 50 ms instead of 500 ms.
        self.ae._servers.append(server)  # noqa: SLF001 - server.shutdown() removes itself from this list
        name = "radpilot-dicom-tls-listener" if context is not None else "radpilot-dicom-listener"
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": LISTENER_POLL_S}, name=name, daemon=True)
        thread.start()
        return server

    def stop(self) -> None:
        """Stop accepting associations, let those in progress finish, then return.

        Associations still running after ``timeouts.drain`` seconds, and idle ones
        after ``timeouts.idle_grace``, are aborted; an instance is acknowledged only
        once it is stored, so nothing acknowledged is lost.
        """
        servers = [s for s in (self._server, self._tls_server) if s is not None]
        self._server = self._tls_server = None
        if not servers:
            return
        for server in servers:
            server.shutdown()  # stops serve_forever and closes the listening socket
        for server in servers:
            threads = getattr(server, "_threads", None)
            for thread in list(threads) if isinstance(threads, list) else []:
                thread.join(timeout=self.timeouts.connection)  # request threads that were handing over a connection
        for server in servers:
            self._drain(server)
        logger.info("DICOM listener stopped", extra={"ae_title": self.settings.ae_title})

    def _drain(self, server: ThreadedAssociationServer) -> None:
        """Wait for associations to end; abort idle ones, and all of them at the deadline."""
        deadline = time.monotonic() + self.timeouts.drain
        aborted: set[int] = set()
        while True:
            running = [a for a in server.active_associations if a.is_alive() and id(a) not in aborted]
            if not running:
                return
            now = time.monotonic()
            for assoc in running:
                if now >= deadline:
                    logger.warning("aborting an association still running at shutdown", extra=self._log_fields(assoc))
                elif not self._is_idle(assoc, now):
                    continue
                aborted.add(id(assoc))
                self._end_association(assoc)
            time.sleep(0.02)

    @staticmethod
    def _end_association(assoc: Association) -> None:
        """Abort an established association; close the connection of one still waiting for its request."""
        if assoc.is_established:
            assoc.abort()
            assoc.join(timeout=0.5)
        elif assoc.dul.state_machine.current_state == "Sta2":
            # No A-ASSOCIATE-RQ yet (A-ABORT is not valid here). Its thread then waits out the ACSE
            # timeout on a closed connection; it holds nothing, so it is not waited for.
            sock = assoc.dul.socket
            if sock is not None:
                sock.close()

    def _is_idle(self, assoc: Association, now: float) -> bool:
        # Activity is the end of the last request: per-PDU events cost ~2 ms per CT instance. A dataset
        # still arriving therefore counts as idle; aborting it loses nothing that was acknowledged.
        record = self._records.get(id(assoc))
        if record is None:  # rejected, or never got as far as a request
            return True
        return record.busy == 0 and now - record.last_activity > self.timeouts.idle_grace

    # -- the AE ----------------------------------------------------------------------

    def _make_ae(self) -> AE:
        ae = configure_ae(AE(ae_title=self.settings.ae_title), self.timeouts)
        ae.maximum_pdu_size = self.settings.dicom_max_pdu_bytes  # announced, and enforced by BoundedPduReader
        ae.require_called_aet = False  # accept any called AE title (documented above)
        ae.maximum_associations = 64
        ae.add_supported_context(Verification)
        for context in AllStoragePresentationContexts:
            # scp_role: a C-GET requestor acts as storage SCP on our association.
            ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES, scu_role=True, scp_role=True)
        for model in (*FIND_MODELS, *MOVE_MODELS, *GET_MODELS):
            ae.add_supported_context(model)
        return ae

    def _handlers(self) -> list[tuple[Any, Any]]:
        return [
            (evt.EVT_CONN_OPEN, set_tcp_nodelay),
            (evt.EVT_CONN_OPEN, self._on_connection_open),
            (evt.EVT_REQUESTED, self._on_association_requested),
            (evt.EVT_CONN_CLOSE, self._on_connection_close),
            (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_C_FIND, self._on_find),
            (evt.EVT_C_MOVE, self._on_move),
            (evt.EVT_C_GET, self._on_get),
        ]

    # -- association bookkeeping -----------------------------------------------------

    def _on_connection_open(self, event: Event) -> None:
        address = event.address
        dul_socket = event.assoc.dul.socket
        raw = getattr(dul_socket, "socket", None)
        if raw is not None:
            dul_socket.recv = BoundedPduReader(  # type: ignore[method-assign]
                raw,
                self.timeouts.network,
                self.settings.dicom_min_transfer_rate,
                self.settings.dicom_max_pdu_bytes,
                self.settings.dicom_max_dataset_bytes,
            )
        with self._records_lock:
            self._records[id(event.assoc)] = AssociationRecord(host=str(address[0]), port=int(address[1]))

    def _on_association_requested(self, event: Event) -> None:
        record = self._records.get(id(event.assoc))
        # requestor.ae_title is only set during negotiation, after this event: read the request itself.
        calling_ae = str(event.assoc.requestor.primitive.calling_ae_title).strip()
        if record is not None:
            record.calling_ae = calling_ae
        host = record.host if record is not None else str(event.assoc.requestor.address)
        port = record.port if record is not None else 0
        if self.admit(calling_ae, str(event.assoc.acceptor.ae_title).strip(), host, port):
            return
        with self._records_lock:
            self._records.pop(id(event.assoc), None)
        event.assoc.acse.send_reject(*REJECT_CALLING_AE)
        # As pynetdicom does for its own rejections: wait until the A-ASSOCIATE-RJ is sent
        # and the peer has closed, else the socket is closed under it and the peer sees an abort.
        event.assoc.kill()

    def admit(self, calling_ae: str, called_ae: str, host: str, port: int) -> bool:
        """Whether a peer may associate (``allowed_peers``); a refusal is logged and audited here."""
        if self._peer_allowed(calling_ae, host):
            return True
        logger.warning(
            "association rejected: calling AE title not recognised",
            extra={"calling_ae": calling_ae, "host": host, "called_ae": called_ae},
        )
        self._audit(
            calling_ae or "unknown",
            "dimse.associate.rejected",
            calling_ae or "unknown",
            f"{calling_ae}@{host}:{port}",
            "refused",
            reason="calling AE title not recognised",
        )
        return False

    def _peer_allowed(self, calling_ae: str, host: str) -> bool:
        allowed = self.settings.allowed_peers
        if allowed is None:
            return True
        return any(peer.ae_title == calling_ae and (peer.host is None or peer.host == host) for peer in allowed)

    def _on_connection_close(self, event: Event) -> None:
        with self._records_lock:
            record = self._records.pop(id(event.assoc), None)
        if record is not None:
            self.finish(record)

    def finish(self, record: AssociationRecord, ended: str = "") -> None:
        """An association has ended: one audit row per study it stored into, and its log line."""
        if not record.calling_ae:
            return
        for study, (stored, refused) in record.studies.items():
            self._audit(
                record.calling_ae,
                "dimse.store",
                study,
                record.source,
                "success" if refused == 0 else "failure",
                details={"stored": stored, "refused": refused},
            )
        fields: dict[str, Any] = {
            "calling_ae": record.calling_ae,
            "host": record.host,
            "port": record.port,
            "stored": record.stored,
            "refused": record.refused,
            "requests": record.requests,
            "duration_s": round(time.monotonic() - record.started, 3),
        }
        if ended:
            fields["ended"] = ended
        logger.info("association ended", extra=fields)

    def _audit(
        self, who: str, action: str, target: str, source: str, outcome: str, *, reason: str = "", details: dict[str, Any] | None = None
    ) -> None:
        # An audit row that cannot be written must not undo an answer already given: log it loudly.
        try:
            audit.record(
                self.archive.engine,
                who=who,
                action=action,
                target=target or "-",
                source=source,
                outcome=outcome,
                reason=reason,
                details=details,
            )
        except Exception:  # noqa: BLE001 - logged with the event it failed to record
            logger.exception("audit record failed", extra={"action": action, "who": who, "target": target})

    def _log_fields(self, assoc: Association) -> dict[str, Any]:
        record = self._records.get(id(assoc))
        if record is None:
            return {"calling_ae": str(assoc.requestor.ae_title).strip()}
        return {"calling_ae": record.calling_ae, "host": record.host, "port": record.port}

    def _begin(self, event: Event) -> AssociationRecord:
        """Mark a request as in progress (a stop waits for it) and return the association's record."""
        record = self._records.get(id(event.assoc))
        if record is None:  # should not happen; keep the handlers working regardless
            record = AssociationRecord(host=str(event.assoc.requestor.address), port=int(event.assoc.requestor.port))
            record.calling_ae = str(event.assoc.requestor.ae_title).strip()
        record.busy += 1
        record.requests += 1
        return record

    @staticmethod
    def _end(record: AssociationRecord) -> None:
        record.busy -= 1
        record.last_activity = time.monotonic()

    # -- C-ECHO ------------------------------------------------------------------------

    def _on_echo(self, event: Event) -> int:
        self._end(self._begin(event))
        return dimse_status.SUCCESS

    # -- C-STORE -----------------------------------------------------------------------

    def _on_store(self, event: Event) -> Dataset:
        record = self._begin(event)
        try:
            return self._store(event, record)
        finally:
            self._end(record)

    def _store(self, event: Event, record: AssociationRecord) -> Dataset:
        try:
            data = _part10_of(event)
        except Exception as exc:  # noqa: BLE001 - answer with a failure status, never drop the request
            logger.exception("C-STORE failed", extra={"calling_ae": record.calling_ae})
            record.refused += 1
            return status_dataset(dimse_status.OUT_OF_RESOURCES, f"storage error: {exc}")
        return status_dataset(*self.store(data, record))

    def store(self, data: bytes, record: AssociationRecord) -> tuple[int, str]:
        """Store one received Part 10 file for an association: the C-STORE status and its Error Comment."""
        try:
            result = self.archive.store_file_bytes(data, source_ae_title=record.calling_ae)
        except Exception as exc:  # noqa: BLE001 - answer with a failure status, never drop the request
            logger.exception("C-STORE failed", extra={"calling_ae": record.calling_ae})
            record.refused += 1
            return dimse_status.OUT_OF_RESOURCES, f"storage error: {exc}"
        counts = record.studies.setdefault(result.study_instance_uid or "unknown study", [0, 0])
        counts[0 if result.outcome.accepted else 1] += 1
        if result.outcome.accepted:
            record.stored += 1
            with self._stored_lock:
                self.instances_stored += 1
            return result.status, ""
        record.refused += 1
        comment = result.message
        if result.outcome.value == "conflict":
            comment = "already stored with different content; first copy kept"
        return result.status, comment

    # -- C-FIND ------------------------------------------------------------------------

    def _on_find(self, event: Event) -> Iterator[tuple[Any, Dataset | None]]:
        record = self._begin(event)
        try:
            yield from self._find(event, record)
        finally:
            self._end(record)

    def _find(self, event: Event, record: AssociationRecord) -> Iterator[tuple[Any, Dataset | None]]:
        model = str(event.request.AffectedSOPClassUID)
        try:
            request = event.identifier
            query = find_query(request, FIND_MODELS[model])
            matches = self.archive.find(query)
        except QueryError as exc:
            self._audit(record.calling_ae, "dimse.find", "query", record.source, "failure", reason=str(exc))
            yield status_dataset(dimse_status.IDENTIFIER_MISMATCH, str(exc)), None
            return
        except Exception as exc:  # noqa: BLE001 - a failure status, with the reason
            logger.exception("C-FIND failed")
            self._audit(record.calling_ae, "dimse.find", "query", record.source, "error", reason=str(exc))
            yield status_dataset(dimse_status.UNABLE_TO_PROCESS, f"query failed: {exc}"), None
            return
        self._audit(
            record.calling_ae,
            "dimse.find",
            _query_target(request),
            record.source,
            "success",
            details={
                "level": query.level.value if hasattr(query.level, "value") else str(query.level),
                "keys": _query_keys(request),
                "matches": len(matches),
            },
        )
        for match in matches:
            if event.is_cancelled:
                yield dimse_status.CANCEL, None
                return
            yield dimse_status.PENDING, response_identifier(request, match, query.level)

    # -- C-MOVE and C-GET --------------------------------------------------------------

    def _on_move(self, event: Event) -> Iterator[Any]:
        record = self._begin(event)
        try:
            yield from self._move(event, record)
        finally:
            self._end(record)

    def _move(self, event: Event, record: AssociationRecord) -> Iterator[Any]:
        destination_ae = str(event.move_destination or "").strip()
        destination = self._move_destination(destination_ae)
        if destination is None:
            logger.warning("C-MOVE to an unknown destination", extra={"move_destination": destination_ae})
            self._audit(record.calling_ae, "dimse.move", destination_ae or "-", record.source, "refused", reason="move destination unknown")
            yield None, None  # pynetdicom answers 0xA801 Move destination unknown
            return
        try:
            matches = self._retrieve_matches(event, MOVE_MODELS)
        except QueryError as exc:
            # pynetdicom only reports a failure with a reason after associating with the destination.
            yield destination.host, destination.port, {"contexts": _ANY_DESTINATION_CONTEXTS}
            yield 1
            yield status_dataset(dimse_status.IDENTIFIER_MISMATCH, str(exc)), None
            return
        pairs = {(m["SOPClassUID"], m["_transfer_syntax_uid"]) for m in matches}
        contexts = storage_contexts_for(sorted(pairs))
        if len(pairs) > len(contexts):
            logger.warning(
                "C-MOVE needs more than 128 presentation contexts; instances beyond them will fail",
                extra={"move_destination": destination_ae, "pairs": len(pairs)},
            )
        yield (
            destination.host,
            destination.port,
            {
                "contexts": contexts,
                "max_pdu": 0,
                "evt_handlers": [(evt.EVT_CONN_OPEN, set_tcp_nodelay)],
            },
        )
        yield len(matches)
        logger.info("C-MOVE", extra={"move_destination": destination_ae, "instances": len(matches)})
        self._audit_retrieve(record, "dimse.move", matches, {"destination": destination_ae})
        yield from self._sub_operations(event, matches)

    def _on_get(self, event: Event) -> Iterator[Any]:
        record = self._begin(event)
        try:
            yield from self._get(event, record)
        finally:
            self._end(record)

    def _get(self, event: Event, record: AssociationRecord) -> Iterator[Any]:
        try:
            matches = self._retrieve_matches(event, GET_MODELS)
        except QueryError as exc:
            yield 1
            yield status_dataset(dimse_status.IDENTIFIER_MISMATCH, str(exc)), None
            return
        yield len(matches)
        logger.info("C-GET", extra={"instances": len(matches)})
        self._audit_retrieve(record, "dimse.get", matches, {})
        yield from self._sub_operations(event, matches)

    def _audit_retrieve(self, record: AssociationRecord, action: str, matches: list[dict[str, Any]], details: dict[str, Any]) -> None:
        studies: dict[str, int] = {}
        for match in matches:
            study = str(match.get("StudyInstanceUID") or "unknown study")
            studies[study] = studies.get(study, 0) + 1
        for study, count in (studies or {"-": 0}).items():
            self._audit(record.calling_ae, action, study, record.source, "success", details={**details, "instances": count})

    def _move_destination(self, ae_title: str) -> RemoteNode | None:
        for node in self.settings.nodes:
            if node.ae_title == ae_title:
                return node
        return None

    def _retrieve_matches(self, event: Event, models: dict[str, frozenset[QueryLevel]]) -> list[dict[str, Any]]:
        model = str(event.request.AffectedSOPClassUID)
        try:
            identifier = event.identifier
        except Exception as exc:  # noqa: BLE001 - an undecodable identifier is the peer's error
            raise QueryError(f"identifier cannot be decoded: {exc}") from exc
        return self.archive.find(retrieve_query(identifier, models[model]))

    def _sub_operations(self, event: Event, matches: list[dict[str, Any]]) -> Iterator[tuple[int, Dataset | None]]:
        for match in matches:
            if event.is_cancelled:
                yield dimse_status.CANCEL, None
                return
            yield dimse_status.PENDING, self._read_instance(match)

    def _read_instance(self, match: dict[str, Any]) -> Dataset:
        """The stored instance as read from its file (original transfer syntax kept).

        An unreadable file yields a stub with only the SOP Instance UID: its
        sub-operation then fails and the UID is reported in the failed list.
        """
        path = Path(self.archive.storage_dir) / match["_file_path"]
        try:
            return pydicom.dcmread(path)
        except (OSError, ValueError, EOFError) as exc:
            logger.error("cannot read stored instance", extra={"path": str(path), "error": str(exc)})
            stub = Dataset()
            stub.SOPInstanceUID = match["SOPInstanceUID"]
            return stub


# -- query translation -------------------------------------------------------------------


def _part10_of(event: Event) -> bytes:
    """The C-STORE request's dataset as a Part 10 file: what ``event.encoded_dataset()`` gives, built without pydicom."""
    request = event.request
    sop_class, sop_instance = str(request.AffectedSOPClassUID or ""), str(request.AffectedSOPInstanceUID or "")
    if not sop_class or not sop_instance:
        return event.encoded_dataset(include_meta=True)  # pydicom words what is missing
    return part10_bytes(
        request.DataSet.getvalue(),
        sop_class_uid=sop_class,
        sop_instance_uid=sop_instance,
        transfer_syntax=str(event.context.transfer_syntax),
        implementation_uid=PYNETDICOM_IMPLEMENTATION_UID,
        implementation_version=PYNETDICOM_IMPLEMENTATION_VERSION,
    )


def _query_keys(identifier: Dataset) -> dict[str, str]:
    """The matching keys a query gave (non-empty values), for its audit row."""
    keys: dict[str, str] = {}
    for element in identifier:
        if element.keyword and element.VR != "SQ" and element.value not in (None, "", b""):
            keys[element.keyword] = str(element.value)[:128]
    return keys


def _query_target(identifier: Dataset) -> str:
    for keyword in ("StudyInstanceUID", "PatientID", "AccessionNumber", "PatientName"):
        value = identifier.get(keyword)
        if value:
            return str(value)[:255]
    return "query"


def _level_of(identifier: Dataset, allowed: frozenset[QueryLevel]) -> QueryLevel:
    text = str(identifier.get("QueryRetrieveLevel", "") or "")
    try:
        level = QueryLevel.parse(text)
    except ValueError as exc:
        raise QueryError(str(exc)) from None
    if level not in allowed:
        names = ", ".join(lvl.name for lvl in sorted(allowed))
        raise QueryError(f"level {level.name} is not in this model ({names})")
    return level


def matching_value(element: Any) -> str:
    """An identifier element's value as query text: '' for empty, UID lists joined with '\\'."""
    value = element.value
    if value is None or value == "" or value == b"":
        return ""
    if isinstance(value, (list, MultiValue)):
        return "\\".join(str(v) for v in value)
    if isinstance(value, bytes):
        return value.decode("ascii", "replace").strip()
    return str(value)


def find_query(identifier: Dataset, allowed: frozenset[QueryLevel]) -> Query:
    """A C-FIND identifier as an archive :class:`Query`.

    Keys below the query level are accepted as return keys when empty, and are
    an error (QueryError) when they carry a value to match.
    """
    level = _level_of(identifier, allowed)
    keys: dict[str, str] = {}
    for element in identifier:
        keyword = element.keyword
        if not keyword or keyword in NON_MATCHING_KEYS or element.VR == "SQ":
            continue
        value = matching_value(element)
        attribute = INDEXED_ATTRIBUTES.get(keyword)
        if attribute is not None and attribute.level > level and value in ("", "*"):
            continue
        keys[keyword] = value
    return Query(level, keys)


def retrieve_query(identifier: Dataset, allowed: frozenset[QueryLevel]) -> Query:
    """A C-MOVE / C-GET identifier as an IMAGE-level query on the unique keys at or above its level."""
    level = _level_of(identifier, allowed)
    keys: dict[str, str] = {}
    for key_level, keyword in UNIQUE_KEYS.items():
        if key_level > level or keyword not in identifier:
            continue
        value = matching_value(identifier[keyword]).strip()
        if not value:
            continue
        if any(ch in value for ch in "*?"):
            raise QueryError(f"no wildcards in {keyword} for a retrieve")
        keys[keyword] = value
    required = UNIQUE_KEYS[level]
    if required not in keys:
        raise QueryError(f"a {level.name}-level retrieve needs a {required} value")
    return Query(QueryLevel.IMAGE, keys)


def _element_value(value: Any, vr: str) -> Any:
    if value is None or value == "":
        return None
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value] or None
    if vr in ("US", "UL", "SS", "SL"):
        return int(value)
    if vr == "IS":
        return str(int(value))
    return str(value)


def response_identifier(request: Dataset, match: dict[str, Any], level: QueryLevel) -> Dataset:
    """A C-FIND response: exactly the requested keys, filled from ``match``.

    Keys the index does not hold are returned empty; *Specific Character Set*
    is ``ISO_IR 192`` (UTF-8) when asked for or when a value needs it.
    """
    response = Dataset()
    needs_utf8 = "SpecificCharacterSet" in request
    for element in request:
        keyword = element.keyword
        if keyword in ("QueryRetrieveLevel", "SpecificCharacterSet"):
            continue
        if element.VR == "SQ":
            response.add_new(element.tag, "SQ", [])
            continue
        value = match.get(keyword) if keyword else None
        vr = (vr_of(keyword) or element.VR) if value not in (None, "") else element.VR
        converted = _element_value(value, vr)
        if vr == "UN":
            converted = b""
        if isinstance(converted, str) and not converted.isascii():
            needs_utf8 = True
        elif isinstance(converted, list) and not all(v.isascii() for v in converted):
            needs_utf8 = True
        response.add_new(element.tag, vr, converted)
    response.QueryRetrieveLevel = level.name
    if needs_utf8:
        response.SpecificCharacterSet = "ISO_IR 192"
    return response
