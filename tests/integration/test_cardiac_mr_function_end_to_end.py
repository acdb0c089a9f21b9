"""cardiac_mr_function end to end with a real Orthanc as the hospital PACS.

Orthanc holds the synthetic beating-heart phantom as a short-axis cine (one MR instance per slice
and phase, exact volumes known); it C-STOREs the series to RadPilot, whose default routing sends
it to cardiac_mr_function (also when the cine is written one series per slice position, as some
scanners do: routed and analysed as one cine); the SEG (RV cavity, LV myocardium, LV cavity at ED and at ES), the SR
(volumes, EF, mass, cardiac output, the phases used) and the key images (contours at ED and ES,
the volume-time curve) arrive back in Orthanc, and dciodvfy finds no error in them.
"""

from __future__ import annotations

import io
from pathlib import Path

import pydicom
import pytest

from radpilot.analyses.cardiac_mr_function import CardiacMrFunction
from radpilot.analyses.cardiac_mr_function.phantom import make_phantom, phantom_datasets
from tests.fixtures.radpilot import activate_models, orthanc_node
from tests.helpers import QUIET_PERIOD_S, dciodvfy_errors, wait_for
from tests.integration.test_chest_xray_end_to_end import default_rules_to
from tests.integration.test_engine_end_to_end import COMPREHENSIVE_3D_SR, POLL_S, SECONDARY_CAPTURE, SEG, _concept_name, _content_items

pytestmark = pytest.mark.integration


def _results(orthanc, study_uid: str) -> dict[str, list[str]]:  # noqa: ANN001 - the Orthanc fixture
    found: dict[str, list[str]] = {}
    for instance in orthanc.rest_get(f"/studies/{orthanc.resource_id(study_uid)}/instances"):
        tags = orthanc.rest_get(f"/instances/{instance['ID']}/simplified-tags")
        if tags.get("SOPClassUID") in (SEG, COMPREHENSIVE_3D_SR, SECONDARY_CAPTURE):
            found.setdefault(tags["SOPClassUID"], []).append(instance["ID"])
    return found


@pytest.mark.parametrize("series_per_slice", [False, True], ids=["one-series", "one-series-per-slice"])
def test_phantom_cine_from_pacs_comes_back_with_ed_es_seg_sr_and_key_images(
    radpilot_factory,  # noqa: ANN001 - fixture
    orthanc,  # noqa: ANN001 - fixture
    clean_orthanc,  # noqa: ANN001 - fixture
    tmp_path: Path,
    series_per_slice: bool,
) -> None:
    phantom = make_phantom(phases=16, slices=8)
    truth = phantom.truth
    datasets = phantom_datasets(phantom, patient_height_m=1.75, patient_weight_kg=72.0, series_per_slice=series_per_slice)
    study_uid = str(datasets[0].StudyInstanceUID)
    folder = tmp_path / "series"
    folder.mkdir()
    for k, ds in enumerate(datasets):
        path = folder / f"MR{k:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        orthanc.upload(path)
    node = radpilot_factory(
        nodes=[orthanc_node(orthanc)],
        rules_file=default_rules_to(tmp_path, "orthanc"),
        quiet_period_s=QUIET_PERIOD_S,
        workers=1,
        analysis_enabled=True,
    )
    activate_models(node, CardiacMrFunction, "cardiac_mr_function end-to-end test")
    orthanc.add_modality("radpilot", node.ae_title, node.host, node.dicom_port)
    orthanc.store_to("radpilot", orthanc.resource_id(study_uid))
    assert node.archive.instance_count() == len(datasets)

    results = wait_for(
        lambda: (found := _results(orthanc, study_uid)) and sum(len(v) for v in found.values()) == 5 and found,
        timeout_s=300,
        what="2 SEG, SR and 2 key images in Orthanc",
        interval_s=POLL_S,
    )
    assert [(j.analysis, j.state.value) for j in node.server.engine.queue.list()] == [("cardiac_mr_function", "done")]
    assert len(results[SEG]) == 2 and len(results[SECONDARY_CAPTURE]) == 2

    segs = [pydicom.dcmread(io.BytesIO(orthanc.instance_file(i))) for i in results[SEG]]
    labels = sorted(str(s.SegmentLabel) for seg in segs for s in seg.SegmentSequence)
    assert labels == sorted(f"{n} ({p})" for n in ("RV cavity", "LV myocardium", "LV cavity") for p in ("end-diastole", "end-systole"))
    by_uid = {str(ds.SOPInstanceUID): ds for ds in datasets}
    for seg in segs:
        # each SEG lies on the images of one phase: all its frames reference instances of one trigger time
        referenced = {
            str(ref.ReferencedSOPInstanceUID)
            for frame in seg.PerFrameFunctionalGroupsSequence
            for derivation in frame.DerivationImageSequence
            for ref in derivation.SourceImageSequence
        }
        assert len({float(by_uid[u].TriggerTime) for u in referenced}) == 1

    sr = pydicom.dcmread(io.BytesIO(orthanc.instance_file(results[COMPREHENSIVE_3D_SR][0])))
    values = {
        (_concept_name(i), str(i.MeasuredValueSequence[0].MeasurementUnitsCodeSequence[0].CodeValue)): float(
            i.MeasuredValueSequence[0].NumericValue
        )
        for i in _content_items(sr)
        if i.ValueType == "NUM"
    }
    assert 0 < values[("Left ventricular ejection fraction", "%")] < 100  # accuracy on the phantom: tests/unit/test_cardiac_mr_function.py
    assert values[("End-diastolic phase number", "1")] == truth.ed_phase + 1
    assert abs(values[("End-systolic phase number", "1")] - (truth.es_phase + 1)) <= 1
    assert ("Cardiac output", "L/min") in values and ("Body surface area", "m2") in values

    for sop_class, ids in results.items():
        for n, instance_id in enumerate(ids):
            path = tmp_path / f"{sop_class}-{n}.dcm"
            path.write_bytes(orthanc.instance_file(instance_id))
            errors = dciodvfy_errors(path)
            assert not errors, f"{sop_class}: {errors}"
