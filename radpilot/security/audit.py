"""The audit trail: who did what, to what, when and why.

One table, ``audit_event`` (migration 0004). Rows are only ever added; nothing in
RadPilot updates or deletes them. :func:`record` adds one in the caller's
session (so the audited change and its audit row commit together) or, given an
engine, in its own transaction.

Actions are dotted verbs, e.g. ``model.activate``, ``model.activate.override``,
``model.deactivate``.
"""

from __future__ import annotations

import getpass
import os
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Engine, Integer, String, Text, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from radpilot.db import Base, utcnow


class AuditEvent(Base):
    """One audited action."""

    __tablename__ = "audit_event"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    who: Mapped[str] = mapped_column(String(128), index=True)
    action: Mapped[str] = mapped_column(String(64), index=True)
    target: Mapped[str] = mapped_column(String(255), index=True)
    reason: Mapped[str] = mapped_column(Text, default="")
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": self.at.isoformat() if self.at else None,
            "who": self.who,
            "action": self.action,
            "target": self.target,
            "reason": self.reason,
            "details": dict(self.details or {}),
        }


def current_user() -> str:
    """The operating-system user running this process (for command-line actions without a named user)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return os.environ.get("USER", "unknown")


def record(
    where: Session | Engine,
    *,
    who: str,
    action: str,
    target: str,
    reason: str = "",
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    """Add one audit event; in ``where``'s transaction when it is a Session, else committed at once.

    Raises
    ------
    ValueError
        When ``who``, ``action`` or ``target`` is empty: an audit row must say who did what to what.
    """
    for name, value in (("who", who), ("action", action), ("target", target)):
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"audit event needs a non-empty {name!r}")
    event = AuditEvent(who=who.strip(), action=action.strip(), target=target.strip(), reason=reason or "", details=dict(details or {}))
    if isinstance(where, Session):
        where.add(event)
        where.flush()
        return event
    with Session(where, expire_on_commit=False) as session, session.begin():
        session.add(event)
    return event


def events(engine: Engine, *, target: str | None = None, action_prefix: str | None = None, limit: int = 100) -> list[AuditEvent]:
    """The newest audit events first, optionally for one target and/or actions starting with a prefix."""
    query = select(AuditEvent).order_by(AuditEvent.at.desc(), AuditEvent.id.desc()).limit(limit)
    if target is not None:
        query = query.where(AuditEvent.target == target)
    if action_prefix is not None:
        query = query.where(AuditEvent.action.like(f"{action_prefix}%"))
    with Session(engine, expire_on_commit=False) as session:
        return list(session.scalars(query))
