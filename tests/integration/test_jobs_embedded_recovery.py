"""Embedded backend: a worker process killed or stopped mid-job; every job still ends done exactly once."""

from __future__ import annotations

import functools
import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from radpilot.engine.jobs import JobSpec, JobState
from radpilot.engine.queue_embedded import EmbeddedWorkerPool
from radpilot.engine.worker import WorkerConfig, worker_pid
from tests.helpers import wait_for
from tests.integration.job_runners import make_sleepy_runner, read_journal
from tests.unit.jobs_support import instances

pytestmark = pytest.mark.integration

JOBS = 6
SLEEP_S = 1.0
CONFIG = WorkerConfig(lease_s=2.0, heartbeat_s=0.4, poll_s=0.1, reap_interval_s=0.5)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'index.sqlite3'}"
    return request.getfixturevalue("fresh_postgres_url")


def spec(series: int) -> JobSpec:
    return JobSpec(
        analysis="sleepy",
        analysis_version="1",
        study_instance_uid=f"2.25.{series}",
        series_instance_uid=f"2.25.{series}.1",
        instances=instances(series),
        destinations=("pacs",),
    )


def test_sigkilled_worker_job_runs_again_elsewhere_exactly_once(database_url: str, tmp_path: Path) -> None:
    journal = tmp_path / "journal.txt"
    pool = EmbeddedWorkerPool(
        database_url, functools.partial(make_sleepy_runner, str(journal), SLEEP_S), processes=2, config=CONFIG, name="recovery"
    )
    pool.start()
    try:
        queue = pool.queue()
        ids = [queue.submit(spec(series)).job.id for series in range(JOBS)]

        # The runner writes "start" when it begins its SLEEP_S of work: kill that process then.
        started = wait_for(lambda: [e for e in read_journal(journal) if e[0] == "start"], 30, "a job to start")
        _, victim_id, _, victim_pid = started[0]
        victim = queue.get(victim_id)
        assert victim.state is JobState.RUNNING and worker_pid(victim.worker_id) == victim_pid
        os.kill(victim_pid, signal.SIGKILL)

        wait_for(lambda: queue.stats().counts[JobState.DONE] == JOBS, 60, "every job to finish")
        jobs = {job_id: queue.get(job_id) for job_id in ids}
    finally:
        pool.stop(timeout_s=10)

    assert all(job.state is JobState.DONE for job in jobs.values())
    assert jobs[victim.id].attempts == 2
    assert jobs[victim.id].result["details"]["pid"] != victim_pid
    assert all(job.attempts == 1 for job_id, job in jobs.items() if job_id != victim.id)
    result_sets = pool.store.result_sets()
    assert sorted(s["job_id"] for s in result_sets) == sorted(ids)
    entries = read_journal(journal)
    done = Counter(job_id for event, job_id, _, _ in entries if event == "done")
    assert done == Counter(ids), "a job's runner finished more or less than once"
    killed_runs = [e for e in entries if e[0] == "start" and e[1] == victim.id]
    assert [(attempt, pid == victim_pid) for _, _, attempt, pid in killed_runs] == [(1, True), (2, False)]
    assert victim_pid not in pool.pids


def test_sigterm_puts_a_running_job_back_without_counting_the_attempt(tmp_path: Path) -> None:
    journal = tmp_path / "journal.txt"
    pool = EmbeddedWorkerPool(
        f"sqlite:///{tmp_path / 'index.sqlite3'}",
        functools.partial(make_sleepy_runner, str(journal), 3.0),
        processes=2,
        config=CONFIG,
        name="sigterm",
    )
    pool.start()
    try:
        queue = pool.queue()
        job_id = queue.submit(spec(1)).job.id
        [(_, _, _, victim_pid)] = wait_for(lambda: [e for e in read_journal(journal) if e[0] == "start"], 30, "the job to start")
        os.kill(victim_pid, signal.SIGTERM)
        done = wait_for(lambda: (job := queue.get(job_id)).state is JobState.DONE and job, 30, "the job to finish")
    finally:
        pool.stop(timeout_s=10)

    assert done.attempts == 1, "a job interrupted by SIGTERM must not use up an attempt"
    assert done.result["details"]["pid"] != victim_pid
    assert [e[0] for e in read_journal(journal)] == ["start", "start", "done"]


def test_stop_returns_although_a_worker_died_while_it_waited_for_work(tmp_path: Path) -> None:
    """A multiprocessing.Event.set() in stop() used to wait for ever on a waiter that had been killed."""
    pool = EmbeddedWorkerPool(
        f"sqlite:///{tmp_path / 'index.sqlite3'}", functools.partial(make_sleepy_runner, None, 0.1), processes=2, config=CONFIG, name="idle"
    )
    pool.start()
    [first, second] = wait_for(lambda: len(pool.pids) == 2 and pool.pids, 30, "two workers")
    time.sleep(1.0)  # both idle now, waiting for work
    os.kill(first, signal.SIGKILL)
    os.kill(second, signal.SIGKILL)
    stopped = threading.Event()
    stopper = threading.Thread(target=lambda: (pool.stop(timeout_s=5), stopped.set()), daemon=True)
    stopper.start()
    assert stopped.wait(20), "the pool's stop hung on a dead worker"
