"""Research export jobs over HTTP: start one (202 with its id), watch its status, read its manifest and labels.

Only researchers and administrators; a researcher sees their own jobs, an administrator all.
Every request is audited by the audit middleware, and a start (or a refused start) also by
:mod:`radpilot.engine.research_exports`, which holds the rules; this module only translates HTTP.
A bad body is a 422 whose ``detail`` names the field, as FastAPI's own validation does.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from radpilot.engine.research_exports import ExportConflict, ExportRequest, ExportRequestError, ResearchExports
from radpilot.security.principal import Principal, Role, RoleRefused
from radpilot.web.auth import require_roles

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/api/research-exports", tags=["research"])
RESEARCH = (Role.RESEARCHER, Role.ADMINISTRATOR)
RESEARCHER_OR_ADMIN = require_roles(*RESEARCH)


class Destination(BaseModel):
    """Where the de-identified instances go: a folder under the export root, a configured DICOMweb target, or both."""

    model_config = ConfigDict(extra="forbid")

    folder: str | None = Field(default=None, max_length=64, description="A folder name (no path) under the export root")
    dicomweb: str | None = Field(default=None, max_length=64, description="The name of a configured research DICOMweb target")


class ExportBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: dict[str, str] = Field(description="Query keys selecting the studies, e.g. {'Modality': 'CT', 'StudyDate': '20260101-20261231'}")
    profile: str = Field(default="basic", max_length=32, description="PS3.15 E.1-1 Basic Profile")
    options: list[str] = Field(default_factory=list, max_length=16, description="Profile options, e.g. retain_longitudinal_modified_dates")
    destination: Destination


def _exports(request: Request) -> ResearchExports:
    return request.app.state.research_exports


def _field_error(field: str, message: str) -> JSONResponse:
    return JSONResponse({"detail": [{"loc": ["body", *field.split(".")], "msg": message, "type": "value_error"}]}, status_code=422)


def _own(principal: Principal, job: dict[str, Any] | None, job_id: int) -> dict[str, Any]:
    # Another researcher's job is answered like a missing one: its query is theirs.
    if job is None or (principal.role is not Role.ADMINISTRATOR and job["requested_by"] != principal.name):
        raise HTTPException(404, f"no research export {job_id}")
    return job


@router.post("", status_code=202)
def start_export(request: Request, body: ExportBody) -> Any:
    """Queue a research export; 202 with the job (poll its ``id``)."""
    principal = getattr(request.state, "principal", None)
    if not isinstance(principal, Principal):
        raise HTTPException(401, "sign in, or send 'Authorization: Bearer TOKEN'")
    wanted = ExportRequest(
        query=body.query,
        profile=body.profile,
        options=tuple(body.options),
        folder=body.destination.folder,
        dicomweb=body.destination.dicomweb,
    )
    try:
        return _exports(request).submit(principal, wanted)
    except RoleRefused as exc:
        raise HTTPException(403, str(exc)) from exc
    except ExportRequestError as exc:
        return _field_error(exc.field, str(exc))
    except ExportConflict as exc:
        raise HTTPException(409, str(exc)) from exc


@router.get("")
def list_exports(request: Request, limit: int = Query(100, ge=1, le=1000), principal: Principal = RESEARCHER_OR_ADMIN) -> list:
    return _exports(request).list(principal, limit)


@router.get("/{job_id}")
def get_export(request: Request, job_id: int, principal: Principal = RESEARCHER_OR_ADMIN) -> dict[str, Any]:
    return _own(principal, _exports(request).get(job_id), job_id)


def _file(request: Request, job_id: int, principal: Principal, name: str) -> FileResponse:
    exports = _exports(request)
    path = exports.output_file(_own(principal, exports.get(job_id), job_id), name)
    if path is None:
        raise HTTPException(404, f"research export {job_id} has no {name} (yet)")
    return FileResponse(path, media_type="application/json", filename=f"research-export-{job_id}-{name}")


@router.get("/{job_id}/manifest")
def get_manifest(request: Request, job_id: int, principal: Principal = RESEARCHER_OR_ADMIN) -> FileResponse:
    return _file(request, job_id, principal, "manifest.json")


@router.get("/{job_id}/labels")
def get_labels(request: Request, job_id: int, principal: Principal = RESEARCHER_OR_ADMIN) -> FileResponse:
    return _file(request, job_id, principal, "labels.json")
