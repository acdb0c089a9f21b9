"""/api and /dicomweb against their own OpenAPI schema (schemathesis, in process): no server error, documented bodies conform.

A short, derandomized run per role (administrator, radiologist: each reaches endpoints the
other is refused); ``benchmarks/fuzz_api.py`` runs the long one.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from radpilot.archive import Archive
from radpilot.config import Settings
from radpilot.engine.service import Engine
from radpilot.security.principal import Role
from radpilot.web.app import create_app
from tests.factories import make_ct_series, to_part10_bytes
from tests.fixtures.auth import auth_headers, bearer_token
from tests.fuzz_support import fuzz_api

CI_EXAMPLES = 3


@pytest.fixture
def app(tmp_path: Path) -> Iterator[tuple[FastAPI, Archive]]:
    settings = Settings(data_dir=tmp_path / "data", ohif_dir=tmp_path / "no-ohif", workers=0, analysis_enabled=False)
    archive = Archive(tmp_path / "dicom", f"sqlite:///{tmp_path / 'index.sqlite3'}", durability="none")
    for ds in make_ct_series(2):
        archive.store_file_bytes(to_part10_bytes(ds))
    application = create_app(settings, archive)
    application.state.engine = Engine(settings, archive)  # as `radpilot serve` does: the job endpoints answer
    yield application, archive
    archive.close()


@pytest.mark.parametrize("role", [Role.ADMINISTRATOR, Role.RADIOLOGIST], ids=lambda r: r.value)
def test_every_operation_answers_without_server_error_and_as_documented(app: tuple[FastAPI, Archive], role: Role) -> None:
    application, archive = app
    report = fuzz_api(application, auth_headers(bearer_token(archive.engine, role)), CI_EXAMPLES)
    assert report.operations >= 45, "the schema lost operations: /api and /dicomweb must both be described"
    assert report.requests >= report.operations
    assert not report.failures, "\n\n".join(f"{label}: {failure}" for label, failure in report.failures.items())


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("post", "/api/reports/{id}/amend"),
        ("get", "/api/reports/{id}"),
        ("get", "/api/jobs/{id}"),
        ("post", "/api/jobs/{id}/retry"),
    ],
)
def test_row_id_beyond_64_bits_is_refused_422_not_a_server_error(app: tuple[FastAPI, Archive], method: str, path: str) -> None:
    # Found by schemathesis: the id reached SQLite and overflowed there (OverflowError, a 500).
    application, archive = app
    client = TestClient(application, raise_server_exceptions=False)
    headers = auth_headers(bearer_token(archive.engine, Role.RADIOLOGIST if "reports" in path else Role.ADMINISTRATOR))
    response = client.request(method, path.format(id=2**64), headers=headers, json={"reason": "x"})
    assert response.status_code == 422, response.text
