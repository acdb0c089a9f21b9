"""The table of research export jobs started from the web app (migration 0013).

A row is written when a researcher or administrator asks for an export (state ``queued``);
the server's export worker takes it (``running``), then records what it wrote (``done``) or
why it stopped (``failed``). A row left ``running`` by a server that stopped is marked
failed at the next start: its output folder may be incomplete.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from radpilot.db import Base, utcnow


class ResearchExportJob(Base):
    """One research export: who asked, what, where to, and how it went."""

    __tablename__ = "research_export_job"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    state: Mapped[str] = mapped_column(String(16), index=True, default="queued")
    requested_by: Mapped[str] = mapped_column(String(128), index=True)
    requested_role: Mapped[str] = mapped_column(String(32))
    query: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    profile: Mapped[str] = mapped_column(String(32), default="basic")
    options: Mapped[list[str]] = mapped_column(JSON, default=list)
    folder: Mapped[str] = mapped_column(String(64))  # a name under the configured export root, never a path
    write_instances: Mapped[bool] = mapped_column(Boolean, default=True)
    dicomweb_target: Mapped[str | None] = mapped_column(String(64), nullable=True)
    studies: Mapped[int] = mapped_column(Integer, default=0)
    instances: Mapped[int] = mapped_column(Integer, default=0)
    sent: Mapped[int] = mapped_column(Integer, default=0)
    refused: Mapped[int] = mapped_column(Integer, default=0)
    not_sent: Mapped[int] = mapped_column(Integer, default=0)
    labelled_findings: Mapped[int] = mapped_column(Integer, default=0)
    errors: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # The server running the job renews heartbeat_at; a running job whose heartbeat is older than
    # the lease belongs to a server that stopped, and any server may then mark it failed.
    claimed_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
