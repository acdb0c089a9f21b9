"""The Celery backend: job ids through a Redis broker to ``radpilot worker`` on any number of machines.

The database stays the source of truth. :meth:`CeleryJobQueue.submit` writes the
job row, then publishes a message carrying only the job id. The task claims the
row with the same atomic, conditional UPDATE the embedded workers use, so a
message delivered twice (a redelivery after a worker loss, a duplicate from the
reaper) runs the job at most once at a time, and the UNIQUE result set records
its output at most once.

Delivery settings
-----------------
* ``task_acks_late=True``: a message is acknowledged when the task returns, so a
  worker killed mid-job leaves it unacknowledged; Redis gives it to another
  worker after ``visibility_timeout``.
* ``task_reject_on_worker_lost=True``: when a prefork child dies (SIGKILL, out of
  memory), the message goes back to the queue at once.
* ``worker_prefetch_multiplier=1``: a worker reserves one job per process, so a
  STAT job queued behind a routine backlog is the next one taken.
* Priority: one queue with Redis priorities (``priority_steps`` 0..9, 0 first):
  kombu keeps a list per priority and BRPOPs them in priority order, so
  :class:`~radpilot.engine.jobs.Priority` values (STAT=0, ROUTINE=5) are used as is.
* Time limit: each message carries ``soft_time_limit = timeout_s`` (raises in the
  runner; recorded as a timeout) and ``time_limit = timeout_s + 30 s`` (kills the
  child process; the reaper then fails the job as timed out).

Recovery
--------
Every worker's main process runs a reaper thread (a worker bootstep): jobs whose
lease expired (their worker died with its machine) are re-queued in the database
and published again. The unacknowledged message of the dead worker is also
redelivered after ``visibility_timeout``; whichever comes second finds the job
running or done and is dropped.

Retries are published with ``countdown``; Redis keeps such a message unacknowledged
in the worker until it is due, so ``visibility_timeout`` must exceed the longest
retry delay (checked by :func:`make_celery_app`).
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from typing import Any

from celery import Celery, Task, bootsteps
from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import setup_logging

from radpilot.engine.job_store import ClaimStatus, JobStore
from radpilot.engine.jobs import ErrorKind, JobQueue, JobRecord, JobState, QueueUnavailableError, RunnerFactory
from radpilot.engine.worker import (
    DEFAULT_RUNNER,
    WorkerConfig,
    describe,
    execute_job,
    resolve_runner_factory,
    worker_identity,
)
from radpilot.logging_setup import configure_logging

logger = logging.getLogger(__name__)

JOB_TASK_NAME = "radpilot.engine.run_job"
DEFAULT_QUEUE = "radpilot.jobs"
DEFAULT_VISIBILITY_TIMEOUT_S = 3600.0
HARD_LIMIT_GRACE_S = 30.0


@dataclass
class CeleryWorkerContext:
    """What the task needs in each worker process; the store and runner are made per process.

    Prefork children are forked from the worker's main process: a database engine
    made before the fork is abandoned (not closed) in the child and a new one opened.
    """

    database_url: str
    runner_factory: RunnerFactory | str
    config: WorkerConfig
    queue: str
    _pid: int | None = field(default=None, repr=False)
    _store: JobStore | None = field(default=None, repr=False)
    _runner: Any = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def _fresh_process(self) -> None:
        if self._pid == os.getpid():
            return
        if self._store is not None:
            self._store.engine.dispose(close=False)  # inherited across fork: drop, do not close
        self._pid, self._store, self._runner = os.getpid(), None, None

    def store(self) -> JobStore:
        """This process's job store."""
        with self._lock:
            self._fresh_process()
            if self._store is None:
                self._store = JobStore.from_url(self.database_url, retry=self.config.retry)
            return self._store

    def runner(self) -> Any:
        """This process's job runner (built on first use: models load once per process)."""
        with self._lock:
            self._fresh_process()
            if self._runner is None:
                self._runner = resolve_runner_factory(self.runner_factory)()
            return self._runner


def context_of(app: Celery) -> CeleryWorkerContext:
    """The :class:`CeleryWorkerContext` attached by :func:`make_celery_app`."""
    context = getattr(app, "radpilot_context", None)
    if context is None:
        raise RuntimeError(f"Celery app {app.main!r} was not made by radpilot.engine.queue_celery.make_celery_app")
    return context


