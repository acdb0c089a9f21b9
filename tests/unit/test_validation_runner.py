"""The validation runner on tiny datasets of the right layouts, built in the test (synthetic, exact truth)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from radpilot.contract import (
    Analysis,
    Classification,
    Code,
    DetectionSpec,
    Findings,
    Measurement,
    OutputSpec,
    PointFinding,
    Segment,
    Segmentation,
    StructureSpec,
)
from radpilot.validation import metrics as M
from radpilot.validation.aggregate import aggregate, detection_summary
from radpilot.validation.datasets import DatasetRegistry, compute_content_hash
from radpilot.validation.evaluators import CaseResult, Evaluator, surface_metrics
from radpilot.validation.outputs import OutputCatalog
from radpilot.validation.runner import run_validation
from radpilot.validation.subject import Subject, ValidationError, resolve_subject
from tests.unit.validation_support import (
    SERIES_MANIFEST_OPTIONS,
    SLICE_MANIFEST_OPTIONS,
    make_series_dataset,
    make_slice_dataset,
    manifest_dict,
)


def registry_with(tmp_path: Path, *manifests: dict, pin: bool = True) -> DatasetRegistry:
    shipped = tmp_path / "manifests"
    shipped.mkdir(exist_ok=True)
    for content in manifests:
        if pin:
            digest = compute_content_hash(Path(content["root"]))
            content = content | {"content_hash": digest.value, "file_count": digest.file_count}
        (shipped / f"{content['name']}.yaml").write_text(yaml.safe_dump(content, sort_keys=False))
    return DatasetRegistry(tmp_path / "data", shipped_dir=shipped)


@pytest.fixture(scope="module")
def slices_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_slice_dataset(tmp_path_factory.mktemp("slices") / "tiny-slices", n=6, defective=2)


@pytest.fixture(scope="module")
def series_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_series_dataset(tmp_path_factory.mktemp("series") / "tiny-series", n=2)


# --------------------------------------------------------------------------------------------- metric helpers
@pytest.mark.parametrize("ndim", [2, 3])
def test_surface_metrics_equal_the_metrics_module(ndim: int) -> None:
    rng = np.random.default_rng(ndim)
    shape = (24, 30) if ndim == 2 else (8, 20, 22)
    spacing = (0.7, 0.9) if ndim == 2 else (2.5, 0.8, 0.8)
    from scipy import ndimage

    a = ndimage.binary_opening(rng.random(shape) > 0.45)
    b = ndimage.binary_opening(rng.random(shape) > 0.5)
    hd95, assd = surface_metrics(a, b, spacing)
    assert hd95 == pytest.approx(M.hausdorff_95(a, b, spacing), abs=1e-12)
    assert assd == pytest.approx(M.average_surface_distance(a, b, spacing), abs=1e-12)
    empty = np.zeros(shape, bool)
    assert surface_metrics(empty, empty, spacing) == (
        M.hausdorff_95(empty, empty, spacing),
        M.average_surface_distance(empty, empty, spacing),
    )
    assert surface_metrics(a, empty, spacing) == (M.hausdorff_95(a, empty, spacing), M.average_surface_distance(a, empty, spacing))


def test_outputs_match_measurements_by_code_and_by_stored_meaning() -> None:
    output_for = OutputCatalog.discover().match
    assert output_for("118565006", "Volume", "74101002", "Both lungs").name == "total_lung_volume_ml"
    assert output_for("118565006", "Volume", "3341006", "Right lung").name == "right_lung_volume_ml"
    # job results store meanings only: {"name": "Volume", "site": "Both lungs"}
    assert output_for("", "Volume", None, "Both lungs").name == "total_lung_volume_ml"
    assert output_for("", "Lung low attenuation area below -950 HU", None, "Both lungs").name == "laa950_percent"
    assert output_for("", "Cardiothoracic ratio", None, None).name == "ctr"
    assert output_for("", "Volume", None, "Liver").name == "liver_volume_ml"
    assert output_for("", "Volume", None, "Kidney") is None


# --------------------------------------------------------------------------------------------- 2-D slices
def test_slices_through_the_lung_ct_adapter(tmp_path: Path, slices_root: Path) -> None:
    registry = registry_with(
        tmp_path, manifest_dict("tiny-slices", "png-slices", slices_root, SLICE_MANIFEST_OPTIONS, development_use=["lung_ct_quant"])
    )
    calls: list[tuple[int, int, str]] = []
    outcome = run_validation(
        resolve_subject("lung_ct_quant"),
        registry.get("tiny-slices"),
        registry,
        progress=lambda i, n, c: calls.append((i, n, c)),
        n_resamples=300,
    )
    result = outcome.result
    assert calls[0] == (0, 6, "ID_0000_Z_0010") and calls[-1] == (6, 6, "")
    assert "segment_lungs_slice" in result["subject"]["code_path"] and "NOT used" in result["subject"]["code_path"]
    assert result["dataset"]["verified"] and result["dataset"]["content_hash"].startswith("sha256:")
    gate = result["gate_view"]
    assert gate == {
        "complete": True,
        "independent": False,
        "dependence": gate["dependence"],
        "n_cases": 6,
        "n_evaluated": 6,
        "n_included": 5,
        "n_excluded": 1,
        "n_failed": 0,
    }
    excluded = [c for c in result["cases"] if c["excluded"]]
    assert [c["case_id"] for c in excluded] == ["ID_0002_Z_0012"] and "dice_lungs" in excluded[0]["metrics"]  # evaluated, shown
    metrics = result["metrics"]
    assert metrics["dice_lungs_mean"] == pytest.approx(1.0) and metrics["dice_lungs_n"] == 5
    assert metrics["dice_lungs_ci95_lower"] <= metrics["dice_lungs_mean"] <= metrics["dice_lungs_ci95_upper"]
    assert metrics["hd95_lungs_px_mean"] == pytest.approx(0.0) and metrics["failure_rate"] == 0.0
    assert any("Not independent" in w for w in result["warnings"])
    summary = result["summary"]["per_metric"]["dice_lungs"]
    assert summary["n"] == 5 and summary["mean_ci"]["n_resamples"] == 300
    assert outcome.overlays and outcome.overlays[-1].excluded  # worst cases, then the excluded one
    json.dumps(result, allow_nan=False)  # the JSON document is strict JSON


def test_partial_and_unverified_runs_are_flagged(tmp_path: Path, slices_root: Path) -> None:
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(slices_root, root)
    registry = registry_with(tmp_path, manifest_dict("copy", "png-slices", root, SLICE_MANIFEST_OPTIONS))
    subject = resolve_subject("lung_ct_quant")
    partial = run_validation(subject, registry.get("copy"), registry, limit=2, n_resamples=200).result
    assert not partial["gate_view"]["complete"] and partial["gate_view"]["n_evaluated"] == 2
    assert any("Partial run: 2 of 6" in w for w in partial["warnings"])
    chosen = run_validation(subject, registry.get("copy"), registry, case_ids=["ID_0004_Z_0014"], n_resamples=200).result
    assert [c["case_id"] for c in chosen["cases"]] == ["ID_0004_Z_0014"]
    with pytest.raises(ValidationError, match="no case"):
        run_validation(subject, registry.get("copy"), registry, case_ids=["nope"])
    (root / "README.txt").write_text("a new file changes the content hash")
    with pytest.raises(ValidationError, match="cannot be verified: content changed"):
        run_validation(subject, registry.get("copy"), registry)
    unverified = run_validation(subject, registry.get("copy"), registry, allow_unverified=True, n_resamples=200).result
    assert not unverified["dataset"]["verified"] and unverified["dataset"]["verification"] == "changed"
    assert any("does not count for the gate" in w for w in unverified["warnings"])


# --------------------------------------------------------------------------------------------- 3-D series
def test_series_through_the_production_path(tmp_path: Path, series_root: Path) -> None:
    registry = registry_with(tmp_path, manifest_dict("tiny-series", "dicom-series", series_root, SERIES_MANIFEST_OPTIONS))
    outcome = run_validation(resolve_subject("lung_ct_quant"), registry.get("tiny-series"), registry, n_resamples=200)
    result = outcome.result
    assert result["subject"]["code_path"].startswith("production path: pydicom.dcmread -> radpilot.dicom.volume.volume_from_datasets")
    assert result["gate_view"]["independent"] and result["gate_view"]["n_failed"] == 0
    cases = {c["case_id"]: c for c in result["cases"]}
    for case in cases.values():  # the second case's mask is stored with the slice axis reversed
        assert case["metrics"]["dice_right_lung"] > 0.97 and case["metrics"]["dice_left_lung"] > 0.97, case
        assert case["metrics"]["hd95_right_lung_mm"] < 6.0
        total = case["values"]["total_lung_volume_ml"]
        assert total["predicted"] == pytest.approx(total["reference"], rel=0.03)
        assert total["reference_mask"] == pytest.approx(total["reference"], abs=0.1)  # mask read in register
        assert case["values"]["laa950_percent"]["reference_mask"] == pytest.approx(case["values"]["laa950_percent"]["reference"], abs=0.01)
        assert case["attributes"]["shape_zyx"] == "30 x 112 x 112"
    assert cases["PH-001"]["attributes"]["kernel"] == "B" and cases["PH-002"]["attributes"]["kernel"] == "L"
    agreement = result["summary"]["agreement"]["total_lung_volume_ml"]
    assert agreement["n"] == 2 and agreement["bland_altman"]["n"] == 2
    assert "total_lung_volume_ml_mae" in result["metrics"] and "total_lung_volume_ml_abs_error_percent_max" in result["metrics"]
    assert "dice_right_lung_ci95_lower" not in result["metrics"]  # n < 5: no interval is claimed
    assert result["outputs"]["total_lung_volume_ml"] and result["outputs"]["laa950_percent"]
    assert any("Only 2 case(s)" in w for w in result["warnings"])
    assert outcome.overlays[0].caption.startswith("dice_both_lungs")


def test_metaimage_masks_work_the_same(tmp_path: Path) -> None:
    root = make_series_dataset(tmp_path / "mha-set", n=1, mask_format="mha")
    options = SERIES_MANIFEST_OPTIONS | {"mask_file": "{case}/lung_mask.mha"}
    registry = registry_with(tmp_path, manifest_dict("mha-set", "dicom-series", root, options))
    result = run_validation(resolve_subject("lung_ct_quant"), registry.get("mha-set"), registry, n_resamples=100).result
    assert result["cases"][0]["metrics"]["dice_both_lungs"] > 0.98


class _Refuses(Analysis):
    """An analysis whose check_input refuses every second series: failures are results, not crashes."""

    name = "refuses"
    version = "0.1"
    structures = (StructureSpec("right_lung", ("3341006",)), StructureSpec("left_lung", ("44029006",)))
    outputs = (OutputSpec("right_lung_volume_ml", "Right lung volume", "mL", "118565006", "Volume", "3341006", "Right lung"),)

    def __init__(self) -> None:
        self.calls = 0

    def check_input(self, volume):  # noqa: ANN001, ANN201
        from radpilot.contract import NotApplicableError

        self.calls += 1
        if self.calls % 2 == 0:
            raise NotApplicableError("not this one")

    def run(self, volume):  # noqa: ANN001, ANN201
        labels = np.zeros(volume.shape, np.uint8)
        labels[:, 10:40, 10:40] = 1
        lung = Code("3341006", "SCT", "Right lung")
        segment = Segment(1, "Right lung", Code("123037004", "SCT", "Anatomical Structure"), lung)
        return Findings(
            self.name,
            self.version,
            measurements=[Measurement(Code("118565006", "SCT", "Volume"), 1.0, Code("mL", "UCUM", "mL"), lung)],
            segmentation=Segmentation(labels, [segment]),
        )


def test_failed_cases_are_counted(tmp_path: Path, series_root: Path) -> None:
    registry = registry_with(tmp_path, manifest_dict("tiny-series", "dicom-series", series_root, SERIES_MANIFEST_OPTIONS))
    subject = Subject("analysis", "refuses", "0.1", analysis=_Refuses())
    result = run_validation(subject, registry.get("tiny-series"), registry, n_resamples=100).result
    statuses = [c["status"] for c in result["cases"]]
    assert statuses == ["ok", "failed"]
    assert "check_input" in result["cases"][1]["error"] and "not this one" in result["cases"][1]["error"]
    assert result["metrics"]["failure_rate"] == 0.5 and result["gate_view"]["n_failed"] == 1
    assert result["cases"][0]["values"]["right_lung_volume_ml"]["predicted"] == 1.0


def test_resolve_subject_errors() -> None:
    with pytest.raises(ValidationError, match="no analysis or model called 'nothing'"):
        resolve_subject("nothing")
    with pytest.raises(ValidationError, match="uses no model"):
        resolve_subject("lung_ct_quant", model_version="2.0")
    subject = resolve_subject("lung_ct_quant")
    assert subject.kind == "analysis" and subject.model is None


# --------------------------------------------------------------------------------------------- aggregation
def test_aggregate_agreement_and_classification_against_known_values() -> None:
    class Stub(Evaluator):
        outputs = (OutputSpec("ctr", "Cardiothoracic ratio", "", "RP-CTR", "Cardiothoracic ratio"),)
        classifications = (Classification("cardiomegaly", "CTR > 0.5", "ctr", 0.5, 0.5),)

        def __init__(self) -> None:
            pass

    reference = [0.40, 0.45, 0.48, 0.52, 0.55, 0.60]
    predicted = [0.42, 0.44, 0.51, 0.50, 0.57, 0.61]
    cases = [
        CaseResult(f"c{i}", metrics={"dice_heart": 0.9 + i / 100}, values={"ctr": {"predicted": p, "reference": r}})
        for i, (p, r) in enumerate(zip(predicted, reference))
    ]
    cases.append(CaseResult("broken", status="failed", error="boom"))
    cases.append(CaseResult("qc", excluded="mask_qc = bad", metrics={"dice_heart": 0.1}))
    summary, flat = aggregate(cases, Stub(), n_resamples=500)
    p, r = np.array(predicted), np.array(reference)
    assert flat["ctr_mae"] == pytest.approx(np.mean(np.abs(p - r)))
    assert flat["ctr_bias"] == pytest.approx(np.mean(p - r))
    ba = M.bland_altman(p, r)
    assert summary["agreement"]["ctr"]["bland_altman"]["lower"] == pytest.approx(ba.lower)
    assert flat["ctr_icc"] == pytest.approx(M.icc_2_1(np.column_stack([p, r])))
    c = summary["classification"]["cardiomegaly"]
    assert (c["tp"], c["fp"], c["tn"], c["fn"]) == (2, 1, 2, 1)  # predicted 0.51 > 0.5 is FP, 0.50 is FN
    assert c["auc"] == pytest.approx(M.roc_auc(r > 0.5, p))
    assert flat["dice_heart_mean"] == pytest.approx(np.mean([0.9 + i / 100 for i in range(6)]))  # excluded and failed left out
    assert flat["n_failed"] == 1 and flat["failure_rate"] == pytest.approx(1 / 8)
    assert flat["dice_heart_ci95_lower"] < flat["dice_heart_mean"] < flat["dice_heart_ci95_upper"]


def test_infinite_distances_are_counted_not_averaged() -> None:
    class Stub(Evaluator):
        def __init__(self) -> None:
            pass

    cases = [CaseResult(f"c{i}", metrics={"hd95_heart_mm": v}) for i, v in enumerate([1.0, 2.0, float("inf"), 3.0, 4.0, 5.0])]
    summary, flat = aggregate(cases, Stub(), n_resamples=200)
    assert summary["per_metric"]["hd95_heart_mm"]["n_nonfinite"] == 1
    assert flat["hd95_heart_mm_mean"] == pytest.approx(3.0) and flat["hd95_heart_mm_n_nonfinite"] == 1


def test_detection_summary_froc_and_cpm() -> None:
    cases = [M.match_detections([0.9, 0.3], [[True], [False]]), M.match_detections([0.8, 0.7, 0.2], [[False], [True], [False]])]
    summary = detection_summary(cases, n_resamples=100)
    assert summary["n_references"] == 2 and summary["cpm"] == pytest.approx(M.cpm(cases))
    assert summary["sensitivity"][-1] == 1.0


def test_findings_outputs_of_the_lung_analysis() -> None:
    site = Code("74101002", "SCT", "Both lungs")
    findings = Findings(
        "x",
        "1",
        measurements=[
            Measurement(Code("118565006", "SCT", "Volume"), 5000.0, Code("mL", "UCUM", "mL"), site),
            Measurement(Code("LAA950", "99RADPILOT", "Lung low attenuation area below -950 HU"), 3.5, Code("%", "UCUM", "%"), site),
        ],
    )
    assert OutputCatalog.discover().findings_outputs(findings) == {"total_lung_volume_ml": 5000.0, "laa950_percent": 3.5}


# --------------------------------------------------------------------------------------------- detections
class _SpotFinder(Analysis):
    """Segments the phantom radiograph by its grey levels and reports fixed candidates per image (exact truth)."""

    name = "spot_finder"
    version = "0.1"
    structures = (
        StructureSpec("right_lung", ("3341006",)),
        StructureSpec("left_lung", ("44029006",)),
        StructureSpec("heart", ("80891009",)),
    )
    detections = (DetectionSpec("nodule", "27925004", margin_mm=5.0),)

    def __init__(self, candidates: dict[str, list[tuple[float, float, float]]]) -> None:
        self.candidates = candidates  # series UID -> (row, column, score)

    def check_input(self, volume):  # noqa: ANN001, ANN201
        pass

    def run(self, volume):  # noqa: ANN001, ANN201
        image = volume.voxels[0]
        labels = np.zeros(volume.shape, np.uint8)
        lung = image < 1500
        labels[0][lung & (np.arange(image.shape[1]) < image.shape[1] // 2)] = 1
        labels[0][lung & (np.arange(image.shape[1]) >= image.shape[1] // 2)] = 2
        labels[0][(image > 2000) & (image < 2700)] = 3
        structure = Code("123037004", "SCT", "Anatomical Structure")
        segments = [
            Segment(1, "Right lung", structure, Code("3341006", "SCT", "Right lung")),
            Segment(2, "Left lung", structure, Code("44029006", "SCT", "Left lung")),
            Segment(3, "Heart", structure, Code("80891009", "SCT", "Heart")),
        ]
        nodule = Code("27925004", "SCT", "Nodule")
        points = [PointFinding(nodule, (0.0, r, c), score=s) for r, c, s in self.candidates.get(volume.series_uid, [])]
        return Findings(self.name, self.version, segmentation=Segmentation(labels, segments), points=points)


def test_a_dataset_run_scores_located_findings_as_froc_and_cpm(tmp_path: Path) -> None:
    import csv

    from radpilot.validation.evaluators import radiograph_dataset
    from tests.unit.validation_support import RADIOGRAPH_MANIFEST_OPTIONS, make_radiograph_dataset

    root = make_radiograph_dataset(tmp_path / "cxr", n=3)
    with open(root / "metadata.csv") as handle:
        rows = list(csv.DictReader(handle))
    nodules = {"CXR000": (40.0, 30.0, 14.0), "CXR002": (70.0, 95.0, 7.0)}  # row, column, diameter mm (1.4 mm pixels)
    for row in rows:
        row["nodule_row"], row["nodule_column"], row["nodule_mm"] = nodules.get(row["case_id"], ("", "", ""))
    with open(root / "metadata.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    options = dict(
        RADIOGRAPH_MANIFEST_OPTIONS,
        reference_points={"nodule": {"row": "nodule_row", "column": "nodule_column", "diameter_mm": "nodule_mm"}},
    )
    registry = registry_with(tmp_path, manifest_dict("spots", "png-radiographs", root, options, analysis="spot_finder"))

    manifest = registry.get("spots")
    loaded = {ref.case_id: registry.load_case(manifest, ref) for ref in registry.cases(manifest)}

    def series(case: str) -> str:  # the UID of the DICOM the evaluator builds for the case
        return str(radiograph_dataset(loaded[case].image, loaded[case].pixel_spacing_mm, case).SeriesInstanceUID)

    # CXR000: a hit 3 px (4.2 mm) off its centre at 0.9, a false positive at 0.5.
    # CXR001 (no nodule): a false positive at 0.7.  CXR002: the nodule missed by 10 px (14 mm > 3.5 + 5), scored 0.8.
    candidates = {
        series("CXR000"): [(43.0, 30.0, 0.9), (100.0, 100.0, 0.5)],
        series("CXR001"): [(60.0, 60.0, 0.7)],
        series("CXR002"): [(80.0, 95.0, 0.8)],
    }
    subject = Subject("analysis", "spot_finder", "0.1", analysis=_SpotFinder(candidates))
    result = run_validation(subject, registry.get("spots"), registry, n_resamples=200).result
    expected = [
        M.match_detections([0.9, 0.5], [[True], [False]]),
        M.match_detections([0.7], np.zeros((1, 0), bool)),
        M.match_detections([0.8], [[False]]),
    ]
    curve = M.froc(expected)
    assert result["metrics"]["nodule_cpm"] == pytest.approx(M.cpm(curve))
    assert result["metrics"]["nodule_sensitivity_at_1fp"] == pytest.approx(0.5)  # 1 of 2 nodules at <= 1 FP/image
    assert result["summary"]["detection"]["n_references"] == 2 and result["summary"]["detection"]["n_cases"] == 3
    assert [c["detections"]["nodule"] for c in result["cases"]] == [
        {"references": 1, "found": 1, "false_positives": 1},
        {"references": 0, "found": 0, "false_positives": 1},
        {"references": 1, "found": 0, "false_positives": 1},
    ]
