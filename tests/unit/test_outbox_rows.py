"""The outbox's rows: one way to add a delivery (enqueue and the pipeline), one retry policy (the jobs')."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from radpilot.archive import Archive
from radpilot.config import Settings
from radpilot.db import utcnow
from radpilot.engine.job_store import JobStore
from radpilot.engine.jobs import JobOutput, RetryPolicy
from radpilot.engine.outbox import DELIVERY_RETRY, DeliveryError, Outbox
from radpilot.engine.pipeline import PipelineRunner
from tests.factories import make_ct_series, to_part10_bytes
from tests.unit.jobs_support import make_spec


@pytest.fixture
def archive(tmp_path: Path):  # noqa: ANN201 - Archive generator
    store = Archive(tmp_path / "dicom", f"sqlite:///{tmp_path / 'index.sqlite3'}", durability="none")
    yield store
    store.close()


def refusing_sender(destination: str, files: list) -> None:
    raise DeliveryError(f"{destination} refused {len(files)} file(s)")


def test_the_pipeline_queues_deliveries_like_enqueue(archive: Archive, tmp_path: Path) -> None:
    outbox = Outbox(archive, refusing_sender)
    uids = [r.sop_instance_uid for r in (archive.store_file_bytes(to_part10_bytes(ds)) for ds in make_ct_series(2))]
    outbox.enqueue("pacs", uids, job_id=7)

    runner = PipelineRunner(Settings(data_dir=tmp_path / "unused"), archive=archive, analyses={})
    job = JobStore(archive.engine).submit(make_spec(3, destinations=("pacs", "viewer"))).job
    with outbox.sessions() as session, session.begin():
        runner.on_record(session, job, JobOutput(uids))

    rows = [(d.destination, d.uids, d.job_id, d.state, d.attempts) for d in outbox.pending()]
    assert rows == [("pacs", uids, 7, "pending", 0), ("pacs", uids, job.id, "pending", 0), ("viewer", uids, job.id, "pending", 0)]


def test_failed_deliveries_back_off_with_the_jobs_retry_policy(archive: Archive) -> None:
    assert isinstance(DELIVERY_RETRY, RetryPolicy)
    assert [DELIVERY_RETRY.delay_s(n) for n in (1, 2, 3, 7, 8)] == [5.0, 10.0, 20.0, 300.0, 300.0]
    outbox = Outbox(archive, refusing_sender, backoff=RetryPolicy(base_s=1, factor=3, cap_s=5))
    [ds] = make_ct_series(1)
    outbox.enqueue("pacs", [archive.store_file_bytes(to_part10_bytes(ds)).sop_instance_uid])

    waits = []
    for _ in range(3):
        before = utcnow()
        assert outbox.run_due(before + timedelta(hours=1)) == 0
        [pending] = outbox.pending()
        waits.append((pending.next_attempt_at.replace(tzinfo=before.tzinfo) - before).total_seconds())
    assert [round(w) for w in waits] == [1, 3, 5]
    assert "pacs refused 1 file(s)" in pending.last_error and pending.attempts == 3


def test_discarded_output_is_deleted_except_the_objects_of_the_recorded_result_set(archive: Archive, tmp_path: Path) -> None:
    runner = PipelineRunner(Settings(data_dir=tmp_path / "unused"), archive=archive, analyses={})
    store = JobStore(archive.engine)
    recorded_uid, orphan_uid = (archive.store_file_bytes(to_part10_bytes(ds), derived=True).sop_instance_uid for ds in make_ct_series(2))
    job = store.submit(make_spec(3)).job
    assert store.claim_next("host:1:w1", 30) is not None
    assert store.complete(job.id, "host:1:w1", JobOutput([recorded_uid]))

    runner.on_discarded(job, JobOutput([recorded_uid, orphan_uid]))  # a second attempt lost the race and wrote one more object

    assert [i.sop_instance_uid for i in archive.instances_by_uid([recorded_uid, orphan_uid])] == [recorded_uid]
