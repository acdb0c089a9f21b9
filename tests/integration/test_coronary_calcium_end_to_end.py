"""coronary_calcium end to end with a real Orthanc as the hospital PACS.

Orthanc holds a digital thorax phantom CT (calcium inserts in the four artery territories,
bone and aortic decoys); it C-STOREs the series to RadPilot, whose routing sends it to
coronary_calcium; the SEG (lesions by artery), the SR (Agatston, CAC-DRS, "validated on phantoms
only") and the key image arrive back in Orthanc, and dciodvfy finds no error in them.
"""

from __future__ import annotations

import io
from pathlib import Path

import pydicom
import pytest

from radpilot.analyses.coronary_calcium.phantom import make_phantom, phantom_datasets
from tests.fixtures.radpilot import orthanc_node
from tests.helpers import QUIET_PERIOD_S, dciodvfy_errors, wait_for
from tests.integration.test_engine_end_to_end import COMPREHENSIVE_3D_SR, POLL_S, SECONDARY_CAPTURE, SEG, _concept_name, _content_items

pytestmark = pytest.mark.integration

RULES = """
rules:
  - name: calcium
    match:
      Modality: CT
      ContrastBolusAgent: {present: false}
      NumberOfSlices: {min: 20}
    analyses: [coronary_calcium]
    destinations: [orthanc]
    priority: routine
"""


def _result_sop_classes(orthanc, study_uid: str) -> dict[str, str]:  # noqa: ANN001 - the Orthanc fixture
    study_id = orthanc.resource_id(study_uid)
    found = {}
    for instance in orthanc.rest_get(f"/studies/{study_id}/instances"):
        tags = orthanc.rest_get(f"/instances/{instance['ID']}/simplified-tags")
        if tags.get("SOPClassUID") in (SEG, COMPREHENSIVE_3D_SR, SECONDARY_CAPTURE):
            found[tags["SOPClassUID"]] = instance["ID"]
    return found


def test_phantom_study_from_pacs_comes_back_with_calcium_seg_sr_and_key_image(
    radpilot_factory,  # noqa: ANN001 - fixture
    orthanc,  # noqa: ANN001 - fixture
    clean_orthanc,  # noqa: ANN001 - fixture
    tmp_path: Path,
) -> None:
    phantom = make_phantom(rows=256, columns=256, pixel_mm=1.0, noise_hu=10.0)
    truth = phantom.truth()
    datasets = phantom_datasets(phantom)
    study_uid = str(datasets[0].StudyInstanceUID)
    folder = tmp_path / "series"
    folder.mkdir()
    for k, ds in enumerate(datasets):
        path = folder / f"CT{k:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        orthanc.upload(path)
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    node = radpilot_factory(
        nodes=[orthanc_node(orthanc)], rules_file=rules, quiet_period_s=QUIET_PERIOD_S, workers=1, analysis_enabled=True
    )
    orthanc.add_modality("radpilot", node.ae_title, node.host, node.dicom_port)
    orthanc.store_to("radpilot", orthanc.resource_id(study_uid))
    assert node.archive.instance_count() == len(datasets)

    results = wait_for(
        lambda: (found := _result_sop_classes(orthanc, study_uid)) and len(found) == 3 and found,
        timeout_s=180,
        what="SEG, SR and key image in Orthanc",
        interval_s=POLL_S,
    )
    assert [(j.analysis, j.state.value) for j in node.server.engine.queue.list()] == [("coronary_calcium", "done")]

    seg = pydicom.dcmread(io.BytesIO(orthanc.instance_file(results[SEG])))
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["LM calcium", "LAD calcium", "LCX calcium", "RCA calcium"]
    sr = pydicom.dcmread(io.BytesIO(orthanc.instance_file(results[COMPREHENSIVE_3D_SR])))
    items = _content_items(sr)
    scores = [
        float(i.MeasuredValueSequence[0].NumericValue)
        for i in items
        if i.ValueType == "NUM" and _concept_name(i) == "Coronary artery calcium score"
    ]
    assert max(scores) == pytest.approx(truth["agatston_total"], rel=0.05)  # the total is the largest of total and per-artery
    meanings = {str(i.ConceptCodeSequence[0].CodeMeaning) for i in items if i.ValueType == "CODE"}
    assert {"CAC-DRS A3/N4", "Validated on phantoms only"} <= meanings

    for sop_class, instance_id in results.items():
        path = tmp_path / f"{sop_class}.dcm"
        path.write_bytes(orthanc.instance_file(instance_id))
        errors = dciodvfy_errors(path)
        assert not errors, f"{sop_class}: {errors}"
