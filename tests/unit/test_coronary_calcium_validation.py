"""coronary_calcium through the validation workbench on a small phantom set, and its acceptance gate's metrics.

The set is written by the same code as scripts/make_calcium_phantoms.py (one case per CAC-DRS
category at 3 mm), registered with a pinned hash and validated through the production path
(DICOM -> Volume -> check_input -> run), as ``radpilot validate`` does.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from radpilot.analyses.coronary_calcium.phantom import MANIFEST_OPTIONS, write_validation_set
from radpilot.validation.gate import criteria_for
from radpilot.validation.runner import run_validation
from radpilot.validation.subject import resolve_subject
from tests.unit.test_validation_runner import registry_with
from tests.unit.validation_support import manifest_dict


@pytest.fixture(scope="module")
def phantom_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cac") / "ct-calcium-phantom"
    write_validation_set(root, rows=256, pixel_mm=1.0, increments_mm=(3.0,), noises_hu=(15.0,))
    return root


def test_the_workbench_measures_every_acceptance_metric_and_they_meet_the_criteria(phantom_set: Path, tmp_path: Path) -> None:
    manifest = manifest_dict(
        "ct-calcium-phantom",
        "dicom-series",
        phantom_set,
        MANIFEST_OPTIONS,
        analysis="coronary_calcium",
        development_use=["coronary_calcium"],
    )
    registry = registry_with(tmp_path, manifest)
    result = run_validation(resolve_subject("coronary_calcium"), registry.get("ct-calcium-phantom"), registry, n_resamples=200).result
    metrics = result["metrics"]
    assert metrics["failure_rate"] == 0.0 and len(result["cases"]) == 4
    assert metrics["dice_coronary_calcium_min"] == pytest.approx(1.0)
    assert metrics["cac_drs_category_mae"] == 0.0
    assert metrics["vessels_with_calcium_mae"] == 0.0
    for criterion in criteria_for("coronary_calcium").criteria:
        value = metrics[criterion.metric]
        assert criterion.holds(value), (criterion.metric, value)
