"""The worklist: the reading room's start page (``/ui/``), its JSON API, claims, and live updates.

* ``GET /ui/``: the worklist page (filters in the query string, see
  :class:`~radpilot.worklist.query.WorklistQuery`); ``GET /ui/worklist/rows`` the same
  table alone, which the page's script fetches again when something changed;
* ``GET /ui/events``: server-sent events (``study``, ``analysis``, ``reading``) from
  :class:`~radpilot.worklist.feed.WorklistFeed`, polled once a second;
* ``GET /api/worklist``: the page as JSON; ``POST /api/worklist/{uid}/claim``,
  ``/release``, ``/read``: a radiologist claims, gives back or finishes a study
  (409 naming the holder when someone else has it);
* ``GET /ui/lang/{code}``: switch the language (cookie) and go back.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, StreamingResponse

from radpilot.archive import Archive
from radpilot.security.principal import Role
from radpilot.web.i18n import LANGUAGE_COOKIE, LANGUAGES
from radpilot.web.reading_room import PAGE_HEADERS, TEMPLATES, page_context, principal_of, require_role
from radpilot.worklist.feed import WorklistFeed
from radpilot.worklist.query import (
    AI_STATES,
    DEFAULT_PAGE_SIZE,
    PRIORITIES,
    READING_STATES,
    SORTS,
    WorklistPage,
    WorklistQuery,
    WorklistQueryError,
    worklist_page,
)
from radpilot.worklist.reading import ClaimConflict, StudyNotFound, claim, mark_read, release

logger = logging.getLogger(__name__)

EVENT_POLL_S = 1.0
EVENT_KEEPALIVE_S = 15.0
# A stream ends after this long and the browser reconnects (EventSource does so by itself):
# no connection outlives a stopping server by more than a poll, and proxies never see one idle for ever.
EVENT_STREAM_MAX_S = 300.0


def study_url(study_instance_uid: str) -> str:
    """The study view: OHIF beside the findings panel (radpilot.web.review_pages)."""
    return f"/ui/studies/{quote(study_instance_uid, safe='')}/review"


def query_from_params(params: Any, *, identities: bool = True) -> WorklistQuery:
    """The worklist query stated by a query string; WorklistQueryError names a bad parameter."""

    def number(name: str, default: int) -> int:
        value = params.get(name, "")
        if value in ("", None):
            return default
        try:
            return int(value)
        except ValueError:
            raise WorklistQueryError(f"{name} {value!r} is not a whole number") from None

    return WorklistQuery(
        text=params.get("text", ""),
        modality=params.get("modality", ""),
        reading=params.get("reading", ""),
        priority=params.get("priority", ""),
        ai=params.get("ai", ""),
        flagged=params.get("flagged", "") in ("1", "true", "on"),
        date_from=params.get("date_from", ""),
        date_to=params.get("date_to", ""),
        sort=params.get("sort", "") or "triage",
        descending=params.get("descending", "1") not in ("0", "false"),
        limit=number("limit", DEFAULT_PAGE_SIZE),
        offset=number("offset", 0),
        identities=identities,
    )


def sees_identities(request: Request) -> bool:
    principal = principal_of(request)
    return principal is None or principal.sees_identities


def deidentify_rows(request: Request, page: WorklistPage) -> WorklistPage:
    """The page as the request's principal may see it: a researcher gets pseudonyms for patient name and ID."""
    if sees_identities(request):
        return page
    pseudonymizer = request.app.state.pseudonymizer
    for row in page.rows:
        real_id, real_name = row.patient_id, row.patient_name
        row.patient_id = pseudonymizer.patient_id(real_id, real_name)
        row.patient_name = pseudonymizer.patient_name(real_id, real_name)
    return page


def _date_input(value: str) -> str:
    return f"{value[:4]}-{value[4:6]}-{value[6:]}" if len(value) == 8 else value


def _table_context(request: Request, page: WorklistPage) -> dict[str, Any]:
    context = page_context(request, "worklist")
    principal = principal_of(request)
    context.update(page=page, study_url=study_url, can_claim=principal is not None and principal.role is Role.RADIOLOGIST)
    return context


