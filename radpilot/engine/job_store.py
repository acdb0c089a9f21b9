"""Job rows in the archive database: every state change of a job, for both backends.

Each change is one conditional statement (or one short transaction) whose WHERE
clause states what must still be true, e.g. "still running *under this worker*".
Two workers, a reaper and an administrator can therefore act on the same job at
the same moment on SQLite (one writer at a time, WAL) and on PostgreSQL (row
locks, ``FOR UPDATE SKIP LOCKED`` for the claim) without a lost update; the
loser sees ``rowcount == 0`` and backs off.

Exactly one result set
----------------------
:meth:`JobStore.complete` inserts the ``result_set`` row (UNIQUE job_id and
idempotency_key) and marks the job done in the same transaction. If another
worker already recorded this job's result (it ran twice because a lease expired
while the first worker was merely slow), the insert raises ``IntegrityError``,
the transaction rolls back and ``complete`` returns False: the caller discards
its output. A job that is no longer open (cancelled, or given up as failed)
refuses a result the same way.
"""

from __future__ import annotations

import builtins
import enum
import hashlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, Select, func, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from radpilot.db import make_engine
from radpilot.db import migrate as migrate_schema
from radpilot.engine.jobs import (
    ErrorKind,
    JobOutput,
    JobRecord,
    JobSpec,
    JobState,
    Priority,
    QueueStats,
    RetryPolicy,
    SubmitResult,
    SupersedeConflictError,
)
from radpilot.engine.jobs_models import Job, ResultSet

logger = logging.getLogger(__name__)

Clock = Callable[[], datetime]
RecordHook = Callable[[Session, JobRecord, JobOutput], None]
"""Writes more rows in the transaction that records a result set (see :meth:`JobStore.complete`)."""
JOB = Job.__table__
OPEN_STATES = (JobState.QUEUED.value, JobState.RUNNING.value)
RETRYABLE_STATES = (JobState.FAILED.value, JobState.CANCELLED.value)


def _newest_job_query(analysis: str, series_instance_uid: str) -> Select:
    """The newest queued, running or done job of ``analysis`` on the series (what a new job there supersedes)."""
    return (
        select(Job)
        .where(
            Job.analysis == analysis,
            Job.series_instance_uid == series_instance_uid,
            Job.state.in_((*OPEN_STATES, JobState.DONE.value)),
        )
        .order_by(Job.id.desc())
        .limit(1)
    )


