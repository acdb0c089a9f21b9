"""The reports API and editor page: create, edit, accept AI, sign (radiologist only, confirmed), read-only after; malformed input."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from radpilot.archive import Archive
from radpilot.dictation.lexicon import vocabulary_for
from radpilot.reports.templates import SHIPPED_DIR
from radpilot.web.app import create_app
from radpilot.web.reports_api import dictation_exam
from tests.fixtures.principal import act_as
from tests.fixtures.radpilot import make_settings
from tests.report_factories import LUNG_MEASUREMENTS, RADIOLOGIST, TECHNOLOGIST, record_finished_job, store_study


@pytest.fixture
def setup(tmp_path: Path):
    settings = make_settings(tmp_path)
    archive = Archive.from_settings(settings)
    app = create_app(settings, archive)
    holder = act_as(app, RADIOLOGIST)
    study_uid, series_uid, _ = store_study(archive)
    record_finished_job(archive, study_uid, series_uid, LUNG_MEASUREMENTS)
    with TestClient(app) as client:
        yield client, holder, study_uid
    archive.close()


def test_a_report_is_written_accepted_and_signed_through_the_api(setup) -> None:
    client, _, study_uid = setup
    created = client.post("/api/reports", json={"study_instance_uid": study_uid, "template": "chest_ct"})
    assert created.status_code == 201, created.text
    report = created.json()
    assert "Emphysema: LAA-950 12.3 % of lung volume." in report["sections"]["findings"]
    assert [p["state"] for p in report["ai_phrases"]] == ["pending", "pending"]
    rid = report["id"]
    assert client.put(f"/api/reports/{rid}/sections/impression", json={"text": "Mild emphysema."}).status_code == 200
    refused = client.post(f"/api/reports/{rid}/sign", json={"confirm": True})
    assert refused.status_code == 422 and "not yet accepted" in refused.json()["detail"]
    assert client.post(f"/api/reports/{rid}/accept-ai", json={}).status_code == 200
    signed = client.post(f"/api/reports/{rid}/sign", json={"confirm": True}).json()
    assert (signed["status"], signed["read_only"], signed["signed_by"]) == ("final", True, "dr.grey")
    locked = client.put(f"/api/reports/{rid}/sections/impression", json={"text": "changed"})
    assert locked.status_code == 409 and "read-only" in locked.json()["detail"]
    pdf = client.get(f"/api/reports/{rid}/export/pdf")
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    assert client.get(f"/api/reports?study={study_uid}").json()["id"] == rid


def test_only_a_radiologist_signs_and_anonymous_requests_are_refused(setup) -> None:
    client, holder, study_uid = setup
    rid = client.post("/api/reports", json={"study_instance_uid": study_uid, "template": "chest_xray"}).json()["id"]
    client.put(f"/api/reports/{rid}/sections/impression", json={"text": "Normal."})
    holder.current = TECHNOLOGIST
    refused = client.post(f"/api/reports/{rid}/sign", json={"confirm": True})
    assert refused.status_code == 403 and "radiologist" in refused.json()["detail"]
    assert client.get(f"/api/reports/{rid}").json()["status"] == "draft"
    holder.current = None
    assert client.get(f"/api/reports/{rid}").status_code == 401


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "problem"),
    [
        ("post", "/api/reports", {"study_instance_uid": "1.2.3", "template": "chest_ct"}, 404, "not in the archive"),
        ("post", "/api/reports", {"study_instance_uid": "<script>", "template": "chest_ct"}, 422, "pattern"),
        ("post", "/api/reports", {"study_instance_uid": "STUDY", "template": "nope"}, 422, "unknown report template"),
        ("post", "/api/reports", {"study": "1.2"}, 422, "study_instance_uid"),
        ("put", "/api/reports/RID/sections/summary", {"text": "x"}, 422, "unknown section"),
        ("put", "/api/reports/RID/sections/findings", {"text": "x" * 20_001}, 422, "at most"),
        ("put", "/api/reports/RID/sections/findings", {"text": 5}, 422, "string"),
        ("put", "/api/reports/RID/sections/findings", {"text": "x", "extra": 1}, 422, "extra"),
        ("post", "/api/reports/RID/sign", {"confirm": False}, 422, "confirmation"),
        ("post", "/api/reports/RID/sign", {}, 422, "confirm"),
        ("post", "/api/reports/RID/status", {"status": "final"}, 409, "only by signing"),
        ("post", "/api/reports/RID/status", {"status": "bogus"}, 409, "unknown report status"),
        ("post", "/api/reports/RID/accept-ai", {"phrase_ids": ["zz"]}, 422, "no AI phrase"),
        ("post", "/api/reports/RID/amend", {"reason": "x"}, 409, "only a signed"),
        ("get", "/api/reports/999999", None, 404, "no report 999999"),
        ("get", "/api/reports/RID/export/docx", None, 404, "unknown format"),
        ("get", "/api/reports/RID/export/pdf", None, 422, "only a signed report"),
    ],
)
def test_malformed_or_impossible_requests_get_a_4xx_naming_the_problem(setup, method, path, body, status, problem) -> None:
    client, _, study_uid = setup
    rid = client.post("/api/reports", json={"study_instance_uid": study_uid, "template": "chest_ct"}).json()["id"]
    path = path.replace("RID", str(rid))
    body = {k: (study_uid if v == "STUDY" else v) for k, v in body.items()} if body is not None else None
    response = client.request(method.upper(), path, json=body)
    assert response.status_code == status, response.text
    assert problem in response.text


def test_a_malformed_json_body_is_a_422(setup) -> None:
    client, _, _ = setup
    response = client.post("/api/reports", content=b"{not json", headers={"Content-Type": "application/json"})
    assert response.status_code == 422


def test_the_editor_page_marks_ai_phrases_and_is_read_only_once_signed(setup) -> None:
    client, _, study_uid = setup
    assert f'href="/ui/studies/{study_uid}/report"' in client.get("/ui/archive/").text
    empty = client.get(f"/ui/studies/{study_uid}/report")
    assert empty.status_code == 200 and "Start report" in empty.text
    rid = client.post("/api/reports", json={"study_instance_uid": study_uid, "template": "chest_ct"}).json()["id"]
    client.put(f"/api/reports/{rid}/sections/clinical_information", json={"text": "<script>alert(1)</script>"})
    page = client.get(f"/ui/studies/{study_uid}/report").text
    assert 'class="ai-badge"' in page and "<mark>Emphysema: LAA-950 12.3 % of lung volume.</mark>" in page
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert 'id="sign"' in page and 'id="dictate"' in page and "readonly" not in page
    client.put(f"/api/reports/{rid}/sections/impression", json={"text": "Mild emphysema."})
    client.post(f"/api/reports/{rid}/accept-ai", json={})
    client.post(f"/api/reports/{rid}/sign", json={"confirm": True})
    signed = client.get(f"/ui/studies/{study_uid}/report").text
    assert signed.count("readonly") == 5 and 'id="sign"' not in signed and "/export/pdf" in signed


def test_the_editor_page_carries_the_templates_for_voice_as_inert_escaped_json(tmp_path: Path) -> None:
    """A department's template text reaches "insert template" exactly, and cannot close the data block."""
    own = tmp_path / "templates"
    own.mkdir()
    shipped = (Path(__file__).resolve().parents[2] / "radpilot/reports/exam_templates/chest_ct.yaml").read_text()
    hostile = 'CT of the chest.</script><script>alert(1)</script> "quoted" & more.'
    (own / "chest_ct.yaml").write_text(shipped.replace('technique: "CT of the chest."', f"technique: {json.dumps(hostile)}"))
    settings = make_settings(tmp_path, report_templates_dir=own)
    archive = Archive.from_settings(settings)
    app = create_app(settings, archive)
    act_as(app, RADIOLOGIST)
    study_uid, _, _ = store_study(archive)
    with TestClient(app) as client:
        client.post("/api/reports", json={"study_instance_uid": study_uid, "template": "chest_ct"})
        page = client.get(f"/ui/studies/{study_uid}/report").text
    archive.close()
    block = re.search(r'<script type="application/json" id="exam-templates">(.*?)</script>', page, re.S)
    assert block is not None, page
    templates = json.loads(block.group(1))
    assert templates["chest_ct"]["sections"]["technique"] == hostile
    assert templates["chest_ct"]["title"] == "CT chest" and "cardiac_mr" in templates
    assert "<script>alert(1)</script>" not in page
    assert '<meta name="csrf-token"' in page


def test_every_shipped_template_dictates_with_a_vocabulary_the_dictation_service_knows() -> None:
    """A report of any template must not have its dictation refused as an unknown exam type."""
    for template in sorted(path.stem for path in SHIPPED_DIR.glob("*.yaml")):
        exam = dictation_exam(template)
        assert vocabulary_for(exam or None) is not None, template
    assert dictation_exam("chest_ct") == "chest_ct" and dictation_exam("low_dose_lung_ct") == "chest_ct"
    assert dictation_exam("cardiac_mr") == "" and dictation_exam("not_a_template") == ""
