"""Roles enforced on the web: a radiologist cannot reach administrator APIs, a researcher cannot start work,
and a refusal names the roles that may."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from radpilot.archive import Archive
from radpilot.config import Settings
from radpilot.security.principal import Role
from radpilot.web.app import create_app
from tests.fixtures.auth import auth_headers, bearer_token

# (method, path, roles allowed). The app here runs no engine, so a request that passes the role check gets 503.
ADMIN_ROUTES = [
    ("POST", "/api/jobs/1/cancel", {Role.ADMINISTRATOR}),
    ("GET", "/api/deliveries", {Role.ADMINISTRATOR}),
    ("GET", "/api/engine/detector", {Role.ADMINISTRATOR}),
    ("GET", "/api/status", {Role.ADMINISTRATOR}),
    ("GET", "/api/monitoring", {Role.ADMINISTRATOR, Role.RESEARCHER}),
    ("POST", "/api/studies/1.2.3/analyze", {Role.ADMINISTRATOR, Role.RADIOLOGIST, Role.TECHNOLOGIST}),
]


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(data_dir=tmp_path / "data", ohif_dir=tmp_path / "no-ohif")
    archive = Archive.from_settings(settings)
    with TestClient(create_app(settings, archive), follow_redirects=False) as test_client:
        test_client.tokens = {role: bearer_token(archive.engine, role) for role in Role}  # type: ignore[attr-defined]
        yield test_client
    archive.close()


@pytest.mark.parametrize(("method", "path", "allowed"), ADMIN_ROUTES)
@pytest.mark.parametrize("role", list(Role))
def test_each_role_reaches_only_its_routes(client: TestClient, method: str, path: str, allowed: set[Role], role: Role) -> None:
    response = client.request(method, path, headers=auth_headers(client.tokens[role]))  # type: ignore[attr-defined]
    if role in allowed:
        assert response.status_code != 403, response.text
    else:
        assert response.status_code == 403, response.text
        assert role.value in response.json()["detail"] and all(r.value in response.json()["detail"] for r in allowed)


def test_every_role_reads_the_study_list_and_api_docs(client: TestClient) -> None:
    for role in Role:
        headers = auth_headers(client.tokens[role])  # type: ignore[attr-defined]
        assert client.get("/api/studies", headers=headers).status_code == 200
        assert client.get("/api/openapi.json", headers=headers).status_code == 200
        assert client.get("/ui/", headers=headers).status_code == 200
