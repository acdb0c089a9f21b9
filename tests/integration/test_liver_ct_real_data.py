"""liver_ct on the real 3D-IRCADb patient through the production path (HU DICOM -> window -> 2 mm -> ONNX model ->
source grid), against its manual liver and tumour masks.

The data are read from the shared folder (RADPILOT_SHARED_DATA or ../shared/data), never copied into the
repository; the test skips when it is absent and fails instead in CI (RADPILOT_REQUIRE_SERVICES=1).  The
evaluation code is training/liver_ct/evaluate_ircad.py, so the test and the recorded figures
(training/liver_ct/results/ircad.json) measure the same thing.  The bounds are regression bounds around what
the committed model reaches; the issue's targets (volume within 5 %, Dice >= 0.93 here) are in acceptance.yaml.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from tests.helpers import REPO_ROOT, require_or_skip

pytestmark = pytest.mark.timeout(900)

# Regression bounds: what the committed model reaches on this patient (results/ircad.json) with a margin.
LIVER_DICE_MIN = 0.93  # liver_spleen_ct_seg 0.3.0: 0.946 (0.2.0: 0.937, 0.1.0: 0.898)
LIVER_VOLUME_ERROR_MAX_PERCENT = 5.0  # 0.3.0: -1.8 % (0.2.0: -2.5 %, 0.1.0: -10.3 %); the target


def _load_evaluator() -> ModuleType:
    path = REPO_ROOT / "training" / "liver_ct" / "evaluate_ircad.py"
    spec = importlib.util.spec_from_file_location("liver_ct_evaluate_ircad", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def ircad(shared_data_dir: Path) -> dict:
    if importlib.util.find_spec("nibabel") is None:
        require_or_skip("nibabel is not installed (pip install -e '.[test]')")
    root = shared_data_dir / "liver-ct-ircad"
    if not (root / "cases.csv").is_file():
        require_or_skip(f"{root} is absent")
    return _load_evaluator().evaluate(root)


def test_liver_segmentation_from_hu_dicom_overlaps_the_manual_mask(ircad: dict) -> None:
    assert ircad["liver_dice"] >= LIVER_DICE_MIN


def test_liver_volume_through_the_production_path_is_close_to_the_manual_mask(ircad: dict) -> None:
    assert abs(ircad["liver_volume_error_percent"]) <= LIVER_VOLUME_ERROR_MAX_PERCENT


def test_mean_liver_attenuation_is_within_5_hu_of_the_manual_mask(ircad: dict) -> None:
    assert abs(ircad["liver_mean_hu"] - ircad["liver_mean_hu_same_rule_in_manual_mask"]) <= 5.0
    assert abs(ircad["liver_mean_hu"] - ircad["liver_mean_hu_reference_parenchyma"]) <= 5.0


def test_contrast_phase_is_measured_as_enhanced_and_no_fat_grade_is_given(ircad: dict) -> None:
    assert ircad["contrast_phase"] == "Portal-venous phase"
    assert any(note.startswith("No steatosis grade: contrast-enhanced") for note in ircad["notes"])


def test_at_least_one_of_the_two_tumours_is_hit_by_a_lesion_candidate(ircad: dict) -> None:
    assert any(ircad["tumours_hit_by_a_candidate"])
