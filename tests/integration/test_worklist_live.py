"""The worklist on a real server: server-sent events when a study is stored and when a job finishes, C-ECHO against Orthanc."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from radpilot.engine.job_store import JobStore
from radpilot.engine.jobs import JobOutput, JobSpec
from radpilot.security.principal import Role
from tests.factories import make_ct_series, to_part10_bytes
from tests.fixtures.principal import as_principal, start_node_with_test_principal
from tests.fixtures.radpilot import RunningNode, make_settings, orthanc_node

pytestmark = pytest.mark.integration


@pytest.fixture
def node(tmp_path: Path) -> Iterator[RunningNode]:
    started = start_node_with_test_principal(make_settings(tmp_path))
    yield started
    started.server.stop()


class EventReader:
    """Reads a server-sent event stream in a thread; ``wait_for(kind, predicate)`` returns the first matching event."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        self.events: list[tuple[str, str]] = []
        self._changed = threading.Condition()
        self._client = httpx.Client(timeout=httpx.Timeout(5.0, read=30.0), headers=headers)
        self._thread = threading.Thread(target=self._read, args=(url,), daemon=True)
        self._thread.start()

    def _read(self, url: str) -> None:
        kind = ""
        try:
            with self._client.stream("GET", url) as response:
                for line in response.iter_lines():
                    if line.startswith("event: "):
                        kind = line[7:]
                    elif line.startswith("data: "):
                        with self._changed:
                            self.events.append((kind, line[6:]))
                            self._changed.notify_all()
        except httpx.HTTPError:
            pass

    def wait_for(self, kind: str, contains: str = "", timeout: float = 15.0) -> str:
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for seen_kind, data in self.events:
                    if seen_kind == kind and contains in data:
                        return data
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"no {kind!r} event containing {contains!r} within {timeout} s; got {self.events}")
                self._changed.wait(remaining)

    def close(self) -> None:
        self._client.close()


def test_events_arrive_when_a_study_is_stored_and_when_a_job_finishes(node: RunningNode) -> None:
    reader = EventReader(f"{node.base_url}/ui/events", as_principal("alice", Role.RADIOLOGIST))
    try:
        reader.wait_for("ready")
        assert httpx.get(f"{node.base_url}/ui/events").status_code == 401  # the stream needs a signed-in user too
        series = make_ct_series(2, rows=8, columns=8, patient_id="LIVE1")
        study_uid = str(series[0].StudyInstanceUID)
        for ds in series:
            assert node.archive.store_file_bytes(to_part10_bytes(ds)).outcome.accepted
        assert '"change":"added"' in reader.wait_for("study", study_uid)
        store = JobStore(node.archive.engine)
        spec = JobSpec("lung_ct_quant", "1.0.0", study_uid, str(series[0].SeriesInstanceUID), [(str(series[0].SOPInstanceUID), "0" * 64)])
        job = store.submit(spec).job
        reader.wait_for("analysis", '"state":"queued"')
        store.claim(job.id, "worker-test", 60.0)
        reader.wait_for("analysis", '"state":"running"')
        store.complete(job.id, "worker-test", JobOutput())
        assert study_uid in reader.wait_for("analysis", '"state":"done"')
        claimed = httpx.post(f"{node.base_url}/api/worklist/{study_uid}/claim", headers=as_principal("alice", Role.RADIOLOGIST))
        assert claimed.status_code == 200
        assert '"claimed_by":"alice"' in reader.wait_for("reading", study_uid)
    finally:
        reader.close()


def test_the_server_stops_promptly_with_an_event_stream_open(tmp_path: Path) -> None:
    started = start_node_with_test_principal(make_settings(tmp_path))
    reader = EventReader(f"{started.base_url}/ui/events", as_principal("alice", Role.RADIOLOGIST))
    try:
        reader.wait_for("ready")
        began = time.monotonic()
        started.server.stop()
        assert time.monotonic() - began < 8.0
    finally:
        reader.close()


def test_c_echo_from_the_admin_page_reaches_a_real_orthanc(tmp_path: Path, orthanc) -> None:  # noqa: ANN001 - OrthancPeer
    nodes = [orthanc_node(orthanc), {"name": "nobody", "ae_title": "NOBODY", "host": "127.0.0.1", "port": 9}]
    started = start_node_with_test_principal(make_settings(tmp_path, nodes=nodes))
    try:
        admin = as_principal("root", Role.ADMINISTRATOR)
        ok = httpx.post(f"{started.base_url}/api/admin/nodes/orthanc/echo", headers=admin, timeout=30).json()
        assert ok["ok"] is True and ok["status"] == 0, ok
        failed = httpx.post(f"{started.base_url}/api/admin/nodes/nobody/echo", headers=admin, timeout=30).json()
        assert failed["ok"] is False and "NOBODY" in failed["message"], failed
    finally:
        started.server.stop()
