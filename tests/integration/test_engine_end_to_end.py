"""The AI engine end to end with real peers.

Orthanc (the hospital PACS) C-STOREs a real chest CT to RadPilot; with no
further action the study is detected as complete, routed to lung_ct_quant, run
by an embedded worker process, and a DICOM SEG, a TID 1500 SR and a key image
arrive back in Orthanc, where dciodvfy finds no errors in them.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset

from tests.fixtures.radpilot import orthanc_node
from tests.helpers import QUIET_PERIOD_S, dciodvfy_errors, require_or_skip, wait_for

pytestmark = pytest.mark.integration

SEG = "1.2.840.10008.5.1.4.1.1.66.4"
COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
POLL_S = 1.0  # the jobs take tens of seconds, and one poll of Orthanc reads the tags of every instance

RULES = """
rules:
  - name: chest-ct
    match:
      Modality: CT
      ImageType: {contains: [ORIGINAL]}
      NumberOfSlices: {min: 20}
    analyses: [lung_ct_quant]
    destinations: [orthanc]
    priority: routine
"""


@pytest.fixture
def chest_ct_in_orthanc(orthanc, clean_orthanc, shared_data_dir: Path) -> str:
    folder = shared_data_dir / "ct-lung" / "LUNGCT-002" / "dicom"
    files = sorted(folder.glob("*.dcm"))
    if not files:
        require_or_skip(f"no chest CT under {folder}")
    for path in files:
        orthanc.upload(path)
    return str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)


def _result_sop_classes(orthanc, study_uid: str) -> dict[str, str]:  # noqa: ANN001
    study_id = orthanc.resource_id(study_uid)
    found = {}
    for instance in orthanc.rest_get(f"/studies/{study_id}/instances"):
        tags = orthanc.rest_get(f"/instances/{instance['ID']}/simplified-tags")
        if tags.get("SOPClassUID") in (SEG, COMPREHENSIVE_3D_SR, SECONDARY_CAPTURE):
            found[tags["SOPClassUID"]] = instance["ID"]
    return found


def _content_items(node: Dataset) -> list[Dataset]:
    """Every content item of an SR tree, depth first."""
    items = []
    for item in node.get("ContentSequence", []):
        items.append(item)
        items.extend(_content_items(item))
    return items


def _concept_name(item: Dataset) -> str:
    return str(item.ConceptNameCodeSequence[0].CodeMeaning) if "ConceptNameCodeSequence" in item else ""


def test_study_from_pacs_comes_back_with_seg_sr_and_key_image(
    radpilot_factory, orthanc, chest_ct_in_orthanc: str, shared_data_dir: Path, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    node = radpilot_factory(
        nodes=[orthanc_node(orthanc)], rules_file=rules, quiet_period_s=QUIET_PERIOD_S, workers=1, analysis_enabled=True
    )
    orthanc.add_modality("radpilot", node.ae_title, node.host, node.dicom_port)
    orthanc.store_to("radpilot", orthanc.resource_id(chest_ct_in_orthanc))
    assert node.archive.instance_count() == 64

    results = wait_for(
        lambda: (found := _result_sop_classes(orthanc, chest_ct_in_orthanc)) and len(found) == 3 and found,
        timeout_s=180,
        what="SEG, SR and key image in Orthanc",
        interval_s=POLL_S,
    )
    jobs = node.server.engine.queue.list()
    assert [(j.analysis, j.state.value) for j in jobs] == [("lung_ct_quant", "done")]
    assert node.archive.instance_count() == 67

    seg = pydicom.dcmread(_orthanc_file(orthanc, results[SEG]))
    assert seg.StudyInstanceUID == chest_ct_in_orthanc
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["Right lung", "Left lung"]
    sr = pydicom.dcmread(_orthanc_file(orthanc, results[COMPREHENSIVE_3D_SR]))
    assert sr.StudyInstanceUID == chest_ct_in_orthanc
    assert sr.ConceptNameCodeSequence[0].CodeValue == "126000"  # Imaging Measurement Report
    items = _content_items(sr)
    observer = [str(i.TextValue) for i in items if i.ValueType == "TEXT" and _concept_name(i) == "Device Observer Name"]
    assert observer == ["lung_ct_quant"]
    # right lung, left lung and both lungs; the total is the regression value of the shared data set
    volumes_ml = sorted(
        float(i.MeasuredValueSequence[0].NumericValue)
        for i in items
        if i.ValueType == "NUM"
        and _concept_name(i) == "Volume"
        and i.MeasuredValueSequence[0].MeasurementUnitsCodeSequence[0].CodeValue == "mL"
    )
    assert len(volumes_ml) == 3, volumes_ml
    assert volumes_ml[0] + volumes_ml[1] == pytest.approx(volumes_ml[2], abs=0.05)
    with open(shared_data_dir / "ct-lung" / "cases.csv", newline="") as handle:
        reference = {row["case_id"]: row for row in csv.DictReader(handle)}["LUNGCT-002"]
    assert volumes_ml[2] == pytest.approx(float(reference["total_lung_ml"]), rel=0.10)

    for sop_class, instance_id in results.items():
        path = tmp_path / f"{sop_class}.dcm"
        path.write_bytes(orthanc.instance_file(instance_id))
        errors = dciodvfy_errors(path)
        assert not errors, f"{sop_class}: {errors}"


def _orthanc_file(orthanc, instance_id: str):  # noqa: ANN001, ANN202
    import io

    return io.BytesIO(orthanc.instance_file(instance_id))


def test_series_that_is_not_a_volume_fails_with_a_clear_reason(radpilot_factory, tmp_path: Path) -> None:
    from tests.factories import make_ct_series, to_part10_bytes

    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES.replace("min: 20", "min: 1"))
    node = radpilot_factory(rules_file=rules, workers=1)
    other = make_ct_series(30, rows=64, columns=64)
    for ds in other:
        node.archive.store_file_bytes(to_part10_bytes(ds))
    tiny = make_ct_series(3, rows=64, columns=64)
    for ds in tiny:
        node.archive.store_file_bytes(to_part10_bytes(ds))
    engine = node.server.engine
    engine.route_study(str(tiny[0].StudyInstanceUID))
    [job] = wait_for(lambda: [j for j in engine.queue.list() if j.state.final], 120, "the job to finish", interval_s=POLL_S)
    assert job.state.value == "failed"
    assert "series has 3 slices" in job.error and "lung_ct_quant needs" in job.error
    assert node.archive.instance_count() == 33


def test_series_that_grows_is_analysed_again_and_the_old_results_are_superseded(
    radpilot_factory, shared_data_dir: Path, tmp_path: Path
) -> None:
    files = sorted((shared_data_dir / "ct-lung" / "LUNGCT-002" / "dicom").glob("*.dcm"))
    if len(files) < 64:
        require_or_skip("LUNGCT-002 is missing from the shared data")
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES.replace("destinations: [orthanc]", "destinations: []"))
    node = radpilot_factory(rules_file=rules, workers=1)
    engine = node.server.engine
    for path in files[:40]:
        node.archive.store_file_bytes(path.read_bytes())
    study_uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)

    engine.route_study(study_uid)
    [first] = wait_for(lambda: [j for j in engine.queue.list() if j.state.final], 180, "the first job", interval_s=POLL_S)
    assert first.state.value == "done", first.error
    first_results = set(first.result["sop_instance_uids"])
    assert node.archive.instance_count() == 40 + len(first_results)

    for path in files[40:]:
        node.archive.store_file_bytes(path.read_bytes())
    engine.route_study(study_uid)
    jobs = wait_for(
        lambda: (js := engine.queue.list()) and len(js) == 2 and all(j.state.final for j in js) and js,
        180,
        "the second job",
        interval_s=POLL_S,
    )
    second = next(j for j in jobs if j.id != first.id)
    assert second.state.value == "done", second.error
    assert second.supersedes_job_id == first.id
    assert len(second.input_sop_uids) == 64
    second_results = set(second.result["sop_instance_uids"])
    assert not first_results & second_results
    stored = {i.sop_instance_uid for i in node.archive.instances_of(study_uid)}
    assert second_results <= stored and not (first_results & stored), "old results must be superseded, not duplicated"
    assert node.archive.instance_count() == 64 + len(second_results)
    engine.route_study(study_uid)  # nothing new: no third job
    assert len(engine.queue.list()) == 2
