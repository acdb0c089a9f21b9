"""`radpilot research-export --to-dicomweb` into a real Orthanc: the pseudonymised study arrives, no identity, references resolve."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import httpx
import pydicom
import pytest
from typer.testing import CliRunner

from radpilot.cli import app
from radpilot.config import ResearchExportTarget
from radpilot.dicom.deid import write_new_key
from radpilot.engine.review import ReviewService
from radpilot.security.principal import Role
from tests.fixtures.auth import auth_headers
from tests.fixtures.orthanc import OrthancPeer
from tests.review_support import RADIOLOGIST, add_ai_result, make_archive

pytestmark = pytest.mark.integration


def test_export_to_orthanc_by_stow_rs_holds_the_pseudonymised_study_without_identity_and_the_seg_references_resolve(
    clean_orthanc: OrthancPeer, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    case = add_ai_result(make_archive(data_dir))
    original = pydicom.dcmread(case.archive.path_of(case.archive.instances_of(case.study_uid)[0]))
    ReviewService(case.archive).decide(RADIOLOGIST, case.study_uid, case.findings["Diameter"], "accept")
    case.archive.close()
    runner = CliRunner()
    assert runner.invoke(app, ["deid-keygen", str(tmp_path / "key")]).exit_code == 0
    out = tmp_path / "out"

    done = runner.invoke(
        app,
        [
            "research-export",
            str(out),
            "--user",
            "rita",
            "--role",
            "researcher",
            "--patient-id",
            str(original.PatientID),
            "--key-file",
            str(tmp_path / "key"),
            "--mapping",
            str(tmp_path / "map.fernet"),
            "--data-dir",
            str(data_dir),
            "--to-dicomweb",
            clean_orthanc.dicomweb_url,
            "--dicomweb-only",
        ],
    )

    # Exit 3: the key image is refused (secondary capture may carry burned-in text); everything else was sent.
    assert done.exit_code == 3, done.output
    summary = json.loads(done.stdout)
    assert summary["failed"] == [] and summary["sent"] == summary["instances"] == clean_orthanc.instance_count()
    assert not list(out.rglob("*.dcm"))
    manifest = json.loads((out / "manifest.json").read_text())
    [study_uid] = manifest["studies"]
    assert clean_orthanc.study_instance_uids() == [study_uid] != [case.study_uid]

    studies = httpx.get(f"{clean_orthanc.dicomweb_url}/studies", params={"StudyInstanceUID": study_uid}, timeout=30).json()
    [study] = studies
    assert study["00100020"]["Value"][0] != original.PatientID
    names = {i: clean_orthanc.rest_get(f"/instances/{i}/simplified-tags") for i in clean_orthanc.rest_get("/instances")}
    for tags in names.values():
        assert tags["PatientID"] == study["00100020"]["Value"][0] and tags["PatientIdentityRemoved"] == "YES"
        assert str(original.PatientName) not in json.dumps(tags) and str(original.PatientID) not in json.dumps(tags)
        assert tags.get("PatientBirthDate", "") in ("", "19000101") and original.PatientBirthDate not in json.dumps(tags)

    [seg] = [tags for tags in names.values() if tags["Modality"] == "SEG"]
    seg_file = pydicom.dcmread(io.BytesIO(clean_orthanc.instance_file(clean_orthanc.resource_id(seg["SOPInstanceUID"]))))
    for series in seg_file.ReferencedSeriesSequence:
        assert clean_orthanc.lookup(series.SeriesInstanceUID), "the SEG's referenced series is not in Orthanc"
        for ref in series.ReferencedInstanceSequence:
            assert clean_orthanc.lookup(ref.ReferencedSOPInstanceUID)

    labels = json.loads((out / "labels.json").read_text())
    [ai] = labels["studies"][study_uid]["ai_results"]
    assert clean_orthanc.lookup(ai["sr_uid"]) and clean_orthanc.lookup(ai["seg_uid"])


def test_a_researcher_starts_an_export_to_orthanc_on_a_running_node_and_its_worker_sends_it(
    clean_orthanc: OrthancPeer, radpilot_factory, tmp_path: Path
) -> None:
    write_new_key(tmp_path / "deid.key")
    node = radpilot_factory(
        deid_key_file=tmp_path / "deid.key",
        research_export_targets=[ResearchExportTarget(name="orthanc-research", dicomweb_url=clean_orthanc.dicomweb_url)],
    )
    case = add_ai_result(node.archive)
    headers = auth_headers(node.token_for(Role.RESEARCHER))
    body = {"query": {"Modality": "CT"}, "options": ["retain_longitudinal_modified_dates"], "destination": {"dicomweb": "orthanc-research"}}
    started = httpx.post(f"{node.base_url}/api/research-exports", json=body, headers=headers, timeout=30)
    assert started.status_code == 202, started.text
    deadline = time.monotonic() + 60
    while (job := httpx.get(f"{node.base_url}/api/research-exports/{started.json()['id']}", headers=headers).json())["state"] not in (
        "done",
        "failed",
    ):
        assert time.monotonic() < deadline, job
        time.sleep(0.2)
    assert job["state"] == "done", job
    assert job["counts"]["sent"] == job["counts"]["instances"] == clean_orthanc.instance_count() > 0
    manifest = httpx.get(f"{node.base_url}{job['manifest']}", headers=headers).json()
    assert clean_orthanc.study_instance_uids() == manifest["studies"] != [case.study_uid]
    labels = httpx.get(f"{node.base_url}{job['labels']}", headers=headers).json()
    [ai] = labels["studies"][manifest["studies"][0]]["ai_results"]
    assert clean_orthanc.lookup(ai["seg_uid"]) and clean_orthanc.lookup(ai["sr_uid"])
