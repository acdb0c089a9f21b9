"""The outbox table: one row per result set or message waiting for (or delivered to) one destination.

``kind`` says how it travels: ``dicom`` (stored instances by C-STORE or STOW-RS, listed in
``sop_instance_uids``), ``hl7`` (an HL7 v2 message over MLLP) or ``fhir`` (a FHIR resource
POSTed to a FHIR server), the last two carrying their bytes in ``payload``.
"""

from __future__ import annotations

import json
from datetime import datetime

from sqlalchemy import DateTime, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from radpilot.db import Base, utcnow


class Delivery(Base):
    __tablename__ = "delivery"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    destination: Mapped[str] = mapped_column(String(64), index=True)
    sop_instance_uids: Mapped[str] = mapped_column(Text)  # JSON list
    job_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    state: Mapped[str] = mapped_column(String(16), default="pending", index=True)  # pending | done | failed
    kind: Mapped[str] = mapped_column(String(16), default="dicom")  # dicom | hl7 | fhir
    payload: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    max_attempts: Mapped[int | None] = mapped_column(Integer, nullable=True)  # None: retried until taken
    reference: Mapped[str] = mapped_column(String(128), default="", index=True)  # what it delivers, e.g. "report:12:v1"
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    last_error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # The front end attempting this delivery now, and until when its claim holds (migration 0012).
    claimed_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    claimed_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    @property
    def uids(self) -> list[str]:
        return json.loads(self.sop_instance_uids)
