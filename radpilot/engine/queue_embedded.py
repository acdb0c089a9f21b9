"""The embedded backend: jobs in the archive database, worker processes started by ``radpilot serve``.

Workers are separate processes, forked from a clean ``forkserver`` process (no
database connection, lock or thread of the serving process is inherited). They
claim jobs straight from the ``job`` table with one atomic UPDATE
(:meth:`~radpilot.engine.job_store.JobStore.claim_next`), renew a lease while
they run one, and record the outcome.

The pool's supervisor thread, in the serving process, restarts a worker process
that died and re-queues its job at once (it saw the exit); the reaper it runs
every ``reap_interval_s`` re-queues jobs whose lease expired, which covers
workers of *other* nodes sharing the database (PostgreSQL) that died with their
machine. A worker also stops itself at a job's time limit (see
:mod:`radpilot.engine.worker`), and is then restarted like a crashed one.

Stopping never waits on another process: the stop request is a flag in shared
memory and the wake-up a semaphore, neither of which a dead worker can block
(a ``multiprocessing.Event.set()`` waits for every process that sleeps in
``wait()``, for ever if one was killed there). A worker that receives SIGTERM
(from :meth:`EmbeddedWorkerPool.stop`, or sent to the whole process group by
systemd or a terminal) puts its running job back in the queue, its attempt not
counted, and exits at once; the fork server blocks SIGTERM, so the pool keeps
seeing its workers' true exit status.

Usage::

    pool = EmbeddedWorkerPool(settings.resolved_database_url, "radpilot.engine.pipeline:make_runner", processes=2)
    pool.start()
    queue = pool.queue()          # submit() wakes an idle worker at once
    queue.submit(JobSpec(...))
    ...
    pool.stop(timeout_s=60)       # running jobs finish first (up to the timeout)
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.synchronize import Semaphore as MpSemaphore
from types import FrameType

from radpilot.engine.job_store import JobStore
from radpilot.engine.jobs import JobQueue, JobRecord, RunnerFactory
from radpilot.engine.worker import (
    EXIT_CANCELLED,
    EXIT_STOPPED,
    EXIT_TIMEOUT,
    WorkerConfig,
    execute_job,
    resolve_runner_factory,
    worker_identity,
)
from radpilot.logging_setup import configure_logging

logger = logging.getLogger(__name__)

RESTART_BACKOFF_MAX_S = 60.0
QUICK_EXIT_S = 10.0  # a worker dying sooner than this after its start counts as a crash loop
# A worker stopped by SIGTERM is restarted only this much later: a signal to the whole process group
# stops the pool too, and a worker started in between would only delay that stop.
SIGTERM_RESTART_DELAY_S = 10.0


def _block_sigterm_in_the_fork_server() -> None:
    """Block SIGTERM in the fork server, and so in every thread of every worker it forks.

    The fork server must outlive a SIGTERM sent to the whole process group: it reports each
    worker's exit status to the serving process, which would otherwise see every worker gone
    (exit code 255) while they still put their jobs back in the queue. Blocked, the signal stays
    pending there for ever; the fork server ends by itself when the serving process exits.
    A worker inherits the blocked mask from its first instruction, so the threads that imports
    start before :func:`worker_main` runs (BLAS, ONNX Runtime) cannot take a SIGTERM either:
    only :func:`_exit_on_sigterm` does. The fork server imports this module before it forks
    (``set_forkserver_preload``); imported anywhere else, this does nothing.
    """
    try:
        from multiprocessing import forkserver  # noqa: PLC0415 - not every platform has a fork server
    except ImportError:  # pragma: no cover - no fork server on this platform
        return
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        if frame.f_code is forkserver.main.__code__:
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
            return
        frame = frame.f_back


_block_sigterm_in_the_fork_server()


class EmbeddedJobQueue(JobQueue):
    """The :class:`~radpilot.engine.jobs.JobQueue` of the embedded backend.

    Parameters
    ----------
    store
        The job store on the archive database.
    notify
        Called after a job was queued, to wake an idle worker (:meth:`EmbeddedWorkerPool.notify`);
        without it, workers find the job at their next poll.
    """

    backend = "embedded"

    def __init__(self, store: JobStore, notify: Callable[[], None] | None = None) -> None:
        super().__init__(store)
        self.notify = notify

    def _dispatch(self, job: JobRecord) -> None:
        if self.notify is not None:
            self.notify()


def _exit_process(code: int) -> Callable[[JobRecord], None]:
    def _exit(job: JobRecord) -> None:
        logging.shutdown()
        os._exit(code)

    return _exit


def _configure_child_logging(level: str | None) -> None:
    if level is None:
        return

    configure_logging(level)


def worker_main(
    database_url: str,
    runner_factory: RunnerFactory | str,
    config: WorkerConfig,
    name: str,
    stop_requested: ctypes.c_bool,
    wakeup: MpSemaphore,
    log_level: str | None = None,
) -> None:
    """The body of one embedded worker process: claim, run, record, until ``stop_requested`` is true.

    SIGINT is ignored (a Ctrl-C in the terminal reaches every process of the group;
    the pool stops its workers itself, letting running jobs finish). SIGTERM puts the
    running job back in the queue and ends the process at once (:func:`_exit_on_sigterm`).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Blocked in every thread (already from the fork server; here too for the spawn fallback), SIGTERM
    # waits for _exit_on_sigterm's thread, which takes it even while the main thread is in native code.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    _configure_child_logging(log_level)
    worker_id = worker_identity(name)
    store = JobStore.from_url(database_url, retry=config.retry)
    claiming = threading.Lock()
    threading.Thread(target=_exit_on_sigterm, args=(store, worker_id, claiming), name="sigterm", daemon=True).start()
    runner = resolve_runner_factory(runner_factory)()
    logger.info("embedded worker ready", extra={"worker_id": worker_id})
    try:
        while not stop_requested.value:
            with claiming:
                job = _claim(store, worker_id, config)
            if job is None:
                wakeup.acquire(timeout=config.poll_s)
                continue
            try:
                execute_job(
                    store,
                    job,
                    runner,
                    worker_id,
                    config,
                    on_deadline=_exit_process(EXIT_TIMEOUT),
                    on_cancelled=_exit_process(EXIT_CANCELLED),
                )
            except Exception:  # noqa: BLE001 - e.g. the database went away while recording
                # The job stays running without heartbeats: the reaper re-queues it when its lease expires.
                logger.exception("job outcome could not be recorded", extra={"job_id": job.id, "worker_id": worker_id})
                time.sleep(config.poll_s)
    finally:
        store.close()
    logger.info("embedded worker stopped", extra={"worker_id": worker_id})


