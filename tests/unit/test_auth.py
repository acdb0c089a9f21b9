"""Sign-in and access control (issue 16): every route refuses the unauthenticated, sessions,
CSRF, lock-out, API tokens, and the users/tokens commands."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from radpilot.archive import Archive
from radpilot.cli import app as cli_app
from radpilot.config import Settings
from radpilot.db import utcnow
from radpilot.security.audit import events
from radpilot.security.models import AuthSession
from radpilot.security.principal import Role
from radpilot.security.tokens import revoke_token
from radpilot.security.users import SignInRefused, disable_user, sign_in
from radpilot.web.app import create_app
from radpilot.web.auth import LOGIN_CSRF_COOKIE, SESSION_COOKIE, safe_next
from tests.fixtures.auth import all_routes, auth_headers, bearer_token, make_user

OPEN = {"/api/health", "/ui/login", "/favicon.ico"}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", ohif_dir=tmp_path / "no-ohif", login_max_failures=3)


@pytest.fixture
def archive(settings: Settings) -> Iterator[Archive]:
    store = Archive.from_settings(settings)
    yield store
    store.close()


@pytest.fixture
def client(settings: Settings, archive: Archive) -> Iterator[TestClient]:
    with TestClient(create_app(settings, archive), follow_redirects=False) as test_client:
        yield test_client


def login(client: TestClient, name: str, password: str, next_path: str = "/ui/"):  # noqa: ANN201 - httpx.Response
    form = client.get("/ui/login", params={"next": next_path})
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)
    return client.post("/ui/login", data={"username": name, "password": password, "csrf_token": token, "next": next_path})


def signed_in(client: TestClient, archive: Archive, role: Role = Role.RADIOLOGIST) -> str:
    """Sign ``client`` in as a new user; returns the session's CSRF token (read from the password page)."""
    name, password = make_user(archive.engine, role)
    response = login(client, name, password)
    assert response.status_code == 303, response.text
    page = client.get("/ui/password")
    return re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "1", path)


def test_every_route_refuses_a_request_without_session_or_token(client: TestClient) -> None:
    checked = 0
    for method, path in all_routes(client.app):
        if path in OPEN:
            continue
        response = client.request(method, concrete(path), headers={"Accept": "application/json"})
        assert response.status_code == 401, (method, path, response.status_code)
        assert "www-authenticate" in response.headers
        checked += 1
    for path in ("/api/docs", "/api/openapi.json", "/", "/viewer", "/app-config.js", "/ui/static/../../api/status", "/nope"):
        assert client.get(path, headers={"Accept": "application/json"}).status_code == 401, path
    assert checked > 20


def test_health_check_and_sign_in_page_stay_open(client: TestClient) -> None:
    assert client.get("/api/health").json()["status"] == "ok"
    page = client.get("/ui/login")
    assert page.status_code == 200 and "<form" in page.text
    assert client.get("/ui/static/radpilot.css").status_code == 200


def test_a_browser_is_sent_to_the_sign_in_page_and_back(client: TestClient, archive: Archive) -> None:
    response = client.get("/viewer?StudyInstanceUIDs=1.2.3", headers={"Accept": "text/html,application/xhtml+xml"})
    assert response.status_code == 303
    assert response.headers["location"] == "/ui/login?next=%2Fviewer%3FStudyInstanceUIDs%3D1.2.3"
    # An API path never redirects, even for a browser.
    assert client.get("/api/studies", headers={"Accept": "text/html"}).status_code == 401
    name, password = make_user(archive.engine, Role.RADIOLOGIST)
    signed = login(client, name, password, next_path="/viewer?StudyInstanceUIDs=1.2.3")
    assert signed.status_code == 303 and signed.headers["location"] == "/viewer?StudyInstanceUIDs=1.2.3"
    assert client.get("/api/studies").status_code == 200


