"""The engine's web API: trigger analysis of a study, explain routing, list jobs and deliveries."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Query, Request

from radpilot.db import utcnow
from radpilot.engine.jobs import JobRecord, JobState, Priority
from radpilot.engine.pipeline import SeriesPlan, plan_study
from radpilot.security.principal import Role
from radpilot.web.auth import require_roles
from radpilot.web.params import RowId

router = APIRouter(prefix="/api", tags=["engine"])


def _engine(request: Request):  # noqa: ANN202
    engine = getattr(request.app.state, "engine", None)
    if engine is None:
        raise HTTPException(503, "the analysis engine is not running in this process")
    return engine


def job_json(job: JobRecord) -> dict[str, Any]:
    duration = (job.finished_at - job.started_at).total_seconds() if job.finished_at and job.started_at else None
    return {
        "id": job.id,
        "analysis": job.analysis,
        "version": job.analysis_version,
        "state": job.state.value,
        "priority": job.priority.name.lower(),
        "study_instance_uid": job.study_instance_uid,
        "series_instance_uid": job.series_instance_uid,
        "instances": len(job.input_sop_uids),
        "rule": job.rule,
        "destinations": list(job.destinations),
        "attempts": job.attempts,
        "created_at": job.created_at.isoformat(),
        "started_at": job.started_at.isoformat() if job.started_at else None,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
        "duration_s": round(duration, 2) if duration is not None else None,
        "error": job.error,
        "error_kind": job.error_kind.value if job.error_kind else None,
        "result": job.result,
        "supersedes_job_id": job.supersedes_job_id,
    }


def plan_json(plan: SeriesPlan) -> dict[str, Any]:
    decision = plan.decision
    return {
        "series_instance_uid": plan.series_instance_uid,
        "analyses": [{"analysis": a, "rule": r.name, "destinations": list(r.destinations)} for a, r in decision.analyses]
        if decision
        else [],
        "skipped_reason": plan.skipped_reason,
        "rules": [
            {"rule": e.rule, "matched": e.matched, "conditions": [{"ok": ok, "reason": why} for ok, why in e.reasons]}
            for e in (decision.explanations if decision else [])
        ],
        "jobs": [{"id": job_id, "created": created} for job_id, created in plan.jobs],
    }


@router.get("/jobs")
def list_jobs(request: Request, state: str | None = None, limit: int = Query(100, ge=1, le=1000)) -> list[dict[str, Any]]:
    engine = _engine(request)
    if state is not None and state not in {s.value for s in JobState}:
        raise HTTPException(400, f"unknown job state {state!r}; use one of {[s.value for s in JobState]}")
    return [job_json(job) for job in engine.queue.list(state=state, limit=limit)]


@router.get("/jobs/{job_id}")
def get_job(request: Request, job_id: RowId) -> dict[str, Any]:
    job = _engine(request).queue.get(job_id)
    if job is None:
        raise HTTPException(404, f"no job {job_id}")
    return job_json(job)


# Cancelling work and watching deliveries to the PACS are the administrator's; starting an analysis
# is also the radiologist's and technologist's (a re-read, a re-sent series). A researcher only reads.
ADMIN_ONLY = [require_roles(Role.ADMINISTRATOR)]
CLINICAL = [require_roles(Role.ADMINISTRATOR, Role.RADIOLOGIST, Role.TECHNOLOGIST)]


@router.post("/jobs/{job_id}/cancel", dependencies=ADMIN_ONLY)
def cancel_job(request: Request, job_id: RowId) -> dict[str, Any]:
    engine = _engine(request)
    if engine.queue.get(job_id) is None:
        raise HTTPException(404, f"no job {job_id}")
    return {"cancelled": engine.queue.cancel(job_id)}


@router.post("/studies/{study_uid}/analyze", dependencies=CLINICAL)
def analyze_study(request: Request, study_uid: str, priority: str = "routine", dry_run: bool = False) -> dict[str, Any]:
    engine = _engine(request)
    try:
        chosen = Priority.parse(priority)
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from exc
    if not engine.archive.instances_of(study_uid):
        raise HTTPException(404, f"study {study_uid} is not in the archive")
    queue = None if dry_run else engine.queue
    plans = plan_study(engine.archive, engine.rules, engine.analyses, study_uid, queue, priority_override=chosen)
    return {"study_instance_uid": study_uid, "dry_run": dry_run, "series": [plan_json(p) for p in plans]}


@router.get("/engine/detector", dependencies=ADMIN_ONLY)
def detector_status(request: Request) -> dict[str, Any]:
    """How far this node's study-complete detector has routed: a lag that keeps growing means it does not keep up."""
    engine = _engine(request)
    status = engine.detector.status()
    routed_up_to = status.routed_up_to
    return {
        "running": status.running,
        "quiet_period_s": status.quiet_period_s,
        "routed_up_to": routed_up_to.isoformat() if routed_up_to else None,
        "lag_s": round((utcnow() - routed_up_to).total_seconds(), 3) if routed_up_to else None,
        "last_pass_at": status.last_pass_at.isoformat() if status.last_pass_at else None,
        "last_pass_studies": status.last_pass_studies,
    }


@router.get("/deliveries", dependencies=ADMIN_ONLY)
def list_deliveries(request: Request, limit: int = Query(100, ge=1, le=1000)) -> list[dict[str, Any]]:
    return [
        {
            "id": d.id,
            "destination": d.destination,
            "instances": len(d.uids),
            "job_id": d.job_id,
            "state": d.state,
            "attempts": d.attempts,
            "next_attempt_at": d.next_attempt_at.isoformat(),
            "last_error": d.last_error,
            "delivered_at": d.delivered_at.isoformat() if d.delivered_at else None,
        }
        for d in _engine(request).outbox.all(limit)
    ]
