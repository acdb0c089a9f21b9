"""Administration pages: administrators only; rules with their matches, jobs with errors and retry, models, audit, nodes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from radpilot.archive import Archive
from radpilot.config import RemoteNode, Settings
from radpilot.engine.job_store import JobStore
from radpilot.security.audit import events
from radpilot.security.principal import Role
from radpilot.web.app import create_app
from tests.fixtures.principal import as_principal, install_test_principal
from tests.unit.worklist_support import add_job, store_study

ADMIN = ("root", Role.ADMINISTRATOR)
RADIOLOGIST = ("alice", Role.RADIOLOGIST)
NOBODY = {"Authorization": ""}  # the client's default token overridden: no credentials
PAGES = ("nodes", "rules", "jobs", "models", "audit", "users")


@pytest.fixture
def archive(tmp_path: Path) -> Iterator[Archive]:
    store = Archive(tmp_path / "dicom", f"sqlite:///{tmp_path / 'index.db'}", durability="none")
    yield store
    store.close()


@pytest.fixture
def client(archive: Archive, tmp_path: Path) -> Iterator[TestClient]:
    nodes = [RemoteNode(name="pacs", ae_title="PACS", host="127.0.0.1", port=1)]  # port 1: nobody answers
    app = create_app(Settings(data_dir=tmp_path / "data", ohif_dir=tmp_path / "no-ohif", nodes=nodes), archive)
    install_test_principal(app)
    with TestClient(app) as test_client:
        test_client.headers.update(as_principal("reader", Role.RADIOLOGIST))
        yield test_client


@pytest.mark.parametrize("page", PAGES)
def test_admin_pages_need_an_administrator(client: TestClient, page: str) -> None:
    assert client.get(f"/ui/admin/{page}", headers=NOBODY).status_code == 401
    refused = client.get(f"/ui/admin/{page}", headers=as_principal(*RADIOLOGIST))
    assert refused.status_code == 403 and "administrator" in refused.text
    assert client.get(f"/ui/admin/{page}", headers=as_principal(*ADMIN)).status_code == 200


def test_admin_apis_need_an_administrator(client: TestClient) -> None:
    assert client.post("/api/admin/nodes/pacs/echo", headers=NOBODY).status_code == 401
    assert client.post("/api/admin/nodes/pacs/echo", headers=as_principal(*RADIOLOGIST)).status_code == 403
    assert client.post("/api/jobs/1/retry", headers=as_principal(*RADIOLOGIST)).status_code == 403


def test_retry_puts_a_failed_job_back_in_the_queue_and_is_audited(client: TestClient, archive: Archive) -> None:
    uid, series = store_study(archive, patient_id="P1")
    job_id = add_job(archive, uid, series, "lung_ct_quant", state="failed")
    page = client.get("/ui/admin/jobs", headers=as_principal(*ADMIN)).text
    assert f'data-retry="{job_id}"' in page and "not a chest CT" in page
    answer = client.post(f"/api/jobs/{job_id}/retry", headers=as_principal(*ADMIN))
    assert answer.status_code == 200 and answer.json() == {"id": job_id, "state": "queued"}
    job = JobStore(archive.engine).get(job_id)
    assert job.state.value == "queued" and job.attempts == 0 and job.error is None
    assert client.post(f"/api/jobs/{job_id}/retry", headers=as_principal(*ADMIN)).status_code == 409  # queued: nothing to retry
    assert client.post("/api/jobs/99999/retry", headers=as_principal(*ADMIN)).status_code == 404
    assert [e.who for e in events(archive.engine, action_prefix="job.retry")] == ["root"]
    assert "job.retry" in client.get("/ui/admin/audit", headers=as_principal(*ADMIN)).text


def test_rules_page_shows_each_rule_with_the_series_it_matches(client: TestClient, archive: Archive) -> None:
    ct_uid, ct_series = store_study(archive, patient_id="P1", count=30)
    mr_uid, mr_series = store_study(archive, patient_id="P2", modality="MR")
    page = client.get("/ui/admin/rules", headers=as_principal(*ADMIN)).text
    assert "Modality" in page and "lung_ct_quant" in page
    assert ct_series in page and mr_series not in page


def test_models_page_lists_versions_checksums_gate_and_activation(client: TestClient) -> None:
    page = client.get("/ui/admin/models", headers=as_principal(*ADMIN)).text
    assert "cxr_lung_heart_seg" in page and "chest_xray" in page
    assert "fails" in page  # no validation stored in this fresh database: every gate fails, and says why
    import re

    assert re.search(r"<code class=\"uid\">[0-9a-f]{64}</code>", page)


def test_nodes_page_and_an_echo_that_fails_says_why(client: TestClient) -> None:
    page = client.get("/ui/admin/nodes", headers=as_principal(*ADMIN)).text
    assert 'data-echo="pacs"' in page and "127.0.0.1:1" in page
    answer = client.post("/api/admin/nodes/pacs/echo", headers=as_principal(*ADMIN)).json()
    assert answer["ok"] is False and answer["message"]
    assert client.post("/api/admin/nodes/nope/echo", headers=as_principal(*ADMIN)).status_code == 404


def test_the_korean_admin_page_is_korean(client: TestClient) -> None:
    client.cookies.set("radpilot_lang", "ko")
    page = client.get("/ui/admin/nodes", headers=as_principal(*ADMIN)).text
    assert "원격 노드" in page and "Remote nodes" not in page


def test_users_and_tokens_are_managed_from_the_admin_page(client: TestClient, archive: Archive) -> None:
    admin = as_principal(*ADMIN)
    assert (
        client.post("/api/admin/users", params={"name": "bob", "role": "radiologist"}, headers=as_principal(*RADIOLOGIST)).status_code
        == 403
    )
    added = client.post("/api/admin/users", params={"name": "bob", "role": "radiologist"}, headers=admin).json()
    assert added["name"] == "bob" and added["must_change_password"] is True and len(added["one_time_password"]) >= 10
    assert client.post("/api/admin/users", params={"name": "bob", "role": "radiologist"}, headers=admin).status_code == 409
    assert client.post("/api/admin/users", params={"name": "x", "role": "wizard"}, headers=admin).status_code == 400
    page = client.get("/ui/admin/users", headers=admin).text
    assert "bob" in page and 'data-disable="bob"' in page and 'data-disable="root"' not in page
    assert client.post("/api/admin/users/bob/disable", headers=admin).json() == {"name": "bob", "disabled": True}
    assert client.post("/api/admin/users/nobody/disable", headers=admin).status_code == 404

    created = client.post("/api/admin/tokens", params={"name": "modality-gw", "role": "technologist"}, headers=admin).json()
    machine = {"Authorization": f"Bearer {created['token']}"}
    assert client.get("/api/worklist", headers=machine).status_code == 200
    assert 'data-revoke="modality-gw"' in client.get("/ui/admin/users", headers=admin).text
    assert client.post("/api/admin/tokens/modality-gw/revoke", headers=admin).json()["revoked"] is True
    assert client.get("/api/worklist", headers=machine).status_code == 401  # revoked: refused at once
    actions = [e.action for e in events(archive.engine, action_prefix="user.")] + [
        e.action for e in events(archive.engine, action_prefix="token.")
    ]
    assert {"user.add", "user.disable", "token.create", "token.revoke"} <= set(actions)
