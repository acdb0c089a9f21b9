"""The audit trail: who did what, to what, when, from where, with what outcome, and why.

One table, ``audit_event`` (migrations 0004 and 0011). Rows are only ever added; nothing in
RadPilot updates or deletes them. :func:`record` adds one in the caller's
session (so the audited change and its audit row commit together) or, given an
engine, in its own transaction.

The rows form a hash chain: each row carries a sequence number, the previous row's hash
and the SHA-256 of its own canonical content plus that hash; the one ``audit_chain_head``
row holds the last sequence number and hash. Appending locks the head row first (an
UPDATE, which takes SQLite's write lock and PostgreSQL's row lock), so concurrent writers
on either database extend one chain. :func:`verify_chain` recomputes it and names every
edited, inserted or deleted row.

Actions are dotted verbs, e.g. ``model.activate``, ``model.activate.override``,
``model.deactivate``.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Engine, Integer, String, Text, select, update
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
    seq: Mapped[int] = mapped_column(Integer, unique=True, index=True)
    outcome: Mapped[str] = mapped_column(String(16), default="success")
    source: Mapped[str] = mapped_column(String(255), default="")
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "seq": self.seq,
            "at": self.at.isoformat() if self.at else None,
            "who": self.who,
            "action": self.action,
            "target": self.target,
            "reason": self.reason,
            "details": dict(self.details or {}),
            "outcome": self.outcome,
            "source": self.source,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }


class AuditChainHead(Base):
    """The chain's last sequence number and hash (one row, id 1), and how far it was forwarded to syslog."""

    __tablename__ = "audit_chain_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(Integer)
    hash: Mapped[str] = mapped_column(String(64))
    forwarded_seq: Mapped[int] = mapped_column(Integer)


GENESIS = "0" * 64
OUTCOMES = ("success", "failure", "refused", "error")


def _canonical_at(value: datetime) -> str:
    # SQLite hands back naive datetimes and PostgreSQL aware ones: hash the UTC wall time.
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.isoformat(timespec="microseconds")


def chain_hash(event: AuditEvent, prev: str) -> str:
    """SHA-256 over the row's canonical content and the previous row's hash (the migration's copy must match)."""
    content = {
        "seq": event.seq,
        "at": _canonical_at(event.at),
        "who": event.who,
        "action": event.action,
        "target": event.target,
        "reason": event.reason or "",
        "details": dict(event.details or {}),
        "outcome": event.outcome,
        "source": event.source or "",
        "prev": prev,
    }
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


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
    outcome: str = "success",
    source: str = "",
) -> AuditEvent:
    """Add one audit event at the end of the chain; in ``where``'s transaction when it is a Session, else committed at once.

    ``outcome`` is one of success, failure, refused, error; ``source`` says from where
    (a network address, ``AE@host:port``, or ``cli``).

    Raises
    ------
    ValueError
        When ``who``, ``action`` or ``target`` is empty (an audit row must say who did what to what), or the outcome is unknown.
    """
    for name, value in (("who", who), ("action", action), ("target", target)):
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"audit event needs a non-empty {name!r}")
    if outcome not in OUTCOMES:
        raise ValueError(f"audit outcome {outcome!r} is not one of {', '.join(OUTCOMES)}")
    event = AuditEvent(
        who=who.strip()[:128],
        action=action.strip()[:64],
        target=target.strip()[:255],
        reason=reason or "",
        details=dict(details or {}),
        outcome=outcome,
        source=(source or "")[:255],
    )
    if isinstance(where, Session):
        _append(where, event)
        return event
    with Session(where, expire_on_commit=False) as session, session.begin():
        _append(session, event)
    return event


def _append(session: Session, event: AuditEvent) -> None:
    # Lock the head first: the UPDATE makes every other writer wait until this transaction ends.
    locked = session.execute(update(AuditChainHead).where(AuditChainHead.id == 1).values(seq=AuditChainHead.seq))
    if locked.rowcount == 0:  # type: ignore[attr-defined]
        raise RuntimeError("the audit chain head row is missing: the database was not migrated (revision 0011)")
    head = session.execute(select(AuditChainHead).where(AuditChainHead.id == 1).execution_options(populate_existing=True)).scalar_one()
    event.at = utcnow()
    event.seq = head.seq + 1
    event.prev_hash = head.hash
    event.hash = chain_hash(event, head.hash)
    head.seq, head.hash = event.seq, event.hash
    session.add(event)
    session.flush()


def events(engine: Engine, *, target: str | None = None, action_prefix: str | None = None, limit: int = 100) -> list[AuditEvent]:
    """The newest audit events first, optionally for one target and/or actions starting with a prefix."""
    query = select(AuditEvent).order_by(AuditEvent.at.desc(), AuditEvent.id.desc()).limit(limit)
    if target is not None:
        query = query.where(AuditEvent.target == target)
    if action_prefix is not None:
        query = query.where(AuditEvent.action.like(f"{action_prefix}%"))
    with Session(engine, expire_on_commit=False) as session:
        return list(session.scalars(query))


@dataclass
class ChainReport:
    """What :func:`verify_chain` found: the rows checked and one line per problem."""

    checked: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_chain(engine: Engine, batch: int = 5000) -> ChainReport:
    """Recompute the whole chain; name every edited, inserted or deleted row and a head that does not match."""
    report = ChainReport()
    prev_hash, expected_seq = GENESIS, 1
    with Session(engine) as session:
        head = session.get(AuditChainHead, 1)
        for event in _rows(session, batch):
            report.checked += 1
            if event.seq != expected_seq:
                kind = "deleted" if event.seq > expected_seq else "inserted or duplicated"
                report.problems.append(f"row seq {event.seq} (id {event.id}): expected seq {expected_seq}: rows {kind}")
            if event.prev_hash != prev_hash:
                report.problems.append(
                    f"row seq {event.seq} (id {event.id}): its previous hash does not match the row before it: a row was inserted or deleted before it"
                )
            if chain_hash(event, event.prev_hash) != event.hash:
                report.problems.append(f"row seq {event.seq} (id {event.id}): content does not match its hash: the row was edited")
            prev_hash, expected_seq = event.hash, event.seq + 1
        if head is None:
            report.problems.append("the chain head row is missing")
        elif head.seq != expected_seq - 1 or head.hash != prev_hash:
            report.problems.append(
                f"the chain head says seq {head.seq} but the last row is seq {expected_seq - 1}: rows at the end were deleted or added"
            )
    return report


def _rows(session: Session, batch: int) -> Iterator[AuditEvent]:
    last = None
    while True:
        query = select(AuditEvent).order_by(AuditEvent.seq, AuditEvent.id).limit(batch)
        if last is not None:
            query = query.where(AuditEvent.seq > last)
        rows = list(session.scalars(query))
        if not rows:
            return
        yield from rows
        last = rows[-1].seq
        session.expunge_all()


def events_since(engine: Engine, since: datetime | None = None) -> list[AuditEvent]:
    """Events in chain order, from ``since`` on (all when None)."""
    query = select(AuditEvent).order_by(AuditEvent.seq)
    if since is not None:
        query = query.where(AuditEvent.at >= since)
    with Session(engine, expire_on_commit=False) as session:
        return list(session.scalars(query))
