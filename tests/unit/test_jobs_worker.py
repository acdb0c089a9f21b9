"""Running jobs: outcomes recorded by execute_job, and the embedded pool's time limit, cancel and stop."""

# ruff: noqa: F811 - fixtures imported from tests.unit.jobs_support are parameters here

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from celery.exceptions import SoftTimeLimitExceeded

from radpilot.engine.job_store import JobStore
from radpilot.engine.jobs import (
    ErrorKind,
    JobOutput,
    JobRecord,
    JobState,
    TransientJobError,
)
from radpilot.engine.queue_embedded import EmbeddedWorkerPool
from radpilot.engine.worker import WorkerConfig, execute_job
from tests.helpers import wait_for
from tests.integration.job_runners import ScriptedRunner, make_sleepy_runner, read_journal
from tests.unit.jobs_support import (  # noqa: F401 - fixtures
    LEASE_S,
    FakeClock,
    clock,
    database_url,
    jobs_postgres_url,
    jobs_sqlite_template,
    make_spec,
    store,
)

CONFIG = WorkerConfig(lease_s=LEASE_S, heartbeat_s=0.2)
FAST_POOL = WorkerConfig(lease_s=3, heartbeat_s=0.5, poll_s=0.1, reap_interval_s=0.5)


def run_once(store: JobStore, runner: Callable[[JobRecord], JobOutput], worker: str = "host:1:w1", **kw: object):  # noqa: ANN201
    job = store.claim_next(worker, LEASE_S)
    assert job is not None
    return execute_job(store, job, runner, worker, CONFIG, **kw)


class HookedRunner(ScriptedRunner):
    def __init__(self) -> None:
        super().__init__(None, sleep_s=0)
        self.committed: list[int] = []
        self.discarded: list[int] = []

    def on_committed(self, job: JobRecord, output: JobOutput) -> None:
        self.committed.append(job.id)

    def on_discarded(self, job: JobRecord, output: JobOutput) -> None:
        self.discarded.append(job.id)


def test_success_records_the_result_and_calls_on_committed(store: JobStore) -> None:
    job = store.submit(make_spec(1, analysis="sleepy")).job
    runner = HookedRunner()
    outcome = run_once(store, runner)
    assert outcome.recorded and outcome.job.state is JobState.DONE
    assert outcome.job.result["sop_instance_uids"] == [f"2.25.{job.id}.1"]
    assert runner.committed == [job.id] and runner.discarded == []


def test_transient_error_is_retried_after_the_backoff(store: JobStore, clock: FakeClock) -> None:
    job = store.submit(make_spec(1, analysis="flaky")).job
    runner = ScriptedRunner(None, sleep_s=0)
    first = run_once(store, runner)
    assert (first.job.state, first.error_kind) == (JobState.QUEUED, ErrorKind.TRANSIENT)
    assert first.job.error == ("flaky: attempt 1 of 3 failed with a temporary problem; it will be tried again in 2 s. The GPU is busy.")
    assert store.claim_next("host:1:w1", LEASE_S) is None
    clock.advance(2)
    second = run_once(store, runner)
    assert second.recorded and second.job.state is JobState.DONE and second.job.attempts == 2
    assert store.get(job.id).error is None


def test_transient_errors_until_the_last_attempt_fail_the_job(store: JobStore, clock: FakeClock) -> None:
    def always_busy(job: JobRecord) -> JobOutput:
        raise TransientJobError("the archive database is restarting")

    store.submit(make_spec(1, max_attempts=3))
    for delay in (2, 4):
        assert run_once(store, always_busy).job.state is JobState.QUEUED
        clock.advance(delay)
    last = run_once(store, always_busy)
    assert last.job.state is JobState.FAILED and last.job.attempts == 3
    assert last.job.error == (
        "lung_ct_quant failed 3 times with a temporary problem and was given up. Last error: the archive database is restarting."
    )


@pytest.mark.parametrize(
    ("error", "kind", "message"),
    [
        (None, ErrorKind.PERMANENT, "broken cannot process this series: the series has no pixel data."),
        (
            ValueError("operands could not be broadcast"),
            ErrorKind.PERMANENT,
            "broken cannot process this series: ValueError: operands could not be broadcast.",
        ),
        (ConnectionRefusedError("model server refused"), ErrorKind.TRANSIENT, "model server refused"),
    ],
)
def test_runner_exceptions_are_recorded(store: JobStore, error: Exception | None, kind: ErrorKind, message: str) -> None:
    def raising(job: JobRecord) -> JobOutput:
        raise error

    store.submit(make_spec(1, analysis="broken"))
    outcome = run_once(store, ScriptedRunner(None) if error is None else raising)
    assert outcome.error_kind is kind and not outcome.recorded
    assert message in outcome.job.error
    assert outcome.job.state is (JobState.FAILED if kind is ErrorKind.PERMANENT else JobState.QUEUED)


def test_output_that_cannot_be_stored_is_a_permanent_error(store: JobStore) -> None:
    store.submit(make_spec(1))
    outcome = run_once(store, lambda job: JobOutput(["1.2"], {"volume": object()}))
    assert outcome.job.state is JobState.FAILED and "cannot be stored as JSON" in outcome.job.error
    store.submit(make_spec(2))
    assert "not a JobOutput" in run_once(store, lambda job: ["1.2"]).job.error


