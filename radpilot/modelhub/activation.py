"""Which version of a model (or analysis) may run: the activation state the engine obeys.

The acceptance gate (:mod:`radpilot.validation.gate`) decides whether a version may be
activated and writes the rows here; the engine only reads them, before it runs a job.
Keeping the table and its reads at this low layer lets the engine obey the gate
without depending on the validation workbench.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Engine, Index, Integer, String, Text, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from radpilot.db import Base, utcnow


class ModelNotActive(RuntimeError):
    """The engine may not use this model version: it was never activated, or another version is active."""


class ModelActivation(Base):
    """The activation state of one version of a model or analysis (one row per activation; migration 0004)."""

    __tablename__ = "model_activation"
    __table_args__ = (Index("ix_model_activation_subject", "subject", "version", "active"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subject: Mapped[str] = mapped_column(String(64))
    subject_kind: Mapped[str] = mapped_column(String(16), default="model")
    version: Mapped[str] = mapped_column(String(32))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    activated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    activated_by: Mapped[str] = mapped_column(String(128))
    gate_passed: Mapped[bool] = mapped_column(Boolean, default=False)
    override: Mapped[bool] = mapped_column(Boolean, default=False)
    reason: Mapped[str] = mapped_column(Text, default="")
    gate: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    audit_event_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    deactivated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    deactivated_by: Mapped[str | None] = mapped_column(String(128), nullable=True)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "subject": self.subject,
            "subject_kind": self.subject_kind,
            "version": self.version,
            "active": self.active,
            "activated_at": self.activated_at.isoformat() if self.activated_at else None,
            "activated_by": self.activated_by,
            "gate_passed": self.gate_passed,
            "override": self.override,
            "reason": self.reason,
            "audit_event_id": self.audit_event_id,
            "deactivated_at": self.deactivated_at.isoformat() if self.deactivated_at else None,
            "deactivated_by": self.deactivated_by,
        }


def active_activation(engine: Engine, subject: str, version: str | None = None) -> ModelActivation | None:
    """The current activation row of ``subject`` (of that version when given), or None."""
    query = (
        select(ModelActivation)
        .where(ModelActivation.subject == subject, ModelActivation.active.is_(True))
        .order_by(ModelActivation.activated_at.desc(), ModelActivation.id.desc())
    )
    if version is not None:
        query = query.where(ModelActivation.version == version)
    with Session(engine, expire_on_commit=False) as session:
        return session.scalars(query.limit(1)).first()


def activation_history(engine: Engine, subject: str | None = None) -> list[ModelActivation]:
    query = select(ModelActivation).order_by(ModelActivation.activated_at.desc(), ModelActivation.id.desc())
    if subject is not None:
        query = query.where(ModelActivation.subject == subject)
    with Session(engine, expire_on_commit=False) as session:
        return list(session.scalars(query))


def active_versions(session: Session, subject: str) -> list[ModelActivation]:
    """The active rows of ``subject``, in the caller's transaction (normally one)."""
    return list(session.scalars(select(ModelActivation).where(ModelActivation.subject == subject, ModelActivation.active.is_(True))))


def deactivate_rows(rows: list[ModelActivation], *, user: str, when: datetime) -> list[str]:
    """Mark ``rows`` inactive (by ``user`` at ``when``); returns them as ``subject@version``."""
    for row in rows:
        row.active, row.deactivated_at, row.deactivated_by = False, when, user
    return [f"{r.subject}@{r.version}" for r in rows]


def add_activation(session: Session, **fields: Any) -> ModelActivation:
    """A new active row for one version (the fields of :class:`ModelActivation`), flushed so it has its id."""
    row = ModelActivation(active=True, **fields)
    session.add(row)
    session.flush()
    return row


def require_active(engine: Engine, model_name: str, version: str) -> ModelActivation:
    """The activation of ``model_name`` ``version``; raises :class:`ModelNotActive` with a plain message otherwise."""
    row = active_activation(engine, model_name, version)
    if row is not None:
        return row
    other = active_activation(engine, model_name)
    if other is not None:
        raise ModelNotActive(f"{model_name} {version} is not active: version {other.version} is (activated by {other.activated_by})")
    raise ModelNotActive(
        f"{model_name} {version} has not been activated: run `radpilot models check {model_name} --version {version}` and "
        f"`radpilot models activate {model_name} --version {version}`"
    )
