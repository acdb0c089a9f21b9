"""Reading-room pages of the findings review: the study view (OHIF beside the findings panel) and the feedback page.

The study view embeds OHIF (served by this origin at ``/viewer``) in an iframe and lists
the study's AI findings beside it; ``/ui/static/review.js`` sends the decisions to
:mod:`radpilot.web.review_api` with the session's CSRF token, which the page carries in a
``<meta name="csrf-token">`` tag. Every value is escaped by the template environment and
set with ``textContent`` by the script, so a reason holding markup stays text.
"""

from __future__ import annotations

from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from radpilot.engine.review import REJECTION_REASONS
from radpilot.security.principal import Role
from radpilot.web.ohif import ISOLATION_HEADERS
from radpilot.web.pages import PAGE_HEADERS, TEMPLATES
from radpilot.web.review_api import feedback_rows, principal_of, review_service

#: The study view embeds OHIF, which runs cross-origin isolated: the page must be too.
REVIEW_PAGE_HEADERS = {**PAGE_HEADERS, **ISOLATION_HEADERS}


def csrf_token(request: Request) -> str:
    """The session's CSRF token that authentication puts on the request (empty when there is none)."""
    return str(getattr(request.state, "csrf_token", "") or "")


def make_review_pages_router() -> APIRouter:
    """``/ui/studies/{uid}/review`` and ``/ui/review/feedback`` (mounted with prefix ``/ui``)."""
    router = APIRouter(include_in_schema=False)

    @router.get("/studies/{study_uid}/review", response_class=HTMLResponse)
    def study_review(request: Request, study_uid: str) -> HTMLResponse:
        principal = principal_of(request, Role.RADIOLOGIST, Role.ADMINISTRATOR)
        review = review_service(request).study(study_uid).to_dict()
        html = TEMPLATES.get_template("review.html").render(
            review=review,
            study_uid=study_uid,
            viewer_url=f"/viewer?StudyInstanceUIDs={quote(study_uid, safe='')}",
            thumbnail_base=f"/api/studies/{quote(study_uid, safe='')}/key-images/",
            csrf_token=csrf_token(request),
            can_decide=principal.role is Role.RADIOLOGIST,
            principal=principal,
            rejection_reasons=REJECTION_REASONS,
        )
        return HTMLResponse(html, headers=REVIEW_PAGE_HEADERS)

    @router.get("/review/feedback", response_class=HTMLResponse)
    def feedback_page(request: Request) -> HTMLResponse:
        rows = feedback_rows(request, None, None, None)
        html = TEMPLATES.get_template("review_feedback.html").render(rows=rows)
        return HTMLResponse(html, headers=PAGE_HEADERS)

    return router
