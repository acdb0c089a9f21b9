"""The worklist page and API: rows, marks, escaping, claims over HTTP, the change feed, English and Korean."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient

from radpilot.archive import Archive
from radpilot.config import Settings
from radpilot.security.principal import Role
from radpilot.web.app import create_app
from radpilot.web.i18n import LANGUAGES, LOCALES_DIR
from radpilot.worklist.feed import WorklistFeed
from tests.fixtures.principal import as_principal, install_test_principal
from tests.unit.worklist_support import add_job, store_study

ALICE = ("alice", Role.RADIOLOGIST)
BOB = ("bob", Role.RADIOLOGIST)

NOBODY = {"Authorization": ""}  # the client's default token overridden: no credentials


@pytest.fixture
def archive(tmp_path: Path) -> Iterator[Archive]:
    store = Archive(tmp_path / "dicom", f"sqlite:///{tmp_path / 'index.db'}", durability="none")
    yield store
    store.close()


@pytest.fixture
def client(archive: Archive, tmp_path: Path) -> Iterator[TestClient]:
    app = create_app(Settings(data_dir=tmp_path / "data", ohif_dir=tmp_path / "no-ohif"), archive)
    install_test_principal(app)
    with TestClient(app) as test_client:
        test_client.headers.update(as_principal("reader", Role.RADIOLOGIST))
        yield test_client


def row_of(html: str, uid: str) -> str:
    return re.search(rf'<tr data-uid="{re.escape(uid)}".*?</tr>', html, re.S).group(0)


def test_worklist_is_the_start_page_with_marks_links_and_status(client: TestClient, archive: Archive) -> None:
    stat_uid, _ = store_study(archive, patient_id="P1", patient_name="KIM^MINJI", priority="STAT", study_date="20230101")
    flagged_uid, series = store_study(archive, patient_id="P2", patient_name="LEE^JUN", study_date="20240101")
    add_job(archive, flagged_uid, series, "chest_xray", state="done", flags=[("nodule_candidates", True)])
    html = client.get("/ui/", headers=as_principal(*ALICE)).text
    assert html.index(stat_uid) < html.index(flagged_uid)
    stat_row, flagged_row = row_of(html, stat_uid), row_of(html, flagged_uid)
    assert 'class="stat ' in stat_row and '<span class="badge stat">STAT</span>' in stat_row
    assert 'class="critical ' in flagged_row and "Critical" in flagged_row and "Nodule_Candidates" in flagged_row
    assert "chest_xray: done" in flagged_row and f'href="/ui/studies/{flagged_uid}/review"' in flagged_row
    assert "KIM, MINJI" in stat_row and "2023-01-01 10:15" in stat_row and "Unread" in stat_row
    assert 'data-action="claim"' in stat_row  # a radiologist may claim
    assert 'data-action="claim"' not in client.get("/ui/", headers=as_principal("t", Role.TECHNOLOGIST)).text
    assert '<script src="/ui/static/worklist.js" defer></script>' in html
    assert "http://" not in html and "https://" not in html  # nothing from a CDN: works offline
    assert client.get("/ui/static/worklist.js").status_code == 200


def test_patient_data_is_escaped(client: TestClient, archive: Archive) -> None:
    store_study(archive, patient_id='"><img src=x onerror=alert(1)>', patient_name="<script>alert(2)</script>", description="<b>x</b>")
    html = client.get("/ui/").text
    assert "<script>alert" not in html and "<img src=x" not in html and "<b>x</b>" not in html
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in html


def test_bad_query_parameters_answer_400_naming_them(client: TestClient) -> None:
    response = client.get("/ui/", params={"sort": "<script>"})
    assert response.status_code == 400 and "sort &#39;&lt;script&gt;&#39; is not one of" in response.text
    assert client.get("/api/worklist", params={"limit": "lots"}).json()["detail"] == "limit 'lots' is not a whole number"
    assert client.get("/api/worklist", params={"date_from": "yesterday"}).status_code == 400


def test_claims_over_http(client: TestClient, archive: Archive) -> None:
    uid, _ = store_study(archive, patient_id="P1")
    assert client.post(f"/api/worklist/{uid}/claim", headers=NOBODY).status_code == 401
    assert client.post(f"/api/worklist/{uid}/claim", headers=as_principal("t", Role.TECHNOLOGIST)).status_code == 403
    assert client.post("/api/worklist/1.2.3.4/claim", headers=as_principal(*ALICE)).status_code == 404
    claimed = client.post(f"/api/worklist/{uid}/claim", headers=as_principal(*ALICE))
    assert claimed.status_code == 200 and claimed.json()["claimed_by"] == "alice"
    refused = client.post(f"/api/worklist/{uid}/claim", headers=as_principal(*BOB))
    assert refused.status_code == 409 and "alice" in refused.json()["detail"]
    row = client.get("/api/worklist", headers=as_principal(*ALICE)).json()["studies"][0]
    assert (row["reading"], row["claimed_by"]) == ("in_progress", "alice")
    html = row_of(client.get("/ui/", headers=as_principal(*ALICE)).text, uid)
    assert 'data-action="read"' in html and "Claimed by alice" in html
    assert client.post(f"/api/worklist/{uid}/read", headers=as_principal(*ALICE)).json()["status"] == "read"
    assert client.get("/api/worklist", params={"reading": "read"}).json()["total"] == 1


def test_every_message_key_is_in_both_catalogues() -> None:
    keys = {code: set(yaml.safe_load((LOCALES_DIR / f"{code}.yaml").read_text(encoding="utf-8"))) for code in LANGUAGES}
    assert keys["en"] == keys["ko"], keys["en"] ^ keys["ko"]


def test_the_korean_page_shows_korean_and_the_switch_sets_a_cookie(client: TestClient, archive: Archive) -> None:
    store_study(archive, patient_id="P1", priority="STAT")
    switched = client.get("/ui/lang/ko", params={"next": "/ui/?sort=date"}, follow_redirects=False)
    assert switched.status_code == 303 and switched.headers["location"] == "/ui/?sort=date"
    assert "radpilot_lang=ko" in switched.headers["set-cookie"]
    html = client.get("/ui/").text
    assert '<html lang="ko">' in html and "<h1>워크리스트" in html and "미판독" in html and "응급" in html
    assert "Worklist" not in html and "Unread" not in html
    assert client.get("/ui/lang/xx").status_code == 404
    for outside in ("//evil.example/", "/\\evil.example/", "https://evil.example/"):
        assert client.get("/ui/lang/en", params={"next": outside}, follow_redirects=False).headers["location"] == "/ui/"
    client.cookies.clear()
    assert "<h1>워크리스트" in client.get("/ui/", headers={"Accept-Language": "ko-KR,ko;q=0.9"}).text
    assert "<h1>Worklist" in client.get("/ui/").text


def test_rows_fragment_is_the_table_alone(client: TestClient, archive: Archive) -> None:
    uid, _ = store_study(archive, patient_id="P1")
    fragment = client.get("/ui/worklist/rows").text
    assert fragment.startswith('<table class="studies worklist">') and uid in fragment and "<html" not in fragment


def test_change_feed_names_new_studies_finished_jobs_and_claims(archive: Archive) -> None:
    feed = WorklistFeed(archive.engine)
    assert feed.poll() == []  # the first look takes the watermarks
    uid, series = store_study(archive, patient_id="P1")
    assert [(c.kind, c.study_instance_uid, c.data["change"]) for c in feed.poll()] == [("study", uid, "added")]
    assert feed.poll() == []
    job_id = add_job(archive, uid, series, "lung_ct_quant", state="queued")
    assert [(c.kind, c.data["state"]) for c in feed.poll()] == [("analysis", "queued")]
    from radpilot.engine.job_store import JobStore
    from radpilot.engine.jobs import JobOutput

    store = JobStore(archive.engine)
    store.claim(job_id, "w", 60.0)
    assert [(c.kind, c.data["state"]) for c in feed.poll()] == [("analysis", "running")]
    store.complete(job_id, "w", JobOutput())
    assert [(c.kind, c.study_instance_uid, c.data["state"]) for c in feed.poll()] == [("analysis", uid, "done")]
    from radpilot.security.principal import Principal
    from radpilot.worklist.reading import claim

    claim(archive.engine, uid, Principal("alice", Role.RADIOLOGIST))
    assert [(c.kind, c.data["claimed_by"]) for c in feed.poll()] == [("reading", "alice")]


def test_a_researcher_sees_pseudonyms_and_cannot_search_by_identity(client: TestClient, archive: Archive) -> None:
    uid, _ = store_study(archive, patient_id="REAL-ID-77", patient_name="HONG^GILDONG", accession="ACC-R1")
    researcher = as_principal("res", Role.RESEARCHER)
    html = client.get("/ui/", headers=researcher).text
    assert uid in html and "HONG" not in html and "REAL-ID-77" not in html
    body = client.get("/api/worklist", headers=researcher).json()
    assert body["studies"][0]["study_instance_uid"] == uid
    assert "HONG" not in str(body) and "REAL-ID-77" not in str(body)
    assert uid not in client.get("/ui/", params={"text": "hong"}, headers=researcher).text  # names are not searched
    assert uid not in client.get("/ui/", params={"text": "real-id"}, headers=researcher).text
    assert uid in client.get("/ui/", params={"text": "acc-r1"}, headers=researcher).text
    assert "HONG, GILDONG" in client.get("/ui/").text  # a radiologist sees the name
