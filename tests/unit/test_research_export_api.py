"""Research export jobs through the real web app with real API tokens: queue, run in the background, status, files, refusals."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlalchemy.orm import Session

from radpilot.archive import Archive
from radpilot.config import ResearchExportTarget, Settings
from radpilot.db import utcnow
from radpilot.dicom.deid import write_new_key
from radpilot.engine.research_export_models import ResearchExportJob
from radpilot.engine.research_exports import INTERRUPTED, ResearchExports
from radpilot.pacs import stow_client
from radpilot.pacs.dicomweb import make_dicomweb_router
from radpilot.security.audit import events_since
from radpilot.security.principal import Role
from radpilot.web.app import create_app
from tests.fixtures.auth import auth_headers, bearer_token
from tests.review_support import ReviewCase, add_ai_result, make_archive


@pytest.fixture
def case(tmp_path: Path) -> ReviewCase:
    return add_ai_result(make_archive(tmp_path / "archive"))


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    write_new_key(tmp_path / "deid.key")
    (tmp_path / "token").write_text("s3cret\n")
    return Settings(
        data_dir=tmp_path / "data",
        ohif_dir=tmp_path / "no-ohif",
        deid_key_file=tmp_path / "deid.key",
        research_export_targets=[
            ResearchExportTarget(name="research-pacs", dicomweb_url="http://target/dicomweb", bearer_token_file=tmp_path / "token")
        ],
    )


@pytest.fixture
def client(case: ReviewCase, settings: Settings) -> Iterator[TestClient]:
    app = create_app(settings, case.archive)
    exports: ResearchExports = app.state.research_exports
    exports.poll_s = 0.05
    exports.start()
    with TestClient(app) as test_client:
        yield test_client
    exports.stop()


def _headers(case: ReviewCase, role: Role) -> dict[str, str]:
    return auth_headers(bearer_token(case.archive.engine, role))


def _wait(client: TestClient, job_id: int, headers: dict[str, str]) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        job = client.get(f"/api/research-exports/{job_id}", headers=headers).json()
        if job["state"] in ("done", "failed"):
            return job
        time.sleep(0.05)
    raise AssertionError(f"research export {job_id} did not finish: {job}")


def test_a_researcher_starts_an_export_that_runs_in_the_background_and_reads_its_status_manifest_and_labels(
    client: TestClient, case: ReviewCase, settings: Settings
) -> None:
    researcher = _headers(case, Role.RESEARCHER)
    body = {"query": {"Modality": "CT"}, "options": ["retain_longitudinal_modified_dates"], "destination": {"folder": "lung-2026"}}
    started = client.post("/api/research-exports", json=body, headers=researcher)
    assert started.status_code == 202, started.text
    assert started.json()["state"] == "queued" and started.json()["destination"] == {"folder": "lung-2026", "files": True, "dicomweb": None}

    job = _wait(client, started.json()["id"], researcher)
    assert job["state"] == "done", job
    assert job["counts"]["studies"] == 1 and job["counts"]["labelled_findings"] == 5 and job["counts"]["refused"] == 1
    assert job["counts"]["instances"] == len(list((settings.resolved_research_export_dir / "lung-2026").rglob("*.dcm"))) > 0
    assert any("refused" in e and "Secondary Capture" in e for e in job["errors"])  # the key image, and why
    manifest = client.get(job["manifest"], headers=researcher)
    assert (
        manifest.status_code == 200 and manifest.json()["studies"] and manifest.json()["options"] == ["retain_longitudinal_modified_dates"]
    )
    labels = client.get(job["labels"], headers=researcher).json()
    assert list(labels["studies"]) == manifest.json()["studies"] and case.study_uid not in json.dumps(labels)
    assert [j["id"] for j in client.get("/api/research-exports", headers=researcher).json()] == [job["id"]]

    # Another researcher does not see it; an administrator does; other roles are refused.
    assert client.get(f"/api/research-exports/{job['id']}", headers=_headers(case, Role.RESEARCHER)).status_code == 404
    assert [j["id"] for j in client.get("/api/research-exports", headers=_headers(case, Role.ADMINISTRATOR)).json()] == [job["id"]]
    radiologist = _headers(case, Role.RADIOLOGIST)
    assert client.get("/api/research-exports", headers=radiologist).status_code == 403
    assert client.get(f"/api/research-exports/{job['id']}/labels", headers=radiologist).status_code == 403
    refused = client.post("/api/research-exports", json={**body, "destination": {"folder": "other"}}, headers=radiologist)
    assert refused.status_code == 403 and "researcher" in refused.json()["detail"]
    assert client.get("/api/research-exports/1").status_code == 401

    actions = [(e.action, e.outcome) for e in events_since(case.archive.engine) if e.action.startswith("export.research")]
    assert actions == [
        ("export.research.request", "success"),
        ("export.research", "failure"),  # the run: one instance refused
        ("export.research.request", "refused"),
    ]


def test_an_export_to_a_configured_dicomweb_target_sends_with_its_token_and_keeps_the_manifest_locally(
    client: TestClient, case: ReviewCase, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    receiver = Archive(tmp_path / "target" / "dicom", f"sqlite:///{tmp_path / 'target.sqlite3'}", durability="none")
    target = FastAPI()
    target.include_router(make_dicomweb_router(receiver), prefix="/dicomweb")
    target_client = TestClient(target)

    def post(url: str, *, content: Iterable[bytes], headers: dict[str, str], timeout: float) -> httpx.Response:
        if headers.get("Authorization") != "Bearer s3cret":
            return httpx.Response(401)
        return target_client.post(url.removeprefix("http://target"), content=b"".join(content), headers=headers)

    monkeypatch.setattr(stow_client.httpx, "post", post)
    researcher = _headers(case, Role.RESEARCHER)
    started = client.post(
        "/api/research-exports", json={"query": {"StudyInstanceUID": "*"}, "destination": {"dicomweb": "research-pacs"}}, headers=researcher
    )
    assert started.status_code == 202, started.text
    job = _wait(client, started.json()["id"], researcher)
    assert job["state"] == "done" and job["counts"]["sent"] == job["counts"]["instances"] == receiver.instance_count() > 0
    folder = settings.resolved_research_export_dir / job["destination"]["folder"]
    assert job["destination"]["folder"] == f"job-{job['id']}" and {p.name for p in folder.iterdir()} == {"manifest.json", "labels.json"}
    receiver.close()


MALFORMED: list[tuple[dict[str, Any], list[str]]] = [
    ({"destination": {"folder": "x"}}, ["body", "query"]),
    ({"query": {"Modality": "CT"}}, ["body", "destination"]),
    ({"query": {"Modality": "CT"}, "destination": {}}, ["body", "destination"]),
    ({"query": {"Modality": "CT"}, "destination": {"folder": "../etc"}}, ["body", "destination", "folder"]),
    ({"query": {"Modality": "CT"}, "destination": {"folder": "a/b"}}, ["body", "destination", "folder"]),
    ({"query": {"Modality": "CT"}, "destination": {"folder": "/tmp/x"}}, ["body", "destination", "folder"]),
    ({"query": {"Modality": "CT"}, "destination": {"folder": "a..b"}}, ["body", "destination", "folder"]),
    ({"query": {"Modality": "CT"}, "destination": {"folder": "x" * 65}}, ["body", "destination", "folder"]),
    ({"query": {"Modality": "CT"}, "destination": {"folder": "x", "path": "/"}}, ["body", "destination", "path"]),
    ({"query": {"Modality": "CT"}, "destination": {"dicomweb": "http://evil/"}}, ["body", "destination", "dicomweb"]),
    ({"query": {}, "destination": {"folder": "x"}}, ["body", "query"]),
    ({"query": {"Bogus": "1"}, "destination": {"folder": "x"}}, ["body", "query", "Bogus"]),
    ({"query": {"PatientID": "PAT002"}, "destination": {"folder": "x"}}, ["body", "query", "PatientID"]),
    ({"query": {"SOPInstanceUID": "1.2"}, "destination": {"folder": "x"}}, ["body", "query", "SOPInstanceUID"]),
    ({"query": {"Modality": "C\x00T"}, "destination": {"folder": "x"}}, ["body", "query", "Modality"]),
    ({"query": {"StudyDate": "2026"}, "destination": {"folder": "x"}}, ["body", "query"]),
    ({"query": {"Modality": 5}, "destination": {"folder": "x"}}, ["body", "query", "Modality"]),
    ({"query": ["Modality"], "destination": {"folder": "x"}}, ["body", "query"]),
    ({"query": {"Modality": "CT"}, "profile": "full", "destination": {"folder": "x"}}, ["body", "profile"]),
    ({"query": {"Modality": "CT"}, "options": ["retain_safe_private"], "destination": {"folder": "x"}}, ["body", "options"]),
    (
        {
            "query": {"Modality": "CT"},
            "options": ["retain_longitudinal_modified_dates", "retain_longitudinal_full_dates"],
            "destination": {"folder": "x"},
        },
        ["body", "options"],
    ),
    ({"query": {"Modality": "CT"}, "destination": {"folder": "x"}, "out_dir": "/"}, ["body", "out_dir"]),
]


def test_malformed_requests_are_422_naming_the_field_and_queue_nothing(client: TestClient, case: ReviewCase) -> None:
    # One app for every case: building the study's AI results takes seconds, a request milliseconds.
    researcher = _headers(case, Role.RESEARCHER)
    for body, field in MALFORMED:
        answer = client.post("/api/research-exports", json=body, headers=researcher)
        assert answer.status_code == 422, (body, answer.text)
        assert any(d["loc"][: len(field)] == field for d in answer.json()["detail"]), (body, answer.json())
    assert client.get("/api/research-exports", headers=_headers(case, Role.ADMINISTRATOR)).json() == []


def test_not_json_is_422_and_an_existing_folder_or_a_missing_key_is_409(
    client: TestClient, case: ReviewCase, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    researcher = _headers(case, Role.RESEARCHER)
    garbage = client.post("/api/research-exports", content=b"\xff{not json", headers={**researcher, "Content-Type": "application/json"})
    assert garbage.status_code in (400, 422), garbage.text  # FastAPI: 400 "error parsing the body"
    (settings.resolved_research_export_dir / "taken").mkdir(parents=True)
    taken = client.post("/api/research-exports", json={"query": {"Modality": "CT"}, "destination": {"folder": "taken"}}, headers=researcher)
    assert taken.status_code == 409 and "already exists" in taken.json()["detail"]
    monkeypatch.setattr(settings, "deid_key_file", None)
    monkeypatch.delenv("RADPILOT_DEID_KEY", raising=False)
    nokey = client.post("/api/research-exports", json={"query": {"Modality": "CT"}, "destination": {"folder": "new"}}, headers=researcher)
    assert nokey.status_code == 409 and "no de-identification key" in nokey.json()["detail"]


def test_at_start_an_export_left_running_is_marked_failed_and_queued_ones_run(case: ReviewCase, settings: Settings) -> None:
    with Session(case.archive.engine) as session, session.begin():
        for state, folder in (("running", "was-running"), ("queued", "was-queued")):
            session.add(
                ResearchExportJob(
                    state=state,
                    requested_by="rita",
                    requested_role="researcher",
                    query={"Modality": "CT"},
                    options=[],
                    folder=folder,
                    write_instances=True,
                    errors=[],
                )
            )
    exports = ResearchExports(settings, case.archive, poll_s=0.05)
    exports.start()
    try:
        deadline = time.monotonic() + 30
        while exports.get(2)["state"] not in ("done", "failed") and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        exports.stop()
    interrupted, resumed = exports.get(1), exports.get(2)
    assert interrupted["state"] == "failed" and interrupted["errors"] == [INTERRUPTED]
    assert resumed["state"] == "done" and resumed["counts"]["studies"] == 1 and resumed["manifest"] == "/api/research-exports/2/manifest"


def test_a_job_another_live_server_runs_is_left_alone_until_its_heartbeat_lapses(case: ReviewCase, settings: Settings) -> None:
    with Session(case.archive.engine) as session, session.begin():
        session.add(
            ResearchExportJob(
                state="running",
                requested_by="rita",
                requested_role="researcher",
                query={"Modality": "CT"},
                options=[],
                folder="elsewhere",
                write_instances=True,
                errors=[],
                claimed_by="other-host:1:abc",
                heartbeat_at=utcnow(),
            )
        )
    exports = ResearchExports(settings, case.archive, lease_s=60)
    assert exports.recover() == 0 and exports.get(1)["state"] == "running", "a live server's job was taken from it"
    with Session(case.archive.engine) as session, session.begin():
        session.execute(update(ResearchExportJob).values(heartbeat_at=utcnow() - timedelta(seconds=61)))
    assert exports.recover() == 1
    assert exports.get(1)["state"] == "failed" and exports.get(1)["errors"] == [INTERRUPTED]


def test_the_research_exports_page_offers_the_form_and_lists_jobs_escaped_and_refuses_other_roles(
    client: TestClient, case: ReviewCase
) -> None:
    researcher = _headers(case, Role.RESEARCHER)
    script = "<script>alert(1)</script>"
    queued = client.post(
        "/api/research-exports", json={"query": {"StudyDescription": script}, "destination": {"folder": "xss"}}, headers=researcher
    )
    assert queued.status_code == 202
    page = client.get("/ui/research-exports", headers={**researcher, "Accept": "text/html"})
    assert page.status_code == 200, page.text
    assert 'id="research-export"' in page.text and 'value="retain_longitudinal_modified_dates"' in page.text
    assert '<option value="research-pacs">' in page.text and "/ui/static/research_exports.js" in page.text
    assert f'data-job="{queued.json()["id"]}"' in page.text and script not in page.text
    assert 'href="/ui/research-exports"' in page.text  # the header links to it for a researcher
    assert client.get("/ui/static/research_exports.js", headers=researcher).status_code == 200
    refused = client.get("/ui/research-exports", headers={**_headers(case, Role.RADIOLOGIST), "Accept": "text/html"})
    assert refused.status_code == 403 and 'id="research-export"' not in refused.text
