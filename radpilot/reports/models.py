"""The reports package's tables: ``report``, ``report_version`` and ``report_event`` (migration 0010).

A report row holds the working copy (sections, the AI-sourced phrases and the findings
quoted). Each signed version is kept whole in ``report_version`` before an amendment
changes anything, so an amended report never loses what was signed before. Every status
change is one ``report_event`` row with who and when.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from radpilot.db import Base, utcnow


class Report(Base):
    """The current version of one study's report."""

    __tablename__ = "report"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_instance_uid: Mapped[str] = mapped_column(String(64), index=True)
    template: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), index=True)
    version: Mapped[int] = mapped_column(Integer, default=1)
    sections: Mapped[dict[str, str]] = mapped_column(JSON)
    ai_phrases: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    findings: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)  # the findings it quotes
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_by: Mapped[str] = mapped_column(String(128))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    signed_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    signed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    amend_reason: Mapped[str] = mapped_column(Text, default="")
    sr_sop_instance_uid: Mapped[str | None] = mapped_column(String(64), nullable=True)


class ReportVersion(Base):
    """A signed version, kept unchanged once a later version amends it."""

    __tablename__ = "report_version"
    __table_args__ = (UniqueConstraint("report_id", "version", name="uq_report_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    report_id: Mapped[int] = mapped_column(ForeignKey("report.id"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    sections: Mapped[dict[str, str]] = mapped_column(JSON)
    findings: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    signed_by: Mapped[str] = mapped_column(String(128))
    signed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    sr_sop_instance_uid: Mapped[str | None] = mapped_column(String(64), nullable=True)
    kept_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ReportEvent(Base):
    """One status change (or creation) of a report: who, when, from which status to which."""

    __tablename__ = "report_event"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    report_id: Mapped[int] = mapped_column(ForeignKey("report.id"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    who: Mapped[str] = mapped_column(String(128))
    from_status: Mapped[str] = mapped_column(String(16), default="")
    to_status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text, default="")
