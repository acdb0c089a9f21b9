"""GET /api/monitoring: per analysis and version, daily counts, failure rate, processing time and key-output drift.

Include it in the app with ``app.include_router(monitoring_api.router)``; it reads the
archive's database (``request.app.state.archive.engine``). See
:mod:`radpilot.validation.monitoring` for the definitions.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Query, Request

from radpilot.security.principal import Role
from radpilot.validation.monitoring import monitoring_report
from radpilot.web.auth import require_roles

router = APIRouter(prefix="/api", tags=["monitoring"])


@router.get("/monitoring", dependencies=[require_roles(Role.ADMINISTRATOR, Role.RESEARCHER)])
def get_monitoring(
    request: Request,
    days: int = Query(30, ge=1, le=366, description="Window in days, ending now"),
    analysis: str | None = Query(None, description="Only this analysis"),
    version: str | None = Query(None, description="Only this analysis version"),
) -> dict[str, Any]:
    """Production monitoring against validation (see radpilot.validation.monitoring)."""
    archive = getattr(request.app.state, "archive", None)
    if archive is None:
        raise HTTPException(503, "no archive database in this process")
    return monitoring_report(archive.engine, days=days, analysis=analysis, version=version)
