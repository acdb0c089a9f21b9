"""The researcher's page for research exports: start one with a form, watch the jobs' status.

``/ui/research-exports`` (researchers and administrators) renders the form and the jobs
known so far; ``/ui/static/research_exports.js`` posts the form to
:mod:`radpilot.web.research_export_api` with the session's CSRF token and redraws the job
table from ``GET /api/research-exports`` every few seconds, setting every value with
``textContent`` so nothing a user typed becomes markup.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from radpilot.dicom.deid import Option
from radpilot.security.principal import Role
from radpilot.web.reading_room import PAGE_HEADERS, TEMPLATES, page_context, principal_of

#: The profile options the form offers (all of them are accepted by the API, except the safe-private list).
FORM_OPTIONS = (Option.RETAIN_LONGITUDINAL_MODIFIED_DATES, Option.CLEAN_DESCRIPTORS, Option.RETAIN_PATIENT_CHARACTERISTICS)


def make_research_export_pages_router() -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/research-exports", response_class=HTMLResponse)
    def research_exports_page(request: Request) -> HTMLResponse:
        context = page_context(request, "research")
        principal = principal_of(request)
        status, jobs = 200, []
        if principal is None:
            context["refusal"], status = context["t"]("error.unauthenticated"), 401
        elif principal.role not in (Role.RESEARCHER, Role.ADMINISTRATOR):
            context["refusal"], status = context["t"]("error.forbidden", roles="researcher, administrator"), 403
        else:
            context["refusal"] = ""
            jobs = request.app.state.research_exports.list(principal, 50)
        settings = request.app.state.settings
        html = TEMPLATES.get_template("research_exports.html").render(
            **context,
            jobs=jobs,
            options=[o.value for o in FORM_OPTIONS],
            targets=[t.name for t in settings.research_export_targets] if status == 200 else [],
        )
        return HTMLResponse(html, status_code=status, headers=PAGE_HEADERS)

    return router
