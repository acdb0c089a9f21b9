"""`radpilot serve` with embedded workers stops within 10 s of SIGTERM, whichever processes receive it.

systemd (KillMode=control-group) and a terminal's Ctrl-C signal every process of the
service at once: the server, its worker processes, the fork server and the resource
tracker. It used to hang for ever in the worker pool's stop (issue 20). A job queued
before the stop, and a job running at the stop, are still there afterwards: queued
again (their attempt not counted) or done, never failed or lost.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from datetime import timedelta
from pathlib import Path

import pydicom
import pytest
from pynetdicom import AE, build_context
from pynetdicom.sop_class import CTImageStorage
from sqlalchemy import update

from radpilot.archive import Archive
from radpilot.engine.job_store import JobStore
from radpilot.engine.jobs import JobRecord, JobSpec, JobState
from radpilot.engine.jobs_models import Job
from tests.factories import make_ct_series, to_part10_bytes
from tests.fixtures.receivers import native_receiver_built
from tests.helpers import free_port, services_required, shared_data_path, start_serve

pytestmark = pytest.mark.integration

STOP_WITHIN_S = 10.0


def database_url(data_dir: Path) -> str:
    return f"sqlite:///{(data_dir / 'index.sqlite3').resolve()}"


def start_serve_in_own_group(data_dir: Path, log: Path, store_port: int | None = None) -> tuple[subprocess.Popen, int]:
    http_port = free_port()
    env = {"RADPILOT_DICOM_STORE_PORT": str(store_port)} if store_port is not None else None
    with open(log, "w") as output:
        process = start_serve(
            data_dir, dicom_port=free_port(), http_port=http_port, workers=2, output=output, own_process_group=True, env=env
        )
    return process, http_port


def group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(entry.name))
    return members


def queue_series(archive: Archive, store: JobStore, files_or_datasets: list, analysis: str, version: str) -> JobRecord:
    for item in files_or_datasets:
        data = item.read_bytes() if isinstance(item, Path) else to_part10_bytes(item)
        assert archive.store_file_bytes(data, source_ae_title="CT1").outcome.accepted
    first = (
        pydicom.dcmread(files_or_datasets[0], stop_before_pixels=True) if isinstance(files_or_datasets[0], Path) else files_or_datasets[0]
    )
    series_uid = str(first.SeriesInstanceUID)
    spec = JobSpec(
        analysis=analysis,
        analysis_version=version,
        study_instance_uid=str(first.StudyInstanceUID),
        series_instance_uid=series_uid,
        instances=archive.instance_inputs(series_uid),
        timeout_s=600,
    )
    return store.submit(spec).job


@pytest.mark.parametrize("whole_group", [True, False], ids=["process-group", "main-process"])
def test_sigterm_stops_serve_quickly_and_keeps_the_jobs(tmp_path: Path, whole_group: bool) -> None:
    data_dir = tmp_path / "data"
    archive = Archive(data_dir / "dicom", database_url(data_dir))
    store = JobStore.from_url(database_url(data_dir), migrate=True)
    # Queued before the stop and not due before it (as if waiting for a retry): no worker takes it.
    waiting = queue_series(archive, store, make_ct_series(3, rows=16, columns=16), "lung_ct_quant", "1.0.0")
    with store.sessions.begin() as session:
        session.execute(update(Job).where(Job.id == waiting.id).values(next_attempt_at=store.clock() + timedelta(hours=1)))
    # A real chest CT: lung_ct_quant runs for a while on it, so a worker is busy with it at the stop.
    chest_ct = sorted((shared_data_path() / "ct-lung" / "LUNGCT-002" / "dicom").glob("*.dcm"))
    if not chest_ct and services_required():
        pytest.fail("LUNGCT-002 is missing from the shared data")
    busy = queue_series(archive, store, chest_ct, "lung_ct_quant", "1.0.0") if chest_ct else None
    archive.close()

    log = tmp_path / "serve.log"
    # With the dcmtk store port too, and an association open on it at the stop: its threads must not hold the exit.
    store_port = free_port() if native_receiver_built() else None
    if store_port is None and services_required():
        pytest.fail("the native store receiver is not built (make setup: g++, libdcmtk-dev)")
    process, _ = start_serve_in_own_group(data_dir, log, store_port)
    sender = None
    try:
        if store_port is not None:
            sender = AE(ae_title="MODALITY").associate("127.0.0.1", store_port, [build_context(CTImageStorage)], ae_title="RADPILOT")
            assert sender.is_established
            assert sender.send_c_store(make_ct_series(1, rows=16, columns=16)[0]).Status == 0x0000
        if busy is not None:
            deadline = time.monotonic() + 60
            while store.get(busy.id).state is JobState.QUEUED and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(1.0)  # well inside the analysis by now (it takes longer on this CT)
        members = group_members(process.pid)
        assert len(members) >= 4, f"expected the server, 2 workers and the fork server in the group: {members}"

        if whole_group:
            os.killpg(process.pid, signal.SIGTERM)
        else:
            process.send_signal(signal.SIGTERM)
        started = time.monotonic()
        process.wait(timeout=STOP_WITHIN_S)
        took = time.monotonic() - started
    finally:
        if sender is not None and sender.is_established:
            sender.abort()
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            pytest.fail(f"radpilot serve did not stop within {STOP_WITHIN_S:g} s of SIGTERM to its group:\n{log.read_text()[-4000:]}")
    output = log.read_text()
    assert process.returncode == 0, output
    assert took < STOP_WITHIN_S and "stopped" in output
    deadline = time.monotonic() + 5
    while group_members(process.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert group_members(process.pid) == [], "a process of the group outlived the server"

    after = store.get(waiting.id)
    assert after.state is JobState.QUEUED and after.attempts == 0
    if busy is not None:
        busy_after = store.get(busy.id)
        assert busy_after.state in (JobState.QUEUED, JobState.DONE), busy_after.error
        if busy_after.state is JobState.QUEUED:
            assert busy_after.attempts == 0 and "shutdown" in (busy_after.error or "")
    store.close()
