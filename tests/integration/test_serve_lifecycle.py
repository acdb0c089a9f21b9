"""`radpilot serve` as a process: it starts with defaults, logs associations, and stops cleanly on SIGTERM/SIGINT
without losing an acknowledged instance."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage

from radpilot.archive import Archive
from tests.factories import make_ct_series
from tests.helpers import free_port, start_serve

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_stop_signal_loses_no_acknowledged_instance(tmp_path: Path, stop_signal: signal.Signals) -> None:
    dicom_port, http_port = free_port(), free_port()
    process = start_serve(tmp_path / "data", dicom_port=dicom_port, http_port=http_port)
    datasets = make_ct_series(200, rows=128, columns=128)
    acknowledged: list[str] = []
    ae = AE(ae_title="SENDER")
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", dicom_port, ae_title="RADPILOT")
    assert assoc.is_established

    def stop_after_some() -> None:
        while len(acknowledged) < 20:
            time.sleep(0.01)
        process.send_signal(stop_signal)

    threading.Thread(target=stop_after_some, daemon=True).start()
    for ds in datasets:
        if not assoc.is_established:
            break
        status = assoc.send_c_store(ds)
        if status is not None and getattr(status, "Status", None) == 0x0000:
            acknowledged.append(str(ds.SOPInstanceUID))
    if assoc.is_established:
        assoc.release()
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output
    assert "signal received" in output and "stopped" in output
    assert "association" in output.lower()

    archive = Archive(tmp_path / "data" / "dicom", f"sqlite:///{(tmp_path / 'data' / 'index.sqlite3').resolve()}")
    stored = {i.sop_instance_uid for i in archive.instances_of(str(datasets[0].StudyInstanceUID))}
    assert len(acknowledged) >= 20
    assert set(acknowledged) <= stored
    for instance in archive.instances_of(str(datasets[0].StudyInstanceUID)):
        assert archive.path_of(instance).stat().st_size == instance.file_size
    assert not list(archive.tmp_dir.iterdir())
    archive.close()
