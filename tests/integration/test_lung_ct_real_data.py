"""lung_ct_quant on real CT: manual 2-D masks (ct-lung-slices) and real DICOM series (ct-lung).

The data are read from the shared folder (RADPILOT_SHARED_DATA or ../shared/data),
never copied into the repository; the tests skip when it is absent, and fail
instead in CI (RADPILOT_REQUIRE_SERVICES=1).  The evaluation code is the
accuracy benchmark's (benchmarks/lung_ct_accuracy.py), so the test and the
benchmark measure the same thing.
"""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path
from types import ModuleType

import pydicom
import pytest

from radpilot.dicom.volume import volume_from_files
from tests.helpers import REPO_ROOT, require_or_skip

pytestmark = pytest.mark.timeout(240)


def _load_benchmark() -> ModuleType:
    path = REPO_ROOT / "benchmarks" / "lung_ct_accuracy.py"
    spec = importlib.util.spec_from_file_location("lung_ct_accuracy", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    for name in ("PIL", "nibabel"):
        if importlib.util.find_spec(name) is None:
            require_or_skip(f"{name} is not installed (pip install -e '.[test]')")
    return _load_benchmark()


@pytest.fixture(scope="module")
def slices_dir(shared_data_dir: Path) -> Path:
    path = shared_data_dir / "ct-lung-slices"
    if not (path / "cases.csv").is_file():
        require_or_skip(f"{path} is absent")
    return path


@pytest.fixture(scope="module")
def series_dir(shared_data_dir: Path) -> Path:
    path = shared_data_dir / "ct-lung"
    if not (path / "cases.csv").is_file():
        require_or_skip(f"{path} is absent")
    return path


@pytest.fixture(scope="module")
def series_results(bench: ModuleType, series_dir: Path) -> dict[str, dict]:
    return {c["case_id"]: c for c in bench.evaluate_series(series_dir)["cases"]}


# ----------------------------------------------------------------------------- 2-D, manual masks
def test_slices_mean_dice_against_manual_masks(bench: ModuleType, slices_dir: Path) -> None:
    result = bench.evaluate_slices(slices_dir)
    summary = result["summary"]
    excluded = {c["slice_id"] for c in result["excluded_from_statistics"]}
    assert excluded == {"ID_0134_Z_0137", "ID_0254_Z_0075"}, "the mask_qc-flagged masks stay out of the statistics"
    assert summary["n"] == 118
    assert summary["mean_dice"] >= 0.95, summary
    assert summary["median_dice"] >= 0.95, summary
    assert summary["min_dice"] >= 0.90, sorted(result["cases"], key=lambda c: c["dice"])[:3]
    assert abs(summary["mean_area_error_percent"]) < 3.0, summary


# ----------------------------------------------------------------------------- 3-D, real DICOM
def test_real_series_geometry(series_dir: Path) -> None:
    rows = {r["case_id"]: r for r in csv.DictReader(open(series_dir / "cases.csv", newline=""))}
    for case_id, row in rows.items():
        files = sorted((series_dir / case_id / "dicom").glob("*.dcm"))
        volume = volume_from_files(list(reversed(files)))
        assert volume.shape == (int(row["slices"]), int(row["rows"]), int(row["columns"]))
        assert volume.spacing_zyx == pytest.approx(
            (float(row["slice_spacing_mm"]), float(row["pixel_spacing_row_mm"]), float(row["pixel_spacing_col_mm"])), abs=1e-5
        )
        assert volume.metadata["ConvolutionKernel"] == row["kernel"]
        assert volume.modality == "CT" and volume.is_axial()
        first = pydicom.dcmread(files[0], stop_before_pixels=True)
        # CT0001 is the most inferior slice: it comes first along the slice normal
        assert volume.sop_instance_uids[0] == first.SOPInstanceUID
        assert volume.origin == pytest.approx([float(v) for v in first.ImagePositionPatient])
        assert float(volume.voxels.min()) == pytest.approx(-1024.0)  # RescaleIntercept applied


@pytest.mark.parametrize("case_id", ["LUNGCT-001", "LUNGCT-002"])
def test_real_series_agree_with_reference_masks(series_results: dict[str, dict], case_id: str) -> None:
    result = series_results[case_id]
    assert result["dice_right"] >= 0.9, result
    assert result["dice_left"] >= 0.9, result
    volume = result["volume_ml"]
    assert volume["total"] == pytest.approx(volume["cases_csv_total"], rel=0.10)
    assert volume["right"] > volume["left"], "the right lung is the larger one in this patient"
    assert result["laa950_percent"]["reference_mask_recomputed"] == pytest.approx(result["laa950_percent"]["cases_csv"], abs=0.01)
    assert result["kernel_note_present"]


def test_laa950_follows_the_kernel(series_results: dict[str, dict]) -> None:
    sharp = series_results["LUNGCT-001"]
    soft = series_results["LUNGCT-002"]
    assert sharp["kernel"] == "L" and soft["kernel"] == "B"
    assert sharp["laa950_percent"]["total"] > 5.0
    assert soft["laa950_percent"]["total"] < 2.0
    # regression guard against the automatic reference values (the masks differ, so not exact)
    assert sharp["laa950_percent"]["total"] == pytest.approx(13.55, abs=1.5)
    assert soft["laa950_percent"]["total"] == pytest.approx(0.15, abs=0.5)
    assert any("Reconstruction kernel: L" in n and "inflates LAA-950" in n for n in sharp["notes"])
    assert any("Reconstruction kernel: B" in n and "compare them only" in n for n in soft["notes"])


def test_same_acquisition_gives_similar_volumes_across_kernels(series_results: dict[str, dict]) -> None:
    sharp = series_results["LUNGCT-001"]["volume_ml"]["total"]
    soft = series_results["LUNGCT-002"]["volume_ml"]["total"]
    assert sharp == pytest.approx(soft, rel=0.03)
