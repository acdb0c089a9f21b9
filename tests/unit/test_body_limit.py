"""Oversized HTTP request bodies outside STOW-RS are refused with 413 before they are read whole."""

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

LIMIT = 4096


@pytest.fixture
def client(tmp_path: Path) -> Iterator[tuple[TestClient, Archive]]:
    archive = Archive(tmp_path / "dicom", f"sqlite:///{tmp_path / 'index.sqlite3'}", durability="none")
    settings = Settings(data_dir=tmp_path / "data", ohif_dir=tmp_path / "no-ohif", max_request_bytes=LIMIT, max_stow_bytes=10 * LIMIT)
    client = TestClient(create_app(settings, archive), raise_server_exceptions=False)
    client.headers.update(auth_headers(bearer_token(archive.engine, Role.RADIOLOGIST)))
    yield client, archive
    archive.close()


def test_declared_oversized_body_is_refused_413(client: tuple[TestClient, Archive]) -> None:
    response = client[0].post("/api/reports", content=b"{" + b" " * (2 * LIMIT) + b"}", headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert f"exceeds the limit of {LIMIT} bytes" in response.json()["detail"]


def test_streamed_oversized_body_without_length_is_refused_413(client: tuple[TestClient, Archive]) -> None:
    sent: list[int] = []

    def chunks() -> Iterator[bytes]:
        for _ in range(1000):  # 1 MiB if it were all read
            sent.append(1)
            yield b" " * 1024

    response = client[0].post("/api/reports", content=chunks(), headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert "exceeds the limit" in response.json()["detail"]


def test_body_within_the_limit_reaches_the_route(client: tuple[TestClient, Archive]) -> None:
    response = client[0].post("/api/reports", json={"study_instance_uid": "1.2.3"})
    assert response.status_code == 404 and "not in the archive" in response.json()["detail"]


def test_stow_keeps_its_own_larger_limit(client: tuple[TestClient, Archive]) -> None:
    body = b"--b\r\nContent-Type: application/dicom\r\n\r\n" + b"x" * (2 * LIMIT) + b"\r\n--b--\r\n"
    headers = {"Content-Type": 'multipart/related; type="application/dicom"; boundary=b'}
    response = client[0].post("/dicomweb/studies", content=body, headers=headers)
    assert response.status_code == 409, response.text  # read and judged (not DICOM), not refused for its size
