"""Analysis jobs: the states, priorities, errors and the queue interface.

A job asks for one analysis (name and version) on one set of input instances.
Its row in the archive database is the source of truth for its state, whatever
backend carries it to a worker:

* ``embedded`` (:mod:`radpilot.engine.queue_embedded`): worker processes started
  by ``radpilot serve`` claim jobs straight from the database;
* ``celery`` (:mod:`radpilot.engine.queue_celery`): ``radpilot worker`` on any
  number of machines receives job ids through a Redis broker and claims the
  same rows.

States::

    queued --claim--> running --complete--> done
       ^                 |  \\--fail (permanent, timeout, retries used up)--> failed
       |                 |
       +--fail (transient, attempts left; after a backoff delay)
       +--reaper (lease expired: the worker was killed or lost)
    queued / running --cancel--> cancelled

Exactly once
------------
The same analysis version on the same input instances (same SOP Instance UIDs
*and* the same content) has the same :func:`idempotency_key`. The ``job`` table
holds at most one job per key, and the ``result_set`` table holds at most one
result set per key (a UNIQUE constraint). A worker records its output with
:meth:`radpilot.engine.job_store.JobStore.complete`, which inserts the result set
and marks the job done in one transaction; when two workers finish the same job
(one was thought dead, its lease expired, the job ran again elsewhere), the
second insert fails on the constraint, the transaction is rolled back and that
worker discards its output (``complete`` returns False). The database, not the
broker, decides.

This module has no database or broker imports, so it is cheap to import.
"""

from __future__ import annotations

import abc
import enum
import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:  # pragma: no cover - typing only
    from radpilot.engine.job_store import JobStore

DEFAULT_TIMEOUT_S = 600.0
DEFAULT_MAX_ATTEMPTS = 3


class Priority(enum.IntEnum):
    """Job priority: a lower number runs first (STAT before routine).

    The values are also the Redis message priorities of the Celery backend
    (0 is the highest there too).
    """

    STAT = 0
    URGENT = 2
    ROUTINE = 5
    BACKGROUND = 8

    @classmethod
    def parse(cls, value: int | str | Priority) -> Priority:
        """A :class:`Priority` from its name (``"stat"``) or number (``0``).

        Raises
        ------
        ValueError
            If ``value`` names no priority; the message lists the valid ones.
        """
        if isinstance(value, Priority):
            return value
        try:
            if isinstance(value, str) and not value.strip().isdigit():
                return cls[value.strip().upper()]
            return cls(int(value))
        except (KeyError, ValueError):
            valid = ", ".join(f"{p.name.lower()} ({p.value})" for p in cls)
            raise ValueError(f"unknown job priority {value!r}; valid: {valid}") from None


