"""Audit every web access to patient data: DICOMweb, the reading-room pages, the API, the viewer.

One row per request after its answer, with the principal that authentication put on
the request (``request.state.principal``; "anonymous" where none), the client address
and the outcome from the status code. OHIF's static files and the pages' own assets are
not patient data and are not recorded.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from radpilot.security import audit

logger = logging.getLogger(__name__)

_STUDY = re.compile(r"/studies/([0-9.]+)")
_SEARCH = re.compile(r"/(studies|series|instances)/?$")


def classify(method: str, path: str) -> str | None:
    """The audit action of a request, or None for one that touches no patient data."""
    if path.startswith("/dicomweb/"):
        if method == "POST":
            return "dicomweb.stow"
        return "dicomweb.qido" if _SEARCH.search(path) else "dicomweb.wado"
    if path.startswith("/ui/static") or path.startswith("/api/docs") or path == "/api/openapi.json":
        return None
    if path.startswith("/ui"):
        return "web.page"
    if path.startswith("/api/"):
        return "web.api"
    if path.startswith("/viewer"):
        return "viewer"
    return None


def outcome_of(status: int) -> str:
    if status < 400:
        return "success"
    if status in (401, 403):
        return "refused"
    return "failure" if status < 500 else "error"


class AuditMiddleware:
    """Pure ASGI middleware (streams pass through untouched) that writes one audit row per patient-data request."""

    def __init__(self, app: ASGIApp, engine: Engine) -> None:
        self.app = app
        self.engine = engine

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        action = classify(scope["method"], scope["path"])
        if action is None:
            await self.app(scope, receive, send)
            return
        status = {"code": 500}

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            await run_in_threadpool(self._record, scope, action, status["code"])

    def _record(self, scope: Scope, action: str, status: int) -> None:
        state: dict[str, Any] = scope.get("state") or {}
        principal = state.get("principal")
        who = getattr(principal, "name", None) or "anonymous"
        path = scope["path"]
        study = _STUDY.search(path)
        client = scope.get("client")
        try:
            audit.record(
                self.engine,
                who=who,
                action=action,
                target=study.group(1) if study else path[:255],
                source=f"{client[0]}:{client[1]}" if client else "",
                outcome=outcome_of(status),
                details={
                    "method": scope["method"],
                    "path": path[:512],
                    "status": status,
                    "role": str(getattr(principal, "role", "") or ""),
                },
            )
        except Exception:  # noqa: BLE001 - the answer is already sent; the failure is logged loudly
            logger.exception("audit record failed", extra={"action": action, "path": path})
