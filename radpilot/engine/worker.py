"""Running one claimed job, for both backends: lease heartbeat, time limit, outcome.

:func:`execute_job` calls the :class:`~radpilot.engine.jobs.JobRunner` in the
calling thread while a :class:`JobMonitor` thread renews the job's lease every
``heartbeat_s`` seconds. When the runner returns, the output is recorded with
:meth:`~radpilot.engine.job_store.JobStore.complete` (exactly once, see there);
when it raises, the attempt is recorded with
:meth:`~radpilot.engine.job_store.JobStore.fail` (retry with backoff, or failed).

Time limit: in the embedded backend the monitor itself enforces it. Python
cannot stop a thread that is inside native code (ONNX Runtime), so at the
deadline the monitor marks the job failed ("... exceeded its 600 s time limit")
and ends the whole worker process with :data:`EXIT_TIMEOUT`; the pool starts a
fresh one. Under Celery, the task's ``soft_time_limit`` raises
``SoftTimeLimitExceeded`` in the runner (recorded as a timeout here) and its
``time_limit`` kills the child process; the reaper then fails the job as timed out.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from radpilot.engine.job_store import JobStore
from radpilot.engine.jobs import (
    ErrorKind,
    JobOutput,
    JobRecord,
    JobState,
    JobTimeoutError,
    NotApplicableJobError,
    PermanentJobError,
    RetryPolicy,
    RunnerFactory,
    TransientJobError,
)

logger = logging.getLogger(__name__)

EXIT_TIMEOUT = 75
"""Exit status of an embedded worker process that stopped itself at a job's time limit."""
EXIT_CANCELLED = 76
"""Exit status of an embedded worker process that stopped itself because its job was cancelled."""
EXIT_STOPPED = 77
"""Exit status of an embedded worker process stopped by SIGTERM; its job went back to the queue."""
DEFAULT_RUNNER = "radpilot.engine.pipeline:make_runner"


@dataclass(frozen=True)
class WorkerConfig:
    """Timing of workers.

    Parameters
    ----------
    lease_s
        A running job's lease: if its worker does not renew it for this long, the
        reaper decides the worker is gone and re-queues the job.
    heartbeat_s
        How often the lease is renewed; default a third of ``lease_s``.
    poll_s
        How often an idle embedded worker looks for a queued job.
    reap_interval_s
        How often the reaper looks for expired leases; default half of ``lease_s``
        (at most 10 s).
    retry
        Backoff between attempts of transiently failing jobs.
    """

    lease_s: float = 30.0
    heartbeat_s: float | None = None
    poll_s: float = 1.0
    reap_interval_s: float | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    def __post_init__(self) -> None:
        if self.lease_s <= 0 or self.poll_s <= 0:
            raise ValueError(f"lease_s and poll_s must be positive: {self}")
        if self.heartbeat_s is None:
            object.__setattr__(self, "heartbeat_s", self.lease_s / 3)
        if self.reap_interval_s is None:
            object.__setattr__(self, "reap_interval_s", min(10.0, self.lease_s / 2))
        if not 0 < self.heartbeat_s < self.lease_s:
            raise ValueError(f"heartbeat_s ({self.heartbeat_s}) must be positive and shorter than lease_s ({self.lease_s})")


def worker_identity(name: str, pid: int | None = None) -> str:
    """``"host:pid:name"``: the worker id stored on the jobs a worker runs."""
    return f"{socket.gethostname()}:{pid if pid is not None else os.getpid()}:{name}"


def worker_pid(worker_id: str) -> int | None:
    """The process id in a :func:`worker_identity` string, or None."""
    parts = worker_id.split(":")
    return int(parts[1]) if len(parts) >= 3 and parts[1].isdigit() else None


def load_object(spec: str) -> Any:
    """Import ``"package.module:attribute"`` and return the attribute.

    Raises
    ------
    ValueError
        If ``spec`` is not of that form.
    ImportError
        If the module or the attribute does not exist (the message names both).
    """
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"expected 'package.module:attribute', got {spec!r}")
    module = importlib.import_module(module_name)
    try:
        value: Any = module
        for part in attribute.split("."):
            value = getattr(value, part)
    except AttributeError as exc:
        raise ImportError(f"module {module_name!r} has no attribute {attribute!r}") from exc
    return value


