"""An analysis is one folder: a small example analysis, installed as a plug-in from a temporary folder, is
discovered, routed, run, encoded (SEG, SR, key image), validated on a tiny dataset, passes its own gate and is
listed by ``radpilot models list`` - and no file of RadPilot is edited for it.

The example (``demo_air_spaces``) finds the enclosed air spaces of a CT (the lungs of a phantom) with a tiny
ONNX threshold model it ships in its own ``models/`` folder, splits them at the midline and reports their
volumes.  Everything RadPilot needs to know about it is in its folder: the class's declarations,
``routing.yaml``, ``acceptance.yaml`` and ``models/demo_air_threshold/``.  It is installed the way a site installs
its own analysis: a distribution whose entry point in the group ``radpilot.analyses`` names the package.
"""

from __future__ import annotations

import importlib
import json
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pydicom
import pytest
import yaml
from typer.testing import CliRunner

from radpilot.analyses import discover_analyses
from radpilot.archive import Archive
from radpilot.config import Settings
from radpilot.dicom.encoders import render_key_image
from radpilot.dicom.volume import volume_from_datasets
from radpilot.engine.pipeline import PipelineRunner, plan_study
from radpilot.engine.routing import load_rules
from radpilot.modelhub.registry import file_sha256
from radpilot.validation.gate import activate, check_activation
from radpilot.validation.runner import validate
from tests.unit.test_validation_runner import registry_with
from tests.unit.validation_support import SERIES_MANIFEST_OPTIONS, make_series_dataset, manifest_dict

onnx = pytest.importorskip("onnx")

PACKAGE = "demo_air_spaces"
MODEL = "demo_air_threshold"
WINDOW = (-300.0, 1200.0)
SEGMENTATION = "1.2.840.10008.5.1.4.1.1.66.4"
COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"

ANALYSIS_SOURCE = '''
"""demo_air_spaces: enclosed air spaces of a CT, split at the midline (an example plug-in analysis)."""

import numpy as np
from scipy import ndimage

from radpilot.contract import (
    Analysis, Code, Findings, InputRequirements, Measurement, NotApplicableError, OutputSpec, Segment, Segmentation,
    StructureSpec,
)
from radpilot.modelhub.registry import ModelRegistry

RIGHT, LEFT = Code("3341006", "SCT", "Right lung"), Code("44029006", "SCT", "Left lung")
VOLUME, ML = Code("118565006", "SCT", "Volume"), Code("mL", "UCUM", "milliliter")
STRUCTURE = Code("123037004", "SCT", "Anatomical Structure")


class DemoAirSpaces(Analysis):
    name = "demo_air_spaces"
    version = "0.1.0"
    description = "Enclosed air spaces of a CT, split at the midline."
    inputs = InputRequirements(("CT",), "any CT volume in HU")
    required_models = ("demo_air_threshold",)
    outputs = (
        OutputSpec.of("right_air_ml", "Right air space volume", "mL", VOLUME, RIGHT, key=True, relative=True),
        OutputSpec.of("left_air_ml", "Left air space volume", "mL", VOLUME, LEFT, relative=True),
    )
    structures = (
        StructureSpec("right_lung", (RIGHT.value,)),
        StructureSpec("left_lung", (LEFT.value,)),
        StructureSpec("both_lungs", (RIGHT.value, LEFT.value), parts=("right_lung", "left_lung"), surface=False),
    )
    display_windows = {"CT": (-300.0, 1200.0)}

    def check_input(self, volume):
        if volume.modality.upper() != "CT":
            raise NotApplicableError(f"demo_air_spaces reads CT only, not {volume.modality}")

    def run(self, volume):
        session = ModelRegistry(self.models_dir()).session("demo_air_threshold")
        air = session.run(None, {"hu": volume.voxels.astype(np.float32)})[0] > 0.5
        components, _ = ndimage.label(air)
        outside = np.unique(np.concatenate([components[:, 0].ravel(), components[:, -1].ravel(),
                                            components[:, :, 0].ravel(), components[:, :, -1].ravel()]))
        enclosed = air & ~np.isin(components, outside)
        middle = volume.shape[2] // 2
        labels = np.zeros(volume.shape, np.uint8)
        labels[:, :, :middle][enclosed[:, :, :middle]] = 1
        labels[:, :, middle:][enclosed[:, :, middle:]] = 2
        segments = [Segment(1, "Right air space", STRUCTURE, RIGHT), Segment(2, "Left air space", STRUCTURE, LEFT)]
        measurements = [
            Measurement(VOLUME, round(float((labels == v).sum()) * volume.ml_per_voxel, 2), ML, site, segment_number=v)
            for v, site in ((1, RIGHT), (2, LEFT))
        ]
        key = int(np.argmax((labels > 0).sum(axis=(1, 2))))
        return Findings(self.name, self.version, measurements=measurements,
                        segmentation=Segmentation(labels, segments), key_slices=[key])


ANALYSIS = DemoAirSpaces()
'''