class JobState(str, enum.Enum):
    """Where a job is in its life."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        """True for states a job leaves only when explicitly re-submitted."""
        return self in (JobState.DONE, JobState.FAILED, JobState.CANCELLED)


class ErrorKind(str, enum.Enum):
    """Why a job attempt did not finish."""

    TRANSIENT = "transient"  # may succeed later: retried with backoff
    PERMANENT = "permanent"  # will fail again: not retried
    TIMEOUT = "timeout"  # ran past its time limit: stopped, not retried
    NOT_APPLICABLE = "not_applicable"  # the analysis refused the input (its check_input): not retried, not an error


class JobError(Exception):
    """Base of the errors a :class:`JobRunner` raises to say how a job failed.

    The message is shown to a PACS administrator: say what went wrong in words.
    """


class TransientJobError(JobError):
    """A failure that may go away by itself (a busy GPU, a database restart): retry later."""


class PermanentJobError(JobError):
    """A failure that will recur on the same input (wrong series, corrupt pixel data): do not retry."""


class NotApplicableJobError(PermanentJobError):
    """The analysis does not apply to this input (its ``check_input`` refused it): the worklist shows "not applicable"."""


class JobTimeoutError(JobError):
    """The job ran longer than its time limit."""


class SupersedeConflictError(RuntimeError):
    """A job was submitted to supersede a job that is no longer the newest of its analysis on its series.

    Another router submitted a job for the same series between this router's read of
    the newest job and its submit: this router's input list may be out of date. Read the
    newest job, then the series' instances, again and submit once more.
    """


class QueueUnavailableError(RuntimeError):
    """The job was saved but its backend (the broker) could not be reached."""


def idempotency_key(analysis: str, version: str, instances: Iterable[tuple[str, str]]) -> str:
    """The idempotency key of an analysis version on a set of input instances.

    Parameters
    ----------
    analysis
        The analysis name, e.g. ``"lung_ct_quant"``.
    version
        The analysis version, e.g. ``"1.2.0"``.
    instances
        ``(sop_instance_uid, content_sha256)`` pairs of the input instances, in
        any order.

    Returns
    -------
    str
        64 hex digits: the sha256 of a canonical JSON document holding the name,
        the version and the pairs sorted by UID. The same inputs in another order
        give the same key; a changed instance content or a new version does not.

    Raises
    ------
    ValueError
        If there is no instance, a field is empty, or one SOP Instance UID is given
        with two different contents.
    """
    if not analysis or not version:
        raise ValueError("an idempotency key needs an analysis name and version")
    pairs: dict[str, str] = {}
    for sop_uid, sha256 in instances:
        if not sop_uid or not sha256:
            raise ValueError(f"input instance ({sop_uid!r}, {sha256!r}) lacks its SOP Instance UID or sha256")
        if pairs.get(sop_uid, sha256) != sha256:
            raise ValueError(f"SOP Instance UID {sop_uid} is given twice with different content")
        pairs[sop_uid] = sha256
    if not pairs:
        raise ValueError(f"a job of {analysis} {version} needs at least one input instance")
    canonical = json.dumps(
        {"analysis": analysis, "version": version, "instances": sorted(pairs.items())},
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class JobSpec:
    """What to run: submitted to :meth:`JobQueue.submit`.

    Parameters
    ----------
    analysis, analysis_version
        The analysis and its version.
    study_instance_uid, series_instance_uid
        The input series and its study.
    instances
        ``(sop_instance_uid, content_sha256)`` of every input instance.
    rule
        The routing rule that chose the analysis (shown to administrators).
    destinations
        Names of the nodes the results go to.
    priority
        :class:`Priority`; STAT runs before routine.
    max_attempts
        Attempts before a transiently failing job is given up (1 = no retry).
    timeout_s
        Wall-clock limit of one attempt, in seconds.
    supersedes_job_id
        The newest queued, running or done job of the same analysis on this series
        (:meth:`JobQueue.job_to_supersede`), None when there is none: this job's
        result set replaces that one's, and that job is cancelled if it has not
        finished. The submit is refused with :class:`SupersedeConflictError` when
        another job has become the newest meanwhile, so two routers can never leave
        a series with two current results, or with a result on an input list read
        before the other router's.
    """

    analysis: str
    analysis_version: str
    study_instance_uid: str
    series_instance_uid: str
    instances: Sequence[tuple[str, str]]
    rule: str = ""
    destinations: Sequence[str] = ()
    priority: Priority = Priority.ROUTINE
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    timeout_s: float = DEFAULT_TIMEOUT_S
    supersedes_job_id: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "priority", Priority.parse(self.priority))
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, not {self.max_attempts}")
        if self.timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, not {self.timeout_s}")

    @property
    def key(self) -> str:
        """The :func:`idempotency_key` of this spec."""
        return idempotency_key(self.analysis, self.analysis_version, self.instances)

    @property
    def sop_instance_uids(self) -> list[str]:
        """The input SOP Instance UIDs, sorted and without repeats."""
        return sorted({uid for uid, _ in self.instances})


@dataclass(frozen=True)
class JobRecord:
    """A snapshot of one job row (detached from any database session)."""

    id: int
    idempotency_key: str
    analysis: str
    analysis_version: str
    study_instance_uid: str
    series_instance_uid: str
    input_sop_uids: tuple[str, ...]
    rule: str
    destinations: tuple[str, ...]
    priority: Priority
    state: JobState
    attempts: int
    max_attempts: int
    next_attempt_at: datetime
    timeout_s: float
    worker_id: str | None
    lease_expires_at: datetime | None
    heartbeat_at: datetime | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None
    error_kind: ErrorKind | None
    result: dict[str, Any] | None
    supersedes_job_id: int | None

    @property
    def label(self) -> str:
        """``"lung_ct_quant 1.2.0 (job 17)"``: how messages name the job."""
        return f"{self.analysis} {self.analysis_version} (job {self.id})"


@dataclass(frozen=True)
class JobOutput:
    """What a runner produced: the SOP Instance UIDs of its result objects, and details.

    ``details`` must be JSON-serialisable; it is stored in the job's ``result``.
    """

    sop_instance_uids: Sequence[str] = ()
    details: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"sop_instance_uids": list(self.sop_instance_uids), "details": dict(self.details)}


@runtime_checkable
class JobRunner(Protocol):
    """Runs one job; written by the engine pipeline, given to the workers.

    ``run(job) -> JobOutput``. Raise :class:`TransientJobError` for failures worth
    retrying and :class:`PermanentJobError` for failures that will recur; any
    other exception counts as permanent, except ``OSError`` and ``MemoryError``,
    which count as transient.

    A runner may also define optional methods, called by the worker:

    ``on_record(session, job, output)``
        Inside the transaction that records the result set (a SQLAlchemy session):
        rows added there, e.g. deliveries to the job's destinations, are committed
        with the result set or not at all. Do not commit the session.
    ``on_committed(job, output)``
        After the result set was recorded: the output is the one result of this
        job (notify; anything that may be lost if the worker dies right now).
    ``on_discarded(job, output)``
        When the output lost the race (another worker recorded the job's result
        set first, or the job was cancelled meanwhile): delete what it wrote.
    """

    def __call__(self, job: JobRecord) -> JobOutput: ...


RunnerFactory = Callable[[], JobRunner]
"""Builds a runner once per worker process (load models there, not per job)."""


@dataclass(frozen=True)
class SubmitResult:
    """The answer of :meth:`JobQueue.submit`.

    ``created`` is True when a new job row was written; ``requeued`` when an
    existing failed or cancelled job was put back in the queue (``retry=True``).
    """

    job: JobRecord
    created: bool
    requeued: bool = False


@dataclass(frozen=True)
class QueueStats:
    """Counts for a PACS administrator's dashboard."""

    backend: str
    counts: dict[JobState, int]
    queued_by_priority: dict[Priority, int]
    oldest_queued_age_s: float | None

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff between attempts of a transiently failing job.

    The delay after attempt ``n`` (1-based) is ``min(cap_s, base_s * factor ** (n - 1))``:
    2, 4, 8, ... seconds by default, never more than five minutes.
    """

    base_s: float = 2.0
    factor: float = 2.0
    cap_s: float = 300.0

    def __post_init__(self) -> None:
        if self.base_s < 0 or self.cap_s < 0 or self.factor < 1:
            raise ValueError(f"invalid retry policy {self}: delays must be >= 0 and factor >= 1")

    def delay_s(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        return min(self.cap_s, self.base_s * self.factor ** max(0, attempt - 1))


class JobQueue(abc.ABC):
    """The queue interface shared by the embedded and the Celery backends.

    Every method reads or writes the job rows through :attr:`store`; a backend
    adds only how a submitted job reaches a worker (:meth:`_dispatch`).
    """

    backend: str = "abstract"

    def __init__(self, store: JobStore) -> None:
        self.store = store

    def submit(self, spec: JobSpec, *, retry: bool = False) -> SubmitResult:
        """Queue ``spec`` unless a job with the same idempotency key exists.

        Parameters
        ----------
        spec
            The job to run.
        retry
            Put an existing *failed or cancelled* job with the same key back in
            the queue (attempts reset). Without it such a job is returned as is.

        Returns
        -------
        SubmitResult
            The new job (``created=True``) or the existing one (``created=False``).
        """
        outcome = self.store.submit(spec, retry=retry)
        if outcome.created or outcome.requeued:
            self._dispatch(outcome.job)
        return outcome

    @abc.abstractmethod
    def _dispatch(self, job: JobRecord) -> None:
        """Tell the workers that ``job`` is queued."""

    def get(self, job_id: int) -> JobRecord | None:
        """The job with this id, or None."""
        return self.store.get(job_id)

    def list(self, state: JobState | str | None = None, limit: int = 100) -> list[JobRecord]:
        """Jobs, newest first, optionally only those in ``state``."""
        return self.store.list(state=state, limit=limit)

    def latest_done_job(self, analysis: str, series_instance_uid: str) -> JobRecord | None:
        """The job of ``analysis`` on this series that finished last (a new job's results supersede its results)."""
        return self.store.latest_done_job(analysis, series_instance_uid)

    def job_to_supersede(self, analysis: str, series_instance_uid: str) -> JobRecord | None:
        """The newest queued, running or done job of ``analysis`` on this series (a new job on it supersedes it)."""
        return self.store.job_to_supersede(analysis, series_instance_uid)

    def requeue(self, job_id: int) -> SubmitResult | None:
        """Run a failed or cancelled job again (an administrator's retry); None when there is no such job."""
        outcome = self.store.requeue(job_id)
        if outcome is not None and outcome.requeued:
            self._dispatch(outcome.job)
        return outcome

    def cancel(self, job_id: int, reason: str = "cancelled by an administrator") -> bool:
        """Cancel a queued or running job; False when it was already finished or does not exist.

        A running job's worker notices at its next heartbeat; its output, if any,
        is discarded.
        """
        return self.store.cancel(job_id, reason=reason)

    def stats(self) -> QueueStats:
        """Counts of jobs per state, queued jobs per priority, and the oldest queued job's age."""
        return self.store.stats(backend=self.backend)
