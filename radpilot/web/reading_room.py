"""What every reading-room page shares: who is asking, in which language, with which CSRF token.

Authentication (when installed) puts a :class:`~radpilot.security.principal.Principal`
on ``request.state.principal`` and the session's CSRF token on
``request.state.csrf_token``; the pages put that token in a ``<meta name="csrf-token">``
tag, and their scripts send it back in the ``X-CSRF-Token`` header of every POST.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi import HTTPException, Request

from radpilot.html import template_environment
from radpilot.security.principal import Principal, Role, RoleRefused
from radpilot.web.api import format_date, format_person_name
from radpilot.web.i18n import LANGUAGES, translator_for

TEMPLATES = template_environment("radpilot.web")

PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def principal_of(request: Request) -> Principal | None:
    principal = getattr(request.state, "principal", None)
    return principal if isinstance(principal, Principal) else None


def require_role(request: Request, *roles: Role) -> Principal:
    """The request's principal when it has one of ``roles``: 401 without one, 403 naming the roles otherwise."""
    principal = principal_of(request)
    if principal is None:
        raise HTTPException(401, "sign in first")
    try:
        principal.require(*roles)
    except RoleRefused as exc:
        raise HTTPException(403, str(exc)) from exc
    return principal


def format_datetime(study_date: str, study_time: str) -> str:
    """``2024-01-02 10:15`` from a DICOM date and time (either may be empty)."""
    time = study_time.split(".")[0]
    clock = f"{time[:2]}:{time[2:4]}" if len(time) >= 4 and time[:4].isdigit() else ""
    return " ".join(p for p in (format_date(study_date), clock) if p)


def page_context(request: Request, active: str) -> dict[str, Any]:
    """The values base.html needs."""
    principal = principal_of(request)
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    translate = translator_for(request.cookies, request.headers)
    return {
        "t": translate,
        "lang": translate.language,
        "languages": LANGUAGES,
        "principal": principal,
        "is_admin": principal is not None and principal.role is Role.ADMINISTRATOR,
        "can_export": principal is not None and principal.role in (Role.RESEARCHER, Role.ADMINISTRATOR),
        "csrf_token": str(getattr(request.state, "csrf_token", "") or ""),
        "active": active,
        "here": quote(here, safe=""),
        "person_name": format_person_name,
        "format_datetime": format_datetime,
    }
