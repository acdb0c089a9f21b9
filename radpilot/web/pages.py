"""Server-rendered reading-room pages under ``/ui``: the study list.

The pages use no JavaScript and no external assets; every value taken from the
archive or the request is HTML-escaped before it is written into the page, and
the responses carry a Content-Security-Policy that allows only this origin.
"""

from __future__ import annotations

import logging
from html import escape
from pathlib import Path
from string import Template
from typing import Any

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

logger = logging.getLogger(__name__)

WEB_DIR = Path(__file__).resolve().parent
TEMPLATES_DIR = WEB_DIR / "templates"
STATIC_DIR = WEB_DIR / "static"

PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def load_template(name: str) -> Template:
    """A page template from ``radpilot/web/templates`` (``$name`` placeholders)."""
    return Template((TEMPLATES_DIR / name).read_text(encoding="utf-8"))


def _e(value: Any) -> str:
    """HTML-escape any value (quotes included), None as empty."""
    return escape("" if value is None else str(value), quote=True)


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


def render_study_row(study: dict[str, Any]) -> str:
    """One ``<tr>`` of the study list."""
    name = study["patient_name_display"] or study["patient_name"] or "(no name)"
    description = study["study_description"]
    accession = study["accession_number"]
    cells = [
        f'<td>{_e(name)}</td>',
        f'<td>{_e(study["patient_id"])}</td>',
        f'<td>{_e(study["study_date"])}</td>',
        f'<td>{_e(description)}'
        + (f'<span class="uid">Accession {_e(accession)}</span>' if accession else "")
        + f'<span class="uid">{_e(study["study_instance_uid"])}</span></td>',
        f'<td>{_e(", ".join(study["modalities"]))}</td>',
        f'<td class="num">{_e(study["series_count"])}</td>',
        f'<td class="num">{_e(study["instance_count"])}</td>',
        f'<td><a class="open" href="{_e(study["viewer_url"])}">Open in viewer</a></td>',
    ]
    return "<tr>" + "".join(cells) + "</tr>"


def render_rows(page: StudyPage) -> str:
    """The table body: one row per study, or a single row saying nothing matched."""
    if not page.studies:
        return '<tr><td class="empty" colspan="8">No studies match.</td></tr>'
    return "\n".join(render_study_row(s) for s in page.studies)


def render_pager(page: StudyPage) -> str:
    """Previous/next links for the current search."""
    search = page.search
    parts = []
    if page.previous_offset is not None:
        parts.append(f'<a href="/ui/?{_e(search.query_string(offset=page.previous_offset))}">&larr; Previous</a>')
    if page.studies:
        first = search.offset + 1
        parts.append(f"<span>Studies {first}&ndash;{search.offset + len(page.studies)}</span>")
    if page.next_offset is not None:
        parts.append(f'<a href="/ui/?{_e(search.query_string(offset=page.next_offset))}">Next &rarr;</a>')
    return "".join(parts)


def _date_input_value(value: str) -> str:
    """A date as ``<input type=date>`` wants it (YYYY-MM-DD) when it is one."""
    return format_date(value.replace("-", "")) if value.replace("-", "").isdigit() else value


def render_study_list(page: StudyPage, *, error: str = "", instance_count: int | None = None) -> str:
    """The whole study-list page."""
    search = page.search
    status = f"{instance_count} instances archived" if instance_count is not None else ""
    return load_template("study_list.html").substitute(
        status=_e(status),
        patient_name=_e(search.patient_name),
        patient_id=_e(search.patient_id),
        date_from=_e(_date_input_value(search.date_from)),
        date_to=_e(_date_input_value(search.date_to)),
        modality=_e(search.modality),
        error=f'<p class="error" role="alert">{_e(error)}</p>' if error else "",
        rows=render_rows(page),
        pager=render_pager(page),
    )


def make_pages_router(archive: Archive) -> APIRouter:
    """The ``/ui`` pages (mounted with prefix ``/ui``)."""
    router = APIRouter(include_in_schema=False)

    @router.get("")
    def ui_root() -> RedirectResponse:
        return RedirectResponse("/ui/", status_code=307)

    @router.get("/", response_class=HTMLResponse)
    def study_list(request: Request) -> HTMLResponse:
        """The study list, filtered by the query string."""
        search = search_from_request(request)
        try:
            page, error = search_studies(archive, search), ""
        except SearchError as exc:
            page, error = StudyPage(search=search), str(exc)
        html = render_study_list(page, error=error, instance_count=archive.instance_count())
        return HTMLResponse(html, status_code=400 if error else 200, headers=PAGE_HEADERS)

    return router


def static_files() -> StaticFiles:
    """The reading room's own static files (stylesheet), mounted at ``/ui/static``."""
    return StaticFiles(directory=STATIC_DIR)
