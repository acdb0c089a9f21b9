"""The findings review end to end with Orthanc as the hospital PACS.

Orthanc C-STOREs a real chest CT to RadPilot; lung_ct_quant runs on it (in this process,
as in test_viewer_seg_overlay.py) and the SEG, SR and key image go back to Orthanc through
the outbox. A radiologist then accepts, edits and rejects findings over HTTP and finishes
the review: the verified SR arrives in Orthanc holding exactly the accepted and edited
findings (the edit with its new value), marked VERIFIED with the radiologist as verifying
observer, and dciodvfy finds no error in it.
"""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import pydicom
import pytest

from radpilot.dicom.encoders.verified_sr import report_findings
from radpilot.engine.pipeline import PipelineRunner
from tests.fixtures.principal import Api
from tests.fixtures.radpilot import RunningNode, orthanc_node, radpilot_factory  # noqa: F401 - fixture
from tests.helpers import dciodvfy_errors, require_or_skip, wait_for
from tests.integration.test_engine_end_to_end import COMPREHENSIVE_3D_SR, RULES
from tests.review_support import RADIOLOGIST

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]

WORKER_ID = "review-e2e"


@pytest.fixture
def node(orthanc, clean_orthanc, radpilot_factory, tmp_path: Path) -> RunningNode:  # noqa: ANN001, F811
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    return radpilot_factory(nodes=[orthanc_node(orthanc)], rules_file=rules, organisation="General Hospital")


def _srs_in_orthanc(orthanc, study_uid: str) -> dict[str, pydicom.Dataset]:  # noqa: ANN001
    found = {}
    for instance in orthanc.rest_get(f"/studies/{orthanc.resource_id(study_uid)}/instances"):
        tags = orthanc.rest_get(f"/instances/{instance['ID']}/simplified-tags")
        if tags.get("SOPClassUID") == COMPREHENSIVE_3D_SR:
            found[instance["ID"]] = pydicom.dcmread(io.BytesIO(orthanc.instance_file(instance["ID"])))
    return found


def test_verified_sr_in_orthanc_holds_exactly_the_accepted_and_edited_findings(
    orthanc, node: RunningNode, shared_data_dir: Path, tmp_path: Path
) -> None:  # noqa: ANN001
    files = sorted((shared_data_dir / "ct-lung" / "LUNGCT-002" / "dicom").glob("*.dcm"))
    if not files:
        require_or_skip("LUNGCT-002 is missing from the shared data")
    for path in files:
        orthanc.upload(path)
    study_uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    orthanc.add_modality("radpilot", node.ae_title, node.host, node.dicom_port)
    orthanc.store_to("radpilot", orthanc.resource_id(study_uid))
    assert node.archive.instance_count() == len(files)

    engine = node.server.engine
    engine.route_study(study_uid)
    job = engine.queue.store.claim_next(WORKER_ID, lease_s=600)
    assert job is not None and job.analysis == "lung_ct_quant"
    runner = PipelineRunner(node.settings, node.archive, analyses=engine.analyses)
    output = runner(job)
    assert engine.queue.store.complete(job.id, WORKER_ID, output, on_record=runner.on_record)
    [ai_sr] = wait_for(lambda: list(_srs_in_orthanc(orthanc, study_uid).values()), 120, "the AI SR in Orthanc", interval_s=1.0)

    with httpx.Client(base_url=node.base_url, timeout=60) as client:
        api = Api(client, node.archive.engine, RADIOLOGIST)
        review = api.call("GET", f"/api/studies/{study_uid}/review").json()
        findings = review["findings"]
        assert len(findings) >= 3 and {f["id"] for f in findings} == {f.id for f in report_findings(ai_sr)}
        accepted, edited, rejected = findings[0], findings[1], findings[2]
        path = f"/api/studies/{study_uid}/findings/{{}}/decision"
        assert api.call("POST", path.format(accepted["id"]), json={"decision": "accept"}).status_code == 200
        new_value = round(edited["value"] * 1.1, 2)
        response = api.call("POST", path.format(edited["id"]), json={"decision": "edit", "reason": "contour leaks", "value": new_value})
        assert response.status_code == 200, response.text
        response = api.call("POST", path.format(rejected["id"]), json={"decision": "reject", "reason": "false positive"})
        assert response.status_code == 200, response.text
        for finding in findings[3:]:
            assert api.call("POST", path.format(finding["id"]), json={"decision": "accept"}).status_code == 200
        done = api.call("POST", f"/api/studies/{study_uid}/review/complete")
        assert done.status_code == 200, done.text
        [completed] = done.json()["completed"]
        assert completed["destinations"] == ["orthanc"]

    def verified_in_orthanc() -> tuple[str, pydicom.Dataset] | None:
        for instance_id, ds in _srs_in_orthanc(orthanc, study_uid).items():
            if ds.get("VerificationFlag") == "VERIFIED":
                return instance_id, ds
        return None

    instance_id, verified = wait_for(verified_in_orthanc, 120, "the verified SR in Orthanc", interval_s=1.0)
    assert verified.SOPInstanceUID == completed["verified_sr_uid"]
    assert str(verified.VerifyingObserverSequence[0].VerifyingObserverName) == RADIOLOGIST.name
    assert verified.VerifyingObserverSequence[0].VerifyingOrganization == "General Hospital"
    in_pacs = {(f.name, f.location, f.value) for f in report_findings(verified)}
    expected = {(f["name"], f["location"], f["value"]) for f in findings if f["id"] != rejected["id"]}
    expected = {
        (n, loc, new_value if (n, loc, v) == (edited["name"], edited["location"], edited["value"]) else v) for n, loc, v in expected
    }
    assert in_pacs == expected
    saved = tmp_path / "verified.dcm"
    saved.write_bytes(orthanc.instance_file(instance_id))
    assert dciodvfy_errors(saved) == []