def test_output_of_a_second_finisher_is_discarded(store: JobStore) -> None:
    job = store.submit(make_spec(1, analysis="sleepy")).job
    runner = HookedRunner()

    def racing(record: JobRecord) -> JobOutput:
        assert store.complete(record.id, "host:2:other", JobOutput(["2.25.other"]))  # the other worker wins
        return runner(record)

    racing.on_discarded = runner.on_discarded  # type: ignore[attr-defined]
    outcome = run_once(store, racing)
    assert not outcome.recorded and runner.discarded == [job.id]
    assert [s["sop_instance_uids"] for s in store.result_sets()] == [["2.25.other"]]


def test_soft_time_limit_is_recorded_as_a_timeout(store: JobStore) -> None:
    def slow(job: JobRecord) -> JobOutput:
        raise SoftTimeLimitExceeded()

    store.submit(make_spec(1, timeout_s=600))
    outcome = run_once(store, slow, timeout_exceptions=(SoftTimeLimitExceeded,))
    assert outcome.job.state is JobState.FAILED and outcome.job.error_kind is ErrorKind.TIMEOUT
    assert outcome.job.error == "lung_ct_quant exceeded its 600 s time limit and was stopped."


def test_heartbeats_keep_a_long_job_alive(tmp_path: Path) -> None:
    real = JobStore.from_url(f"sqlite:///{tmp_path / 'jobs.sqlite3'}", migrate=True)
    config = WorkerConfig(lease_s=0.8, heartbeat_s=0.1)
    reaped: list[int] = []

    def long_job(job: JobRecord) -> JobOutput:
        time.sleep(1.2)  # one and a half leases
        reaped.extend(j.id for j in real.reap_expired().requeued)
        return JobOutput(["2.25.1"])

    real.submit(make_spec(1))
    job = real.claim_next("host:1:w1", config.lease_s)
    outcome = execute_job(real, job, long_job, "host:1:w1", config)
    real.close()
    assert reaped == [] and outcome.recorded


# ---- the embedded pool: real worker processes ------------------------------------------------


@pytest.fixture
def pool_factory(tmp_path: Path) -> Iterator[Callable[..., EmbeddedWorkerPool]]:
    pools: list[EmbeddedWorkerPool] = []

    def start(url: str, processes: int = 1, sleep_s: float = 0.2) -> EmbeddedWorkerPool:
        factory = functools.partial(make_sleepy_runner, str(tmp_path / "journal.txt"), sleep_s)
        pool = EmbeddedWorkerPool(url, factory, processes=processes, config=FAST_POOL, name="unit")
        pool.start()
        pools.append(pool)
        return pool

    yield start
    for pool in pools:
        pool.stop(timeout_s=5)


def test_embedded_worker_is_stopped_at_the_time_limit(database_url: str, pool_factory, tmp_path: Path) -> None:
    pool = pool_factory(database_url)
    queue = pool.queue()
    hung = queue.submit(make_spec(1, analysis="hang", timeout_s=1.0)).job
    after = queue.submit(make_spec(2, analysis="sleepy")).job
    first_pid = wait_for(lambda: pool.pids, 30, "a worker process")[0]
    failed = wait_for(lambda: (j := queue.get(hung.id)).state is JobState.FAILED and j, 30, "the timeout")
    assert failed.error_kind is ErrorKind.TIMEOUT and failed.attempts == 1
    assert failed.error == "hang exceeded its 1 s time limit and was stopped."
    done = wait_for(lambda: (j := queue.get(after.id)).state is JobState.DONE and j, 30, "the next job")
    assert done.result["details"]["pid"] != first_pid  # run by the restarted worker process
    assert first_pid not in pool.pids
    assert queue.stats().counts[JobState.RUNNING] == 0


def test_cancelling_a_running_embedded_job_stops_its_worker(tmp_path: Path, pool_factory) -> None:
    pool = pool_factory(f"sqlite:///{tmp_path / 'jobs.sqlite3'}")
    queue = pool.queue()
    job = queue.submit(make_spec(1, analysis="hang", timeout_s=120)).job
    running = wait_for(lambda: (j := queue.get(job.id)).state is JobState.RUNNING and j, 30, "the job to start")
    assert queue.cancel(job.id)
    wait_for(lambda: running.worker_id not in pool.worker_ids and pool.worker_ids, 30, "the worker to restart")
    assert queue.get(job.id).state is JobState.CANCELLED and pool.store.result_sets() == []


def test_graceful_stop_lets_the_running_job_finish(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.sqlite3'}"
    journal = tmp_path / "journal.txt"
    pool = EmbeddedWorkerPool(url, functools.partial(make_sleepy_runner, str(journal), 0.8), processes=1, config=FAST_POOL)
    pool.start()
    queue = pool.queue()
    finishing = queue.submit(make_spec(1, analysis="sleepy")).job
    waiting = queue.submit(make_spec(2, analysis="sleepy")).job
    wait_for(lambda: queue.get(finishing.id).state is JobState.RUNNING, 30, "the job to start")
    pool.stop(timeout_s=20)
    assert queue.get(finishing.id).state is JobState.DONE
    assert queue.get(waiting.id).state is JobState.QUEUED
    assert [e[1] for e in read_journal(journal) if e[0] == "done"] == [finishing.id]

    stuck = EmbeddedWorkerPool(url, functools.partial(make_sleepy_runner, None, 0), processes=1, config=FAST_POOL)
    stuck.start()
    hung = stuck.queue().submit(make_spec(3, analysis="hang", priority="stat", timeout_s=120)).job
    wait_for(lambda: queue.get(hung.id).state is JobState.RUNNING, 30, "the hung job to start")
    stuck.stop(timeout_s=0.2)
    released = queue.get(hung.id)
    assert released.state is JobState.QUEUED and released.attempts == 0
    assert "shutdown" in released.error