@pytest.mark.parametrize(
    "target", ["https://evil.example/", "//evil.example/x", "/\\evil.example", "", "javascript:alert(1)", "/ok\r\nX: y"]
)
def test_after_sign_in_only_local_paths_are_followed(target: str) -> None:
    assert safe_next(target) == "/ui/"


def test_session_cookie_is_httponly_samesite_and_expires(client: TestClient, archive: Archive, settings: Settings) -> None:
    name, password = make_user(archive.engine)
    response = login(client, name, password)
    cookie = next(v for v in response.headers.get_list("set-cookie") if v.startswith(SESSION_COOKIE + "="))
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and f"Max-Age={settings.session_max_age_s}" in cookie
    assert "Secure" not in cookie  # plain http and no setting: the browser would drop a Secure cookie on a non-local host


def test_session_cookie_is_secure_over_https(settings: Settings, archive: Archive) -> None:
    with TestClient(create_app(settings, archive), base_url="https://radpilot.example", follow_redirects=False) as client:
        name, password = make_user(archive.engine)
        response = login(client, name, password)
        cookie = next(v for v in response.headers.get_list("set-cookie") if v.startswith(SESSION_COOKIE + "="))
        assert "Secure" in cookie


def test_sign_in_without_the_forms_csrf_token_is_refused(client: TestClient, archive: Archive) -> None:
    name, password = make_user(archive.engine)
    client.get("/ui/login")
    response = client.post("/ui/login", data={"username": name, "password": password, "csrf_token": "forged"})
    assert response.status_code == 403 and SESSION_COOKIE not in response.cookies
    client.cookies.delete(LOGIN_CSRF_COOKIE, path="/ui/login")
    assert client.post("/ui/login", data={"username": name, "password": password}).status_code == 403


def test_wrong_password_locks_out_after_n_tries(client: TestClient, archive: Archive, settings: Settings) -> None:
    name, password = make_user(archive.engine)
    for _ in range(settings.login_max_failures):
        assert login(client, name, "wrong-password-123").status_code == 401
    locked = login(client, name, password)
    assert locked.status_code == 429 and "locked" in locked.text
    assert SESSION_COOKIE not in locked.cookies
    with pytest.raises(SignInRefused) as refused:
        sign_in(archive.engine, settings, name, password)
    assert refused.value.locked
    actions = [e.action for e in events(archive.engine, target=f"user:{name}")]
    assert actions.count("auth.signin.failed") == settings.login_max_failures
    assert "auth.lockout" in actions and "auth.signin.locked" in actions


def test_lock_out_ends_after_its_time(archive: Archive, settings: Settings) -> None:
    name, password = make_user(archive.engine)
    for _ in range(settings.login_max_failures):
        with pytest.raises(SignInRefused):
            sign_in(archive.engine, settings, name, "wrong-password-123")
    with pytest.raises(SignInRefused):
        sign_in(archive.engine, settings, name, password)
    later = settings.model_copy(update={"login_lockout_s": 1, "login_window_s": 1})
    from radpilot.security.models import User

    with Session(archive.engine) as session, session.begin():
        session.execute(update(User).where(User.name == name).values(locked_until=utcnow() - timedelta(seconds=1)))
    assert sign_in(archive.engine, later, name, password).name == name


def test_unknown_user_and_disabled_user_are_refused_alike(archive: Archive, settings: Settings) -> None:
    name, password = make_user(archive.engine)
    disable_user(archive.engine, name, by="tests")
    for who in (name, "nobody"):
        with pytest.raises(SignInRefused, match="wrong user name or password"):
            sign_in(archive.engine, settings, who, password)


def test_many_failures_from_one_address_are_refused(archive: Archive, settings: Settings) -> None:
    strict = settings.model_copy(update={"login_max_failures_per_client": 4})
    for i in range(4):
        with pytest.raises(SignInRefused):
            sign_in(archive.engine, strict, f"guess{i}", "x" * 12, client="203.0.113.9")
    name, password = make_user(archive.engine)
    with pytest.raises(SignInRefused, match="this address"):
        sign_in(archive.engine, strict, name, password, client="203.0.113.9")
    assert sign_in(archive.engine, strict, name, password, client="203.0.113.10").name == name


