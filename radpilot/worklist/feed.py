"""What changed in the worklist since the last look: studies arriving, jobs starting or finishing, claims.

Instances reach RadPilot in this process or another ingest node, and jobs finish in
worker processes or on Celery workers on other machines; the database is the one
place all of them write. :class:`WorklistFeed` therefore compares a few cheap
watermarks (newest study id and study change time, newest job id, start and finish
times and the count of jobs per state, newest reading change) and, when one moved,
names the studies concerned. The web layer polls it about once a second and sends
what it finds to the browsers as server-sent events.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, func, or_, select
from sqlalchemy.orm import Session

from radpilot.archive.models import Study
from radpilot.engine.jobs_models import Job
from radpilot.worklist.models import StudyReading

MAX_EVENTS = 200  # beyond this many changed studies in one look, one "reload" event says so


@dataclass(frozen=True)
class Watermarks:
    study_id: int | None
    study_updated: Any
    job_id: int | None
    job_started: Any
    job_finished: Any
    job_states: tuple[tuple[str, int], ...]
    reading_updated: Any


@dataclass
class Change:
    kind: str  # "study", "analysis", "reading" or "reload"
    study_instance_uid: str = ""
    data: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "study_instance_uid": self.study_instance_uid, **self.data}


def _after(column: Any, mark: Any) -> Any:
    """Rows whose ``column`` moved past ``mark`` (any with a value when there was none)."""
    return column.is_not(None) if mark is None else column > mark


class WorklistFeed:
    """Changes since the previous :meth:`poll` (the first poll only takes the watermarks)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._marks: Watermarks | None = None

    def _watermarks(self, session: Session) -> Watermarks:
        study_id, study_updated = session.execute(select(func.max(Study.id), func.max(Study.updated_at))).one()
        job_id, started, finished = session.execute(select(func.max(Job.id), func.max(Job.started_at), func.max(Job.finished_at))).one()
        states = tuple(sorted((s, int(n)) for s, n in session.execute(select(Job.state, func.count(Job.id)).group_by(Job.state)).all()))
        reading = session.scalar(select(func.max(StudyReading.updated_at)))
        return Watermarks(study_id, study_updated, job_id, started, finished, states, reading)

    def poll(self) -> list[Change]:
        with Session(self.engine) as session:
            marks = self._watermarks(session)
            previous, self._marks = self._marks, marks
            if previous is None or previous == marks:
                return []
            changes: list[Change] = []
            if marks.study_id != previous.study_id or marks.study_updated != previous.study_updated:
                condition = or_(Study.id > (previous.study_id or 0), _after(Study.updated_at, previous.study_updated))
                statement = select(Study.study_instance_uid, Study.id).where(condition).limit(MAX_EVENTS + 1)
                for uid, study_id in session.execute(statement).all():
                    added = previous.study_id is None or study_id > previous.study_id
                    changes.append(Change("study", uid, {"change": "added" if added else "updated"}))
            if (marks.job_id, marks.job_started, marks.job_finished, marks.job_states) != (
                previous.job_id,
                previous.job_started,
                previous.job_finished,
                previous.job_states,
            ):
                condition = [
                    Job.id > (previous.job_id or 0),
                    _after(Job.started_at, previous.job_started),
                    _after(Job.finished_at, previous.job_finished),
                ]
                if marks.job_states != previous.job_states:
                    # A retried job loses its start and finish times: states moved, so look at the open jobs too.
                    condition.append(Job.state.in_(("queued", "running")))
                statement = (
                    select(Job.study_instance_uid, Job.analysis, Job.state).where(or_(*condition)).order_by(Job.id).limit(MAX_EVENTS + 1)
                )
                for uid, analysis, state in session.execute(statement).all():
                    changes.append(Change("analysis", uid, {"analysis": analysis, "state": state}))
            if marks.reading_updated != previous.reading_updated:
                statement = select(StudyReading.study_instance_uid, StudyReading.status, StudyReading.claimed_by).limit(MAX_EVENTS + 1)
                statement = statement.where(_after(StudyReading.updated_at, previous.reading_updated))
                for uid, status, holder in session.execute(statement).all():
                    changes.append(Change("reading", uid, {"status": status, "claimed_by": holder}))
        if len(changes) > MAX_EVENTS:
            return [Change("reload")]
        return changes
