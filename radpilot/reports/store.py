"""Reports in the database: create from a template, edit, move through draft -> preliminary -> final -> amended.

Every change is audited (``radpilot.security.audit.record``, in the same transaction) and every
status change is a ``report_event`` row with who and when. A signed report (final or amended)
is read-only; amending it first keeps the signed version whole in ``report_version``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from radpilot.db import make_session_factory, utcnow
from radpilot.reports.findings import ReportFinding
from radpilot.reports.models import Report, ReportEvent, ReportVersion
from radpilot.reports.templates import SECTIONS, ReportTemplate, prefill
from radpilot.security.audit import record
from radpilot.security.principal import Principal, Role

logger = logging.getLogger(__name__)

DRAFT, PRELIMINARY, FINAL, AMENDED = "draft", "preliminary", "final", "amended"
STATUSES = (DRAFT, PRELIMINARY, FINAL, AMENDED)
SIGNED = (FINAL, AMENDED)
EDITABLE = (DRAFT, PRELIMINARY)
MAX_SECTION_CHARS = 20_000
READ_ROLES = (Role.RADIOLOGIST, Role.TECHNOLOGIST, Role.ADMINISTRATOR)


class ReportError(ValueError):
    """A request on a report that cannot be done; the message says why."""


class ReportNotFound(ReportError):
    pass


class IllegalTransition(ReportError):
    pass


class ReportLocked(ReportError):
    """The report is signed (final or amended) and therefore read-only."""


def _as_utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@dataclass(frozen=True)
class ReportView:
    """A detached snapshot of one report (what the API, the page and the outputs read)."""

    id: int
    study_instance_uid: str
    template: str
    status: str
    version: int
    sections: dict[str, str]
    ai_phrases: list[dict[str, Any]]
    findings: list[ReportFinding]
    created_by: str
    created_at: datetime
    updated_by: str
    updated_at: datetime
    signed_by: str | None
    signed_at: datetime | None
    amend_reason: str
    sr_sop_instance_uid: str | None

    @property
    def signed(self) -> bool:
        return self.status in SIGNED

    @property
    def pending_phrases(self) -> list[dict[str, Any]]:
        return [p for p in self.ai_phrases if p["state"] == "pending"]

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "study_instance_uid": self.study_instance_uid,
            "template": self.template,
            "status": self.status,
            "version": self.version,
            "read_only": self.signed,
            "sections": dict(self.sections),
            "ai_phrases": [dict(p) for p in self.ai_phrases],
            "findings": [f.to_json() for f in self.findings],
            "created_by": self.created_by,
            "created_at": self.created_at.isoformat(),
            "updated_by": self.updated_by,
            "updated_at": self.updated_at.isoformat(),
            "signed_by": self.signed_by,
            "signed_at": self.signed_at.isoformat() if self.signed_at else None,
            "amend_reason": self.amend_reason,
            "sr_sop_instance_uid": self.sr_sop_instance_uid,
        }


def _view(row: Report) -> ReportView:
    return ReportView(
        id=row.id,
        study_instance_uid=row.study_instance_uid,
        template=row.template,
        status=row.status,
        version=row.version,
        sections=dict(row.sections),
        ai_phrases=[dict(p) for p in row.ai_phrases or []],
        findings=[ReportFinding.from_json(f) for f in row.findings or []],
        created_by=row.created_by,
        created_at=_as_utc(row.created_at),  # type: ignore[arg-type]
        updated_by=row.updated_by,
        updated_at=_as_utc(row.updated_at),  # type: ignore[arg-type]
        signed_by=row.signed_by,
        signed_at=_as_utc(row.signed_at),
        amend_reason=row.amend_reason or "",
        sr_sop_instance_uid=row.sr_sop_instance_uid,
    )


def phrase_present(section_text: str, phrase_text: str) -> bool:
    return phrase_text in section_text


# Called inside the signing transaction with the signed report; queues its deliveries in that session
# (so signing and sending happen together) and returns the SOP Instance UID of its SR.
SignHook = Callable[[Session, ReportView], str | None]


class ReportStore:
    """The reports of the archive's database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.sessions = make_session_factory(engine)

    # ---- reads ---------------------------------------------------------------------------
    def get(self, report_id: int) -> ReportView:
        with self.sessions() as session:
            return _view(self._row(session, report_id))

    def for_study(self, study_uid: str) -> ReportView | None:
        """The study's report (the newest, should there be more than one)."""
        with self.sessions() as session:
            row = session.scalars(select(Report).where(Report.study_instance_uid == study_uid).order_by(Report.id.desc())).first()
            return _view(row) if row is not None else None

    def versions(self, report_id: int) -> list[dict[str, Any]]:
        """The signed versions an amendment kept, oldest first."""
        with self.sessions() as session:
            self._row(session, report_id)
            rows = session.scalars(select(ReportVersion).where(ReportVersion.report_id == report_id).order_by(ReportVersion.version))
            return [
                {
                    "version": v.version,
                    "status": v.status,
                    "sections": dict(v.sections),
                    "findings": list(v.findings or []),
                    "signed_by": v.signed_by,
                    "signed_at": _as_utc(v.signed_at).isoformat(),  # type: ignore[union-attr]
                    "sr_sop_instance_uid": v.sr_sop_instance_uid,
                }
                for v in rows
            ]

    def events(self, report_id: int) -> list[dict[str, Any]]:
        with self.sessions() as session:
            rows = session.scalars(select(ReportEvent).where(ReportEvent.report_id == report_id).order_by(ReportEvent.id))
            return [
                {
                    "at": _as_utc(e.at).isoformat(),  # type: ignore[union-attr]
                    "who": e.who,
                    "from": e.from_status,
                    "to": e.to_status,
                    "version": e.version,
                    "reason": e.reason,
                }
                for e in rows
            ]

    # ---- changes -------------------------------------------------------------------------
    def create(self, study_uid: str, template: ReportTemplate, findings: Sequence[ReportFinding], who: Principal) -> ReportView:
        """A new draft of ``template`` pre-filled from ``findings``; ReportError if the study already has an open report."""
        who.require(Role.RADIOLOGIST)
        if not study_uid or len(study_uid) > 64:
            raise ReportError("a report needs the Study Instance UID of its study (at most 64 characters)")
        filled = prefill(template, findings)
        now = utcnow()
        with self.sessions() as session, session.begin():
            existing = session.scalars(select(Report).where(Report.study_instance_uid == study_uid)).first()
            if existing is not None:
                raise ReportError(f"study {study_uid} already has report {existing.id} ({existing.status}); edit or amend that one")
            row = Report(
                study_instance_uid=study_uid,
                template=template.name,
                status=DRAFT,
                version=1,
                sections=filled.sections,
                ai_phrases=[p.to_json() for p in filled.phrases],
                findings=[f.to_json() for f in filled.quoted],
                created_by=who.name,
                created_at=now,
                updated_by=who.name,
                updated_at=now,
                amend_reason="",
            )
            session.add(row)
            session.flush()
            session.add(ReportEvent(report_id=row.id, version=1, at=now, who=who.name, from_status="", to_status=DRAFT, reason=""))
            record(
                session,
                who=who.name,
                action="report.create",
                target=f"report:{row.id}",
                details={"study": study_uid, "template": template.name, "ai_phrases": len(filled.phrases)},
            )
            view = _view(row)
        logger.info("report created", extra={"report": view.id, "study_instance_uid": study_uid, "template": template.name})
        return view

    def edit_section(self, report_id: int, section: str, text: str, who: Principal) -> ReportView:
        """Replace one section's text; AI phrases whose text the radiologist removed are dropped."""
        who.require(Role.RADIOLOGIST)
        if section not in SECTIONS:
            raise ReportError(f"unknown section {section!r}; the sections are {', '.join(SECTIONS)}")
        if not isinstance(text, str):
            raise ReportError("section text must be a string")
        if len(text) > MAX_SECTION_CHARS:
            raise ReportError(f"section {section!r} is {len(text)} characters; at most {MAX_SECTION_CHARS} are allowed")
        if "\x00" in text:
            raise ReportError("section text may not contain NUL characters")
        with self.sessions() as session, session.begin():
            row = self._editable(session, report_id)
            sections = dict(row.sections)
            sections[section] = text
            kept = [p for p in row.ai_phrases or [] if p["section"] != section or phrase_present(text, p["text"])]
            dropped = len(row.ai_phrases or []) - len(kept)
            row.sections, row.ai_phrases = sections, kept
            row.updated_by, row.updated_at = who.name, utcnow()
            record(
                session,
                who=who.name,
                action="report.edit",
                target=f"report:{row.id}",
                details={"section": section, "chars": len(text), "ai_phrases_removed": dropped, "version": row.version},
            )
            return _view(row)

    def accept_phrases(self, report_id: int, phrase_ids: Sequence[str] | None, who: Principal) -> ReportView:
        """Mark AI-sourced phrases accepted (all pending ones when ``phrase_ids`` is None)."""
        who.require(Role.RADIOLOGIST)
        with self.sessions() as session, session.begin():
            row = self._editable(session, report_id)
            phrases = [dict(p) for p in row.ai_phrases or []]
            known = {p["id"] for p in phrases}
            wanted = set(phrase_ids) if phrase_ids is not None else {p["id"] for p in phrases if p["state"] == "pending"}
            unknown = wanted - known
            if unknown:
                raise ReportError(f"report {report_id} has no AI phrase {sorted(unknown)}; it has {sorted(known) or 'none'}")
            for phrase in phrases:
                if phrase["id"] in wanted:
                    phrase["state"] = "accepted"
            row.ai_phrases = phrases
            row.updated_by, row.updated_at = who.name, utcnow()
            record(session, who=who.name, action="report.accept_ai", target=f"report:{row.id}", details={"phrases": sorted(wanted)})
            return _view(row)

    def transition(self, report_id: int, to_status: str, who: Principal, *, reason: str = "") -> ReportView:
        """Draft <-> preliminary. Signing (final, amended) goes through :meth:`sign`, amending through :meth:`amend`."""
        who.require(Role.RADIOLOGIST)
        if to_status not in STATUSES:
            raise IllegalTransition(f"unknown report status {to_status!r}; the statuses are {', '.join(STATUSES)}")
        if to_status in SIGNED:
            raise IllegalTransition(f"a report becomes {to_status} only by signing it (POST .../sign)")
        with self.sessions() as session, session.begin():
            row = self._editable(session, report_id)
            if row.status == to_status:
                raise IllegalTransition(f"report {report_id} is already {to_status}")
            self._move(session, row, to_status, who, reason)
            return _view(row)

    def as_signed(self, report_id: int, who: Principal, *, confirm: bool, signed_at: datetime) -> ReportView:
        """The report as it will read once ``who`` signs it at ``signed_at`` (nothing is changed); the errors of :meth:`sign`."""
        with self.sessions() as session:
            row = self._check_signable(session, report_id, who, confirm)
            view = _view(row)
        status = AMENDED if view.version > 1 else FINAL
        return replace(view, status=status, signed_by=who.name, signed_at=signed_at)

    def _check_signable(self, session: Session, report_id: int, who: Principal, confirm: bool) -> Report:
        who.require(Role.RADIOLOGIST)
        if confirm is not True:
            raise ReportError("signing needs confirmation: send confirm=true")
        row = self._editable(session, report_id)
        if not (row.sections.get("impression") or "").strip():
            raise ReportError("the impression is empty: a report is signed with an impression")
        pending = [p for p in row.ai_phrases or [] if p["state"] == "pending"]
        if pending:
            listed = "; ".join(f"{p['id']} {p['text']!r}" for p in pending[:5])
            raise ReportError(f"{len(pending)} AI-sourced phrase(s) are not yet accepted: {listed}")
        return row

    def sign(
        self, report_id: int, who: Principal, *, confirm: bool, on_sign: SignHook | None = None, signed_at: datetime | None = None
    ) -> ReportView:
        """Sign: final (first version) or amended (later versions); the report is read-only afterwards.

        Raises
        ------
        RoleRefused
            Unless ``who`` is a radiologist.
        ReportError
            Without confirmation, with an empty impression, or with AI-sourced phrases not yet accepted.
        """
        with self.sessions() as session, session.begin():
            row = self._check_signable(session, report_id, who, confirm)
            row.signed_by, row.signed_at = who.name, signed_at or utcnow()
            target = AMENDED if row.version > 1 else FINAL
            self._move(session, row, target, who, "")
            if on_sign is not None:
                row.sr_sop_instance_uid = on_sign(session, _view(row))
            record(
                session,
                who=who.name,
                action="report.sign",
                target=f"report:{row.id}",
                details={"version": row.version, "status": target, "sr": row.sr_sop_instance_uid},
            )
            view = _view(row)
        logger.info("report signed", extra={"report": view.id, "version": view.version, "status": view.status})
        return view

    def amend(self, report_id: int, who: Principal, *, reason: str) -> ReportView:
        """Open a signed report for amendment: its signed version is kept whole and a new draft version begins."""
        who.require(Role.RADIOLOGIST)
        if not isinstance(reason, str) or not reason.strip():
            raise ReportError("amending a signed report needs a reason")
        with self.sessions() as session, session.begin():
            row = self._row(session, report_id)
            if row.status not in SIGNED:
                raise IllegalTransition(f"report {report_id} is {row.status}: only a signed (final or amended) report is amended")
            session.add(
                ReportVersion(
                    report_id=row.id,
                    version=row.version,
                    status=row.status,
                    sections=dict(row.sections),
                    findings=list(row.findings or []),
                    signed_by=row.signed_by or "",
                    signed_at=row.signed_at or utcnow(),
                    sr_sop_instance_uid=row.sr_sop_instance_uid,
                )
            )
            row.version += 1
            row.amend_reason = reason.strip()[:2000]
            row.signed_by = row.signed_at = None
            self._move(session, row, DRAFT, who, reason.strip())
            record(
                session,
                who=who.name,
                action="report.amend",
                target=f"report:{row.id}",
                reason=reason.strip(),
                details={"version": row.version},
            )
            return _view(row)

    # ---- helpers ------------------------------------------------------------------------
    def _row(self, session: Session, report_id: int) -> Report:
        row = session.get(Report, report_id)
        if row is None:
            raise ReportNotFound(f"there is no report {report_id}")
        return row

    def _editable(self, session: Session, report_id: int) -> Report:
        row = self._row(session, report_id)
        if row.status not in EDITABLE:
            raise ReportLocked(f"report {report_id} is {row.status} (signed by {row.signed_by}) and read-only; amend it to change it")
        return row

    def _move(self, session: Session, row: Report, to_status: str, who: Principal, reason: str) -> None:
        now = utcnow()
        session.add(
            ReportEvent(
                report_id=row.id, version=row.version, at=now, who=who.name, from_status=row.status, to_status=to_status, reason=reason
            )
        )
        record(
            session,
            who=who.name,
            action="report.status",
            target=f"report:{row.id}",
            reason=reason,
            details={"from": row.status, "to": to_status, "version": row.version},
        )
        row.status = to_status
        row.updated_by, row.updated_at = who.name, now