def resolve_runner_factory(factory: RunnerFactory | str) -> RunnerFactory:
    """A runner factory, importing it first when given as ``"module:attribute"``."""
    return load_object(factory) if isinstance(factory, str) else factory


def classify(exc: BaseException) -> ErrorKind:
    """How an exception raised by a runner counts: transient, permanent or timeout."""
    if isinstance(exc, JobTimeoutError):
        return ErrorKind.TIMEOUT
    if isinstance(exc, TransientJobError):
        return ErrorKind.TRANSIENT
    if isinstance(exc, NotApplicableJobError):
        return ErrorKind.NOT_APPLICABLE
    if isinstance(exc, PermanentJobError):
        return ErrorKind.PERMANENT
    if isinstance(exc, (OSError, MemoryError)):
        return ErrorKind.TRANSIENT
    return ErrorKind.PERMANENT


def describe(exc: BaseException) -> str:
    """The message of ``exc`` for an administrator; unexpected exceptions keep their type name."""
    text = str(exc).strip()
    if isinstance(exc, (TransientJobError, PermanentJobError, JobTimeoutError)) and text:
        return text
    return f"{type(exc).__name__}: {text}" if text else f"unexpected {type(exc).__name__}"


class JobMonitor:
    """Renews a running job's lease in a thread, and acts at its deadline or on losing it.

    Parameters
    ----------
    store, job, worker_id, config
        What to renew, under which worker, how often.
    on_deadline
        Called (in the monitor thread) once ``job.timeout_s`` has passed, after the
        job was marked failed as timed out; the embedded worker ends its process
        there. None: no deadline is enforced (Celery enforces it).
    on_cancelled
        Called when the job was cancelled while running.
    """

    def __init__(
        self,
        store: JobStore,
        job: JobRecord,
        worker_id: str,
        config: WorkerConfig,
        *,
        on_deadline: Callable[[JobRecord], None] | None = None,
        on_cancelled: Callable[[JobRecord], None] | None = None,
    ) -> None:
        self.store, self.job, self.worker_id, self.config = store, job, worker_id, config
        self.on_deadline, self.on_cancelled = on_deadline, on_cancelled
        self.deadline = time.monotonic() + job.timeout_s
        self.lease_lost = False
        self.timed_out = False
        self._finished = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"job-{job.id}-monitor", daemon=True)

    def __enter__(self) -> JobMonitor:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.finish()

    def finish(self) -> None:
        """The runner returned: stop renewing (and never fire the deadline after this)."""
        with self._lock:
            self._finished.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=self.config.heartbeat_s + 5)

    def _run(self) -> None:
        next_beat = time.monotonic() + self.config.heartbeat_s
        while True:
            wake = next_beat if self.on_deadline is None else min(next_beat, self.deadline)
            if self._finished.wait(max(0.0, wake - time.monotonic())):
                return
            now = time.monotonic()
            if self.on_deadline is not None and now >= self.deadline:
                self._deadline()
                return
            if now >= next_beat:
                self._renew()
                next_beat = now + self.config.heartbeat_s

    def _renew(self) -> None:
        try:
            renewed = self.store.heartbeat(self.job.id, self.worker_id, self.config.lease_s)
        except Exception:  # noqa: BLE001 - a database hiccup must not kill the job; the next beat retries
            logger.warning("lease renewal failed", exc_info=True, extra={"job_id": self.job.id})
            return
        if renewed or self.lease_lost:
            return
        self.lease_lost = True
        current = self.store.get(self.job.id)
        state = current.state.value if current else "deleted"
        logger.warning("lease lost while running", extra={"job_id": self.job.id, "worker_id": self.worker_id, "state": state})
        if current is not None and current.state is JobState.CANCELLED and self.on_cancelled is not None:
            with self._lock:
                if not self._finished.is_set():
                    self.on_cancelled(current)

    def _deadline(self) -> None:
        with self._lock:
            if self._finished.is_set():
                return
            self.timed_out = True
            failed = self.store.fail(self.job.id, self.worker_id, "time limit exceeded", ErrorKind.TIMEOUT)
            logger.error(
                "job exceeded its time limit",
                extra={
                    "job_id": self.job.id,
                    "analysis": self.job.analysis,
                    "timeout_s": self.job.timeout_s,
                    "recorded": failed is not None,
                },
            )
            self.on_deadline(self.job)


