"""Claiming a study for reading, releasing it, marking it read: atomic and audited.

A claim is one conditional UPDATE (``... WHERE claimed_by IS NULL``) on the study's
``study_reading`` row, which is first created unclaimed if missing (an INSERT that
ignores a conflict). Two radiologists claiming at once therefore meet in the database:
on SQLite the writes are serialised, on PostgreSQL the second UPDATE waits for the
first and then finds the row claimed; exactly one sees one row changed and wins.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from radpilot.archive.models import Study
from radpilot.db import utcnow
from radpilot.security.audit import record
from radpilot.security.principal import Principal, Role
from radpilot.worklist.models import StudyReading

logger = logging.getLogger(__name__)


class StudyNotFound(LookupError):
    """The archive holds no study with that UID."""


class ClaimConflict(RuntimeError):
    """Another radiologist holds the study; the message names them."""

    def __init__(self, study_instance_uid: str, holder: str | None) -> None:
        self.holder = holder
        super().__init__(
            f"study {study_instance_uid} is being read by {holder}" if holder else f"study {study_instance_uid} is not claimed"
        )


@dataclass(frozen=True)
class ReadingState:
    study_instance_uid: str
    status: str
    claimed_by: str | None
    claimed_at: datetime | None
    read_by: str | None
    read_at: datetime | None

    def as_json(self) -> dict:
        return {
            "study_instance_uid": self.study_instance_uid,
            "status": self.status,
            "claimed_by": self.claimed_by,
            "claimed_at": self.claimed_at.isoformat() if self.claimed_at else None,
            "read_by": self.read_by,
            "read_at": self.read_at.isoformat() if self.read_at else None,
        }


def _ensure_row(session: Session, study_instance_uid: str) -> None:
    if session.scalar(select(Study.id).where(Study.study_instance_uid == study_instance_uid)) is None:
        raise StudyNotFound(f"study {study_instance_uid} is not in the archive")
    dialect = session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    session.execute(
        insert(StudyReading)
        .values(study_instance_uid=study_instance_uid, status="unread", updated_at=utcnow())
        .on_conflict_do_nothing(index_elements=["study_instance_uid"])
    )


def reading_state(engine: Engine, study_instance_uid: str) -> ReadingState:
    with Session(engine) as session:
        row = session.get(StudyReading, study_instance_uid)
        if row is None:
            return ReadingState(study_instance_uid, "unread", None, None, None, None)
        return ReadingState(row.study_instance_uid, row.status, row.claimed_by, row.claimed_at, row.read_by, row.read_at)


def claim(engine: Engine, study_instance_uid: str, principal: Principal) -> ReadingState:
    """Claim the study for ``principal`` (a radiologist); claiming one's own claim again changes nothing.

    Raises
    ------
    RoleRefused
        When the principal is not a radiologist.
    StudyNotFound
        When the archive holds no such study.
    ClaimConflict
        When another radiologist holds it.
    """
    principal.require(Role.RADIOLOGIST)
    with Session(engine) as session, session.begin():
        _ensure_row(session, study_instance_uid)
    now = utcnow()
    with Session(engine) as session, session.begin():
        won = session.execute(
            update(StudyReading)
            .where(StudyReading.study_instance_uid == study_instance_uid, StudyReading.claimed_by.is_(None))
            .values(status="in_progress", claimed_by=principal.name, claimed_at=now, updated_at=now)
        ).rowcount
        if won == 1:
            record(session, who=principal.name, action="study.claim", target=study_instance_uid)
    state = reading_state(engine, study_instance_uid)
    if won != 1 and state.claimed_by != principal.name:
        raise ClaimConflict(study_instance_uid, state.claimed_by)
    if won == 1:
        logger.info("study claimed", extra={"study_instance_uid": study_instance_uid, "who": principal.name})
    return state


def release(engine: Engine, study_instance_uid: str, principal: Principal, *, reason: str = "") -> ReadingState:
    """Give the study back (unread again). Its holder may; an administrator may release anyone's claim, with a reason.

    Raises
    ------
    RoleRefused, StudyNotFound, ClaimConflict
        As :func:`claim`; ClaimConflict also when the study is not claimed at all.
    """
    principal.require(Role.RADIOLOGIST, Role.ADMINISTRATOR)
    now = utcnow()
    with Session(engine) as session, session.begin():
        _ensure_row(session, study_instance_uid)
        holder = session.scalar(select(StudyReading.claimed_by).where(StudyReading.study_instance_uid == study_instance_uid))
        condition = [StudyReading.study_instance_uid == study_instance_uid, StudyReading.claimed_by.is_not(None)]
        if principal.role is not Role.ADMINISTRATOR:
            condition.append(StudyReading.claimed_by == principal.name)
        changed = session.execute(
            update(StudyReading).where(*condition).values(status="unread", claimed_by=None, claimed_at=None, updated_at=now)
        ).rowcount
        if changed == 1:
            record(
                session, who=principal.name, action="study.release", target=study_instance_uid, reason=reason, details={"holder": holder}
            )
    if changed != 1:
        raise ClaimConflict(study_instance_uid, holder)
    return reading_state(engine, study_instance_uid)


def mark_read(engine: Engine, study_instance_uid: str, principal: Principal) -> ReadingState:
    """The holder finished reading: the study is read and no longer claimed.

    Raises
    ------
    RoleRefused, StudyNotFound
        As :func:`claim`.
    ClaimConflict
        When the principal does not hold the study (claim it first).
    """
    principal.require(Role.RADIOLOGIST)
    now = utcnow()
    with Session(engine) as session, session.begin():
        _ensure_row(session, study_instance_uid)
        changed = session.execute(
            update(StudyReading)
            .where(StudyReading.study_instance_uid == study_instance_uid, StudyReading.claimed_by == principal.name)
            .values(status="read", claimed_by=None, claimed_at=None, read_by=principal.name, read_at=now, updated_at=now)
        ).rowcount
        if changed == 1:
            record(session, who=principal.name, action="study.read", target=study_instance_uid)
        holder = session.scalar(select(StudyReading.claimed_by).where(StudyReading.study_instance_uid == study_instance_uid))
    if changed != 1:
        raise ClaimConflict(study_instance_uid, holder)
    return reading_state(engine, study_instance_uid)