ROUTING = """
rules:
  - name: demo-any-ct
    match: {Modality: CT}
    analyses: [demo_air_spaces]
    destinations: []
    priority: routine
"""

ACCEPTANCE = """
subject: demo_air_spaces
kind: analysis
versions: ["0.1.0"]
allow_development_data: true
development_data_reason: an example analysis checked on synthetic phantoms with exact truth
criteria:
  - {dataset: demo-phantoms, metric: dice_both_lungs_min, ">=": 0.95}
  - {dataset: demo-phantoms, metric: right_air_ml_abs_error_percent_max, "<=": 5.0}
"""


def write_threshold_model(folder: Path) -> None:
    """A real ONNX model: 1.0 where HU < -500, else 0.0 (any 3-D shape), with its manifest."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Less", ["hu", "threshold"], ["below"]), helper.make_node("Cast", ["below"], ["air"], to=TensorProto.FLOAT)],
        "air_threshold",
        [helper.make_tensor_value_info("hu", TensorProto.FLOAT, [None, None, None])],
        [helper.make_tensor_value_info("air", TensorProto.FLOAT, [None, None, None])],
        initializer=[helper.make_tensor("threshold", TensorProto.FLOAT, [], [-500.0])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    folder.mkdir(parents=True)
    path = folder / f"{MODEL}.onnx"
    onnx.save(model, path)
    (folder / "manifest.json").write_text(
        json.dumps(
            {
                "name": MODEL,
                "version": "0.1.0",
                "file": path.name,
                "sha256": file_sha256(path),
                "input": {"name": "hu", "units": "HU"},
                "labels": [{"name": "air", "value": 1}],
                "intended_use": "example plug-in in RadPilot's tests",
                "training_data": {"none": "a fixed threshold"},
            }
        )
    )


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The example analysis as an installed distribution in a temporary folder on sys.path."""
    site = tmp_path / "site"
    folder = site / PACKAGE
    folder.mkdir(parents=True)
    (folder / "__init__.py").write_text(textwrap.dedent(ANALYSIS_SOURCE))
    (folder / "routing.yaml").write_text(ROUTING)
    (folder / "acceptance.yaml").write_text(ACCEPTANCE)
    write_threshold_model(folder / "models" / MODEL)
    dist = site / "demo_air_spaces_plugin-0.1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: demo-air-spaces-plugin\nVersion: 0.1.0\n")
    (dist / "entry_points.txt").write_text(f"[radpilot.analyses]\n{PACKAGE} = {PACKAGE}\n")
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    yield folder
    sys.modules.pop(PACKAGE, None)


@pytest.fixture
def phantoms(tmp_path: Path) -> Path:
    return make_series_dataset(tmp_path / "phantoms", n=2)


def numeric_values(sr: pydicom.Dataset) -> list[float]:
    """Every NUM value in an SR's content tree."""
    found: list[float] = []
    for item in sr.get("ContentSequence", []):
        if item.get("ValueType") == "NUM":
            found.extend(float(v.NumericValue) for v in item.MeasuredValueSequence)
        found.extend(numeric_values(item))
    return found


def demo_manifest(root: Path) -> dict:
    options = dict(SERIES_MANIFEST_OPTIONS, reference_values={"right_air_ml": "right_lung_ml", "left_air_ml": "left_lung_ml"})
    return manifest_dict("demo-phantoms", "dicom-series", root, options, analysis=PACKAGE)


def test_a_plugin_analysis_is_discovered_with_its_declarations(plugin: Path) -> None:
    analyses = discover_analyses()
    assert {"lung_ct_quant", "chest_xray", PACKAGE} <= set(analyses)
    demo = analyses[PACKAGE]
    assert demo.folder() == plugin.resolve()
    assert demo.display_window("ct") == WINDOW and [o.name for o in demo.outputs] == ["right_air_ml", "left_air_ml"]