def test_state_changing_request_by_cookie_needs_the_csrf_token(client: TestClient, archive: Archive) -> None:
    csrf = signed_in(client, archive)
    # No engine runs in this app, so a request that passes authentication and CSRF gets 503.
    assert client.post("/api/jobs/1/cancel").status_code == 403
    assert client.post("/api/jobs/1/cancel", headers={"X-CSRF-Token": "forged"}).status_code == 403
    assert client.post("/api/jobs/1/cancel", data={"csrf_token": "forged"}).status_code == 403
    assert client.post("/api/jobs/1/cancel", files={"x": ("a", b"b")}, data={"csrf_token": "forged"}).status_code == 403
    assert client.post("/api/jobs/1/cancel", headers={"X-CSRF-Token": csrf}).status_code == 503
    assert client.post("/api/jobs/1/cancel", data={"csrf_token": csrf}).status_code == 503
    assert client.post("/api/jobs/1/cancel", files={"x": ("a", b"b")}, data={"csrf_token": csrf}).status_code == 503


def test_bearer_requests_need_no_csrf_token(client: TestClient, archive: Archive) -> None:
    token = bearer_token(archive.engine, Role.ADMINISTRATOR)
    assert client.post("/api/jobs/1/cancel", headers=auth_headers(token)).status_code == 503


def test_sign_out_ends_the_session(client: TestClient, archive: Archive) -> None:
    csrf = signed_in(client, archive)
    cookie = client.cookies.get(SESSION_COOKIE)
    assert client.post("/ui/logout", data={"csrf_token": csrf}).status_code == 303
    client.cookies.set(SESSION_COOKIE, cookie)
    assert client.get("/api/studies").status_code == 401


def test_idle_and_expired_sessions_are_refused(client: TestClient, archive: Archive, settings: Settings) -> None:
    signed_in(client, archive)
    assert client.get("/api/studies").status_code == 200
    idle = utcnow() - timedelta(seconds=settings.session_idle_timeout_s + 5)
    with Session(archive.engine) as session, session.begin():
        session.execute(update(AuthSession).values(last_seen_at=idle))
    assert client.get("/api/studies").status_code == 401
    signed_in(client, archive)
    with Session(archive.engine) as session, session.begin():
        session.execute(update(AuthSession).values(expires_at=utcnow() - timedelta(seconds=1)))
    assert client.get("/api/studies").status_code == 401


def test_disabling_a_user_ends_their_session_at_once(client: TestClient, archive: Archive) -> None:
    signed_in(client, archive)
    name = next(u for u in (e.target for e in events(archive.engine, action_prefix="auth.signin")) if u.startswith("user:"))[5:]
    disable_user(archive.engine, name, by="tests")
    assert client.get("/api/studies").status_code == 401


def test_revoked_token_stops_working_at_once(client: TestClient, archive: Archive) -> None:
    token = bearer_token(archive.engine, Role.RADIOLOGIST, name="pacs-bridge")
    assert client.get("/dicomweb/studies", headers=auth_headers(token)).status_code in (200, 204)
    revoke_token(archive.engine, "pacs-bridge", by="tests")
    refused = client.get("/dicomweb/studies", headers=auth_headers(token))
    assert refused.status_code == 401 and "revoked" in refused.json()["detail"]
    assert [e.action for e in events(archive.engine, target="token:pacs-bridge")] == ["token.revoke", "token.create"]


@pytest.mark.parametrize(
    "header",
    ["Basic dXNlcjpwYXNz", "Bearer", "Bearer ", "Bearer rpt_" + "A" * 5000, "Bearer not-a-token", "bearer\trpt_x", "Bearer rpt_\u00e9"],
)
def test_malformed_authorization_headers_are_refused(client: TestClient, header: str) -> None:
    response = client.get("/api/studies", headers={"Authorization": header.encode("utf-8")})
    assert response.status_code == 401


