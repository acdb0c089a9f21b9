"""Authentication of every web request, CSRF protection, and the sign-in pages.

:class:`AuthMiddleware` wraps the whole application, so no route (pages, ``/api``,
``/dicomweb``, OHIF's files, ``/api/docs``) can be reached without it; only
:data:`OPEN_PATHS` and :data:`OPEN_PREFIXES` (the health check, the sign-in page and its
stylesheet) are open. A request is let through when it carries

* ``Authorization: Bearer TOKEN`` with an active API token (machine clients), or
* the ``radpilot_session`` cookie of a live server-side session (people, OHIF included).

It then has ``request.state.principal`` (:class:`radpilot.security.principal.Principal`).
Otherwise it is refused: 401 JSON for ``/api``, ``/dicomweb`` and anything that is not a
browser asking for a page, or 303 to ``/ui/login`` for a browser.

A state-changing request (POST, PUT, PATCH, DELETE) authenticated by the cookie must also
carry the session's CSRF token, in the ``X-CSRF-Token`` header or a ``csrf_token`` form
field; pages get it from ``request.state.csrf_token`` (use :func:`csrf_token`). Bearer
requests are exempt: a browser never adds that header on its own.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import urlencode

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from sqlalchemy import Engine
from starlette.datastructures import Headers

from radpilot.config import Settings
from radpilot.html import template_environment
from radpilot.security.audit import record
from radpilot.security.principal import Principal
from radpilot.security.sessions import SessionInfo, close_session, lookup_session, open_session
from radpilot.security.tokens import principal_for_token
from radpilot.security.users import AccountError, SignInRefused, set_password, sign_in

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

SESSION_COOKIE = "radpilot_session"
LOGIN_CSRF_COOKIE = "radpilot_login_csrf"
LOGIN_PATH = "/ui/login"
PASSWORD_PATH = "/ui/password"
LOGOUT_PATH = "/ui/logout"
# /favicon.ico: OHIF's icon, which browsers fetch for the sign-in page too.
OPEN_PATHS = frozenset({"/api/health", LOGIN_PATH, "/favicon.ico"})
OPEN_PREFIXES = ("/ui/static/",)
# Reachable with a session whose one-time password must still be changed.
PASSWORD_CHANGE_PATHS = frozenset({PASSWORD_PATH, LOGOUT_PATH})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
# A cookie-authenticated form is read whole to find its csrf_token; larger bodies must send the header.
MAX_FORM_BYTES = 64 * 1024 * 1024

TEMPLATES = template_environment("radpilot.web")
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def csrf_token(request: Request) -> str:
    """The CSRF token a page must put in its forms (``csrf_token`` field) or send as ``X-CSRF-Token``; empty for Bearer requests."""
    return str(getattr(request.state, "csrf_token", ""))


def principal_of(request: Request) -> Principal:
    """The authenticated principal of a request (the middleware guarantees there is one)."""
    principal = getattr(request.state, "principal", None)
    if not isinstance(principal, Principal):
        raise RuntimeError("request reached a route without authentication")
    return principal


def is_browser_page_request(method: str, path: str, headers: Headers) -> bool:
    """A browser navigating to a page (gets a redirect to sign in, not a 401)."""
    if method not in ("GET", "HEAD") or path.startswith(("/api/", "/dicomweb")) or path == "/api":
        return False
    return "text/html" in headers.get("accept", "")


def safe_next(value: str | None) -> str:
    """Where to go after signing in: a path on this site only (never //host or a full URL)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value or any(ord(c) < 32 for c in value):
        return "/ui/"
    return value


def cookie_secure(settings: Settings, scheme: str) -> bool:
    return settings.session_cookie_secure or scheme == "https"


def _json(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


class AuthMiddleware:
    """Pure ASGI middleware: streamed responses (WADO-RS, OHIF's files) pass through untouched."""

    def __init__(self, app: ASGIApp, *, engine: Engine, settings: Settings) -> None:
        self.app = app
        self.engine = engine
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        method: str = scope.get("method", "GET")
        if path in OPEN_PATHS or path.startswith(OPEN_PREFIXES):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        authorization = headers.get("authorization", "")
        session_info: SessionInfo | None = None
        principal: Principal | None = None
        if authorization:
            scheme, _, credential = authorization.partition(" ")
            if scheme.lower() != "bearer" or not credential.strip():
                await _json(401, "the Authorization header must be 'Bearer TOKEN'", {"WWW-Authenticate": 'Bearer realm="RadPilot"'})(
                    scope, receive, send
                )
                return
            principal = await anyio.to_thread.run_sync(principal_for_token, self.engine, credential.strip())
            if principal is None:
                await _json(401, "the API token is not valid or was revoked", {"WWW-Authenticate": 'Bearer error="invalid_token"'})(
                    scope, receive, send
                )
                return
        else:
            cookie = _cookie(headers, SESSION_COOKIE)
            if cookie:
                session_info = await anyio.to_thread.run_sync(lookup_session, self.engine, self.settings, cookie)
                principal = session_info.principal if session_info else None
        if principal is None:
            await self._refuse(scope, receive, send, method, path, headers)
            return
        state = scope.setdefault("state", {})
        state["principal"] = principal
        if session_info is not None:
            state["csrf_token"] = session_info.csrf_token
            if session_info.must_change_password and path not in PASSWORD_CHANGE_PATHS:
                if is_browser_page_request(method, path, headers):
                    await RedirectResponse(PASSWORD_PATH, status_code=303)(scope, receive, send)
                else:
                    await _json(403, "change your one-time password first (/ui/password)")(scope, receive, send)
                return
            if method not in SAFE_METHODS:
                receive = await self._check_csrf(scope, receive, send, headers, session_info)
                if receive is None:
                    return
        await self.app(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, method: str, path: str, headers: Headers) -> None:
        if is_browser_page_request(method, path, headers):
            query = scope.get("query_string", b"").decode("latin-1")
            target = path + (f"?{query}" if query else "")
            await RedirectResponse(f"{LOGIN_PATH}?{urlencode({'next': target})}", status_code=303)(scope, receive, send)
            return
        await _json(401, "sign in, or send 'Authorization: Bearer TOKEN'", {"WWW-Authenticate": 'Bearer realm="RadPilot"'})(
            scope, receive, send
        )

    async def _check_csrf(self, scope: Scope, receive: Receive, send: Send, headers: Headers, info: SessionInfo) -> Receive | None:
        """The receive channel to pass on when the request carries the session's CSRF token; None when refused (answered)."""
        given = headers.get("x-csrf-token")
        if given is not None:
            if secrets.compare_digest(given.encode(), info.csrf_token.encode()):
                return receive
            await _json(403, "the CSRF token does not match this session")(scope, receive, send)
            return None
        content_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if content_type not in FORM_TYPES:
            await _json(403, "a state-changing request signed in by cookie needs the X-CSRF-Token header")(scope, receive, send)
            return None
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            body.extend(message.get("body", b""))
            more = message.get("more_body", False)
            if len(body) > MAX_FORM_BYTES:
                await _json(413, f"a form larger than {MAX_FORM_BYTES} bytes must send its CSRF token as the X-CSRF-Token header")(
                    scope, receive, send
                )
                return None
        replay = _replay(bytes(body))
        form_token = ""
        try:
            async with Request(scope, replay()).form() as form:
                value = form.get("csrf_token")
                form_token = value if isinstance(value, str) else ""
        except Exception:  # noqa: BLE001 - a form that cannot be parsed has no token; the refusal says so
            form_token = ""
        if not form_token or not secrets.compare_digest(form_token.encode(), info.csrf_token.encode()):
            await _json(403, "the form's csrf_token is missing or does not match this session")(scope, receive, send)
            return None
        return replay()


def _replay(body: bytes) -> Callable[[], Receive]:
    def make() -> Receive:
        sent = False

        async def receive() -> Message:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        return receive

    return make


def _cookie(headers: Headers, name: str) -> str:
    for header in headers.getlist("cookie"):
        for part in header.split(";"):
            key, _, value = part.strip().partition("=")
            if key == name:
                return value.strip()
    return ""


def _client(request: Request) -> str:
    return request.client.host if request.client else ""


def _login_page(next_path: str, login_csrf: str, error: str = "", status: int = 200, notice: str = "") -> HTMLResponse:
    html = TEMPLATES.get_template("login.html").render(next_path=next_path, login_csrf=login_csrf, error=error, notice=notice)
    return HTMLResponse(html, status_code=status, headers=PAGE_HEADERS)


def _with_login_csrf(response: Response, token: str, secure: bool) -> Response:
    response.set_cookie(LOGIN_CSRF_COOKIE, token, max_age=3600, path=LOGIN_PATH, httponly=True, samesite="strict", secure=secure)
    return response


def make_auth_router(engine: Engine, settings: Settings) -> APIRouter:
    """``/ui/login`` (GET, POST), ``/ui/logout`` (POST) and ``/ui/password`` (GET, POST); mount with prefix ``/ui``."""
    router = APIRouter(include_in_schema=False)

    @router.get("/login", response_class=HTMLResponse)
    def login_form(request: Request) -> Response:
        # Signing in is itself protected against CSRF (a forged sign-in into the attacker's account):
        # the form carries a token that must match a cookie only this site can set.
        token = secrets.token_urlsafe(32)
        page = _login_page(safe_next(request.query_params.get("next")), token)
        return _with_login_csrf(page, token, cookie_secure(settings, request.url.scheme))

    @router.post("/login")
    async def login(request: Request) -> Response:
        async with request.form(max_files=0, max_fields=10) as form:
            fields = {k: v if isinstance(v, str) else "" for k, v in form.items()}
        next_path = safe_next(fields.get("next"))
        secure = cookie_secure(settings, request.url.scheme)
        cookie_token = request.cookies.get(LOGIN_CSRF_COOKIE, "")
        new_token = secrets.token_urlsafe(32)
        if not cookie_token or not secrets.compare_digest(cookie_token.encode(), fields.get("csrf_token", "").encode()):
            return _with_login_csrf(
                _login_page(next_path, new_token, "The sign-in form expired; please try again.", 403), new_token, secure
            )
        name, password = fields.get("username", ""), fields.get("password", "")
        try:
            principal = await anyio.to_thread.run_sync(lambda: sign_in(engine, settings, name, password, client=_client(request)))
        except SignInRefused as exc:
            return _with_login_csrf(_login_page(next_path, new_token, str(exc), 429 if exc.locked else 401), new_token, secure)
        secret = await anyio.to_thread.run_sync(open_session, engine, settings, principal.name)
        response = RedirectResponse(next_path, status_code=303)
        response.set_cookie(
            SESSION_COOKIE, secret, max_age=settings.session_max_age_s, path="/", httponly=True, samesite="lax", secure=secure
        )
        response.delete_cookie(LOGIN_CSRF_COOKIE, path=LOGIN_PATH)
        return response

    @router.post("/logout")
    def logout(request: Request) -> Response:
        secret = request.cookies.get(SESSION_COOKIE, "")
        principal = getattr(request.state, "principal", None)
        if secret:
            close_session(engine, secret)
        if isinstance(principal, Principal):
            record(engine, who=principal.name, action="auth.signout", target=f"user:{principal.name}")
        response = RedirectResponse(LOGIN_PATH, status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    @router.get("/password", response_class=HTMLResponse)
    def password_form(request: Request) -> Response:
        principal = principal_of(request)
        html = TEMPLATES.get_template("password.html").render(user=principal.name, csrf_token=csrf_token(request), error="")
        return HTMLResponse(html, headers=PAGE_HEADERS)

    @router.post("/password")
    async def change_password(request: Request) -> Response:
        principal = principal_of(request)
        if principal.kind != "user":
            return _json(400, "API tokens have no password")
        async with request.form(max_files=0, max_fields=10) as form:
            fields = {k: v if isinstance(v, str) else "" for k, v in form.items()}
        current, new, repeat = fields.get("current_password", ""), fields.get("new_password", ""), fields.get("repeat_password", "")
        error = ""
        if new != repeat:
            error = "The two new passwords differ."
        elif new == current:
            error = "The new password must differ from the current one."
        else:
            try:
                await anyio.to_thread.run_sync(lambda: sign_in(engine, settings, principal.name, current, client=_client(request)))
                await anyio.to_thread.run_sync(lambda: set_password(engine, principal.name, new, by=principal.name))
            except SignInRefused:
                error = "The current password is wrong."
            except AccountError as exc:
                error = str(exc)
        if error:
            html = TEMPLATES.get_template("password.html").render(user=principal.name, csrf_token=csrf_token(request), error=error)
            return HTMLResponse(html, status_code=400, headers=PAGE_HEADERS)
        return RedirectResponse("/ui/", status_code=303)

    return router