def make_celery_app(
    broker_url: str,
    database_url: str,
    *,
    runner_factory: RunnerFactory | str = DEFAULT_RUNNER,
    config: WorkerConfig | None = None,
    visibility_timeout_s: float = DEFAULT_VISIBILITY_TIMEOUT_S,
    queue: str = DEFAULT_QUEUE,
    main: str = "radpilot",
) -> Celery:
    """A Celery app for RadPilot jobs (acks late, prefetch 1, reject on worker lost).

    Parameters
    ----------
    broker_url
        ``redis://host:port/db``.
    database_url
        The archive database holding the job rows.
    runner_factory
        Builds the job runner in each worker process (``"module:attribute"`` or a callable).
    config
        Lease, heartbeat, reaper and retry timing.
    visibility_timeout_s
        Seconds before Redis redelivers an unacknowledged message (a dead worker's job).
    queue
        The broker queue name.
    main
        The Celery app name.

    Raises
    ------
    ValueError
        If ``visibility_timeout_s`` does not exceed the longest retry delay.
    """
    config = config or WorkerConfig()
    if visibility_timeout_s <= config.retry.cap_s:
        raise ValueError(
            f"visibility_timeout_s ({visibility_timeout_s:g} s) must exceed the longest retry delay "
            f"({config.retry.cap_s:g} s), or delayed retries would be delivered twice"
        )
    app = Celery(main, broker=broker_url, set_as_current=False)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,
        worker_cancel_long_running_tasks_on_connection_loss=False,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        task_default_queue=queue,
        task_default_priority=5,
        broker_connection_retry_on_startup=True,
        broker_transport_options=_transport_options(visibility_timeout_s),
    )
    app.radpilot_context = CeleryWorkerContext(database_url, runner_factory, config, queue)
    app.task(name=JOB_TASK_NAME, bind=True, acks_late=True, reject_on_worker_lost=True)(run_job_task)
    app.steps["worker"].add(ReaperStep)
    return app


def _transport_options(visibility_timeout_s: float) -> dict[str, Any]:
    return {
        "visibility_timeout": visibility_timeout_s,
        "priority_steps": list(range(10)),
        "sep": ":",
        "queue_order_strategy": "priority",
        # Look for messages of dead workers about every visibility_timeout / 5 (1..10 s).
        "unacked_restore_interval": max(1, min(10, int(visibility_timeout_s / 5))),
        "unacked_restore_throttle": 1,
    }


def publish(app: Celery, job: JobRecord, *, countdown: float | None = None) -> None:
    """Send the message that makes a worker run ``job`` (priority and time limits from the job).

    Raises
    ------
    QueueUnavailableError
        If the broker cannot be reached; the job row stays queued.
    """
    options: dict[str, Any] = {
        "priority": int(job.priority),
        "queue": context_of(app).queue,
        "soft_time_limit": job.timeout_s,
        "time_limit": job.timeout_s + HARD_LIMIT_GRACE_S,
    }
    if countdown:
        options["countdown"] = countdown
    try:
        app.tasks[JOB_TASK_NAME].apply_async(args=[job.id], retry=True, retry_policy={"max_retries": 3, "interval_start": 0.2}, **options)
    except Exception as exc:  # noqa: BLE001 - kombu raises many connection error types
        raise QueueUnavailableError(f"job {job.id} ({job.analysis}) is saved but the broker could not be reached: {exc}") from exc
    logger.debug("job published", extra={"job_id": job.id, "priority": int(job.priority), "countdown": countdown})


