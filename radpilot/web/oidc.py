"""OpenID Connect sign-in for hospitals with single sign-on (optional; authlib).

When ``oidc_issuer`` and ``oidc_client_id`` are set, the sign-in page offers "Sign in with
single sign-on": ``/ui/login/oidc`` sends the browser to the identity provider with the
authorization-code flow (state, nonce, PKCE S256), and ``/ui/login/oidc/callback``
exchanges the code at the provider's token endpoint, checks the ID token (signature
against the provider's JWKS, issuer, audience, expiry, nonce), and opens a RadPilot
session for the local user named by ``oidc_username_claim``. The role always comes from
RadPilot's own user list (``radpilot users add NAME --oidc --role ROLE``): a person the
provider knows but RadPilot does not is refused, so single sign-on never grants a role.
"""

from __future__ import annotations

import logging
import secrets
import time
from typing import Any
from urllib.parse import quote, unquote

import anyio
import httpx
from authlib.integrations.httpx_client import OAuth2Client
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from radpilot.config import Settings
from radpilot.security.audit import record
from radpilot.security.models import User
from radpilot.security.sessions import open_session
from radpilot.web.auth import LOGIN_PATH, PAGE_HEADERS, SESSION_COOKIE, TEMPLATES, cookie_secure, safe_next

logger = logging.getLogger(__name__)

OIDC_START_PATH = "/ui/login/oidc"
OIDC_CALLBACK_PATH = "/ui/login/oidc/callback"
FLOW_COOKIE = "radpilot_oidc_flow"
FLOW_TTL_S = 600
METADATA_TTL_S = 3600
ID_TOKEN_ALGORITHMS = ["RS256", "RS384", "RS512", "ES256", "ES384", "PS256"]


class OidcError(RuntimeError):
    """Single sign-on did not succeed; the message says why, for the sign-in page and the audit trail."""


class OidcProvider:
    """The identity provider named by the settings: its discovery document and keys, cached."""

    def __init__(self, settings: Settings) -> None:
        if not settings.oidc_issuer or not settings.oidc_client_id:
            raise ValueError("OpenID Connect needs oidc_issuer and oidc_client_id")
        self.issuer = settings.oidc_issuer.rstrip("/")
        self.client_id = settings.oidc_client_id
        self.client_secret = settings.oidc_client_secret_file.read_text().strip() if settings.oidc_client_secret_file else None
        self.username_claim = settings.oidc_username_claim
        self.scope = settings.oidc_scope
        self._metadata: dict[str, Any] | None = None
        self._keys: KeySet | None = None
        self._fetched_at = 0.0

    def metadata(self) -> dict[str, Any]:
        if self._metadata is None or time.monotonic() - self._fetched_at > METADATA_TTL_S:
            try:
                document = httpx.get(f"{self.issuer}/.well-known/openid-configuration", timeout=10).raise_for_status().json()
                keys = httpx.get(document["jwks_uri"], timeout=10).raise_for_status().json()
            except (httpx.HTTPError, ValueError, KeyError) as exc:
                raise OidcError(f"the identity provider {self.issuer} cannot be reached or answered badly: {exc}") from exc
            if str(document.get("issuer", "")).rstrip("/") != self.issuer:
                raise OidcError(f"the identity provider says its issuer is {document.get('issuer')!r}, not {self.issuer!r}")
            self._metadata, self._keys, self._fetched_at = document, KeySet.import_key_set(keys), time.monotonic()
        return self._metadata

    def client(self, redirect_uri: str) -> OAuth2Client:
        return OAuth2Client(
            client_id=self.client_id,
            client_secret=self.client_secret,
            scope=self.scope,
            redirect_uri=redirect_uri,
            code_challenge_method="S256",
            token_endpoint_auth_method="client_secret_basic" if self.client_secret else "none",
            timeout=10,
        )

    def authorization_url(self, redirect_uri: str, state: str, nonce: str, verifier: str) -> str:
        endpoint = self.metadata()["authorization_endpoint"]
        with self.client(redirect_uri) as client:
            url, _ = client.create_authorization_url(endpoint, state=state, nonce=nonce, code_verifier=verifier)
        return str(url)

    def user_name(self, redirect_uri: str, code: str, verifier: str, nonce: str) -> str:
        """Exchange the code, check the ID token, and return the user name it asserts."""
        metadata = self.metadata()
        try:
            with self.client(redirect_uri) as client:
                token = client.fetch_token(metadata["token_endpoint"], code=code, code_verifier=verifier, grant_type="authorization_code")
        except Exception as exc:  # noqa: BLE001 - authlib raises its own and httpx's errors; all mean the same here
            raise OidcError(f"the identity provider refused the sign-in code: {exc}") from exc
        id_token = token.get("id_token")
        if not id_token:
            raise OidcError("the identity provider sent no ID token")
        assert self._keys is not None
        try:
            decoded = jwt.decode(id_token, self._keys, algorithms=ID_TOKEN_ALGORITHMS)
            jwt.JWTClaimsRegistry(
                iss={"essential": True, "value": self.issuer},
                aud={"essential": True, "value": self.client_id},
                nonce={"essential": True, "value": nonce},
                exp={"essential": True},
            ).validate(decoded.claims)
        except (JoseError, ValueError) as exc:
            raise OidcError(f"the ID token is not valid: {exc}") from exc
        name = decoded.claims.get(self.username_claim)
        if not isinstance(name, str) or not name:
            raise OidcError(f"the ID token has no {self.username_claim!r} claim")
        return name


