"""Single sign-on with OpenID Connect against a real provider on 127.0.0.1.

The provider here is small but speaks the protocol over HTTP: discovery, JWKS, an
authorization endpoint that signs in one configured person at once, and a token endpoint
that checks the client secret and the PKCE verifier and issues an RS256 ID token.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Form, Header, HTTPException, Request
from fastapi.responses import RedirectResponse
from fastapi.testclient import TestClient
from joserfc import jwt
from joserfc.jwk import RSAKey

from radpilot.archive import Archive
from radpilot.config import Settings
from radpilot.security.audit import events
from radpilot.security.principal import Role
from radpilot.security.users import add_user
from radpilot.web.app import create_app
from radpilot.web.auth import SESSION_COOKIE
from tests.helpers import free_port

pytestmark = pytest.mark.integration

CLIENT_ID, CLIENT_SECRET = "radpilot", "s3cret-of-the-client"


@dataclass
class Provider:
    url: str
    person: str = "dr.sso"
    audience: str = CLIENT_ID
    codes: dict[str, dict[str, Any]] = field(default_factory=dict)


def provider_app(provider: Provider, key: RSAKey) -> FastAPI:
    app = FastAPI()

    @app.get("/.well-known/openid-configuration")
    def discovery() -> dict[str, Any]:
        return {
            "issuer": provider.url,
            "authorization_endpoint": f"{provider.url}/authorize",
            "token_endpoint": f"{provider.url}/token",
            "jwks_uri": f"{provider.url}/jwks",
            "response_types_supported": ["code"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "code_challenge_methods_supported": ["S256"],
        }

    @app.get("/jwks")
    def jwks() -> dict[str, Any]:
        return {"keys": [key.as_dict(private=False)]}

    @app.get("/authorize")
    def authorize(request: Request) -> RedirectResponse:
        q = request.query_params
        if q.get("client_id") != CLIENT_ID or q.get("response_type") != "code" or q.get("code_challenge_method") != "S256":
            raise HTTPException(400, "bad authorization request")
        code = secrets.token_urlsafe(16)
        provider.codes[code] = {"nonce": q.get("nonce"), "challenge": q.get("code_challenge"), "redirect_uri": q.get("redirect_uri")}
        return RedirectResponse(f"{q['redirect_uri']}?{urlencode({'code': code, 'state': q['state']})}", status_code=302)

    @app.post("/token")
    def token(
        grant_type: str = Form(...),
        code: str = Form(...),
        redirect_uri: str = Form(...),
        code_verifier: str = Form(...),
        authorization: str = Header(""),
    ) -> dict[str, Any]:
        expected = "Basic " + base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        if authorization != expected:
            raise HTTPException(401, "bad client credentials")
        grant = provider.codes.pop(code, None)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(code_verifier.encode()).digest()).rstrip(b"=").decode()
        if grant_type != "authorization_code" or grant is None or grant["challenge"] != challenge or grant["redirect_uri"] != redirect_uri:
            raise HTTPException(400, "invalid_grant")
        now = int(time.time())
        claims = {
            "iss": provider.url,
            "sub": "u-1",
            "aud": provider.audience,
            "iat": now,
            "exp": now + 300,
            "nonce": grant["nonce"],
            "preferred_username": provider.person,
        }
        id_token = jwt.encode({"alg": "RS256", "kid": key.kid}, claims, key)
        return {"access_token": secrets.token_urlsafe(16), "token_type": "Bearer", "expires_in": 300, "id_token": id_token}

    return app


@pytest.fixture
def provider() -> Iterator[Provider]:
    port = free_port()
    provider = Provider(url=f"http://127.0.0.1:{port}")
    key = RSAKey.generate_key(2048, parameters={"kid": "test-key"})
    server = uvicorn.Server(uvicorn.Config(provider_app(provider, key), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    yield provider
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def radpilot_app(tmp_path: Path, provider: Provider) -> Iterator[tuple[TestClient, Archive]]:
    secret_file = tmp_path / "oidc-secret"
    secret_file.write_text(CLIENT_SECRET + "\n")
    settings = Settings(
        data_dir=tmp_path / "data",
        ohif_dir=tmp_path / "no-ohif",
        oidc_issuer=provider.url,
        oidc_client_id=CLIENT_ID,
        oidc_client_secret_file=secret_file,
    )
    archive = Archive.from_settings(settings)
    with TestClient(create_app(settings, archive), follow_redirects=False) as client:
        yield client, archive
    archive.close()


def single_sign_on(client: TestClient, next_path: str = "/ui/", tamper_state: bool = False) -> httpx.Response:
    """The browser's walk: RadPilot -> provider -> RadPilot's callback."""
    start = client.get("/ui/login/oidc", params={"next": next_path})
    assert start.status_code == 302, start.text
    at_provider = httpx.get(start.headers["location"], follow_redirects=False, timeout=10)
    assert at_provider.status_code == 302, at_provider.text
    back = urlparse(at_provider.headers["location"])
    params = {k: v[0] for k, v in parse_qs(back.query).items()}
    if tamper_state:
        params["state"] = "forged"
    return client.get(back.path, params=params)


def test_sign_in_page_offers_single_sign_on(radpilot_app) -> None:  # noqa: ANN001
    client, _ = radpilot_app
    assert "/ui/login/oidc" in client.get("/ui/login").text


def test_single_sign_on_opens_a_session_with_radpilots_own_role(radpilot_app, provider: Provider) -> None:  # noqa: ANN001
    client, archive = radpilot_app
    add_user(archive.engine, "dr.sso", Role.RADIOLOGIST, None, source="oidc", by="tests")
    signed = single_sign_on(client, next_path="/viewer?StudyInstanceUIDs=1.2.3")
    assert signed.status_code == 303 and signed.headers["location"] == "/viewer?StudyInstanceUIDs=1.2.3"
    assert SESSION_COOKIE in signed.cookies
    assert client.get("/api/studies").status_code == 200
    assert client.get("/api/deliveries").status_code == 403  # a radiologist, as RadPilot's user list says
    (event,) = [e for e in events(archive.engine, action_prefix="auth.signin") if e.target == "user:dr.sso"]
    assert event.details["method"] == "oidc"


def test_a_person_radpilot_does_not_know_is_refused(radpilot_app, provider: Provider) -> None:  # noqa: ANN001
    client, _ = radpilot_app
    refused = single_sign_on(client)
    assert refused.status_code == 403 and "radpilot users add dr.sso --oidc" in refused.text
    assert client.get("/api/studies").status_code == 401


def test_a_forged_state_or_a_token_for_another_client_is_refused(radpilot_app, provider: Provider) -> None:  # noqa: ANN001
    client, archive = radpilot_app
    add_user(archive.engine, "dr.sso", Role.RADIOLOGIST, None, source="oidc", by="tests")
    assert single_sign_on(client, tamper_state=True).status_code == 403
    provider.audience = "some-other-app"
    refused = single_sign_on(client)
    assert refused.status_code == 403 and "ID token is not valid" in refused.text
    assert client.get("/api/studies").status_code == 401


def test_a_local_password_user_cannot_be_entered_through_single_sign_on(radpilot_app, provider: Provider) -> None:  # noqa: ANN001
    client, archive = radpilot_app
    add_user(archive.engine, "dr.sso", Role.ADMINISTRATOR, "a-long-password-1", by="tests")
    assert single_sign_on(client).status_code == 403
