"""`radpilot serve`: the archive, the DICOM listener and the web server in one process."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import threading

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from radpilot.archive import Archive
from radpilot.config import Settings
from radpilot.engine.service import Engine
from radpilot.pacs.dimse import DimseService
from radpilot.pacs.native_store import NativeStoreListener
from radpilot.security.syslog_forward import SyslogTlsForwarder, forward_pending
from radpilot.security.tls import TlsFiles
from radpilot.web.app import create_app

logger = logging.getLogger(__name__)


def _syslog_forwarder(settings: Settings) -> SyslogTlsForwarder | None:
    if not settings.audit_syslog_host:
        return None
    if settings.audit_syslog_ca_file is None:
        raise ValueError("audit_syslog_host is set but audit_syslog_ca_file is not: the collector's certificate cannot be checked")
    return SyslogTlsForwarder(
        settings.audit_syslog_host,
        settings.audit_syslog_port,
        settings.audit_syslog_ca_file,
        settings.audit_syslog_cert_file,
        settings.audit_syslog_key_file,
    )


class HeaderTimeoutH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for each request's line and headers.

    uvicorn times out only an idle keep-alive connection after a response: a client
    that connects and then trickles a request's headers (a slow-loris) holds its
    connection for ever. Here the line and headers of every request must be complete
    within ``header_timeout`` seconds of the connection opening or the previous
    response ending; otherwise the connection is closed.
    """

    header_timeout: float = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_deadline: asyncio.TimerHandle | None = None
        self._arm_header_deadline()

    def data_received(self, data: bytes) -> None:
        if self._header_deadline is None and self.conn.their_state is h11.IDLE:
            self._arm_header_deadline()  # a new request on a kept-alive connection starts
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._disarm_header_deadline()  # its headers are complete

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_deadline()
        super().connection_lost(exc)

    def _arm_header_deadline(self) -> None:
        self._header_deadline = self.loop.call_later(self.header_timeout, self._on_header_timeout)

    def _disarm_header_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _on_header_timeout(self) -> None:
        self._header_deadline = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            logger.warning("HTTP client too slow to send a request's headers; connection closed", extra={"client": self.client})
            self.transport.close()


def bounded_http_protocol(header_timeout: float) -> type[HeaderTimeoutH11Protocol]:
    """The protocol class uvicorn should instantiate, with the header deadline of these settings."""
    return type("BoundedH11Protocol", (HeaderTimeoutH11Protocol,), {"header_timeout": header_timeout})


