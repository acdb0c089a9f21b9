"""Web accesses to patient data are audited with the principal, the client address and the outcome."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from radpilot.archive import Archive
from radpilot.config import Settings
from radpilot.security.audit import events_since, verify_chain
from radpilot.security.principal import Role
from radpilot.web.app import create_app
from tests.factories import make_ct_series, to_part10_bytes
from tests.fixtures.auth import auth_headers, bearer_token


@pytest.fixture
def archive(tmp_path: Path) -> Iterator[Archive]:
    store = Archive(tmp_path / "dicom", f"sqlite:///{tmp_path / 'index.db'}", durability="none")
    yield store
    store.close()


def test_dicomweb_pages_and_api_are_audited_and_assets_are_not(archive: Archive, tmp_path: Path) -> None:
    series = make_ct_series(2)
    for ds in series:
        assert archive.store_file_bytes(to_part10_bytes(ds)).outcome.accepted
    study = str(series[0].StudyInstanceUID)
    app = create_app(Settings(data_dir=tmp_path / "data", ohif_dir=tmp_path / "no-ohif"), archive)
    with TestClient(app) as client:
        client.headers.update(auth_headers(bearer_token(archive.engine, Role.RADIOLOGIST, name="dr.house")))
        assert client.get("/dicomweb/studies", params={"StudyInstanceUID": study}).status_code == 200
        assert client.get(f"/dicomweb/studies/{study}/metadata").status_code == 200
        assert client.get("/dicomweb/studies/1.2.3.404/metadata").status_code == 404
        client.get("/api/studies")
        client.get("/ui/static/does-not-matter.css")
    events = [e for e in events_since(archive.engine) if e.action.startswith(("dicomweb.", "web."))]  # not the token's own audit row
    assert [(e.action, e.target, e.outcome) for e in events] == [
        ("dicomweb.qido", "/dicomweb/studies", "success"),
        ("dicomweb.wado", study, "success"),
        ("dicomweb.wado", "1.2.3.404", "failure"),
        ("web.api", "/api/studies", "success"),
    ]
    assert {e.who for e in events} == {"dr.house"} and events[0].details["role"] == "radiologist"
    assert events[0].source.startswith("testclient")
    assert verify_chain(archive.engine).ok
