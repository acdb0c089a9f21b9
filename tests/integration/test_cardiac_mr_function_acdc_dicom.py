"""cardiac_mr_function on real ACDC cines written as DICOM (scripts/acdc_to_dicom.py), through the production path.

Each patient's ED and ES become a 2-phase MR cine with nominal geometry (1.5 mm pixels, 10 mm
slices); the series is read from files as the engine reads it, the heart is found in the
uncropped-looking frame from the motion between the phases, and the ED/ES picked from the
LV curve must be ACDC's, the SEG's LV cavity must overlap the expert contour and the EF
(spacing-free) must agree with ACDC's voxel-count EF. These patients are in the shipped model's
training set: this checks the production path on real images, not accuracy (the CV figures in the
model manifest are the accuracy).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest

from radpilot.analyses.cardiac_mr_function import ANALYSIS
from radpilot.dicom.cine import cine_from_datasets
from tests.helpers import REPO_ROOT, require_or_skip

pytestmark = pytest.mark.integration

PATIENTS = ("patient002", "patient061", "patient083")  # DCM, NOR, abnormal RV


def _writer():  # noqa: ANN202 - the script as a module
    spec = importlib.util.spec_from_file_location("acdc_to_dicom", REPO_ROOT / "scripts" / "acdc_to_dicom.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


@pytest.mark.parametrize("patient", PATIENTS)
def test_acdc_cine_as_dicom_gives_the_reference_phases_contours_and_ef(shared_data_dir: Path, tmp_path: Path, patient: str) -> None:
    root = shared_data_dir / "cmr-acdc"
    if not root.is_dir():
        require_or_skip(f"{root} is absent")
    folder = _writer().write_patient(root, patient, tmp_path)
    datasets = [pydicom.dcmread(p) for p in sorted((folder / "dicom").iterdir())]
    cine = cine_from_datasets(datasets)
    findings = ANALYSIS.run(cine)
    values = {(m.name.meaning, m.finding_site.meaning if m.finding_site else ""): m.value for m in findings.measurements}
    info = json.loads((folder / "case.json").read_text())
    assert values[("End-diastolic phase number", "Heart")] == 1
    assert values[("End-systolic phase number", "Heart")] == 2
    ed_ref = np.load(folder / "labels_ED.npy")
    ed = findings.segmentation.labels  # type: ignore[union-attr]
    assert findings.segmentation.source_uids == cine.frame_sop_instance_uids[0]  # type: ignore[union-attr]
    overlap = 2 * ((ed == 3) & (ed_ref == 3)).sum() / ((ed == 3).sum() + (ed_ref == 3).sum())
    assert overlap >= 0.85
    # A gross-failure guard, not the accuracy target: the model's 5-fold CV gives LV EF MAE 3.0 points with 2 of 80
    # patients off by more than 10; the "none > 10" is not met yet.
    assert values[("Left ventricular ejection fraction", "Left ventricle")] == pytest.approx(100 * info["lv_ef"], abs=20.0)
