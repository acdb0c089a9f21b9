"""SQLAlchemy tables of the job queue: ``job`` and ``result_set``.

The engine owns them; they are declared on :class:`radpilot.db.Base`, and the
one Alembic chain (``radpilot/db/migrations``, revision ``0002``) creates them.

Times are stored in UTC. SQLite gives them back without a time zone;
:mod:`radpilot.engine.job_store` attaches UTC again.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from radpilot.db import Base, utcnow


class Job(Base):
    """One analysis of one set of input instances; see :mod:`radpilot.engine.jobs`."""

    __tablename__ = "job"
    __table_args__ = (
        # The claim query: queued jobs in priority order, oldest first.
        Index("ix_job_claim", "state", "priority", "created_at"),
        # The reaper: running jobs whose lease expired.
        Index("ix_job_lease", "state", "lease_expires_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(64), unique=True)
    analysis: Mapped[str] = mapped_column(String(64), index=True)
    analysis_version: Mapped[str] = mapped_column(String(32))
    study_instance_uid: Mapped[str] = mapped_column(String(64), index=True)
    series_instance_uid: Mapped[str] = mapped_column(String(64), index=True)
    input_sop_uids: Mapped[list[str]] = mapped_column(JSON)
    rule: Mapped[str] = mapped_column(String(128), default="")
    destinations: Mapped[list[str]] = mapped_column(JSON, default=list)
    priority: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    timeout_s: Mapped[float] = mapped_column(Float)
    worker_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    error_kind: Mapped[str | None] = mapped_column(String(16), nullable=True)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    supersedes_job_id: Mapped[int | None] = mapped_column(ForeignKey("job.id"), nullable=True)


class ResultSet(Base):
    """The one recorded output of a job.

    ``idempotency_key`` is UNIQUE: it is what makes "exactly one result set per
    input and analysis version" hold when two workers finish the same job.
    """

    __tablename__ = "result_set"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("job.id"), unique=True)
    idempotency_key: Mapped[str] = mapped_column(String(64), unique=True)
    worker_id: Mapped[str] = mapped_column(String(255), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    sop_instance_uids: Mapped[list[str]] = mapped_column(JSON, default=list)


class AiFlag(Base):
    """A flag a done job raised for its study (an output past a threshold the analysis' ``flags.yaml`` declares).

    Written in the transaction that records the job's result set, so a study's flags and its
    results appear together; a job that supersedes another takes that one's flags away.
    """

    __tablename__ = "ai_flag"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("job.id", ondelete="CASCADE"), index=True)
    study_instance_uid: Mapped[str] = mapped_column(String(64), index=True)
    analysis: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(64))
    label: Mapped[str] = mapped_column(String(128))
    critical: Mapped[bool] = mapped_column(Boolean, default=False)
    value: Mapped[float] = mapped_column(Float)
    threshold: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
