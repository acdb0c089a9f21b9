"""The findings review API: a study's AI findings, the radiologist's decisions, completing the review, feedback.

The principal comes from ``request.state.principal`` (set by authentication); only a
radiologist decides, a radiologist or an administrator reads, and only an administrator
reads the feedback figures. State-changing requests are CSRF-checked by the
authentication middleware before they get here. The domain rules live in
:mod:`radpilot.engine.review`; this module only translates HTTP.
"""

from __future__ import annotations

import csv
import io
import logging
from typing import Any

import numpy as np
import pydicom
from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import Response
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from radpilot.engine.review import MAX_REASON_CHARS, ReviewError, ReviewService, UnknownFinding, review_feedback
from radpilot.security.principal import Principal, Role, RoleRefused

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/api", tags=["review"])

THUMBNAIL_PX = 256
CSV_COLUMNS = (
    "analysis",
    "version",
    "decided",
    "accepted",
    "edited",
    "rejected",
    "accept_rate",
    "edit_rate",
    "reject_rate",
    "top_rejection_reasons",
)


class DecisionBody(BaseModel):
    """One decision on one finding."""

    model_config = ConfigDict(extra="forbid")

    decision: str = Field(description="accept, edit or reject", max_length=16)
    reason: str = Field(default="", description="Required for edit and reject", max_length=MAX_REASON_CHARS)
    value: float | None = Field(default=None, description="An edited measurement's new value, in the finding's unit")
    category: str | None = Field(default=None, description="An edited qualitative finding's new category", max_length=32)


def principal_of(request: Request, *roles: Role) -> Principal:
    """The request's principal, holding one of ``roles``: 401 when nobody is signed in, 403 for another role."""
    principal = getattr(request.state, "principal", None)
    if not isinstance(principal, Principal):
        raise HTTPException(401, "sign in first")
    try:
        principal.require(*roles)
    except RoleRefused as exc:
        raise HTTPException(403, str(exc)) from exc
    return principal


def review_service(request: Request) -> ReviewService:
    archive = getattr(request.app.state, "archive", None)
    if archive is None:
        raise HTTPException(503, "no archive database in this process")
    settings = getattr(request.app.state, "settings", None)
    return ReviewService(archive, organisation=getattr(settings, "organisation", "RadPilot"))


@router.get("/studies/{study_uid}/review")
def get_review(request: Request, study_uid: str) -> dict[str, Any]:
    """The study's AI findings with their latest decisions, and the reviews completed so far."""
    principal_of(request, Role.RADIOLOGIST, Role.ADMINISTRATOR)
    return review_service(request).study(study_uid).to_dict()


@router.post("/studies/{study_uid}/findings/{finding_id}/decision")
def post_decision(request: Request, study_uid: str, finding_id: str, body: DecisionBody) -> dict[str, Any]:
    """Accept, edit (new value or category, with a reason) or reject (with a reason) one finding."""
    principal = principal_of(request, Role.RADIOLOGIST)
    try:
        item = review_service(request).decide(
            principal, study_uid, finding_id, body.decision, reason=body.reason, value=body.value, category=body.category
        )
    except UnknownFinding as exc:
        raise HTTPException(404, str(exc)) from exc
    except ReviewError as exc:
        raise HTTPException(400, str(exc)) from exc
    return item.to_dict()


@router.post("/studies/{study_uid}/review/complete")
def complete_review(request: Request, study_uid: str) -> dict[str, Any]:
    """Write the verified SR of each AI result and send it to the study's destinations."""
    principal = principal_of(request, Role.RADIOLOGIST)
    try:
        completed = review_service(request).complete(principal, study_uid)
    except ReviewError as exc:
        raise HTTPException(409 if "no decision yet" in str(exc) else 400, str(exc)) from exc
    return {"study_instance_uid": study_uid, "completed": completed}


@router.get("/studies/{study_uid}/key-images/{sop_uid}/thumbnail.png")
def key_image_thumbnail(request: Request, study_uid: str, sop_uid: str) -> Response:
    """A PNG thumbnail of one of the study's AI key images (no other instance is served here)."""
    principal_of(request, Role.RADIOLOGIST, Role.ADMINISTRATOR)
    service = review_service(request)
    if sop_uid not in {r.key_image_uid for r in service.results(study_uid)}:
        raise HTTPException(404, f"{sop_uid} is not an AI key image of study {study_uid}")
    instances = service.archive.instances_by_uid([sop_uid])
    if not instances:
        raise HTTPException(404, f"key image {sop_uid} is no longer in the archive")
    instance = instances[0]
    pixels = pydicom.dcmread(service.archive.path_of(instance)).pixel_array
    if pixels.dtype != np.uint8:
        low, high = float(pixels.min()), float(pixels.max())
        pixels = ((pixels - low) / max(high - low, 1.0) * 255).astype(np.uint8)
    image = Image.fromarray(pixels)
    image.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return Response(buffer.getvalue(), media_type="image/png", headers={"Cache-Control": "private, max-age=300"})


def feedback_rows(request: Request, days: int | None, analysis: str | None, version: str | None) -> list[dict[str, Any]]:
    principal_of(request, Role.ADMINISTRATOR)
    archive = getattr(request.app.state, "archive", None)
    if archive is None:
        raise HTTPException(503, "no archive database in this process")
    return [row.to_dict() for row in review_feedback(archive.engine, days=days, analysis=analysis, version=version)]


@router.get("/review/feedback")
def get_feedback(
    request: Request,
    days: int | None = Query(None, ge=1, le=3660, description="Only decisions of the last N days"),
    analysis: str | None = Query(None, max_length=64),
    version: str | None = Query(None, max_length=32),
) -> list[dict[str, Any]]:
    """Accept / edit / reject rates per analysis and version and the commonest rejection reasons."""
    return feedback_rows(request, days, analysis, version)


def feedback_csv(rows: list[dict[str, Any]]) -> str:
    """The feedback rows as CSV; a cell that a spreadsheet would run as a formula is prefixed with a quote."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        reasons = "; ".join(f"{r['reason']} ({r['count']})" for r in row["top_rejection_reasons"])
        cells = [*(row[c] for c in CSV_COLUMNS[:-1]), reasons]
        writer.writerow(["'" + c if isinstance(c, str) and c[:1] in ("=", "+", "-", "@") else ("" if c is None else c) for c in cells])
    return buffer.getvalue()


@router.get("/review/feedback.csv")
def get_feedback_csv(
    request: Request,
    days: int | None = Query(None, ge=1, le=3660),
    analysis: str | None = Query(None, max_length=64),
    version: str | None = Query(None, max_length=32),
) -> Response:
    """The feedback figures as a CSV download."""
    text = feedback_csv(feedback_rows(request, days, analysis, version))
    return Response(
        text, media_type="text/csv; charset=utf-8", headers={"Content-Disposition": 'attachment; filename="review_feedback.csv"'}
    )
