"""The reports API under ``/api/reports`` and the report editor page ``/ui/studies/{uid}/report``.

Who acts is read from ``request.state.principal`` (set by authentication); a request without
one is refused (401). Writing and signing need the radiologist role (403 otherwise, naming
it); a signed report is read-only (409). A malformed body is answered 422 naming the field.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from radpilot.dictation.lexicon import load_lexicon
from radpilot.html import template_environment
from radpilot.reports.outputs import OutputError
from radpilot.reports.service import FORMATS, MEDIA_TYPES, ReportService, StudyNotFound
from radpilot.reports.store import MAX_SECTION_CHARS, IllegalTransition, ReportError, ReportLocked, ReportNotFound, ReportView
from radpilot.reports.templates import SECTION_TITLES, SECTIONS, TemplateError
from radpilot.security.principal import Principal, Role, RoleRefused
from radpilot.web.auth import csrf_token
from radpilot.web.pages import PAGE_HEADERS
from radpilot.web.params import RowId

logger = logging.getLogger(__name__)

TEMPLATES = template_environment("radpilot.web")
# Report templates whose dictation vocabulary is another exam type's (the lexicon is per exam type, not per template).
DICTATION_EXAMS = {"low_dose_lung_ct": "chest_ct", "abdominal_liver_ct": "abdomen_ct", "calcium_score_ct": "cardiac_ct"}
READ_ROLES = (Role.RADIOLOGIST, Role.TECHNOLOGIST, Role.ADMINISTRATOR)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CreateBody(_Body):
    study_instance_uid: str = Field(min_length=1, max_length=64, pattern=r"^[0-9.]+$")
    template: str | None = Field(default=None, max_length=64)


class SectionBody(_Body):
    text: str = Field(max_length=MAX_SECTION_CHARS)


class AcceptBody(_Body):
    phrase_ids: list[str] | None = Field(default=None, max_length=200)


class StatusBody(_Body):
    status: str = Field(max_length=16)
    reason: str = Field(default="", max_length=2000)


class SignBody(_Body):
    confirm: bool


class AmendBody(_Body):
    reason: str = Field(min_length=1, max_length=2000)


def principal_of(request: Request) -> Principal:
    principal = getattr(request.state, "principal", None)
    if not isinstance(principal, Principal):
        raise HTTPException(401, "not signed in: reports need a signed-in user")
    return principal


def _reader(request: Request) -> Principal:
    principal = principal_of(request)
    try:
        principal.require(*READ_ROLES)
    except RoleRefused as exc:
        raise HTTPException(403, str(exc)) from exc
    return principal


def service_of(request: Request) -> ReportService:
    service = getattr(request.app.state, "reports", None)
    if service is None:
        service = request.app.state.reports = ReportService(request.app.state.settings, request.app.state.archive)
    return service


def _http_error(exc: Exception) -> HTTPException:
    if isinstance(exc, RoleRefused):
        return HTTPException(403, str(exc))
    if isinstance(exc, ReportNotFound | StudyNotFound):
        return HTTPException(404, str(exc))
    if isinstance(exc, ReportLocked | IllegalTransition):
        return HTTPException(409, str(exc))
    return HTTPException(422, str(exc))


HANDLED = (RoleRefused, ReportError, TemplateError, OutputError)


def _act(request: Request, action: Callable[[ReportService, Principal], ReportView]) -> dict[str, Any]:
    """Run a change to a report as the signed-in user; the report as JSON, or the HTTP error its failure maps to."""
    who = principal_of(request)
    service = service_of(request)
    try:
        return report_json(service, action(service, who))
    except HANDLED as exc:
        raise _http_error(exc) from exc


def report_json(service: ReportService, report: ReportView) -> dict[str, Any]:
    return {
        **report.to_json(),
        "events": service.store.events(report.id),
        "versions": service.store.versions(report.id),
        "deliveries": service.deliveries(report),
    }


def dictation_exam(template: str) -> str:
    """The lexicon exam type whose vocabulary steers dictation into a report of ``template``; "" for the common terms only."""
    exam = DICTATION_EXAMS.get(template, template)
    return exam if exam in load_lexicon() else ""


def make_reports_router() -> APIRouter:
    router = APIRouter(tags=["reports"])

    @router.get("/api/reports/templates")
    def list_templates(request: Request) -> list[dict[str, Any]]:
        """The report templates in force (shipped, or the department's)."""
        _reader(request)
        return [t.to_json() for t in service_of(request).library.templates.values()]

    @router.get("/api/reports")
    def report_of_study(request: Request, study: str) -> dict[str, Any]:
        """The report of one study (``?study=UID``)."""
        _reader(request)
        service = service_of(request)
        report = service.store.for_study(study)
        if report is None:
            raise HTTPException(404, f"study {study} has no report")
        return report_json(service, report)

    @router.post("/api/reports", status_code=201)
    def create_report(request: Request, body: CreateBody) -> dict[str, Any]:
        """A new draft from a template (default: the one for the study's modality), pre-filled from the study's AI findings."""
        who = principal_of(request)
        service = service_of(request)
        try:
            report = service.create(body.study_instance_uid, body.template, who)
        except HANDLED as exc:
            raise _http_error(exc) from exc
        return report_json(service, report)

    @router.get("/api/reports/{report_id}")
    def get_report(request: Request, report_id: RowId) -> dict[str, Any]:
        _reader(request)
        service = service_of(request)
        try:
            return report_json(service, service.store.get(report_id))
        except HANDLED as exc:
            raise _http_error(exc) from exc

    @router.put("/api/reports/{report_id}/sections/{section}")
    def edit_section(request: Request, report_id: RowId, section: str, body: SectionBody) -> dict[str, Any]:
        return _act(request, lambda service, who: service.store.edit_section(report_id, section, body.text, who))

    @router.post("/api/reports/{report_id}/accept-ai")
    def accept_ai(request: Request, report_id: RowId, body: AcceptBody) -> dict[str, Any]:
        """Accept AI-sourced phrases (all pending ones when ``phrase_ids`` is absent)."""
        return _act(request, lambda service, who: service.store.accept_phrases(report_id, body.phrase_ids, who))

    @router.post("/api/reports/{report_id}/status")
    def change_status(request: Request, report_id: RowId, body: StatusBody) -> dict[str, Any]:
        """Draft <-> preliminary."""
        return _act(request, lambda service, who: service.store.transition(report_id, body.status, who, reason=body.reason))

    @router.post("/api/reports/{report_id}/sign")
    def sign(request: Request, report_id: RowId, body: SignBody) -> dict[str, Any]:
        """Sign (radiologist only, ``confirm: true``): the report becomes read-only and its SR, ORU and FHIR are queued."""
        return _act(request, lambda service, who: service.sign(report_id, who, confirm=body.confirm))

    @router.post("/api/reports/{report_id}/amend")
    def amend(request: Request, report_id: RowId, body: AmendBody) -> dict[str, Any]:
        """Open a signed report for amendment; the signed version is kept."""
        return _act(request, lambda service, who: service.store.amend(report_id, who, reason=body.reason))

    @router.get("/api/reports/{report_id}/export/{fmt}")
    def export(request: Request, report_id: RowId, fmt: str) -> Response:
        """The signed report as ``sr``, ``fhir``, ``hl7`` or ``pdf``."""
        _reader(request)
        service = service_of(request)
        if fmt not in FORMATS:
            raise HTTPException(404, f"unknown format {fmt!r}; the formats are {', '.join(FORMATS)}")
        try:
            report = service.store.get(report_id)
            data = service.export(report.study_instance_uid, fmt)
        except HANDLED as exc:
            raise _http_error(exc) from exc
        extension = {"sr": "dcm", "fhir": "json", "hl7": "hl7", "pdf": "pdf"}[fmt]
        headers = {"Content-Disposition": f'attachment; filename="report-{report_id}-v{report.version}.{extension}"'}
        return Response(data, media_type=MEDIA_TYPES[fmt], headers=headers)

    @router.get("/ui/studies/{study_uid}/report", response_class=HTMLResponse, include_in_schema=False)
    def editor(request: Request, study_uid: str) -> HTMLResponse:
        """The report editor: the template pre-filled, AI phrases marked, dictation, sign with confirmation."""
        who = _reader(request)
        service = service_of(request)
        report = service.store.for_study(study_uid)
        html = TEMPLATES.get_template("report_editor.html").render(
            study_uid=study_uid,
            report=report.to_json() if report else None,
            events=service.store.events(report.id) if report else [],
            deliveries=service.deliveries(report) if report else [],
            templates=list(service.library.templates.values()),
            exam_templates={t.name: {"title": t.title, "sections": dict(t.sections)} for t in service.library.templates.values()},
            sections=[(s, SECTION_TITLES[s]) for s in SECTIONS],
            pending_by_section={s: [p for p in (report.pending_phrases if report else []) if p["section"] == s] for s in SECTIONS},
            can_write=who.role is Role.RADIOLOGIST,
            # A signed-in browser's writes must carry it; the editor's script sends it as X-CSRF-Token.
            csrf_token=csrf_token(request),
            dictation_exam=dictation_exam(report.template) if report else "",
            principal=who,
        )
        return HTMLResponse(html, headers=PAGE_HEADERS)

    return router