def test_a_plugin_analysis_is_validated_gated_run_and_encoded_without_editing_radpilot(
    plugin: Path, phantoms: Path, tmp_path: Path
) -> None:
    settings = Settings(data_dir=tmp_path / "data", durability="none")
    archive = Archive.from_settings(settings)
    analyses = discover_analyses()

    # Validated on a tiny dataset through the production path, against its own acceptance criteria.
    registry = registry_with(tmp_path, demo_manifest(phantoms))
    outcome, stored = validate(PACKAGE, "demo-phantoms", settings=settings, registry=registry, n_resamples=100)
    metrics = outcome.record.metrics
    assert metrics["dice_right_lung_mean"] > 0.97 and metrics["dice_both_lungs_min"] > 0.97
    assert metrics["right_air_ml_abs_error_percent_max"] < 5.0 and outcome.record.gate_view.n_failed == 0
    assert outcome.record.outputs["right_air_ml"]  # a key output, kept for drift monitoring
    assert stored.report_path.is_file()
    decision = check_activation(archive, PACKAGE, "0.1.0")
    assert decision.passed, decision.message
    assert str(plugin / "acceptance.yaml") in decision.criteria_source

    # Its model comes from its own folder; the engine runs it only once activated (here by an audited override).
    activate(archive, MODEL, "0.1.0", user="admin", override=True, reason="example plug-in, checked on phantoms")

    # Routed by its own default rule.
    for path in sorted((phantoms / "PH-001" / "dicom").glob("*.dcm")):
        assert archive.store_file_bytes(path.read_bytes()).outcome.accepted
    datasets = [pydicom.dcmread(p) for p in sorted((phantoms / "PH-001" / "dicom").glob("*.dcm"))]
    study, series = str(datasets[0].StudyInstanceUID), str(datasets[0].SeriesInstanceUID)
    [plan] = plan_study(archive, load_rules(None, analyses), analyses, study, None)
    assert [(name, rule.name) for name, rule in plan.decision.analyses] == [(PACKAGE, "demo-any-ct")]

    # Run and encoded by the engine's pipeline: SEG, TID 1500 SR and a key image in its declared window.
    runner = PipelineRunner(settings, archive, analyses=analyses)
    job = SimpleNamespace(
        id=1,
        analysis=PACKAGE,
        analysis_version="0.1.0",
        study_instance_uid=study,
        series_instance_uid=series,
        input_sop_uids=(),
        idempotency_key="d" * 64,
        destinations=(),
        supersedes_job_id=None,
    )
    output = runner(job)
    stored = {}
    for uid in output.sop_instance_uids:
        [instance] = [i for i in archive.instances_of(study) if i.sop_instance_uid == uid]
        ds = pydicom.dcmread(archive.path_of(instance))
        stored[str(ds.SOPClassUID)] = ds
    assert set(stored) == {SEGMENTATION, COMPREHENSIVE_3D_SR, SECONDARY_CAPTURE}
    seg = stored[SEGMENTATION]
    assert [s.SegmentedPropertyTypeCodeSequence[0].CodeValue for s in seg.SegmentSequence] == ["3341006", "44029006"]
    right_ml = next(m["value"] for m in output.details["measurements"] if m["site"] == "Right lung")
    assert right_ml == pytest.approx(outcome.cases[0].values["right_air_ml"]["predicted"], rel=0.05)
    assert right_ml in numeric_values(stored[COMPREHENSIVE_3D_SR])
    key_image = stored[SECONDARY_CAPTURE]
    volume = volume_from_datasets(datasets)
    findings = analyses[PACKAGE].run(volume)
    expected = render_key_image(findings, volume, window=WINDOW)
    rgb = key_image.pixel_array
    assert rgb.shape[:2] == expected.rgb.shape[:2]
    assert np.array_equal(rgb[: expected.image_rows], expected.rgb[: expected.image_rows])
    default = render_key_image(findings, volume)  # the soft-tissue default would look different
    assert not np.array_equal(default.rgb[: default.image_rows], expected.rgb[: expected.image_rows])
    archive.close()


def test_a_plugin_analysis_and_its_model_are_listed_by_models_list(plugin: Path, phantoms: Path, tmp_path: Path) -> None:
    from radpilot.cli import app

    settings = Settings(data_dir=tmp_path / "data", durability="none")
    registry = registry_with(tmp_path, demo_manifest(phantoms))
    validate(PACKAGE, "demo-phantoms", settings=settings, registry=registry, n_resamples=100)
    result = CliRunner().invoke(app, ["models", "list", "--data-dir", str(settings.data_dir), "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.output)}
    assert rows[PACKAGE]["kind"] == "analysis" and rows[PACKAGE]["gate_passed"] is True
    assert rows[MODEL]["kind"] == "model" and rows[MODEL]["version"] == "0.1.0"
    listed = CliRunner().invoke(app, ["analyses", "--json"])
    assert listed.exit_code == 0 and PACKAGE in {row["name"] for row in json.loads(listed.output)}
    rules = CliRunner().invoke(app, ["rules"])
    assert rules.exit_code == 0, rules.output
    assert {r["name"]: r["analyses"] for r in yaml.safe_load(rules.output)["rules"]}["demo-any-ct"] == [PACKAGE]


def test_a_default_rule_may_route_only_to_its_own_analysis(plugin: Path) -> None:
    from radpilot.engine.routing import RulesError, default_rules

    (plugin / "routing.yaml").write_text(ROUTING.replace("analyses: [demo_air_spaces]", "analyses: [demo_air_spaces, lung_ct_quant]"))
    with pytest.raises(RulesError, match="unknown analysis 'lung_ct_quant'"):
        default_rules(discover_analyses())
