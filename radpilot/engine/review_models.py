"""Tables of the findings review: each radiologist decision, and each completed review.

Decisions are only ever added: a new decision on a finding supersedes the earlier one
(the latest by id counts), so the history of a finding is kept. Created by migration 0008.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from radpilot.db import Base, utcnow


class FindingDecision(Base):
    """One accept / edit / reject of one AI finding by one radiologist."""

    __tablename__ = "finding_decision"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_instance_uid: Mapped[str] = mapped_column(String(64), index=True)
    job_id: Mapped[int] = mapped_column(Integer, index=True)
    analysis: Mapped[str] = mapped_column(String(64), index=True)
    analysis_version: Mapped[str] = mapped_column(String(32))
    ai_sr_uid: Mapped[str] = mapped_column(String(64))
    finding_id: Mapped[str] = mapped_column(String(32), index=True)
    finding_name: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(16))
    decision: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text, default="")
    original: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    edited: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    decided_by: Mapped[str] = mapped_column(String(128))
    decided_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)


class ReviewCompletion(Base):
    """A finished review of one AI result: the verified SR written and queued for the study's destinations."""

    __tablename__ = "review_completion"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_instance_uid: Mapped[str] = mapped_column(String(64), index=True)
    job_id: Mapped[int] = mapped_column(Integer, index=True)
    ai_sr_uid: Mapped[str] = mapped_column(String(64), index=True)
    verified_sr_uid: Mapped[str] = mapped_column(String(64), default="")
    instance_number: Mapped[int] = mapped_column(Integer, default=1)
    destinations: Mapped[list[str]] = mapped_column(JSON, default=list)
    completed_by: Mapped[str] = mapped_column(String(128))
    completed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