def run_job_task(task: Task, job_id: int) -> str:
    """The Celery task: claim job ``job_id``, run it, record the outcome; returns what happened."""
    app = task.app
    context = context_of(app)
    store = context.store()
    worker_id = worker_identity(task.request.hostname or "celery")
    fields = {"job_id": job_id, "worker_id": worker_id}
    store.reap_expired(job_ids=[job_id])  # a redelivered job of a dead worker is claimable at once
    claim = store.claim(job_id, worker_id, context.config.lease_s)
    if claim.status is ClaimStatus.NOT_DUE:
        assert claim.job is not None  # a claim that is not due carries its job
        publish(app, claim.job, countdown=claim.due_in_s)
        return claim.status.value
    if claim.status is not ClaimStatus.CLAIMED:
        logger.info("job message skipped", extra={**fields, "reason": claim.status.value})
        return claim.status.value
    try:
        runner = context.runner()
    except Exception as exc:  # noqa: BLE001 - a broken installation: report it on the job, retry later
        logger.exception("could not build the job runner", extra=fields)
        job = store.fail(job_id, worker_id, f"the worker could not prepare the analysis: {describe(exc)}", ErrorKind.TRANSIENT)
    else:
        assert claim.job is not None  # a CLAIMED claim carries its job
        job = execute_job(store, claim.job, runner, worker_id, context.config, timeout_exceptions=(SoftTimeLimitExceeded,)).job
    if job is not None and job.state is JobState.QUEUED:
        due_in = (job.next_attempt_at - store.clock()).total_seconds()
        publish(app, job, countdown=max(0.0, due_in))
    return job.state.value if job is not None else "unknown"


class ReaperStep(bootsteps.StartStopStep):
    """A worker bootstep: a thread in the worker's main process that re-queues and re-publishes
    jobs whose lease expired."""

    requires = {"celery.worker.components:Pool"}

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, worker: Any) -> None:
        self._thread = threading.Thread(target=reaper_loop, args=(worker.app, self._stop), name="radpilot-reaper", daemon=True)
        self._thread.start()

    def stop(self, worker: Any) -> None:
        self._stop.set()

    def shutdown(self, worker: Any) -> None:
        self._stop.set()


def reaper_loop(app: Celery, stop: threading.Event) -> None:
    """Every ``reap_interval_s``: re-queue jobs with an expired lease and publish them again."""
    context = context_of(app)
    # Its own store: the worker's main process never touches the context's (prefork
    # children are forked from it while this thread may hold a lock).
    store = JobStore.from_url(context.database_url, retry=context.config.retry)
    try:
        while not stop.wait(context.config.reap_interval_s):
            try:
                for job in store.reap_expired().requeued:
                    publish(app, job)
            except Exception:  # noqa: BLE001 - keep reaping; the next round retries
                logger.exception("reaper round failed")
    finally:
        store.close()


class CeleryJobQueue(JobQueue):
    """The :class:`~radpilot.engine.jobs.JobQueue` of the Celery backend.

    Parameters
    ----------
    store
        The job store on the archive database (what the workers use too).
    app
        The app from :func:`make_celery_app`.
    """

    backend = "celery"

    def __init__(self, store: JobStore, app: Celery) -> None:
        super().__init__(store)
        self.app = app

    @classmethod
    def from_urls(cls, broker_url: str, database_url: str, *, migrate: bool = True, **app_options: Any) -> CeleryJobQueue:
        """A queue with its own store and app (``app_options`` go to :func:`make_celery_app`)."""
        config = app_options.get("config") or WorkerConfig()
        store = JobStore.from_url(database_url, migrate=migrate, retry=config.retry)
        return cls(store, make_celery_app(broker_url, database_url, **app_options))

    def _dispatch(self, job: JobRecord) -> None:
        publish(self.app, job)

    def publish_queued(self) -> int:
        """Publish every queued job again (after a broker outage or loss); duplicates are harmless."""
        jobs = self.store.list(state=JobState.QUEUED, limit=100_000)
        for job in jobs:
            due_in = (job.next_attempt_at - self.store.clock()).total_seconds()
            publish(self.app, job, countdown=max(0.0, due_in))
        return len(jobs)

    def close(self) -> None:
        """Close the database engine and broker connections."""
        self.store.close()
        self.app.close()


def run_worker(app: Celery, *, concurrency: int = 1, node_name: str | None = None, loglevel: str = "INFO") -> None:
    """Run a Celery worker for RadPilot jobs in this process until it is stopped (blocking).

    The prefork pool is used (time limits need it); ``concurrency`` processes each
    run one job at a time. RadPilot's own log format is kept.
    """

    setup_logging.connect(lambda **_: configure_logging(loglevel), weak=False)
    argv = [
        "worker",
        f"--concurrency={concurrency}",
        f"--loglevel={loglevel}",
        "--pool=prefork",
        "--without-gossip",
        "--without-mingle",
        "-Q",
        context_of(app).queue,
    ]
    if node_name:
        argv += ["-n", node_name]
    app.worker_main(argv=argv)