class RadPilotServer:
    """Owns the archive, the DIMSE service and the HTTP server.

    ``start`` returns once both listeners accept connections; ``stop`` stops
    accepting new work, lets in-flight associations finish (an instance is only
    acknowledged after it is stored and indexed), then closes the archive.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._forwarder = _syslog_forwarder(settings)  # a half-configured collector fails before anything opens
        self.archive = Archive.from_settings(settings)
        self.archive.recover(full_scan=self.archive.mark_open())
        self.engine = Engine(settings, self.archive)
        self.dimse = DimseService(settings, self.archive)
        # The native receiver is loaded here, so a store port that cannot run stops the start with its reason.
        self.store_port = NativeStoreListener(self.dimse) if settings.dicom_store_port is not None else None
        self.app = create_app(settings, self.archive)
        self.app.state.engine = self.engine
        tls = TlsFiles.from_settings(settings) if settings.https else None
        context = tls.server_context() if tls is not None else None  # a bad certificate stops the start, naming the file
        config = uvicorn.Config(
            self.app,
            host=settings.bind_address,
            port=settings.http_port,
            log_level=settings.log_level.lower(),
            log_config=None,
            access_log=False,
            http=bounded_http_protocol(settings.http_header_timeout_s),
            ssl_certfile=str(tls.cert_file) if tls is not None else None,
            ssl_keyfile=str(tls.key_file) if tls is not None else None,
            ssl_keyfile_password=tls.key_password() if tls is not None else None,
        )
        if context is not None:
            # uvicorn builds its own context from the files; replace it with the BCP 195 one (TLS 1.2+, AEAD suites).
            config.load()
            config.ssl = context
        self.scheme = "https" if context is not None else "http"
        self._http = uvicorn.Server(config)
        self._http.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self._http_thread: threading.Thread | None = None
        self._stopped = threading.Event()
        self._forward_thread: threading.Thread | None = None

    @property
    def http_port(self) -> int:
        servers = getattr(self._http, "servers", None)
        if servers:
            return servers[0].sockets[0].getsockname()[1]
        return self.settings.http_port

    def start(self) -> None:
        self.engine.start()
        self.app.state.research_exports.start()
        self.dimse.start()
        if self.store_port is not None:
            try:
                self.store_port.start()
            except OSError:
                self.dimse.stop()
                self.app.state.research_exports.stop()
                self.engine.stop()
                raise
        self._http_thread = threading.Thread(target=self._http.run, name="radpilot-http", daemon=True)
        self._http_thread.start()
        while not self._http.started:
            if not self._http_thread.is_alive():
                self._stop_dicom()
                self.app.state.research_exports.stop()
                self.engine.stop()
                raise RuntimeError(f"the web server could not start on {self.settings.bind_address}:{self.settings.http_port}")
            self._stopped.wait(0.02)
        # What start-up made (modules, settings, models, the app) lives as long as the process: keeping it out of
        # the collector's full sweeps makes each sweep cost what is allocated afterwards, not the whole heap.
        gc.freeze()
        if self._forwarder is not None:
            self._forward_thread = threading.Thread(target=self._forward_audit, name="radpilot-audit-syslog", daemon=True)
            self._forward_thread.start()
        logger.info(
            "RadPilot is running",
            extra={
                "ae_title": self.settings.ae_title,
                "dicom": f"{self.settings.bind_address}:{self.dimse.port}",
                "dicom_tls": f"{self.settings.bind_address}:{self.dimse.tls_port}" if self.dimse.tls_port is not None else None,
                "dicom_store": f"{self.settings.bind_address}:{self.store_port.port}" if self.store_port is not None else None,
                "http": f"{self.scheme}://{self.settings.bind_address}:{self.http_port}",
                "data_dir": str(self.settings.data_dir),
            },
        )

    def _stop_dicom(self) -> None:
        if self.store_port is not None:
            self.store_port.stop()
        self.dimse.stop()

    def _forward_audit(self) -> None:
        while not self._stopped.wait(self.settings.audit_forward_interval_s):
            self._forward_once()

    def _forward_once(self) -> None:
        if self._forwarder is None:
            return
        try:
            forward_pending(self.archive.engine, self._forwarder, self.settings.audit_source_id)
        except OSError as exc:
            # Rows stay unforwarded and are sent on the next round: nothing is lost while the collector is down.
            logger.warning(
                "audit syslog collector not reached",
                extra={"collector": f"{self._forwarder.host}:{self._forwarder.port}", "error": str(exc)},
            )

    def stop(self) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        logger.info("stopping: no new associations; finishing those in progress")
        self._stop_dicom()
        self.app.state.stopping.set()
        self._http.should_exit = True
        if self._http_thread is not None:
            self._http_thread.join(timeout=10)
        self.app.state.research_exports.stop()
        self.engine.stop()
        if self._forward_thread is not None:
            self._forward_thread.join(timeout=15)
            self._forward_once()  # what the last requests recorded
        self.archive.mark_closed()
        self.archive.close()
        logger.info("stopped")

    def run_until_signalled(self) -> None:
        """Start, then block until SIGINT or SIGTERM, then stop cleanly."""
        stop_requested = threading.Event()

        def _request_stop(signum: int, _frame) -> None:  # noqa: ANN001
            logger.info("signal received", extra={"signal": signal.Signals(signum).name})
            stop_requested.set()

        signal.signal(signal.SIGINT, _request_stop)
        signal.signal(signal.SIGTERM, _request_stop)
        self.start()
        try:
            stop_requested.wait()
        finally:
            self.stop()