def make_worklist_router(archive: Archive) -> APIRouter:
    """Routes of the worklist, under ``/ui`` and ``/api`` (include without a prefix)."""
    router = APIRouter()
    engine = archive.engine

    def run(request: Request) -> tuple[WorklistPage, str]:
        try:
            query = query_from_params(request.query_params, identities=sees_identities(request))
        except WorklistQueryError as exc:
            return WorklistPage(query=WorklistQuery(), rows=[], total=0), str(exc)
        return deidentify_rows(request, worklist_page(engine, query)), ""

    @router.get("/ui/", response_class=HTMLResponse, include_in_schema=False)
    def worklist(request: Request) -> HTMLResponse:
        page, error = run(request)
        context = _table_context(request, page)
        translate = context["t"]
        context.update(
            query=page.query,
            error=translate("error.bad_request", message=error) if error else "",
            priorities=PRIORITIES,
            reading_states=READING_STATES,
            ai_states=AI_STATES,
            sorts=SORTS,
            date_from=_date_input(page.query.date_from),
            date_to=_date_input(page.query.date_to),
            messages={
                **translate.messages("worklist."),
                **translate.messages("reading."),
            },
        )
        html = TEMPLATES.get_template("worklist.html").render(**context)
        return HTMLResponse(html, status_code=400 if error else 200, headers=PAGE_HEADERS)

    @router.get("/ui/worklist/rows", response_class=HTMLResponse, include_in_schema=False)
    def worklist_rows(request: Request) -> HTMLResponse:
        page, error = run(request)
        if error:
            raise HTTPException(400, error)
        html = TEMPLATES.get_template("worklist_table.html").render(**_table_context(request, page))
        return HTMLResponse(html, headers=PAGE_HEADERS)

    @router.get("/ui/lang/{code}", include_in_schema=False)
    def switch_language(code: str, next: str = "/ui/") -> RedirectResponse:  # noqa: A002 - the conventional name
        if code not in LANGUAGES:
            raise HTTPException(404, f"no language {code!r}; available: {', '.join(LANGUAGES)}")
        # Only a path on this server: "//host" and "/\\host" would leave it (browsers read a backslash as a slash).
        target = next if next.startswith("/") and not next.startswith(("//", "/\\")) and "\n" not in next else "/ui/"
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(LANGUAGE_COOKIE, code, max_age=365 * 24 * 3600, samesite="lax", httponly=True)
        return response

    @router.get("/ui/events", include_in_schema=False)
    async def events(request: Request) -> StreamingResponse:
        return StreamingResponse(
            _event_stream(request, WorklistFeed(engine)),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    @router.get("/api/worklist", tags=["reading room"])
    def worklist_json(request: Request) -> dict[str, Any]:
        """The worklist page as JSON (same query parameters as /ui/)."""
        try:
            query = query_from_params(request.query_params, identities=sees_identities(request))
        except WorklistQueryError as exc:
            raise HTTPException(400, str(exc)) from exc
        page = deidentify_rows(request, worklist_page(engine, query))
        return {
            "studies": [row.as_json() for row in page.rows],
            "total": page.total,
            "limit": query.limit,
            "offset": query.offset,
            "next_offset": page.next_offset,
        }

    def reading_action(request: Request, study_instance_uid: str, action: str) -> dict[str, Any]:
        principal = require_role(request, Role.RADIOLOGIST, Role.ADMINISTRATOR)
        try:
            if action == "claim":
                require_role(request, Role.RADIOLOGIST)
                state = claim(engine, study_instance_uid, principal)
            elif action == "release":
                state = release(engine, study_instance_uid, principal)
            else:
                require_role(request, Role.RADIOLOGIST)
                state = mark_read(engine, study_instance_uid, principal)
        except StudyNotFound as exc:
            raise HTTPException(404, str(exc)) from exc
        except ClaimConflict as exc:
            raise HTTPException(409, str(exc)) from exc
        return state.as_json()

    @router.post("/api/worklist/{study_instance_uid}/claim", tags=["reading room"])
    def claim_study(request: Request, study_instance_uid: str) -> dict[str, Any]:
        """Claim a study for reading (radiologists); 409 names who holds it."""
        return reading_action(request, study_instance_uid, "claim")

    @router.post("/api/worklist/{study_instance_uid}/release", tags=["reading room"])
    def release_study(request: Request, study_instance_uid: str) -> dict[str, Any]:
        """Give a claimed study back (its holder, or an administrator)."""
        return reading_action(request, study_instance_uid, "release")

    @router.post("/api/worklist/{study_instance_uid}/read", tags=["reading room"])
    def read_study(request: Request, study_instance_uid: str) -> dict[str, Any]:
        """Mark a study one holds as read."""
        return reading_action(request, study_instance_uid, "read")

    return router


def _sse(event: str, data: dict[str, Any], event_id: int | None = None) -> str:
    lines = [f"event: {event}"]
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.append("data: " + json.dumps(data, separators=(",", ":")))
    return "\n".join(lines) + "\n\n"


async def _event_stream(request: Request, feed: WorklistFeed) -> AsyncIterator[str]:
    stopping = getattr(request.app.state, "stopping", None)
    started = last_sent = time.monotonic()
    counter = 0
    yield "retry: 2000\n\n"
    await asyncio.to_thread(feed.poll)  # the first look only takes the watermarks
    yield _sse("ready", {})
    while time.monotonic() - started < EVENT_STREAM_MAX_S:
        await asyncio.sleep(EVENT_POLL_S)
        if (stopping is not None and stopping.is_set()) or await request.is_disconnected():
            return
        try:
            changes = await asyncio.to_thread(feed.poll)
        except Exception:  # a database hiccup must not end every browser's stream; the next poll retries
            logger.exception("worklist change feed failed")
            continue
        for change in changes:
            counter += 1
            yield _sse(change.kind, change.as_json(), counter)
            last_sent = time.monotonic()
        if time.monotonic() - last_sent > EVENT_KEEPALIVE_S:
            yield ": keep-alive\n\n"
            last_sent = time.monotonic()
