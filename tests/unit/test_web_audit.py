"""Web accesses to patient data are audited with the principal, the client address and the outcome."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from starlette.types import ASGIApp, Receive, Scope, Send

from radpilot.archive import Archive
from radpilot.config import Settings
from radpilot.security.audit import events_since, verify_chain
from radpilot.security.principal import Principal, Role
from radpilot.web.app import create_app
from tests.factories import make_ct_series, to_part10_bytes


class FakeSignIn:
    """Stands in for the authentication layer only in setting request.state.principal, as it will."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope.setdefault("state", {})["principal"] = Principal("dr.house", Role.RADIOLOGIST)
        await self.app(scope, receive, send)


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
    app.add_middleware(FakeSignIn)  # outermost: runs before the audit middleware, as authentication will
    with TestClient(app) as client:
        assert client.get("/dicomweb/studies", params={"StudyInstanceUID": study}).status_code == 200
        assert client.get(f"/dicomweb/studies/{study}/metadata").status_code == 200
        assert client.get("/dicomweb/studies/1.2.3.404/metadata").status_code == 404
        client.get("/api/studies")
        client.get("/ui/static/does-not-matter.css")
    events = events_since(archive.engine)
    assert [(e.action, e.target, e.outcome) for e in events] == [
        ("dicomweb.qido", "/dicomweb/studies", "success"),
        ("dicomweb.wado", study, "success"),
        ("dicomweb.wado", "1.2.3.404", "failure"),
        ("web.api", "/api/studies", "success"),
    ]
    assert {e.who for e in events} == {"dr.house"} and events[0].details["role"] == "radiologist"
    assert events[0].source.startswith("testclient")
    assert verify_chain(archive.engine).ok