def _series_lock_key(spec: JobSpec) -> int:
    """A signed 64-bit advisory-lock key for the jobs of one analysis on one series."""
    digest = hashlib.sha256(f"{spec.analysis}|{spec.series_instance_uid}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def utc_now() -> datetime:
    """The current time in UTC (time-zone aware)."""
    return datetime.now(UTC)


def as_utc(value: datetime | None) -> datetime | None:
    """``value`` with UTC attached when the database returned it without a zone (SQLite)."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


class ClaimStatus(enum.Enum):
    """The answer of :meth:`JobStore.claim` for one job id."""

    CLAIMED = "claimed"  # the job is now running under the caller
    NOT_DUE = "not_due"  # queued, but waiting for its retry backoff
    BUSY = "busy"  # running under another worker whose lease is alive
    FINISHED = "finished"  # done, failed or cancelled: nothing to do
    MISSING = "missing"  # no such job


@dataclass(frozen=True)
class ClaimResult:
    status: ClaimStatus
    job: JobRecord | None = None
    due_in_s: float = 0.0


@dataclass(frozen=True)
class ReapResult:
    """Jobs the reaper found with an expired lease, by what it did with them."""

    requeued: list[JobRecord]
    failed: list[JobRecord]


def to_record(job: Job) -> JobRecord:
    """A detached :class:`JobRecord` from an ORM row."""
    return JobRecord(
        id=job.id,
        idempotency_key=job.idempotency_key,
        analysis=job.analysis,
        analysis_version=job.analysis_version,
        study_instance_uid=job.study_instance_uid,
        series_instance_uid=job.series_instance_uid,
        input_sop_uids=tuple(job.input_sop_uids or ()),
        rule=job.rule,
        destinations=tuple(job.destinations or ()),
        priority=Priority(job.priority),
        state=JobState(job.state),
        attempts=job.attempts,
        max_attempts=job.max_attempts,
        next_attempt_at=as_utc(job.next_attempt_at),
        timeout_s=job.timeout_s,
        worker_id=job.worker_id,
        lease_expires_at=as_utc(job.lease_expires_at),
        heartbeat_at=as_utc(job.heartbeat_at),
        created_at=as_utc(job.created_at),
        started_at=as_utc(job.started_at),
        finished_at=as_utc(job.finished_at),
        error=job.error,
        error_kind=ErrorKind(job.error_kind) if job.error_kind else None,
        result=job.result,
        supersedes_job_id=job.supersedes_job_id,
    )


def _log_fields(job: JobRecord, **more: Any) -> dict[str, Any]:
    return {"job_id": job.id, "analysis": job.analysis, "attempt": job.attempts, **more}


class JobStore:
    """All reads and state changes of job rows.

    Parameters
    ----------
    engine
        The archive database (SQLite or PostgreSQL), migrated to revision 0002 or later.
    retry
        Backoff between attempts of transiently failing jobs.
    clock
        Returns the current time (UTC, aware); tests pass a fake one.
    """

    def __init__(self, engine: Engine, *, retry: RetryPolicy | None = None, clock: Clock = utc_now) -> None:
        self.engine = engine
        self.retry = retry or RetryPolicy()
        self.clock = clock
        self.sessions: sessionmaker[Session] = sessionmaker(bind=engine, expire_on_commit=False)

    @classmethod
    def from_url(cls, database_url: str, *, migrate: bool = False, **kwargs: Any) -> JobStore:
        """A store on a new engine for ``database_url``; ``migrate=True`` upgrades the schema first."""
        engine = make_engine(database_url)
        if migrate:
            migrate_schema(engine)
        return cls(engine, **kwargs)

    def close(self) -> None:
        """Close the engine's pooled connections."""
        self.engine.dispose()

    # ---- reads ---------------------------------------------------------------------------

    def get(self, job_id: int) -> JobRecord | None:
        """The job with this id, or None."""
        with self.sessions() as session:
            job = session.get(Job, job_id)
            return to_record(job) if job is not None else None

    def get_by_key(self, key: str) -> JobRecord | None:
        """The job with this idempotency key, or None."""
        with self.sessions() as session:
            job = session.scalars(select(Job).where(Job.idempotency_key == key)).first()
            return to_record(job) if job is not None else None

    def list(self, state: JobState | str | None = None, limit: int = 100) -> list[JobRecord]:
        """Jobs, newest first, optionally only those in ``state``."""
        query = select(Job).order_by(Job.id.desc()).limit(limit)
        if state is not None:
            query = query.where(Job.state == JobState(state).value)
        with self.sessions() as session:
            return [to_record(job) for job in session.scalars(query)]

    def created_since(self, since: datetime, analysis: str | None = None, version: str | None = None) -> list[JobRecord]:
        """Jobs submitted at or after ``since`` (of one analysis and version when given), oldest first."""
        query = select(Job).where(Job.created_at >= since).order_by(Job.created_at, Job.id)
        if analysis:
            query = query.where(Job.analysis == analysis)
        if version:
            query = query.where(Job.analysis_version == version)
        with self.sessions() as session:
            return [to_record(job) for job in session.scalars(query)]

    def latest_done_job(self, analysis: str, series_instance_uid: str) -> JobRecord | None:
        """The job of ``analysis`` on this series that finished last with a result set, or None."""
        query = (
            select(Job)
            .where(Job.analysis == analysis, Job.series_instance_uid == series_instance_uid, Job.state == JobState.DONE.value)
            .order_by(Job.finished_at.desc(), Job.id.desc())
            .limit(1)
        )
        with self.sessions() as session:
            job = session.scalars(query).first()
            return to_record(job) if job is not None else None

    def job_to_supersede(self, analysis: str, series_instance_uid: str) -> JobRecord | None:
        """The newest queued, running or done job of ``analysis`` on this series: the one a new job on it replaces."""
        with self.sessions() as session:
            job = session.scalars(_newest_job_query(analysis, series_instance_uid)).first()
            return to_record(job) if job is not None else None

    def done_jobs_of_study(self, study_instance_uid: str) -> builtins.list[JobRecord]:
        """The finished jobs of a study whose results no later job superseded, oldest first."""
        superseded = select(Job.supersedes_job_id).where(Job.supersedes_job_id.is_not(None), Job.state == JobState.DONE.value)
        query = (
            select(Job)
            .where(Job.study_instance_uid == study_instance_uid, Job.state == JobState.DONE.value, Job.id.not_in(superseded))
            .order_by(Job.id)
        )
        with self.sessions() as session:
            return [to_record(job) for job in session.scalars(query)]

    def result_sets(self, job_id: int | None = None) -> list[dict[str, Any]]:
        """Recorded result sets (all, or the one of ``job_id``) as plain dicts, oldest first."""
        query = select(ResultSet).order_by(ResultSet.id)
        if job_id is not None:
            query = query.where(ResultSet.job_id == job_id)
        with self.sessions() as session:
            return [
                {
                    "job_id": row.job_id,
                    "idempotency_key": row.idempotency_key,
                    "worker_id": row.worker_id,
                    "created_at": as_utc(row.created_at),
                    "sop_instance_uids": list(row.sop_instance_uids or ()),
                }
                for row in session.scalars(query)
            ]

    def stats(self, backend: str = "database") -> QueueStats:
        """Counts of jobs per state, queued jobs per priority, and the oldest queued job's age."""
        with self.sessions() as session:
            by_state = dict(session.execute(select(Job.state, func.count()).group_by(Job.state)).all())
            queued = select(Job.priority, func.count()).where(Job.state == JobState.QUEUED.value).group_by(Job.priority)
            by_priority = dict(session.execute(queued).all())
            oldest = session.scalar(select(func.min(Job.created_at)).where(Job.state == JobState.QUEUED.value))
        oldest_age = (self.clock() - as_utc(oldest)).total_seconds() if oldest is not None else None
        return QueueStats(
            backend=backend,
            counts={state: int(by_state.get(state.value, 0)) for state in JobState},
            queued_by_priority={Priority(p): int(n) for p, n in sorted(by_priority.items())},
            oldest_queued_age_s=oldest_age,
        )

    # ---- submit and cancel ---------------------------------------------------------------

    def submit(self, spec: JobSpec, *, retry: bool = False) -> SubmitResult:
        """Write a queued job for ``spec`` unless one with the same idempotency key exists.

        See :meth:`radpilot.engine.jobs.JobQueue.submit`.

        Raises
        ------
        ValueError
            If ``spec.supersedes_job_id`` names no job.
        SupersedeConflictError
            If ``spec.supersedes_job_id`` is no longer the newest job of the analysis
            on the series (another router submitted meanwhile); nothing is written.
        """
        key = spec.key
        existing = self.get_by_key(key)
        if existing is None:
            if spec.supersedes_job_id is not None and self.get(spec.supersedes_job_id) is None:
                raise ValueError(f"job {spec.supersedes_job_id}, to be superseded by {spec.analysis}, does not exist")
            try:
                job = self._insert(spec, key)
            except IntegrityError:
                existing = self.get_by_key(key)  # a concurrent submit of the same input won
                if existing is None:
                    raise
            else:
                self._supersede(spec.supersedes_job_id, job)
                logger.info("job queued", extra=_log_fields(job, priority=job.priority.name.lower()))
                return SubmitResult(job=job, created=True)
        if retry and existing.state.value in RETRYABLE_STATES:
            return self._resubmit(existing)
        return SubmitResult(job=existing, created=False)

    def _insert(self, spec: JobSpec, key: str) -> JobRecord:
        now = self.clock()
        row = Job(
            idempotency_key=key,
            analysis=spec.analysis,
            analysis_version=spec.analysis_version,
            study_instance_uid=spec.study_instance_uid,
            series_instance_uid=spec.series_instance_uid,
            input_sop_uids=spec.sop_instance_uids,
            rule=spec.rule,
            destinations=list(spec.destinations),
            priority=int(spec.priority),
            state=JobState.QUEUED.value,
            attempts=0,
            max_attempts=spec.max_attempts,
            next_attempt_at=now,
            timeout_s=float(spec.timeout_s),
            created_at=now,
            supersedes_job_id=spec.supersedes_job_id,
        )
        with self.sessions.begin() as session:
            if session.get_bind().dialect.name == "postgresql":
                # READ COMMITTED lets two submits on one series run side by side; the lock,
                # held to commit, makes the check below see every earlier submit.
                session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _series_lock_key(spec)})
            # On SQLite the INSERT takes the database's one write lock first, so the
            # check below reads the newest committed state and no other submit can follow it
            # before this one commits.
            session.add(row)
            session.flush()
            newest = session.scalar(
                _newest_job_query(spec.analysis, spec.series_instance_uid).where(Job.id != row.id).with_only_columns(Job.id)
            )
            if newest != spec.supersedes_job_id:
                raise SupersedeConflictError(
                    f"{spec.analysis} on series {spec.series_instance_uid} was submitted to supersede "
                    f"job {spec.supersedes_job_id}, but the newest job there is {newest}"
                )
        return to_record(row)

    def _supersede(self, old_job_id: int | None, new_job: JobRecord) -> None:
        """Cancel the superseded job if it has not finished (its input is out of date).

        A running one is cancelled too: its worker's result set is then refused and its
        output discarded, so a series that grew while its first job ran is never delivered
        twice (the scale-out topology test found this with a front end restarted mid-study).
        """
        if old_job_id is None:
            return
        reason = f"Superseded by job {new_job.id}: the series grew and is analysed again with all its images."
        if self._set_state_where(
            old_job_id,
            OPEN_STATES,
            state=JobState.CANCELLED.value,
            finished_at=self.clock(),
            lease_expires_at=None,
            error=reason,
            error_kind=None,
        ):
            logger.info("superseded job cancelled", extra={"job_id": old_job_id, "superseded_by": new_job.id})

    def _resubmit(self, job: JobRecord) -> SubmitResult:
        requeued = self._set_state_where(
            job.id,
            RETRYABLE_STATES,
            state=JobState.QUEUED.value,
            attempts=0,
            next_attempt_at=self.clock(),
            worker_id=None,
            lease_expires_at=None,
            started_at=None,
            finished_at=None,
            error=None,
            error_kind=None,
            result=None,
        )
        current = self.get(job.id)
        if requeued:
            logger.info("failed job re-submitted", extra=_log_fields(current))
        return SubmitResult(job=current, created=False, requeued=requeued)

    def requeue(self, job_id: int) -> SubmitResult | None:
        """Put a failed or cancelled job back in the queue (attempts reset); None when there is no such job.

        ``requeued`` is False when the job was not failed or cancelled (nothing changed).
        """
        job = self.get(job_id)
        if job is None:
            return None
        return self._resubmit(job)

    def cancel(self, job_id: int, reason: str = "cancelled by an administrator") -> bool:
        """Cancel a queued or running job; False if it is finished or does not exist."""
        cancelled = self._set_state_where(
            job_id,
            OPEN_STATES,
            state=JobState.CANCELLED.value,
            finished_at=self.clock(),
            lease_expires_at=None,
            error=reason[:1].upper() + reason[1:],
            error_kind=None,
        )
        if cancelled:
            logger.info("job cancelled", extra={"job_id": job_id, "reason": reason})
        return cancelled

    def _set_state_where(self, job_id: int, states: Iterable[str], **values: Any) -> bool:
        statement = update(JOB).where(JOB.c.id == job_id, JOB.c.state.in_(list(states))).values(**values)
        with self.engine.begin() as connection:
            return connection.execute(statement).rowcount == 1

    # ---- worker side ---------------------------------------------------------------------

    def _running_values(self, worker_id: str, lease_s: float) -> dict[str, Any]:
        now = self.clock()
        return {
            "state": JobState.RUNNING.value,
            "worker_id": worker_id,
            "attempts": JOB.c.attempts + 1,
            "started_at": now,
            "heartbeat_at": now,
            "lease_expires_at": now + timedelta(seconds=lease_s),
        }

    def claim_next(self, worker_id: str, lease_s: float) -> JobRecord | None:
        """Atomically take the next due queued job (STAT first, then oldest); None if there is none.

        One statement: ``UPDATE job SET state='running', ... WHERE id = (SELECT id ...
        ORDER BY priority, created_at LIMIT 1 [FOR UPDATE SKIP LOCKED]) AND
        state='queued' RETURNING id``. SQLite runs it under its single write lock;
        PostgreSQL's ``SKIP LOCKED`` lets concurrent claimers take different rows.
        """
        now = self.clock()
        candidate = (
            select(JOB.c.id)
            .where(JOB.c.state == JobState.QUEUED.value, JOB.c.next_attempt_at <= now)
            .order_by(JOB.c.priority, JOB.c.created_at, JOB.c.id)
            .limit(1)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        statement = (
            update(JOB)
            .where(JOB.c.id == candidate, JOB.c.state == JobState.QUEUED.value)
            .values(**self._running_values(worker_id, lease_s))
            .returning(JOB.c.id)
        )
        with self.engine.begin() as connection:
            job_id = connection.execute(statement).scalar()
        if job_id is None:
            return None
        job = self.get(job_id)
        logger.info("job claimed", extra=_log_fields(job, worker_id=worker_id))
        return job

    def claim(self, job_id: int, worker_id: str, lease_s: float) -> ClaimResult:
        """Atomically take job ``job_id`` if it is queued and due (the Celery task's claim)."""
        now = self.clock()
        statement = (
            update(JOB)
            .where(JOB.c.id == job_id, JOB.c.state == JobState.QUEUED.value, JOB.c.next_attempt_at <= now)
            .values(**self._running_values(worker_id, lease_s))
        )
        with self.engine.begin() as connection:
            claimed = connection.execute(statement).rowcount == 1
        job = self.get(job_id)
        if claimed:
            logger.info("job claimed", extra=_log_fields(job, worker_id=worker_id))
            return ClaimResult(ClaimStatus.CLAIMED, job)
        if job is None:
            return ClaimResult(ClaimStatus.MISSING)
        if job.state.final:
            return ClaimResult(ClaimStatus.FINISHED, job)
        if job.state is JobState.RUNNING:
            return ClaimResult(ClaimStatus.BUSY, job)
        return ClaimResult(ClaimStatus.NOT_DUE, job, due_in_s=max(0.0, (job.next_attempt_at - now).total_seconds()))

    def heartbeat(self, job_id: int, worker_id: str, lease_s: float) -> bool:
        """Renew the caller's lease; False when the job is no longer running under it."""
        now = self.clock()
        statement = (
            update(JOB)
            .where(JOB.c.id == job_id, JOB.c.state == JobState.RUNNING.value, JOB.c.worker_id == worker_id)
            .values(heartbeat_at=now, lease_expires_at=now + timedelta(seconds=lease_s))
        )
        with self.engine.begin() as connection:
            return connection.execute(statement).rowcount == 1

    def complete(self, job_id: int, worker_id: str, output: JobOutput, *, on_record: RecordHook | None = None) -> bool:
        """Record ``output`` as the job's one result set and mark it done, in one transaction.

        This is the "record the result" step of every backend. The ``result_set`` row
        is inserted first (UNIQUE job_id and idempotency_key), then the job is marked
        done if it is still open; either failing rolls the whole transaction back.

        Parameters
        ----------
        job_id, worker_id
            The job, and the worker that produced ``output``.
        output
            The runner's output.
        on_record
            Called as ``on_record(session, job, output)`` inside the same transaction,
            after the job was marked done: rows it adds (e.g. outbox deliveries) are
            committed together with the result set, or not at all.

        Returns
        -------
        bool
            True if this call recorded the result set. False if one was already
            recorded (the UNIQUE constraint refused a second), or the job is no
            longer open (cancelled or failed): discard ``output``.

        Raises
        ------
        KeyError
            If there is no job ``job_id``.
        """
        job = self.get(job_id)
        if job is None:
            raise KeyError(f"no job {job_id}")
        now = self.clock()
        payload = output.as_json()
        try:
            with self.sessions.begin() as session:
                # The INSERT comes first: it takes SQLite's write lock, or PostgreSQL's unique
                # index entry, so the second of two finishing workers waits here and then fails.
                session.add(
                    ResultSet(
                        job_id=job_id,
                        idempotency_key=job.idempotency_key,
                        worker_id=worker_id,
                        created_at=now,
                        sop_instance_uids=payload["sop_instance_uids"],
                    )
                )
                try:
                    session.flush()
                except IntegrityError:
                    raise _AlreadyRecorded() from None
                marked = session.execute(
                    update(JOB)
                    .where(JOB.c.id == job_id, JOB.c.state.in_(OPEN_STATES))
                    .values(
                        state=JobState.DONE.value,
                        finished_at=now,
                        result=payload,
                        error=None,
                        error_kind=None,
                        lease_expires_at=None,
                        worker_id=worker_id,
                    )
                ).rowcount
                if marked != 1:
                    raise _JobClosed()
                if on_record is not None:
                    on_record(session, job, output)
        except _AlreadyRecorded:
            logger.warning("result set already recorded by another worker; output discarded", extra=_log_fields(job, worker_id=worker_id))
            return False
        except _JobClosed:
            current = self.get(job_id)
            logger.warning(
                "job is no longer open; output discarded", extra=_log_fields(job, worker_id=worker_id, state=current.state.value)
            )
            return False
        logger.info("job done", extra=_log_fields(job, worker_id=worker_id, results=len(payload["sop_instance_uids"])))
        return True

    def fail(self, job_id: int, worker_id: str, error: str, kind: ErrorKind) -> JobRecord | None:
        """Record a failed attempt: re-queue it after a backoff delay, or fail the job.

        A transient error with attempts left puts the job back in the queue, due
        after :attr:`retry`'s delay; a permanent error, a timeout or the last attempt
        fails it. The stored message is written for a PACS administrator.

        Returns
        -------
        JobRecord or None
            The job after the change, or None if it was no longer running under
            ``worker_id`` (cancelled, or taken over after a lease expiry): nothing changed.
        """
        job = self.get(job_id)
        if job is None or job.state is not JobState.RUNNING or job.worker_id != worker_id:
            logger.warning(
                "failure of a job this worker no longer runs ignored", extra={"job_id": job_id, "worker_id": worker_id, "error": error}
            )
            return None
        now = self.clock()
        retry = kind is ErrorKind.TRANSIENT and job.attempts < job.max_attempts
        if retry:
            delay = self.retry.delay_s(job.attempts)
            values = {
                "state": JobState.QUEUED.value,
                "next_attempt_at": now + timedelta(seconds=delay),
                "lease_expires_at": None,
                "error": retry_message(job, error, delay),
            }
        else:
            values = {
                "state": JobState.FAILED.value,
                "finished_at": now,
                "lease_expires_at": None,
                "error": failure_message(job, error, kind),
            }
        statement = (
            update(JOB)
            .where(JOB.c.id == job_id, JOB.c.state == JobState.RUNNING.value, JOB.c.worker_id == worker_id, JOB.c.attempts == job.attempts)
            .values(error_kind=kind.value, **values)
        )
        with self.engine.begin() as connection:
            if connection.execute(statement).rowcount != 1:
                return None
        updated = self.get(job_id)
        level = logging.WARNING if retry else logging.ERROR
        logger.log(
            level,
            "job attempt failed; retry scheduled" if retry else "job failed",
            extra=_log_fields(updated, worker_id=worker_id, error_kind=kind.value, error=error),
        )
        return updated

    def reap_expired(self, job_ids: Iterable[int] | None = None) -> ReapResult:
        """Deal with running jobs whose lease expired (their worker was killed or lost).

        Such a job goes back to the queue (due at once; its attempt stays counted),
        or fails when it has used all its attempts or ran past its time limit.
        Safe to run from every worker at once: each change is conditional on the
        lease still being expired under the same worker.
        """
        now = self.clock()
        query = select(Job).where(Job.state == JobState.RUNNING.value, Job.lease_expires_at < now)
        if job_ids is not None:
            query = query.where(Job.id.in_(list(job_ids)))
        with self.sessions() as session:
            expired = [to_record(job) for job in session.scalars(query.order_by(Job.id))]
        result = ReapResult(requeued=[], failed=[])
        for job in expired:
            self._reap_one(job, now, result, require_expired=True)
        return result

    def reap_dead_worker(self, worker_id: str) -> ReapResult:
        """Like :meth:`reap_expired`, at once, for the jobs of a worker known to be dead.

        The embedded pool calls it when one of its worker processes died (it saw the
        exit), without waiting for the lease to run out. Never call it for a worker
        that may still be running.
        """
        now = self.clock()
        query = select(Job).where(Job.state == JobState.RUNNING.value, Job.worker_id == worker_id)
        with self.sessions() as session:
            running = [to_record(job) for job in session.scalars(query.order_by(Job.id))]
        result = ReapResult(requeued=[], failed=[])
        for job in running:
            self._reap_one(job, now, result, require_expired=False)
        return result

    def _reap_one(self, job: JobRecord, now: datetime, result: ReapResult, *, require_expired: bool) -> None:
        elapsed = (now - job.started_at).total_seconds() if job.started_at else 0.0
        if elapsed >= job.timeout_s:
            kind, values = ErrorKind.TIMEOUT, {"state": JobState.FAILED.value, "finished_at": now, "error": timeout_message(job)}
        elif job.attempts >= job.max_attempts:
            kind, values = (
                ErrorKind.TRANSIENT,
                {"state": JobState.FAILED.value, "finished_at": now, "error": lost_worker_message(job, final=True)},
            )
        else:
            kind, values = (
                ErrorKind.TRANSIENT,
                {"state": JobState.QUEUED.value, "next_attempt_at": now, "error": lost_worker_message(job, final=False)},
            )
        statement = (
            update(JOB)
            .where(
                JOB.c.id == job.id, JOB.c.state == JobState.RUNNING.value, JOB.c.worker_id == job.worker_id, JOB.c.attempts == job.attempts
            )
            .values(lease_expires_at=None, error_kind=kind.value, **values)
        )
        if require_expired:
            statement = statement.where(JOB.c.lease_expires_at < now)
        with self.engine.begin() as connection:
            if connection.execute(statement).rowcount != 1:
                return
        updated = self.get(job.id)
        bucket = result.requeued if updated.state is JobState.QUEUED else result.failed
        bucket.append(updated)
        logger.warning(
            "worker lost: job %s",
            "re-queued" if updated.state is JobState.QUEUED else "failed",
            extra=_log_fields(updated, lost_worker_id=job.worker_id, error_kind=kind.value),
        )

    def release(self, worker_id: str) -> int:
        """Put the jobs running under ``worker_id`` back in the queue, their attempt not counted.

        For a worker stopped on purpose (shutdown) before it finished; returns how many.
        """
        statement = (
            update(JOB)
            .where(JOB.c.state == JobState.RUNNING.value, JOB.c.worker_id == worker_id)
            .values(
                state=JobState.QUEUED.value,
                attempts=JOB.c.attempts - 1,
                next_attempt_at=self.clock(),
                lease_expires_at=None,
                error="Interrupted by a worker shutdown; put back in the queue.",
                error_kind=ErrorKind.TRANSIENT.value,
            )
        )
        with self.engine.begin() as connection:
            count = connection.execute(statement).rowcount
        if count:
            logger.info("jobs of a stopped worker re-queued", extra={"worker_id": worker_id, "jobs": count})
        return count


class _JobClosed(Exception):
    """Raised inside :meth:`JobStore.complete` to roll back when the job is no longer open."""


class _AlreadyRecorded(Exception):
    """Raised inside :meth:`JobStore.complete` when the job's result set exists already."""


def _detail(error: str, *, sentence: bool = False) -> str:
    """``error`` on one line, ending with a full stop; capitalised when it starts a sentence."""
    text = " ".join(error.split()) or "no details were given"
    if sentence:
        text = text[:1].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."


def retry_message(job: JobRecord, error: str, delay_s: float) -> str:
    """The message of a transient failure that will be retried."""
    return (
        f"{job.analysis}: attempt {job.attempts} of {job.max_attempts} failed with a temporary problem; "
        f"it will be tried again in {delay_s:g} s. {_detail(error, sentence=True)}"
    )


def failure_message(job: JobRecord, error: str, kind: ErrorKind) -> str:
    """The final message of a failed job."""
    if kind is ErrorKind.TIMEOUT:
        return timeout_message(job)
    if kind is ErrorKind.TRANSIENT:
        return f"{job.analysis} failed {job.attempts} times with a temporary problem and was given up. Last error: {_detail(error)}"
    return f"{job.analysis} cannot process this series: {_detail(error)}"


def timeout_message(job: JobRecord) -> str:
    """``"lung_ct_quant exceeded its 600 s time limit and was stopped."``"""
    return f"{job.analysis} exceeded its {job.timeout_s:g} s time limit and was stopped."


def lost_worker_message(job: JobRecord, *, final: bool) -> str:
    """The message of a job whose worker stopped renewing its lease."""
    if final:
        return (
            f"{job.analysis} was started {job.attempts} times and each time its worker stopped responding "
            f"(killed, crashed or out of memory); it was given up. Last worker: {job.worker_id}."
        )
    return (
        f"The worker running {job.analysis} ({job.worker_id}) stopped responding (killed, crashed or cut off); "
        f"the job was put back in the queue."
    )