def _exit_on_sigterm(store: JobStore, worker_id: str, claiming: threading.Lock) -> None:
    """Wait for SIGTERM; then put this worker's running job back in the queue (attempt not counted) and exit.

    ``claiming`` is held by the main thread while it claims a job: taking it (for good) first means
    no claim can slip in between the release and the exit.
    """
    signal.sigwait({signal.SIGTERM})
    claiming.acquire()
    try:
        store.release(worker_id)
    except Exception:  # noqa: BLE001 - the pool (or, for another node's pool, the reaper) re-queues the job
        logger.exception("could not put the running job back in the queue", extra={"worker_id": worker_id})
    logger.info("embedded worker stopped by SIGTERM", extra={"worker_id": worker_id})
    logging.shutdown()
    os._exit(EXIT_STOPPED)


def _claim(store: JobStore, worker_id: str, config: WorkerConfig) -> JobRecord | None:
    try:
        return store.claim_next(worker_id, config.lease_s)
    except Exception:  # noqa: BLE001 - database unreachable for a moment: log, wait, try again
        logger.warning("could not claim a job; retrying", exc_info=True, extra={"worker_id": worker_id})
        time.sleep(config.poll_s)
        return None


def _process_context() -> multiprocessing.context.ForkServerContext | multiprocessing.context.SpawnContext:
    """``forkserver`` where available, else ``spawn``.

    The fork server is a clean process, started on the first worker start with this
    module preloaded; it forks each worker, so no connection, lock or thread of the
    serving process is inherited and a restart takes milliseconds. Workers see the
    environment and ``sys.path`` of that first start: pass configuration through the
    runner factory (picklable), not through later changes of ``os.environ``. Every
    process it forks starts with SIGTERM blocked (see :func:`_block_sigterm_in_the_fork_server`).
    """
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    return context


