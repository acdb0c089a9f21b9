"""The store port: C-STORE and C-ECHO received on dcmtk's network layer (``settings.dicom_store_port``).

pynetdicom's pure-Python upper layer costs about as much CPU per CT slice as the whole
store, so a modality or PACS that only sends can be pointed at this second port instead.
The network side (association negotiation, PDU reading, the DIMSE command and its
response) runs in a small C++ module built on dcmtk's libraries
(``radpilot/pacs/native/dcmtk_store.cpp``, compiled by ``make setup``), one thread per
association and without the GIL; each dataset arrives here as the bytes that were sent
and goes through :meth:`DimseService.store`, exactly as on the main port:

* the same archive call, statuses and Error Comments (0x0000, 0xA900 conflict,
  0xC000 malformed, 0xA700 storage failure), acknowledged only once the instance is
  durable and indexed; a dataset cut short by an abort is never stored;
* the same ``allowed_peers`` check, audit rows and association log line;
* any called AE title; Storage SOP classes in every transfer syntax pynetdicom knows,
  the requestor's order of preference deciding; Verification.

What differs, by design: no query/retrieve and no TLS on this port (use ``dicom_port``
and ``dicom_tls_port``); the maximum PDU announced is dcmtk's ceiling of 128 KiB; a
command or dataset fragment that is not whole within ``dicom_network_timeout`` seconds
ends the association, and at the end of a stop's drain, transfers still under way are cut.
"""

from __future__ import annotations

import importlib
import logging
import socket
from typing import TYPE_CHECKING, Any

from pynetdicom import ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts

from radpilot.dicom import status as dimse_status
from radpilot.dicom.part10 import part10_header
from radpilot.pacs.dimse import AssociationRecord, error_comment

if TYPE_CHECKING:
    from radpilot.pacs.dimse import DimseService

logger = logging.getLogger(__name__)

NATIVE_MODULE = "radpilot.pacs._dcmtk_store"
# Written into the file meta of what this port receives: dcmtk's Implementation Class UID and version name.
DCMTK_IMPLEMENTATION_UID = "1.2.276.0.7230010.3.0.3.6.7"
DCMTK_IMPLEMENTATION_VERSION = "OFFIS_DCMTK_367"


class NativeReceiverMissing(RuntimeError):
    """The native receiver was not built on this machine."""


def load_native_module() -> Any:
    """The compiled receiver; a clear error naming what builds it when it is absent."""
    try:
        return importlib.import_module(NATIVE_MODULE)
    except ImportError as exc:
        raise NativeReceiverMissing(
            "dicom_store_port needs RadPilot's native receiver (radpilot/pacs/_dcmtk_store*.so), which 'make setup' builds "
            f"from radpilot/pacs/native/dcmtk_store.cpp with g++, libdcmtk-dev and pybind11: {exc}"
        ) from exc


class _Handler:
    """What the C++ receiver calls, with the GIL held: admission, each dataset, the end of an association."""

    def __init__(self, service: DimseService) -> None:
        self.service = service

    def associate(self, calling_ae: str, called_ae: str, host: str, port: int) -> AssociationRecord | None:
        if not self.service.admit(calling_ae, called_ae, host, port):
            return None
        return AssociationRecord(host=host, port=port, calling_ae=calling_ae)

    def file_header(self, sop_class: str, sop_instance: str, transfer_syntax: str) -> bytes:
        """The Part 10 preamble and file meta group the receiver puts before a dataset it received."""
        return part10_header(
            sop_class_uid=sop_class,
            sop_instance_uid=sop_instance,
            transfer_syntax=transfer_syntax,
            implementation_uid=DCMTK_IMPLEMENTATION_UID,
            implementation_version=DCMTK_IMPLEMENTATION_VERSION,
        )

    def store(self, record: AssociationRecord, sop_class: str, sop_instance: str, data: bytes) -> tuple[int, str]:
        """Store one received instance (``data``: :meth:`file_header` and the dataset as sent); its status and Error Comment."""
        record.busy += 1
        record.requests += 1
        try:
            if not sop_class or not sop_instance:
                record.refused += 1
                return dimse_status.CANNOT_UNDERSTAND, "C-STORE request without Affected SOP Class or Instance UID"
            status, comment = self.service.store(data, record)
            return status, error_comment(comment)
        finally:
            record.busy -= 1

    def ended(self, record: AssociationRecord | None, how: str) -> None:
        if record is not None:
            self.service.finish(record, how)


class NativeStoreListener:
    """Listens on ``settings.dicom_store_port`` and runs the dcmtk receiver on that socket."""

    def __init__(self, service: DimseService) -> None:
        self.service = service
        self._module = load_native_module()
        self._socket: socket.socket | None = None
        self._receiver: Any = None

    @property
    def port(self) -> int | None:
        return int(self._socket.getsockname()[1]) if self._socket is not None else None

    def start(self) -> None:
        settings = self.service.settings
        port = settings.dicom_store_port
        if port is None or self._socket is not None:
            return
        try:
            listener = socket.create_server((settings.bind_address, port), backlog=64)
        except OSError as exc:
            raise OSError(exc.errno, f"cannot listen for DICOM store on {settings.bind_address}:{port}: {exc.strerror or exc}") from exc
        options = self._module.Options()
        options.ae_title = settings.ae_title
        options.sop_classes = [str(c.abstract_syntax) for c in AllStoragePresentationContexts]
        options.transfer_syntaxes = [str(s) for s in ALL_TRANSFER_SYNTAXES]
        options.max_pdu = int(min(settings.dicom_max_pdu_bytes, self._module.MAX_PDU))
        timeouts = self.service.timeouts
        options.acse_timeout = max(1, round(timeouts.acse))
        options.network_timeout = max(1, round(timeouts.network))
        options.max_dataset = int(settings.dicom_max_dataset_bytes)
        options.idle_grace = float(timeouts.idle_grace)
        receiver = self._module.StoreReceiver(listener.fileno(), options, _Handler(self.service))
        try:
            receiver.start()
        except Exception:
            listener.close()
            raise
        self._socket, self._receiver = listener, receiver
        logger.info("DICOM store port started (dcmtk)", extra={"address": f"{settings.bind_address}:{self.port}"})

    def stop(self) -> None:
        """Stop accepting; requests in progress are answered, idle associations aborted (see DimseService.stop)."""
        receiver, listener = self._receiver, self._socket
        self._receiver = self._socket = None
        if receiver is None or listener is None:
            return
        receiver.stop(self.service.timeouts.drain)
        listener.close()
        logger.info("DICOM store port stopped")