@pytest.mark.parametrize("cookie", ["", "x", "A" * 10000, "\u00ff\u00fe", '"quoted"', "a=b=c"])
def test_malformed_session_cookies_are_refused(client: TestClient, cookie: str) -> None:
    response = client.get("/api/studies", headers={"Cookie": f"{SESSION_COOKIE}={cookie}".encode()})
    assert response.status_code == 401


def test_malformed_sign_in_forms_are_refused(client: TestClient) -> None:
    client.get("/ui/login")
    assert (
        client.post("/ui/login", content=b"\xff\xfe%%%", headers={"Content-Type": "application/x-www-form-urlencoded"}).status_code == 403
    )
    assert client.post("/ui/login", content=b"--x\r\n", headers={"Content-Type": "multipart/form-data; boundary=x"}).status_code in (
        400,
        403,
    )
    assert client.post("/ui/login", json={"username": "a"}).status_code == 403


def test_a_one_time_password_must_be_changed_first(client: TestClient, archive: Archive) -> None:
    from radpilot.security.users import add_user

    add_user(archive.engine, "newbie", Role.RADIOLOGIST, "one-time-pass-1", must_change_password=True, by="tests")
    assert login(client, "newbie", "one-time-pass-1").status_code == 303
    assert client.get("/ui/", headers={"Accept": "text/html"}).headers["location"] == "/ui/password"
    assert client.get("/api/studies").status_code == 403
    page = client.get("/ui/password")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    fields = {
        "csrf_token": csrf,
        "current_password": "one-time-pass-1",
        "new_password": "my-own-pass-2",
        "repeat_password": "my-own-pass-2",
    }
    assert client.post("/ui/password", data=fields).status_code == 303
    assert client.get("/api/studies").status_code == 200


def test_cli_users_and_tokens(tmp_path: Path, client: TestClient, settings: Settings) -> None:
    runner = CliRunner()
    data = ["--data-dir", str(settings.data_dir)]
    password_file = tmp_path / "pw"
    password_file.write_text("a-long-password-1\n")
    added = runner.invoke(cli_app, ["users", "add", "alice", "--role", "radiologist", "--password-file", str(password_file), *data])
    assert added.exit_code == 0, added.output
    prompted = runner.invoke(cli_app, ["users", "add", "bob", "--role", "researcher", *data], input="another-pass-22\nanother-pass-22\n")
    assert prompted.exit_code == 0, prompted.output
    assert (
        runner.invoke(cli_app, ["users", "add", "carol", "--role", "surgeon", "--password-file", str(password_file), *data]).exit_code == 2
    )
    assert (
        "already exists"
        in runner.invoke(cli_app, ["users", "add", "alice", "--role", "radiologist", "--password-file", str(password_file), *data]).output
    )
    listing = runner.invoke(cli_app, ["users", "list", "--json", *data])
    assert [(u["name"], u["role"]) for u in __import__("json").loads(listing.stdout)] == [("alice", "radiologist"), ("bob", "researcher")]
    assert login(client, "alice", "a-long-password-1").status_code == 303
    assert runner.invoke(cli_app, ["users", "disable", "alice", *data]).exit_code == 0
    assert client.get("/api/studies").status_code == 401

    created = runner.invoke(cli_app, ["tokens", "create", "orthanc-bridge", "--role", "technologist", *data])
    assert created.exit_code == 0, created.output
    token = created.stdout.strip()
    assert token.startswith("rpt_")
    client.cookies.clear()
    assert client.get("/api/studies", headers=auth_headers(token)).status_code == 200
    assert token not in runner.invoke(cli_app, ["tokens", "list", "--json", *data]).stdout
    assert runner.invoke(cli_app, ["tokens", "revoke", "orthanc-bridge", *data]).exit_code == 0
    assert client.get("/api/studies", headers=auth_headers(token)).status_code == 401
    assert runner.invoke(cli_app, ["tokens", "revoke", "orthanc-bridge", *data]).exit_code == 1
