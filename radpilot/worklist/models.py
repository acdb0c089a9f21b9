"""The reading state of each study: unread, in progress (claimed by one radiologist) or read.

A study without a row is unread. The row's primary key is the Study Instance UID, so
the first claim of a study is an INSERT that only one of two racing radiologists can
win (the other gets the constraint violation), and a later claim is an UPDATE
conditional on the study being unclaimed; see :mod:`radpilot.worklist.reading`.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, String
from sqlalchemy.orm import Mapped, mapped_column

from radpilot.db import Base, utcnow


class StudyReading(Base):
    __tablename__ = "study_reading"

    study_instance_uid: Mapped[str] = mapped_column(String(64), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), default="unread", index=True)
    claimed_by: Mapped[str | None] = mapped_column(String(255), nullable=True)
    claimed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    read_by: Mapped[str | None] = mapped_column(String(255), nullable=True)
    read_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