@dataclass
class _Slot:
    """One worker position of the pool, and the process filling it now."""

    index: int
    process: multiprocessing.process.BaseProcess | None = None
    worker_id: str = ""
    started_at: float = 0.0
    quick_exits: int = 0
    restart_at: float = 0.0


class EmbeddedWorkerPool:
    """Worker processes on the archive database, for ``radpilot serve``.

    Parameters
    ----------
    database_url
        The archive database (each process opens its own connections).
    runner_factory
        Builds the job runner in each worker process: a picklable module-level
        callable, or ``"package.module:attribute"``.
    processes
        Number of worker processes.
    config
        Lease, heartbeat, poll and retry timing.
    name
        Prefix of the worker names (worker ids are ``host:pid:name-N``).
    migrate
        Bring the database schema up to date in :meth:`start`.
    """

    def __init__(
        self,
        database_url: str,
        runner_factory: RunnerFactory | str,
        processes: int = 2,
        *,
        config: WorkerConfig | None = None,
        name: str = "embedded",
        migrate: bool = True,
    ) -> None:
        if processes < 1:
            raise ValueError(f"an embedded worker pool needs at least 1 process, not {processes}")
        self.database_url = database_url
        self.runner_factory = runner_factory
        self.config = config or WorkerConfig()
        self.name = name
        self._migrate = migrate
        self._context = _process_context()
        self._stop_requested = self._context.RawValue(ctypes.c_bool, False)
        # One pending wake-up per worker at most: more would only make idle workers claim in vain.
        self._wakeup = self._context.BoundedSemaphore(processes)
        for _ in range(processes):
            self._wakeup.acquire()
        self._stopping = threading.Event()
        self._slots = [_Slot(index) for index in range(processes)]
        self._lock = threading.Lock()
        self._store: JobStore | None = None
        self._supervisor: threading.Thread | None = None

    # ---- public ----------------------------------------------------------------------------

    @property
    def store(self) -> JobStore:
        """The pool's own job store (in the calling process)."""
        if self._store is None:
            raise RuntimeError("the worker pool is not started")
        return self._store

    @property
    def worker_ids(self) -> list[str]:
        """Worker ids of the live worker processes."""
        with self._lock:
            return [s.worker_id for s in self._slots if s.process is not None and s.process.is_alive()]

    @property
    def pids(self) -> list[int]:
        """Process ids of the live worker processes."""
        with self._lock:
            return [s.process.pid for s in self._slots if s.process is not None and s.process.pid is not None and s.process.is_alive()]

    def queue(self) -> EmbeddedJobQueue:
        """A job queue on the pool's store whose ``submit`` wakes an idle worker."""
        return EmbeddedJobQueue(self.store, notify=self.notify)

    def notify(self) -> None:
        """Wake an idle worker now (a job was queued)."""
        try:
            self._wakeup.release()
        except ValueError:
            pass  # every worker has a wake-up pending already

    def start(self) -> None:
        """Start the worker processes and the supervisor thread."""
        if self._supervisor is not None:
            raise RuntimeError("the worker pool is already started")
        self._store = JobStore.from_url(self.database_url, migrate=self._migrate, retry=self.config.retry)
        with self._lock:
            for slot in self._slots:
                self._spawn(slot)
        self._supervisor = threading.Thread(target=self._supervise, name=f"{self.name}-supervisor", daemon=True)
        self._supervisor.start()
        logger.info("embedded worker pool started", extra={"pool": self.name, "processes": len(self._slots)})

    def stop(self, timeout_s: float = 60.0) -> None:
        """Stop gracefully: running jobs may finish for ``timeout_s``, then workers are terminated.

        Jobs still running in a terminated worker go back to the queue, their attempt
        not counted. Nothing here waits on a worker that died meanwhile.
        """
        if self._supervisor is None:
            return
        self._stopping.set()
        self._stop_requested.value = True
        for _ in self._slots:
            self.notify()
        self._supervisor.join()
        deadline = time.monotonic() + timeout_s
        for slot in self._slots:
            if slot.process is not None:
                slot.process.join(max(0.0, deadline - time.monotonic()))
        for slot in self._slots:
            self._terminate(slot)
        self.store.close()
        self._supervisor = None
        logger.info("embedded worker pool stopped", extra={"pool": self.name})

    def __enter__(self) -> EmbeddedWorkerPool:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ---- internals -------------------------------------------------------------------------

    def _spawn(self, slot: _Slot) -> None:
        name = f"{self.name}-{slot.index}"
        level = logging.getLevelName(logging.getLogger().getEffectiveLevel())
        process = self._context.Process(
            target=worker_main,
            args=(self.database_url, self.runner_factory, self.config, name, self._stop_requested, self._wakeup, level),
            name=f"radpilot-{name}",
            daemon=False,
        )
        process.start()
        slot.process, slot.worker_id, slot.started_at = process, worker_identity(name, process.pid), time.monotonic()
        logger.info("worker process started", extra={"pool": self.name, "worker_id": slot.worker_id})

    def _terminate(self, slot: _Slot) -> None:
        process = slot.process
        if process is None:
            return
        if process.is_alive():
            logger.warning("worker did not stop in time; terminating", extra={"worker_id": slot.worker_id})
            process.terminate()
            process.join(5)
        if process.is_alive():
            process.kill()
            process.join(5)
        self.store.release(slot.worker_id)

    def _supervise(self) -> None:
        next_reap = 0.0
        tick = min(0.5, self.config.poll_s)
        while not self._stopping.wait(tick):
            try:
                with self._lock:
                    for slot in self._slots:
                        self._check(slot)
                if time.monotonic() >= next_reap:
                    self.store.reap_expired()
                    next_reap = time.monotonic() + (self.config.reap_interval_s or 0.0)  # set by WorkerConfig
            except Exception:  # noqa: BLE001 - the supervisor must keep running; the next tick retries
                logger.exception("worker pool supervision failed", extra={"pool": self.name})

    def _check(self, slot: _Slot) -> None:
        """Restart the slot's process if it died (with a growing delay if it keeps dying)."""
        process = slot.process
        if process is not None and process.is_alive():
            return
        now = time.monotonic()
        if process is not None:
            self._handle_exit(slot, process.exitcode, now)
            slot.process = None
        if now >= slot.restart_at and not self._stopping.is_set():
            self._spawn(slot)

    def _handle_exit(self, slot: _Slot, exitcode: int | None, now: float) -> None:
        reaped = self.store.reap_dead_worker(slot.worker_id)
        reason = {
            EXIT_TIMEOUT: "stopped at a job's time limit",
            EXIT_CANCELLED: "stopped because its job was cancelled",
            EXIT_STOPPED: "stopped by SIGTERM; its job went back to the queue",
        }
        quick = now - slot.started_at < QUICK_EXIT_S and exitcode not in reason
        slot.quick_exits = slot.quick_exits + 1 if quick else 0
        delay = min(RESTART_BACKOFF_MAX_S, 2.0**slot.quick_exits - 1) if slot.quick_exits else 0.0
        if exitcode == EXIT_STOPPED:
            delay = max(delay, SIGTERM_RESTART_DELAY_S)
        slot.restart_at = now + delay
        log = logger.info if exitcode in reason else logger.error
        log(
            "worker process exited; restarting",
            extra={
                "pool": self.name,
                "worker_id": slot.worker_id,
                "exitcode": exitcode,
                "reason": reason.get(exitcode, "crashed or was killed") if exitcode is not None else "crashed or was killed",
                "requeued_jobs": len(reaped.requeued),
                "failed_jobs": len(reaped.failed),
                "restart_in_s": delay,
            },
        )