@dataclass(frozen=True)
class ExecutionResult:
    """What :func:`execute_job` did: the job afterwards, and whether this worker's output was recorded."""

    job: JobRecord | None
    recorded: bool
    error_kind: ErrorKind | None = None


def execute_job(
    store: JobStore,
    job: JobRecord,
    runner: Callable[[JobRecord], JobOutput],
    worker_id: str,
    config: WorkerConfig,
    *,
    timeout_exceptions: tuple[type[BaseException], ...] = (),
    on_deadline: Callable[[JobRecord], None] | None = None,
    on_cancelled: Callable[[JobRecord], None] | None = None,
) -> ExecutionResult:
    """Run a job claimed by ``worker_id`` and record how it ended.

    Parameters
    ----------
    store
        The job store the job was claimed from.
    job
        The claimed (running) job.
    runner
        The :class:`~radpilot.engine.jobs.JobRunner`.
    worker_id
        The claimer.
    config
        Lease and heartbeat timing.
    timeout_exceptions
        Exceptions that mean "time limit reached" (Celery's ``SoftTimeLimitExceeded``).
    on_deadline, on_cancelled
        See :class:`JobMonitor`.

    Returns
    -------
    ExecutionResult
        The job after the attempt and whether this worker recorded its result set.
    """
    fields = {"job_id": job.id, "analysis": job.analysis, "attempt": job.attempts, "worker_id": worker_id}
    logger.info("job started", extra=fields)
    started = time.monotonic()
    error: BaseException | None = None
    with JobMonitor(store, job, worker_id, config, on_deadline=on_deadline, on_cancelled=on_cancelled):
        try:
            output = runner(job)
            _check_output(output)
        except BaseException as exc:  # noqa: BLE001 - every failure is recorded; interpreter exits re-raised
            if isinstance(exc, (KeyboardInterrupt, SystemExit)) and not isinstance(exc, timeout_exceptions):
                raise
            error = exc
    if error is not None:
        kind = ErrorKind.TIMEOUT if isinstance(error, timeout_exceptions) else classify(error)
        logger.warning(
            "job runner raised",
            exc_info=(type(error), error, error.__traceback__) if kind is ErrorKind.PERMANENT else None,
            extra={**fields, "error_kind": kind.value, "error": describe(error)},
        )
        return ExecutionResult(store.fail(job.id, worker_id, describe(error), kind), False, kind)
    recorded = store.complete(job.id, worker_id, output, on_record=getattr(runner, "on_record", None))
    _after_commit(runner, job, output, recorded)
    logger.info("job finished", extra={**fields, "recorded": recorded, "seconds": round(time.monotonic() - started, 3)})
    return ExecutionResult(store.get(job.id), recorded)


def _check_output(output: object) -> None:
    """Refuse output that cannot be stored, as a permanent error of the runner."""
    if not isinstance(output, JobOutput):
        raise PermanentJobError(f"the analysis returned {type(output).__name__}, not a JobOutput")
    try:
        json.dumps(output.as_json())
    except (TypeError, ValueError) as exc:
        raise PermanentJobError(f"the analysis returned details that cannot be stored as JSON ({exc})") from exc


def _after_commit(runner: object, job: JobRecord, output: JobOutput, recorded: bool) -> None:
    """Call the runner's optional ``on_committed`` / ``on_discarded`` hook."""
    hook = getattr(runner, "on_committed" if recorded else "on_discarded", None)
    if hook is None:
        return
    try:
        hook(job, output)
    except Exception:  # noqa: BLE001 - the job's state is settled; report the hook's failure only
        logger.exception("runner hook failed", extra={"job_id": job.id, "hook": hook.__name__})
