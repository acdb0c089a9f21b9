"""Scale-out under load and faults: two front ends, two Celery workers, one PostgreSQL, one storage folder.

Four store SCU processes send 2,000 CT instances (40 studies), split across both front
ends. While they send, one front end is restarted (SIGTERM to its process group, then
started again on the same ports; its senders reconnect and resend what was not
acknowledged, as a PACS router does) and one worker is SIGKILLed with its pool. Then:

- every instance a sender saw acknowledged is in the archive exactly once, its file readable;
- every study has exactly one final job covering all its instances; a study whose sender
  waited longer than the quiet period while its front end was down was analysed as far as
  it had come and then again when it grew (the later job supersedes the earlier), never
  twice on the same input; every job completed exactly once (one result set);
- every result set was queued for the PACS once, and every final result reached Orthanc.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from pathlib import Path

import pydicom
import pytest
from sqlalchemy import func, select

from radpilot.archive import Archive
from radpilot.archive.models import Instance, Series, Study
from radpilot.engine.job_store import JobStore
from radpilot.engine.jobs import JobState
from radpilot.engine.outbox_models import Delivery
from radpilot.security.tokens import create_token
from tests.fixtures.auth import auth_headers
from tests.helpers import wait_for
from tests.integration.topology import Cluster, FrontEnd, Sender, Worker, write_studies

# Sized for a loaded 2-core machine; unloaded, the whole run takes a few minutes.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]

STUDIES = 40
SLICES = 50  # 40 x 50 = 2,000 instances
SENDERS = 4


def test_two_front_ends_and_two_workers_survive_a_restart_and_a_killed_worker(
    orthanc, clean_orthanc, fresh_postgres_url: str, fresh_redis_url: str, tmp_path: Path
) -> None:
    cluster = Cluster(
        tmp_path / "cluster", fresh_postgres_url, fresh_redis_url, (orthanc.ae_title, orthanc.host, orthanc.dicom_port), quiet_period_s=20.0
    )
    studies = write_studies(tmp_path / "studies", STUDIES, SLICES)
    front_ends = [FrontEnd(cluster, "front-a"), FrontEnd(cluster, "front-b")]
    workers = [Worker(cluster, "w1"), Worker(cluster, "w2")]
    senders = [
        Sender(cluster, f"sender{i}", front_ends[i % 2], [path for study in studies[i::SENDERS] for path in study]) for i in range(SENDERS)
    ]
    processes = [*front_ends, *workers, *senders]

    def logs() -> str:
        return "".join(process.tail() for process in processes)

    archive = Archive(cluster.storage / "dicom", fresh_postgres_url)  # where radpilot serve --data-dir keeps its files
    jobs = JobStore.from_url(fresh_postgres_url)
    try:
        for front_end in front_ends:
            front_end.start_and_wait()
        for process in (*workers, *senders):
            process.start()

        def acknowledged() -> int:
            return sum(len(sender.acknowledged_uids()) for sender in senders)

        wait_for(lambda: acknowledged() >= 700, 300, "700 acknowledged instances", interval_s=0.5, diagnostics=logs)
        front_ends[1].stop()  # SIGTERM to the whole process group, as systemd stops a service
        time.sleep(1.0)  # its senders see refused associations meanwhile
        front_ends[1].start_and_wait()

        def running_on_w1() -> int | None:
            on_w1 = [job.id for job in jobs.list(JobState.RUNNING) if (job.worker_id or "").rsplit(":", 1)[-1].startswith("w1@")]
            return on_w1[0] if on_w1 else None

        victim = wait_for(running_on_w1, 300, "a job running on worker w1", interval_s=0.2, diagnostics=logs)
        workers[0].signal_group(signal.SIGKILL)  # the machine dies: the worker and its pool at once

        for sender in senders:
            assert sender.wait(600) == 0, f"{sender.name} gave up:{logs()}"
        sent = [uid for sender in senders for uid in sender.acknowledged_uids()]
        assert len(sent) == STUDIES * SLICES and len(set(sent)) == len(sent)

        # A series that grew after its sender waited out the quiet period is routed again only a
        # quiet period after its last instance: judge once every detector has passed that change.
        with archive.session() as session:
            last_change = session.scalar(select(func.max(Study.updated_at)))
        admin = auth_headers(create_token(archive.engine, "topology", "administrator", by="test"))
        wait_for(
            lambda: all((mark := front_end.routed_up_to(admin)) is not None and mark >= last_change for front_end in front_ends),
            300,
            f"both detectors routing past the last change ({last_change})",
            interval_s=1.0,
            diagnostics=logs,
        )

        def every_study_delivered() -> bool:
            listed = jobs.list(limit=1000)
            if any(not job.state.final for job in listed):
                return False
            if len({job.study_instance_uid for job in listed if job.state is JobState.DONE}) < STUDIES:
                return False
            with archive.session() as session:
                return session.scalar(select(func.count()).select_from(Delivery).where(Delivery.state != "done")) == 0

        wait_for(every_study_delivered, 900, "every study analysed and delivered", interval_s=2.0, diagnostics=logs)

        stored = archive.instances_by_uid(sent)
        assert sorted(i.sop_instance_uid for i in stored) == sorted(sent), "an acknowledged instance is missing or stored twice"
        for instance in stored[:: len(stored) // 50]:
            assert pydicom.dcmread(archive.path_of(instance), stop_before_pixels=True).SOPInstanceUID == instance.sop_instance_uid

        all_jobs = jobs.list(limit=1000)
        by_id = {job.id: job for job in all_jobs}
        superseded_by = {job.supersedes_job_id: job.id for job in all_jobs if job.supersedes_job_id is not None}
        for job in all_jobs:
            if job.state is JobState.CANCELLED:
                # Only a job whose series grew while it waited or ran is cancelled, by the job that replaced it.
                assert job.id in superseded_by and f"Superseded by job {superseded_by[job.id]}" in (job.error or ""), job
            else:
                assert job.state is JobState.DONE, (job.id, job.state, job.error)
        done = [job for job in all_jobs if job.state is JobState.DONE]
        final = [job for job in done if job.id not in superseded_by]
        assert sorted(job.study_instance_uid for job in final) == sorted({job.study_instance_uid for job in all_jobs})
        short = [job for job in final if len(job.input_sop_uids) != SLICES]
        assert len(final) == STUDIES and not short, describe_short_final_jobs(short, all_jobs, archive) + logs()
        for job in all_jobs:
            # A study whose sender waited out the quiet period (its front end was down) was analysed
            # as far as it had come, then again when it grew: never twice on the same input.
            if job.supersedes_job_id is not None:
                older = by_id[job.supersedes_job_id]
                assert older.study_instance_uid == job.study_instance_uid
                assert set(older.input_sop_uids) < set(job.input_sop_uids), f"job {job.id} repeats job {older.id}'s input"
        killed = by_id[victim]
        assert (killed.state is JobState.DONE and killed.attempts == 2 and not killed.worker_id.rsplit(":", 1)[-1].startswith("w1@")) or (
            killed.state is JobState.CANCELLED and killed.id in superseded_by
        ), f"the job killed with w1 was neither run again elsewhere nor superseded: {killed}"
        result_sets = Counter(result["job_id"] for result in jobs.result_sets())
        assert sorted(result_sets) == sorted(job.id for job in done) and set(result_sets.values()) == {1}, "a job completed more than once"

        with archive.session() as session:
            deliveries = list(session.scalars(select(Delivery)))
        assert Counter(d.job_id for d in deliveries) == Counter(job.id for job in done), (
            "a result set was queued for the PACS more than once"
        )
        final_results = {uid for job in final for uid in job.result["sop_instance_uids"]}
        assert len(final_results) == 3 * STUDIES  # SEG, SR and key image per study
        missing = sorted(uid for uid in final_results if not orthanc.lookup(uid))
        assert not missing, f"{len(missing)} final results never reached Orthanc"
    finally:
        for process in reversed(processes):
            process.stop()
        jobs.close()
        archive.close()


def describe_short_final_jobs(short: list, all_jobs: list, archive: Archive) -> str:
    """Each final job that did not cover its series, with the series' chain of jobs and what the archive holds."""
    lines = []
    for job in short:
        chain = sorted((j for j in all_jobs if j.series_instance_uid == job.series_instance_uid), key=lambda j: j.id)
        held = len(archive.instance_inputs(job.series_instance_uid))
        with archive.session() as session:
            series = session.scalars(select(Series).where(Series.series_instance_uid == job.series_instance_uid)).one()
            received = sorted(session.scalars(select(Instance.received_at).where(Instance.series_fk == series.id)))
        lines.append(f"\nseries updated_at={series.updated_at}; instances received {received[0]} .. {received[-1]}")
        lines.append(
            f"\nfinal job {job.id} of series {job.series_instance_uid} has {len(job.input_sop_uids)} inputs; the archive holds {held}:"
        )
        lines += [
            f"\n  job {j.id} {j.state.value} inputs={len(j.input_sop_uids)} supersedes={j.supersedes_job_id} "
            f"created={j.created_at} finished={j.finished_at}"
            for j in chain
        ]
    return "".join(lines)
