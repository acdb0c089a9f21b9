"""The findings review over HTTP: JSON API, the study view page, the feedback page and CSV, malformed input."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from radpilot.config import Settings
from radpilot.engine.review import MAX_REASON_CHARS
from radpilot.web.app import create_app
from tests.fixtures.principal import Api
from tests.review_support import ADMINISTRATOR, RADIOLOGIST, TECHNOLOGIST, ReviewCase, add_ai_result, make_archive

SCRIPT = "<script>alert('x')</script>"


@pytest.fixture
def case(tmp_path: Path) -> ReviewCase:
    return add_ai_result(make_archive(tmp_path))


@pytest.fixture
def api(case: ReviewCase, tmp_path: Path) -> Iterator[Api]:
    settings = Settings(data_dir=tmp_path / "data", ohif_dir=tmp_path / "no-ohif", organisation="General Hospital")
    with TestClient(create_app(settings, case.archive)) as client:
        yield Api(client, case.archive.engine, RADIOLOGIST)


def _decision(api: Api, case: ReviewCase, finding: str, **body: object):  # noqa: ANN202
    return api.call("POST", f"/api/studies/{case.study_uid}/findings/{finding}/decision", json=body)


def test_review_lists_each_finding_with_measurement_unit_location_confidence_and_key_image(api: Api, case: ReviewCase) -> None:
    response = api.call("GET", f"/api/studies/{case.study_uid}/review")
    assert response.status_code == 200
    body = response.json()
    diameter = next(f for f in body["findings"] if f["name"] == "Diameter")
    assert (diameter["value"], diameter["unit"], diameter["location"], diameter["confidence"]) == (6.0, "mm", "Nodule 1", 0.91)
    assert diameter["key_image_uid"] == case.key_image_uid and diameter["decision"] is None
    assert body["undecided"] == 5 and "false positive" in body["rejection_reasons"]
    thumbnail = api.call("GET", f"/api/studies/{case.study_uid}/key-images/{case.key_image_uid}/thumbnail.png")
    assert thumbnail.status_code == 200 and thumbnail.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert api.call("GET", f"/api/studies/{case.study_uid}/key-images/{case.sr_uid}/thumbnail.png").status_code == 404


def test_accept_edit_reject_then_complete_over_http(api: Api, case: ReviewCase) -> None:
    assert _decision(api, case, case.findings["Volume"], decision="reject", reason="false positive").status_code == 200
    edited = _decision(api, case, case.findings["Diameter"], decision="edit", reason="re-measured", value=7.5)
    assert edited.status_code == 200 and edited.json()["decision"]["edited"] == {"value": 7.5, "unit": "mm"}
    early = api.call("POST", f"/api/studies/{case.study_uid}/review/complete")
    assert early.status_code == 409 and "no decision yet" in early.json()["detail"]
    for finding in api.call("GET", f"/api/studies/{case.study_uid}/review").json()["findings"]:
        if finding["decision"] is None:
            assert _decision(api, case, finding["id"], decision="accept").status_code == 200
    done = api.call("POST", f"/api/studies/{case.study_uid}/review/complete")
    assert done.status_code == 200, done.text
    [completed] = done.json()["completed"]
    assert completed["destinations"] == ["pacs"] and completed["verified_sr_uid"]
    assert completed["decisions"] == {"reject": 1, "edit": 1, "accept": 3}


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"decision": "maybe"}, 400, "unknown decision"),
        ({"decision": "reject"}, 400, "a reason is required"),
        ({"decision": "edit", "reason": "x"}, 400, "finite number"),
        ({"decision": "edit", "reason": "x", "value": "seven"}, 422, ""),
        ({"decision": "reject", "reason": "x" * (MAX_REASON_CHARS + 1)}, 422, ""),
        ({"decision": "accept", "extra": 1}, 422, ""),
        ({}, 422, ""),
        (["accept"], 422, ""),
    ],
)
def test_malformed_decisions_are_refused_with_the_reason(api: Api, case: ReviewCase, body: object, status: int, message: str) -> None:
    response = api.call("POST", f"/api/studies/{case.study_uid}/findings/{case.findings['Diameter']}/decision", json=body)
    assert response.status_code == status, response.text
    assert message in str(response.json()["detail"])
    assert api.call("GET", f"/api/studies/{case.study_uid}/review").json()["undecided"] == 5


def test_a_body_that_is_not_json_and_an_unknown_finding_are_refused(api: Api, case: ReviewCase) -> None:
    path = f"/api/studies/{case.study_uid}/findings/{case.findings['Diameter']}/decision"
    response = api.call("POST", path, content=b"{not json", headers={"Content-Type": "application/json"})
    assert response.status_code == 422
    unknown = _decision(api, case, "0000", decision="accept")
    assert unknown.status_code == 404 and "no AI finding '0000'" in unknown.json()["detail"]


def test_only_radiologists_decide_and_only_administrators_see_feedback(api: Api, case: ReviewCase) -> None:
    finding = case.findings["Volume"]
    assert _decision(api.as_(TECHNOLOGIST), case, finding, decision="accept").status_code == 403
    assert _decision(api.as_(ADMINISTRATOR), case, finding, decision="accept").status_code == 403
    assert api.as_(ADMINISTRATOR).call("GET", f"/api/studies/{case.study_uid}/review").status_code == 200
    assert api.as_(None).call("GET", f"/api/studies/{case.study_uid}/review").status_code == 401
    assert api.as_(RADIOLOGIST).call("GET", "/api/review/feedback").status_code == 403
    assert api.as_(ADMINISTRATOR).call("GET", "/api/review/feedback").status_code == 200


def test_script_in_a_reason_is_stored_as_text_and_escaped_on_the_page(api: Api, case: ReviewCase) -> None:
    assert _decision(api, case, case.findings["Volume"], decision="reject", reason=SCRIPT).status_code == 200
    page = api.call("GET", f"/ui/studies/{case.study_uid}/review")
    assert page.status_code == 200
    assert SCRIPT not in page.text and "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in page.text
    assert page.headers["Content-Security-Policy"].startswith("default-src 'self'")
    assert f'src="/viewer?StudyInstanceUIDs={case.study_uid}"' in page.text
    feedback = api.as_(ADMINISTRATOR).call("GET", "/ui/review/feedback")
    assert feedback.status_code == 200 and SCRIPT not in feedback.text and "&lt;script&gt;" in feedback.text


def test_feedback_json_monitoring_and_csv_agree(api: Api, case: ReviewCase) -> None:
    _decision(api, case, case.findings["Volume"], decision="reject", reason='=HYPERLINK("http://x")')
    _decision(api, case, case.findings["Diameter"], decision="reject", reason="false positive")
    _decision(api, case, case.findings["Emphysema index LAA-950"], decision="accept")
    admin = api.as_(ADMINISTRATOR)
    [row] = admin.call("GET", "/api/review/feedback").json()
    assert (row["analysis"], row["version"], row["accepted"], row["rejected"], row["decided"]) == ("lung_ct", "1.2.0", 1, 2, 3)
    assert row["reject_rate"] == pytest.approx(2 / 3, abs=1e-4)
    monitoring = admin.call("GET", "/api/monitoring").json()
    assert monitoring["review_feedback"] == [row]
    response = admin.call("GET", "/api/review/feedback.csv")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    [header, line] = list(csv.reader(io.StringIO(response.text)))
    assert header[:6] == ["analysis", "version", "decided", "accepted", "edited", "rejected"]
    assert line[:6] == ["lung_ct", "1.2.0", "3", "1", "0", "2"]
    assert "false positive (1)" in line[-1] and line[-1].startswith("'="), "a formula must not run in a spreadsheet"
