"""One page of the worklist: filter, search and sort the archive's studies, with AI status, flags and reading state.

The ordering that matters most is the default, ``triage``: studies with a STAT priority
or a critical AI flag first (STAT before the others), then the newest. It is one SQL
statement over the study index (with EXISTS sub-queries on the flags and jobs), so the
first page costs the same with 10,000 studies as with 100; the page's own rows then get
their modalities, jobs and flags with one query each.

This is a read-only join over the archive's and the engine's tables: the worklist is the
one view that must sort on all of them together.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import date
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import Engine, and_, case, exists, func, or_, select
from sqlalchemy.orm import Session

from radpilot.archive.models import Patient, Series, Study
from radpilot.engine.jobs import ErrorKind, JobState
from radpilot.engine.jobs_models import AiFlag, Job
from radpilot.worklist.models import StudyReading

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
READING_STATES = ("unread", "in_progress", "read")
AI_STATES = ("queued", "running", "done", "failed", "not_applicable")
PRIORITIES = ("STAT", "HIGH", "ROUTINE", "MEDIUM", "LOW")
SORTS = ("triage", "date", "patient", "priority", "modality")
# Shown for one analysis when its jobs on the study's series disagree: the most pressing state wins.
_AI_PRECEDENCE = ("running", "queued", "failed", "done", "not_applicable")
_DATE = re.compile(r"^(\d{4})-?(\d{2})-?(\d{2})$")
_SEPARATOR = "\x1f"  # ASCII unit separator between the searched fields


class WorklistQueryError(ValueError):
    """A worklist parameter that cannot be used; the message names it and what is allowed."""


def _parse_date(value: str, name: str) -> str:
    value = value.strip()
    if not value:
        return ""
    match = _DATE.match(value)
    if match:
        try:
            date(*(int(g) for g in match.groups()))
            return "".join(match.groups())
        except ValueError:
            pass
    raise WorklistQueryError(f"{name} {value!r} is not a date (YYYY-MM-DD)")


@dataclass(frozen=True)
class WorklistQuery:
    """What the user asked for: a text search, filters, a sort and a page."""

    text: str = ""  # matches patient name, patient ID, accession number or study description, anywhere
    modality: str = ""
    reading: str = ""  # one of READING_STATES
    priority: str = ""  # one of PRIORITIES
    ai: str = ""  # one of AI_STATES: studies with a job in that state
    flagged: bool = False  # only studies with an AI flag
    date_from: str = ""
    date_to: str = ""
    sort: str = "triage"
    descending: bool = True
    limit: int = DEFAULT_PAGE_SIZE
    offset: int = 0
    identities: bool = True  # False for a researcher: the text search never looks at patient names or IDs

    def __post_init__(self) -> None:
        object.__setattr__(self, "text", "".join(ch for ch in self.text if ch.isprintable()).strip()[:128])
        object.__setattr__(self, "modality", self.modality.strip().upper()[:16])
        object.__setattr__(self, "priority", self.priority.strip().upper())
        for name, value, allowed in (
            ("reading", self.reading, READING_STATES),
            ("ai", self.ai, AI_STATES),
            ("priority", self.priority, PRIORITIES),
            ("sort", self.sort, SORTS),
        ):
            if value and value not in allowed:
                raise WorklistQueryError(f"{name} {value!r} is not one of {', '.join(allowed)}")
        if not 1 <= self.limit <= MAX_PAGE_SIZE:
            raise WorklistQueryError(f"limit must be between 1 and {MAX_PAGE_SIZE}, got {self.limit}")
        if self.offset < 0:
            raise WorklistQueryError(f"offset must not be negative, got {self.offset}")
        low, high = _parse_date(self.date_from, "date_from"), _parse_date(self.date_to, "date_to")
        if low and high and low > high:
            raise WorklistQueryError(f"date_from {self.date_from!r} is after date_to {self.date_to!r}")
        object.__setattr__(self, "date_from", low)
        object.__setattr__(self, "date_to", high)

    def query_string(self, **changes: Any) -> str:
        """This query as a URL query string, with ``changes``; defaults left out."""
        values = {**self.__dict__, **changes}
        defaults = WorklistQuery().__dict__
        out = {}
        for key, value in values.items():
            if key == "identities" or value == defaults[key] or value in ("", None):
                continue
            out[key] = ("1" if value else "0") if isinstance(value, bool) else value
        return urlencode(out)

    def page(self, offset: int) -> WorklistQuery:
        return replace(self, offset=max(0, offset))


@dataclass(frozen=True)
class AiStatus:
    analysis: str
    state: str  # one of AI_STATES
    detail: str = ""  # the error of a failed or not applicable job


@dataclass(frozen=True)
class Flag:
    analysis: str
    name: str
    label: str
    critical: bool
    value: float
    threshold: float


@dataclass
class WorklistRow:
    study_instance_uid: str
    patient_name: str
    patient_id: str
    accession_number: str
    study_description: str
    study_date: str
    study_time: str
    priority: str
    modalities: list[str] = field(default_factory=list)
    ai: list[AiStatus] = field(default_factory=list)
    flags: list[Flag] = field(default_factory=list)
    reading: str = "unread"
    claimed_by: str | None = None

    @property
    def stat(self) -> bool:
        return self.priority == "STAT"

    @property
    def critical(self) -> bool:
        return any(f.critical for f in self.flags)

    def as_json(self) -> dict[str, Any]:
        return {
            "study_instance_uid": self.study_instance_uid,
            "patient_name": self.patient_name,
            "patient_id": self.patient_id,
            "accession_number": self.accession_number,
            "study_description": self.study_description,
            "study_date": self.study_date,
            "study_time": self.study_time,
            "priority": self.priority or "ROUTINE",
            "stat": self.stat,
            "critical": self.critical,
            "modalities": self.modalities,
            "ai": [{"analysis": a.analysis, "state": a.state, "detail": a.detail} for a in self.ai],
            "flags": [f.__dict__ for f in self.flags],
            "reading": self.reading,
            "claimed_by": self.claimed_by,
        }


@dataclass
class WorklistPage:
    query: WorklistQuery
    rows: list[WorklistRow]
    total: int

    @property
    def next_offset(self) -> int | None:
        following = self.query.offset + self.query.limit
        return following if following < self.total else None

    @property
    def previous_offset(self) -> int | None:
        return max(0, self.query.offset - self.query.limit) if self.query.offset > 0 else None


def _priority_rank():  # noqa: ANN202 - a SQLAlchemy CASE expression
    return case(
        (Study.priority == "STAT", 0),
        (Study.priority == "HIGH", 1),
        (Study.priority == "MEDIUM", 3),
        (Study.priority == "LOW", 4),
        else_=2,  # ROUTINE or unstated
    )


def _critical():  # noqa: ANN202
    # IN over the (few) flagged studies, not a correlated EXISTS: both databases build the set once per query.
    return Study.study_instance_uid.in_(select(AiFlag.study_instance_uid).where(AiFlag.critical.is_(True)))


def _job_state_clause(state: str):  # noqa: ANN202
    if state == "not_applicable":
        condition = and_(Job.state == JobState.FAILED.value, Job.error_kind == ErrorKind.NOT_APPLICABLE.value)
    elif state == "failed":
        condition = and_(
            Job.state == JobState.FAILED.value, or_(Job.error_kind.is_(None), Job.error_kind != ErrorKind.NOT_APPLICABLE.value)
        )
    else:
        condition = Job.state == state
    return exists(select(Job.id).where(Job.study_instance_uid == Study.study_instance_uid, condition))


def _filters(query: WorklistQuery) -> list:
    clauses = []
    if query.text:
        pattern = "%" + query.text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        # One lower() over the fields joined by a separator nobody types: on SQLite lower() is a Python
        # function (it folds non-ASCII names too), so one call per study instead of one per field.
        fields = [Study.accession_number, Study.study_description]
        if query.identities:
            fields = [Patient.patient_name, Patient.patient_id, *fields]
        joined = fields[0]
        for field_ in fields[1:]:
            joined = joined + _SEPARATOR + field_
        haystack = func.lower(joined)
        clauses.append(haystack.like(pattern, escape="\\"))
    if query.modality:
        clauses.append(Study.id.in_(select(Series.study_fk).where(Series.modality == query.modality)))
    if query.reading:
        clauses.append(func.coalesce(StudyReading.status, "unread") == query.reading)
    if query.priority:
        clauses.append(Study.priority == query.priority if query.priority != "ROUTINE" else Study.priority.in_(("ROUTINE", "")))
    if query.ai:
        clauses.append(_job_state_clause(query.ai))
    if query.flagged:
        clauses.append(Study.study_instance_uid.in_(select(AiFlag.study_instance_uid)))
    if query.date_from:
        clauses.append(Study.study_date >= query.date_from)
    if query.date_to:
        clauses.append(Study.study_date <= query.date_to)
    if query.date_from or query.date_to:
        clauses.append(Study.study_date != "")
    return clauses


def _order(query: WorklistQuery) -> list:
    newest = [Study.study_date.desc(), Study.study_time.desc(), Study.id.desc()]
    if query.sort == "triage":
        urgent = case((or_(Study.priority == "STAT", _critical()), 0), else_=1)
        return [urgent, _priority_rank(), *newest]
    if query.sort == "date":
        return newest if query.descending else [Study.study_date, Study.study_time, Study.id]
    if query.sort == "patient":
        return [Patient.patient_name.desc() if query.descending else Patient.patient_name, *newest]
    if query.sort == "priority":
        # "descending" priority: the most urgent first.
        return [_priority_rank() if query.descending else _priority_rank().desc(), *newest]
    first_modality = select(func.min(Series.modality)).where(Series.study_fk == Study.id).scalar_subquery()
    return [first_modality.desc() if query.descending else first_modality, *newest]


def _ai_statuses(jobs: list[Any]) -> list[AiStatus]:
    """Per analysis, the state of its newest job on each series, the most pressing state shown (``jobs``: rows with Job's columns)."""
    newest: dict[tuple[str, str], Any] = {}
    for job in jobs:
        key = (job.analysis, job.series_instance_uid)
        if job.state == JobState.CANCELLED.value:
            continue
        if key not in newest or job.id > newest[key].id:
            newest[key] = job
    by_analysis: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for (analysis, _series), job in newest.items():
        state = job.state
        if state == JobState.FAILED.value and job.error_kind == ErrorKind.NOT_APPLICABLE.value:
            state = "not_applicable"
        by_analysis[analysis].append((state, job.error or ""))
    statuses = []
    for analysis in sorted(by_analysis):
        entries = by_analysis[analysis]
        state = min((s for s, _ in entries), key=lambda s: _AI_PRECEDENCE.index(s) if s in _AI_PRECEDENCE else len(_AI_PRECEDENCE))
        detail = next((d for s, d in entries if s == state and d), "")
        statuses.append(AiStatus(analysis, state, detail))
    return statuses


def _row(study: Study, patient: Patient, reading: StudyReading | None) -> WorklistRow:
    return WorklistRow(
        study_instance_uid=study.study_instance_uid,
        patient_name=patient.patient_name,
        patient_id=patient.patient_id,
        accession_number=study.accession_number,
        study_description=study.study_description,
        study_date=study.study_date,
        study_time=study.study_time,
        priority=study.priority or "",
        reading=reading.status if reading else "unread",
        claimed_by=reading.claimed_by if reading else None,
    )


def worklist_page(engine: Engine, query: WorklistQuery) -> WorklistPage:
    """The page of studies ``query`` asks for, with everything a worklist row shows."""
    filters = _filters(query)
    # Two steps: the ids of the page, sorted over every matching study with only the joins the
    # filters and the sort need; then the page's 50 rows with everything they show.
    ids = select(Study.id)
    if query.text or query.sort == "patient":
        ids = ids.join(Patient, Patient.id == Study.patient_fk)
    if query.reading:
        ids = ids.outerjoin(StudyReading, StudyReading.study_instance_uid == Study.study_instance_uid)
    count = ids.with_only_columns(func.count(Study.id)).where(*filters)
    page_ids = ids.where(*filters).order_by(*_order(query)).offset(query.offset).limit(query.limit)
    with Session(engine) as session:
        ordered = list(session.scalars(page_ids))
        # A short page is the last one: its total is known without counting again.
        short = len(ordered) < query.limit and (ordered or query.offset == 0)
        total = query.offset + len(ordered) if short else int(session.scalar(count) or 0)
        found = {
            study.id: (study, patient, reading)
            for study, patient, reading in session.execute(
                select(Study, Patient, StudyReading)
                .join(Patient, Patient.id == Study.patient_fk)
                .outerjoin(StudyReading, StudyReading.study_instance_uid == Study.study_instance_uid)
                .where(Study.id.in_(ordered))
            ).all()
        }
        rows = [_row(*found[study_id]) for study_id in ordered if study_id in found]
        _fill_details(session, [study_id for study_id in ordered if study_id in found], rows)
    return WorklistPage(query=query, rows=rows, total=total)


def _fill_details(session: Session, study_ids: list[int], rows: list[WorklistRow]) -> None:
    if not rows:
        return
    uids = [row.study_instance_uid for row in rows]
    modalities: dict[int, set[str]] = defaultdict(set)
    for study_fk, modality in session.execute(select(Series.study_fk, Series.modality).where(Series.study_fk.in_(study_ids))).all():
        if modality:
            modalities[study_fk].add(modality)
    jobs: dict[str, list[Any]] = defaultdict(list)
    # Only the columns shown: a job row also holds its input UIDs (JSON, hundreds for a CT series).
    job_columns = (Job.id, Job.study_instance_uid, Job.series_instance_uid, Job.analysis, Job.state, Job.error_kind, Job.error)
    for job in session.execute(select(*job_columns).where(Job.study_instance_uid.in_(uids))).all():
        jobs[job.study_instance_uid].append(job)
    flags: dict[str, list[Flag]] = defaultdict(list)
    flag_rows = session.scalars(select(AiFlag).where(AiFlag.study_instance_uid.in_(uids)).order_by(AiFlag.critical.desc(), AiFlag.id))
    for flag in flag_rows:
        flags[flag.study_instance_uid].append(Flag(flag.analysis, flag.name, flag.label, flag.critical, flag.value, flag.threshold))
    for study_id, row in zip(study_ids, rows):
        row.modalities = sorted(modalities[study_id])
        row.ai = _ai_statuses(jobs[row.study_instance_uid])
        row.flags = flags[row.study_instance_uid]


def worklist_row(engine: Engine, study_instance_uid: str) -> WorklistRow | None:
    """One study's worklist row, or None when the archive does not hold it."""
    statement = (
        select(Study, Patient, StudyReading)
        .join(Patient, Patient.id == Study.patient_fk)
        .outerjoin(StudyReading, StudyReading.study_instance_uid == Study.study_instance_uid)
        .where(Study.study_instance_uid == study_instance_uid)
    )
    with Session(engine) as session:
        found = session.execute(statement).first()
        if found is None:
            return None
        study, patient, reading = found
        row = _row(study, patient, reading)
        _fill_details(session, [study.id], [row])
    return row