def _refusal(message: str, status: int = 403) -> HTMLResponse:
    html = TEMPLATES.get_template("login.html").render(next_path="/ui/", login_csrf="", error=message, notice="", oidc=False)
    return HTMLResponse(html, status_code=status, headers=PAGE_HEADERS)


def make_oidc_router(engine: Engine, settings: Settings) -> APIRouter:
    """``/ui/login/oidc`` and its callback; mount with prefix ``/ui``."""
    router = APIRouter(include_in_schema=False)
    provider = OidcProvider(settings)

    def redirect_uri(request: Request) -> str:
        return str(request.base_url).rstrip("/") + OIDC_CALLBACK_PATH

    @router.get("/login/oidc")
    async def start(request: Request) -> Response:
        state, nonce, verifier = secrets.token_urlsafe(24), secrets.token_urlsafe(24), secrets.token_urlsafe(48)
        next_path = safe_next(request.query_params.get("next"))
        try:
            url = await anyio.to_thread.run_sync(provider.authorization_url, redirect_uri(request), state, nonce, verifier)
        except OidcError as exc:
            logger.warning("single sign-on unavailable", extra={"reason": str(exc)})
            return _refusal(str(exc), 502)
        response = RedirectResponse(url, status_code=302)
        response.set_cookie(
            FLOW_COOKIE,
            f"{state}.{nonce}.{verifier}.{quote(next_path, safe='')}",
            max_age=FLOW_TTL_S,
            path=OIDC_START_PATH,
            httponly=True,
            samesite="lax",
            secure=cookie_secure(settings, request.url.scheme),
        )
        return response

    @router.get("/login/oidc/callback")
    async def callback(request: Request) -> Response:
        flow = request.cookies.get(FLOW_COOKIE, "").split(".", 3)
        params = request.query_params
        if len(flow) != 4 or not params.get("state") or not secrets.compare_digest(flow[0].encode(), params["state"].encode()):
            return _refusal("The single sign-on answer does not belong to a sign-in started here; please start again.")
        if params.get("error"):
            return _refusal(f"The identity provider refused the sign-in: {params.get('error_description') or params['error']}")
        _, nonce, verifier, next_path = flow[0], flow[1], flow[2], unquote(flow[3])
        client = request.client.host if request.client else ""
        try:
            name = await anyio.to_thread.run_sync(provider.user_name, redirect_uri(request), params.get("code", ""), verifier, nonce)
        except OidcError as exc:
            record(engine, who="unknown", action="auth.signin.failed", target="oidc", reason=str(exc), details={"client": client})
            return _refusal(str(exc))
        with Session(engine) as session:
            user = session.scalar(select(User).where(User.name == name))
            known = user is not None and user.source == "oidc" and not user.disabled
        if not known:
            record(
                engine, who=name, action="auth.signin.failed", target=f"user:{name}", reason="no enabled single sign-on user by that name"
            )
            return _refusal(
                f"{name} has no RadPilot account for single sign-on; an administrator adds it with `radpilot users add {name} --oidc --role ROLE`."
            )
        secret = await anyio.to_thread.run_sync(open_session, engine, settings, name)
        record(engine, who=name, action="auth.signin", target=f"user:{name}", details={"client": client, "method": "oidc"})
        response = RedirectResponse(safe_next(next_path), status_code=303)
        secure = cookie_secure(settings, request.url.scheme)
        response.set_cookie(
            SESSION_COOKIE, secret, max_age=settings.session_max_age_s, path="/", httponly=True, samesite="lax", secure=secure
        )
        response.delete_cookie(FLOW_COOKIE, path=OIDC_START_PATH)
        return response

    return router


__all__ = ["LOGIN_PATH", "OIDC_CALLBACK_PATH", "OIDC_START_PATH", "OidcError", "OidcProvider", "make_oidc_router"]
