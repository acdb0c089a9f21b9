"""Server-rendered reading-room pages under ``/ui``: the archive's study search (``/ui/archive/``).

The worklist, the start page at ``/ui/``, is :mod:`radpilot.web.worklist_pages`.

The pages use no JavaScript and no external assets; they are Jinja2 templates in
``radpilot/web/templates`` rendered with autoescaping (:mod:`radpilot.html`), so every
value taken from the archive or the request is escaped, and the responses carry a
Content-Security-Policy that allows only this origin.
"""

from __future__ import annotations

import logging
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from radpilot.archive import Archive
from radpilot.web.api import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    SearchError,
    StudyPage,
    StudySearch,
    format_date,
    search_studies,
)
from radpilot.web.deidentify import deidentified
from radpilot.web.reading_room import PAGE_HEADERS, TEMPLATES, page_context

logger = logging.getLogger(__name__)

WEB_DIR = Path(__file__).resolve().parent
STATIC_DIR = WEB_DIR / "static"


def _int_param(value: str | None, default: int, low: int, high: int) -> int:
    try:
        number = int(value) if value not in (None, "") else default
    except ValueError:
        return default
    return min(max(number, low), high)


def search_from_request(request: Request) -> StudySearch:
    """The study search stated by the page's query string (bad paging values fall back to defaults)."""
    params = request.query_params

    def text(name: str) -> str:
        return params.get(name, "").strip()[:128]

    return StudySearch(
        patient_name=text("patient_name"),
        patient_id=text("patient_id"),
        accession_number=text("accession_number"),
        study_description=text("study_description"),
        modality=text("modality"),
        date_from=text("date_from"),
        date_to=text("date_to"),
        limit=_int_param(params.get("limit"), DEFAULT_PAGE_SIZE, 1, MAX_PAGE_SIZE),
        offset=_int_param(params.get("offset"), 0, 0, 10**9),
    )


def _date_input_value(value: str) -> str:
    """A date as ``<input type=date>`` wants it (YYYY-MM-DD) when it is one."""
    return format_date(value.replace("-", "")) if value.replace("-", "").isdigit() else value


def render_study_list(request: Request, page: StudyPage, *, error: str = "", instance_count: int | None = None) -> str:
    """The whole archive search page, in the request's language."""
    search = page.search
    context = page_context(request, "archive")
    translate = context["t"]
    return TEMPLATES.get_template("study_list.html").render(
        **context,
        page=page,
        search=search,
        status=translate("archive.instances_archived", count=instance_count) if instance_count is not None else "",
        date_from=_date_input_value(search.date_from),
        date_to=_date_input_value(search.date_to),
        error=error,
    )


def make_pages_router(archive: Archive) -> APIRouter:
    """The ``/ui`` pages (mounted with prefix ``/ui``)."""
    router = APIRouter(include_in_schema=False)

    @router.get("")
    def ui_root() -> RedirectResponse:
        return RedirectResponse("/ui/", status_code=307)

    @router.get("/archive", include_in_schema=False)
    def archive_root() -> RedirectResponse:
        return RedirectResponse("/ui/archive/", status_code=307)

    @router.get("/archive/", response_class=HTMLResponse)
    def study_list(request: Request) -> HTMLResponse:
        """The study list, filtered by the query string."""
        search = search_from_request(request)
        try:
            page, error = search_studies(archive, search), ""
        except SearchError as exc:
            page, error = StudyPage(search=search), str(exc)
        deidentified(request, page.studies)
        html = render_study_list(request, page, error=error, instance_count=archive.instance_count())
        return HTMLResponse(html, status_code=400 if error else 200, headers=PAGE_HEADERS)

    return router


def static_files() -> StaticFiles:
    """The reading room's own static files (stylesheet), mounted at ``/ui/static``."""
    return StaticFiles(directory=STATIC_DIR)
