"""`radpilot serve`: the archive, the DICOM listener and the web server in one process."""

from __future__ import annotations

import logging
import signal
import threading

import uvicorn

from radpilot.archive import Archive
from radpilot.config import Settings
from radpilot.engine.service import Engine
from radpilot.pacs.dimse import DimseService
from radpilot.web.app import create_app

logger = logging.getLogger(__name__)


class RadPilotServer:
    """Owns the archive, the DIMSE service and the HTTP server.

    ``start`` returns once both listeners accept connections; ``stop`` stops
    accepting new work, lets in-flight associations finish (an instance is only
    acknowledged after it is stored and indexed), then closes the archive.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.archive = Archive.from_settings(settings)
        self.archive.recover(full_scan=self.archive.mark_open())
        self.engine = Engine(settings, self.archive)
        self.dimse = DimseService(settings, self.archive)
        self.app = create_app(settings, self.archive)
        self.app.state.engine = self.engine
        config = uvicorn.Config(
            self.app,
            host=settings.bind_address,
            port=settings.http_port,
            log_level=settings.log_level.lower(),
            log_config=None,
            access_log=False,
        )
        self._http = uvicorn.Server(config)
        self._http.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self._http_thread: threading.Thread | None = None
        self._stopped = threading.Event()

    @property
    def http_port(self) -> int:
        servers = getattr(self._http, "servers", None)
        if servers:
            return servers[0].sockets[0].getsockname()[1]
        return self.settings.http_port

    def start(self) -> None:
        self.engine.start()
        self.dimse.start()
        self._http_thread = threading.Thread(target=self._http.run, name="radpilot-http", daemon=True)
        self._http_thread.start()
        while not self._http.started:
            if not self._http_thread.is_alive():
                self.dimse.stop()
                self.engine.stop()
                raise RuntimeError(f"the web server could not start on {self.settings.bind_address}:{self.settings.http_port}")
            self._stopped.wait(0.02)
        logger.info(
            "RadPilot is running",
            extra={
                "ae_title": self.settings.ae_title,
                "dicom": f"{self.settings.bind_address}:{self.dimse.port}",
                "http": f"http://{self.settings.bind_address}:{self.http_port}",
                "data_dir": str(self.settings.data_dir),
            },
        )

    def stop(self) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        logger.info("stopping: no new associations; finishing those in progress")
        self.dimse.stop()
        self.app.state.stopping.set()
        self._http.should_exit = True
        if self._http_thread is not None:
            self._http_thread.join(timeout=10)
        self.engine.stop()
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
