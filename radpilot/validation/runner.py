"""Run an analysis (or a model) over a reference dataset and measure it: the validation runner.

Which code runs
---------------
Validation must measure what production runs. Each (subject, layout) pair has one
evaluation path, and every result records it (``subject.code_path``):

* **3-D series** (``dicom-series``): the files are read with pydicom and go through
  exactly the production steps of :class:`radpilot.engine.pipeline.PipelineRunner`:
  :func:`radpilot.dicom.volume.volume_from_datasets` -> ``analysis.check_input`` ->
  ``analysis.run``. Only DICOM encoding and storage are left out. A case the
  analysis refuses (``NotApplicableError``) is a *failed* case, as it would be in
  production.
* **volume files** (``volume-files``): as above, but the Volume is built from the
  NIfTI/MetaImage file (:func:`radpilot.validation.datasets.volume_from_label_image`)
  instead of the DICOM reader.
* **2-D slices** (``png-slices``): a slice is not a valid input of a 3-D analysis. If
  the analysis defines the optional 2-D entry point ``run_slice(image,
  pixel_spacing_mm) -> bool mask``, it is used; for ``lung_ct_quant``, which has none,
  a small adapter here calls its documented 2-D core
  :func:`radpilot.analyses.lung_ct.segment_lungs_slice` with the analysis' own
  segmentation parameters. This checks the segmentation core, not ``check_input``
  nor the 3-D steps (3-D connected components, left/right split).
* **radiographs** (``png-radiographs``): for a model (e.g. ``cxr_lung_heart_seg``),
  the sha256-verified ONNX session from :class:`radpilot.engine.model_registry.ModelRegistry`
  with the runtime pre/post-processing of :mod:`radpilot.analyses.chest_xray.preprocess`;
  for an analysis, the image as a one-slice ``DX`` Volume (what the DICOM reader gives
  for a radiograph) -> ``check_input`` -> ``run``, segments matched by their SNOMED CT type.

Results
-------
:func:`run_validation` returns a :class:`ValidationOutcome`: a JSON document (per-case
table, summaries with bootstrap CIs, agreement, ROC, flat metrics for the gate, the
dataset's identity, hash and limitations, the machine) and overlay images of the worst
cases for the HTML report. :func:`validate` also renders the report and stores both.
"""

from __future__ import annotations

import heapq
import json
import logging
import math
import os
import platform
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np

from radpilot.validation import metrics as M
from radpilot.validation.datasets import CaseData, CaseRef, DatasetError, DatasetManifest, DatasetRegistry, labels_on_volume_grid

logger = logging.getLogger(__name__)

CONFIDENCE = 0.95
N_RESAMPLES = 2000
SEED = 0
WORST_CASES = 6
MIN_CI_CASES = 5  # below this a bootstrap interval is not reported (it only restates the few values)
RESULT_FORMAT = "radpilot.validation.result/1"


class ValidationError(RuntimeError):
    """A validation cannot run (unknown subject, no evaluation path, dataset changed...); the message says why."""


# ------------------------------------------------------------------------------------------ outputs
@dataclass(frozen=True)
class OutputSpec:
    """A named, comparable output of an analysis, matched to its Measurement by concept and finding site."""

    name: str
    label: str
    unit: str
    concept: str | None = None
    concept_meaning: str | None = None
    site: str | None = None
    site_meaning: str | None = None
    meaning_contains: str | None = None  # fallback match on the measurement's meaning (no code yet)
    key: bool = False  # a key output: its distribution is monitored for drift
    relative: bool = False  # also report the error in percent of the reference

    def matches(self, concept: str, concept_meaning: str, site: str | None, site_meaning: str | None) -> bool:
        if self.meaning_contains is not None:
            return self.meaning_contains in (concept_meaning or "").lower() and (
                self.site_meaning is None or self.site_meaning == site_meaning
            )
        same_concept = concept == self.concept if concept else concept_meaning == self.concept_meaning
        same_site = (site == self.site) if site else (site_meaning == self.site_meaning)
        return same_concept and same_site


#: The outputs the workbench compares and monitors (one definition, used by the runner and by monitoring).
OUTPUTS: tuple[OutputSpec, ...] = (
    OutputSpec("total_lung_volume_ml", "Total lung volume", "mL", "118565006", "Volume", "74101002", "Both lungs", key=True, relative=True),
    OutputSpec("right_lung_volume_ml", "Right lung volume", "mL", "118565006", "Volume", "3341006", "Right lung", relative=True),
    OutputSpec("left_lung_volume_ml", "Left lung volume", "mL", "118565006", "Volume", "44029006", "Left lung", relative=True),
    OutputSpec("laa950_percent", "LAA-950 (both lungs)", "%", "LAA950", "Lung low attenuation area below -950 HU", "74101002", "Both lungs", key=True),
    OutputSpec("right_laa950_percent", "LAA-950 (right lung)", "%", "LAA950", "Lung low attenuation area below -950 HU", "3341006", "Right lung"),
    OutputSpec("left_laa950_percent", "LAA-950 (left lung)", "%", "LAA950", "Lung low attenuation area below -950 HU", "44029006", "Left lung"),
    OutputSpec("perc15_hu", "Perc15 (both lungs)", "HU", "PERC15", "15th percentile of lung attenuation", "74101002", "Both lungs"),
    OutputSpec("mean_lung_hu", "Mean lung attenuation (both lungs)", "HU", "112031", "Attenuation Coefficient", "74101002", "Both lungs"),
    OutputSpec("agatston_score", "Agatston score", "", meaning_contains="agatston", key=True),
    OutputSpec("ctr", "Cardiothoracic ratio", "", meaning_contains="cardiothoracic", key=True),
)
OUTPUTS_BY_NAME = {o.name: o for o in OUTPUTS}


def output_for(concept: str, concept_meaning: str, site: str | None, site_meaning: str | None) -> OutputSpec | None:
    for spec in OUTPUTS:
        if spec.matches(concept, concept_meaning, site, site_meaning):
            return spec
    return None


def findings_outputs(findings: Any) -> dict[str, float]:
    """The known outputs (by :data:`OUTPUTS` name) among a Findings' measurements."""
    out: dict[str, float] = {}
    for m in findings.measurements:
        site = m.finding_site
        spec = output_for(m.name.value, m.name.meaning, site.value if site else None, site.meaning if site else None)
        if spec is not None and spec.name not in out:
            out[spec.name] = float(m.value)
    return out


#: Structure names used by dataset manifests, and the SNOMED CT codes of a matching segment type.
STRUCTURE_CODES: dict[str, tuple[str, ...]] = {
    "right_lung": ("3341006",),
    "left_lung": ("44029006",),
    "lungs": ("3341006", "44029006", "39607008"),
    "both_lungs": ("3341006", "44029006", "39607008"),
    "heart": ("80891009",),
}


# ------------------------------------------------------------------------------------------ subject
@dataclass(frozen=True)
class Subject:
    """What is validated: an analysis (by its catalog name) or a model (by its manifest name), at one version."""

    kind: Literal["analysis", "model"]
    name: str
    version: str
    analysis: Any | None = None
    model_manifest: Any | None = None
    models_dir: Path | None = None

    @property
    def model(self) -> str | None:
        return self.model_manifest.name if self.model_manifest is not None else None

    @property
    def model_version(self) -> str | None:
        return self.model_manifest.version if self.model_manifest is not None else None

    @property
    def label(self) -> str:
        return f"{self.name} {self.version}"


def resolve_subject(
    name: str,
    *,
    model_version: str | None = None,
    models_dir: Path | None = None,
    analyses: dict[str, Any] | None = None,
) -> Subject:
    """Find the analysis or model called ``name`` (analyses first); ``model_version`` picks a model's version."""
    from radpilot.engine.catalog import discover_analyses
    from radpilot.engine.model_registry import DEFAULT_MODELS_DIR, ModelRegistry

    analyses = analyses if analyses is not None else discover_analyses()
    registry = ModelRegistry(Path(models_dir) if models_dir else DEFAULT_MODELS_DIR)
    if name in analyses:
        analysis = analyses[name]
        manifest = None
        required = tuple(getattr(analysis, "required_models", ()) or ())
        if required:
            if len(required) > 1 and model_version:
                raise ValidationError(f"{name} uses several models {list(required)}; --model-version is ambiguous")
            newest = registry.manifest(required[0])
            if model_version and model_version != newest.version:
                raise ValidationError(
                    f"{name} loads {required[0]} {newest.version}; it cannot be made to load {model_version} from here - "
                    f"validate the model itself (radpilot validate {required[0]} --model-version {model_version})"
                )
            manifest = newest
        elif model_version:
            raise ValidationError(f"{name} uses no model; --model-version does not apply")
        return Subject("analysis", name, str(analysis.version), analysis=analysis, model_manifest=manifest, models_dir=registry.models_dir)
    try:
        manifest = registry.manifest(name, model_version)
    except KeyError as exc:
        known_models = sorted({m.name for m in registry.manifests()})
        raise ValidationError(
            f"no analysis or model called {name!r}"
            + (f" at version {model_version}" if model_version else "")
            + f"; analyses: {', '.join(sorted(analyses)) or 'none'}; models: {', '.join(known_models) or 'none'}"
        ) from exc
    return Subject("model", manifest.name, manifest.version, model_manifest=manifest, models_dir=registry.models_dir)


# ------------------------------------------------------------------------------------------ per-case results
@dataclass
class Overlay:
    """What the report draws for one case: a 2-D image with the predicted and reference outlines."""

    case_id: str
    image: np.ndarray  # 2-D float
    predicted: dict[str, np.ndarray]  # structure -> 2-D bool
    reference: dict[str, np.ndarray]
    caption: str = ""
    excluded: str | None = None


@dataclass
class CaseResult:
    case_id: str
    status: Literal["ok", "failed"] = "ok"
    excluded: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    values: dict[str, dict[str, float | None]] = field(default_factory=dict)  # output -> predicted, reference[, reference_mask]
    attributes: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    overlay: Overlay | None = None

    @property
    def included(self) -> bool:
        return self.status == "ok" and self.excluded is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "case_id": self.case_id,
            "status": self.status,
            "excluded": self.excluded,
            "metrics": {k: _round(v) for k, v in self.metrics.items()},
            "values": {k: {kk: _round(vv) for kk, vv in v.items()} for k, v in self.values.items()},
            "attributes": dict(self.attributes),
            "notes": list(self.notes),
            "error": self.error,
            "seconds": round(self.seconds, 3),
            "cpu_seconds": round(self.cpu_seconds, 3),
        }


def _round(value: Any, digits: int = 6) -> Any:
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return round(v, digits) if math.isfinite(v) else (None if math.isnan(v) else ("inf" if v > 0 else "-inf"))
    return value


# ------------------------------------------------------------------------------------------ metric helpers
def surface_metrics(predicted: np.ndarray, reference: np.ndarray, spacing: Sequence[float]) -> tuple[float, float]:
    """``(HD95, ASSD)`` from ONE :func:`metrics.surface_distances` call.

    Identical to :func:`metrics.hausdorff_95` (``method="union"``) and
    :func:`metrics.average_surface_distance`, including their empty-mask conventions
    (both empty: 0, one empty: inf), which each compute the distances again; a unit
    test checks the equality. On a 512 x 512 x 64 CT this halves the evaluation time.
    """
    has_p, has_r = bool(predicted.any()), bool(reference.any())
    if not has_p and not has_r:
        return 0.0, 0.0
    if not has_p or not has_r:
        return float("inf"), float("inf")
    d = M.surface_distances(predicted, reference, spacing)
    both = np.concatenate([d.a_to_b, d.b_to_a])
    return float(np.percentile(both, 95.0)), float(both.mean())


def segmentation_metrics(
    structure: str, predicted: np.ndarray, reference: np.ndarray, spacing: Sequence[float] | None, *, surface: bool = True
) -> dict[str, float]:
    """Dice, Jaccard, HD95 and ASSD (mm with a known spacing, else pixels) and the size error of one structure."""
    unit = "mm" if spacing is not None else "px"
    sp = tuple(float(s) for s in spacing) if spacing is not None else (1.0,) * predicted.ndim
    out = {
        f"dice_{structure}": M.dice(predicted, reference),
        f"jaccard_{structure}": M.jaccard(predicted, reference),
    }
    if surface:
        hd95, assd = surface_metrics(predicted, reference, sp)
        out[f"hd95_{structure}_{unit}"] = hd95
        out[f"assd_{structure}_{unit}"] = assd
    size_ref, size_pred = int(reference.sum()), int(predicted.sum())
    if size_ref:
        error = 100.0 * (size_pred - size_ref) / size_ref
        kind = "area" if predicted.ndim == 2 else "volume"
        out[f"{kind}_error_percent_{structure}"] = error
        out[f"abs_{kind}_error_percent_{structure}"] = abs(error)
    return out


def paired_metrics(name: str, predicted: float | None, reference: float | None, relative: bool) -> dict[str, float]:
    if predicted is None or reference is None:
        return {}
    out = {f"{name}_error": predicted - reference, f"{name}_abs_error": abs(predicted - reference)}
    if relative and reference:
        out[f"{name}_error_percent"] = 100.0 * (predicted - reference) / reference
        out[f"{name}_abs_error_percent"] = abs(out[f"{name}_error_percent"])
    return out


def _segments_by_structure(segmentation: Any, structures: Sequence[str]) -> dict[str, np.ndarray]:
    """Predicted masks per structure name, matched by segment type (SNOMED CT); 'lungs'/'both_lungs' are the union of lung segments."""
    labels = np.asarray(segmentation.labels)
    out: dict[str, np.ndarray] = {}
    for structure in structures:
        codes = STRUCTURE_CODES.get(structure)
        if codes is None:
            continue
        numbers = [s.number for s in segmentation.segments if s.type.value in codes]
        out[structure] = np.isin(labels, numbers) if numbers else np.zeros(labels.shape, dtype=bool)
    return out


def _display_slice(volume_zyx: np.ndarray, index: int) -> np.ndarray:
    return np.asarray(volume_zyx[index], dtype=np.float32)


# ------------------------------------------------------------------------------------------ evaluators
@dataclass(frozen=True)
class Classification:
    """A binary question answered from a continuous output: reference positive when ref > threshold, scored by the prediction."""

    name: str
    label: str
    output: str
    reference_threshold: float
    operating_threshold: float


class Evaluator:
    """Evaluates one case of a dataset with one subject; subclasses set how."""

    code_path: str = ""
    primary_metric: str = ""  # the metric that ranks cases (lower = worse) for the worst-case overlays
    outputs: tuple[str, ...] = ()  # paired outputs compared with reference values
    classifications: tuple[Classification, ...] = ()

    def __init__(self, subject: Subject, manifest: DatasetManifest) -> None:
        self.subject = subject
        self.manifest = manifest

    def evaluate(self, data: CaseData, result: CaseResult) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Release resources (sessions); called once after the run."""


class SliceEvaluator(Evaluator):
    """2-D slices with one binary mask: the analysis' 2-D entry point (``run_slice``) or the lung_ct_quant adapter."""

    def __init__(self, subject: Subject, manifest: DatasetManifest) -> None:
        super().__init__(subject, manifest)
        analysis = subject.analysis
        self.structure = str(manifest.options.get("structure", "lungs"))
        self.primary_metric = f"dice_{self.structure}"
        if hasattr(analysis, "run_slice"):
            self._segment = lambda image, spacing: np.asarray(analysis.run_slice(image, spacing), dtype=bool)
            self.code_path = f"{type(analysis).__name__}.run_slice (the analysis' 2-D entry point) on each slice"
        elif subject.name == "lung_ct_quant":
            from radpilot.analyses.lung_ct import segment_lungs_slice

            params = analysis.params

            def segment(image: np.ndarray, spacing: tuple[float, float] | None) -> np.ndarray:
                return segment_lungs_slice(image, pixel_spacing_mm=spacing or (0.7, 0.7), params=params)

            self._segment = segment
            spacing_note = "pixel spacing unknown: 0.7 mm assumed for the size rules" if manifest.options.get("pixel_spacing_mm") is None else "pixel spacing from the dataset"
            self.code_path = (
                f"radpilot.analyses.lung_ct.segment_lungs_slice - the 2-D core of LungCTQuant {analysis.version} with the "
                f"analysis' own SegmentationParams, adaptive thresholds estimated per slice ({spacing_note}); "
                "LungCTQuant.check_input/run are NOT used: they need a 3-D chest CT, and the 3-D steps "
                "(3-D connected components, right/left split) are not checked on single slices"
            )
        else:
            raise ValidationError(
                f"{subject.name} has no 2-D entry point (run_slice) and no slice adapter: it cannot be validated on the "
                f"2-D slices of {manifest.name}"
            )

    def evaluate(self, data: CaseData, result: CaseResult) -> None:
        image = data.image
        assert image is not None
        reference = data.reference_masks[self.structure]
        predicted = self._segment(image, data.pixel_spacing_mm)
        result.metrics.update(segmentation_metrics(self.structure, predicted, reference, data.pixel_spacing_mm))
        result.metrics[f"area_reference_px_{self.structure}"] = float(reference.sum())
        result.metrics[f"area_predicted_px_{self.structure}"] = float(predicted.sum())
        result.overlay = Overlay(data.ref.case_id, image, {self.structure: predicted}, {self.structure: reference})


class VolumeEvaluator(Evaluator):
    """3-D series: the production steps volume_from_datasets -> check_input -> run (see the module docstring)."""

    def __init__(self, subject: Subject, manifest: DatasetManifest) -> None:
        super().__init__(subject, manifest)
        if subject.analysis is None:
            raise ValidationError(f"{subject.name} is a model; 3-D datasets are validated through the analysis that uses it")
        analysis = subject.analysis
        structures = [str(s) for s in (manifest.options.get("mask_labels") or {1: "lungs"}).values()]
        if {"right_lung", "left_lung"} <= set(structures):
            structures.append("both_lungs")
        self.structures = structures
        self.primary_metric = "dice_both_lungs" if "both_lungs" in structures else f"dice_{structures[0]}"
        self.outputs = tuple(str(k) for k in (manifest.options.get("reference_values") or {}))
        cls = type(analysis).__name__
        if manifest.layout == "dicom-series":
            self.code_path = (
                f"production path: pydicom.dcmread -> radpilot.dicom.volume.volume_from_datasets -> {cls}.check_input -> "
                f"{cls}.run ({analysis.name} {analysis.version}), as radpilot.engine.pipeline.PipelineRunner runs it; "
                "DICOM SEG/SR encoding and storage are not part of the measurement"
            )
        else:
            self.code_path = (
                f"Volume built from the NIfTI/MetaImage file (not the DICOM reader) -> {cls}.check_input -> {cls}.run "
                f"({analysis.name} {analysis.version})"
            )

    def evaluate(self, data: CaseData, result: CaseResult) -> None:
        from radpilot.analyses.base import NotApplicableError
        from radpilot.dicom.volume import volume_from_datasets

        analysis = self.subject.analysis
        volume = volume_from_datasets(data.datasets) if data.kind == "dicom" else data.volume
        try:
            analysis.check_input(volume)
        except NotApplicableError as exc:
            raise RuntimeError(f"the analysis refused the series (check_input): {exc}") from exc
        findings = analysis.run(volume)
        kernel = str(volume.metadata.get("ConvolutionKernel", "") or "")
        if kernel and "kernel" not in result.attributes:
            result.attributes["kernel"] = kernel
        result.notes.extend(findings.notes)
        assert data.reference_labels is not None
        reference_labels = labels_on_volume_grid(data.reference_labels, volume)
        reference = {name: reference_labels == value for name, value in data.structure_labels.items()}
        if "both_lungs" in self.structures:
            reference["both_lungs"] = reference["right_lung"] | reference["left_lung"]
        if findings.segmentation is None:
            raise RuntimeError("the analysis returned no segmentation")
        predicted = _segments_by_structure(findings.segmentation, self.structures)
        spacing = volume.spacing_zyx
        for structure in self.structures:
            # both_lungs: overlap only; its surface is the two lungs' surfaces, already measured
            result.metrics.update(segmentation_metrics(structure, predicted[structure], reference[structure], spacing,
                                                       surface=structure != "both_lungs"))
        produced = findings_outputs(findings)
        for name in self.outputs:
            spec = OUTPUTS_BY_NAME.get(name)
            pred, ref = produced.get(name), data.ref.reference_values.get(name)
            result.values[name] = {"predicted": pred, "reference": ref}
            result.metrics.update(paired_metrics(name, pred, ref, spec.relative if spec else False))
        for name, value in produced.items():
            result.values.setdefault(name, {"predicted": value, "reference": None})
        result.attributes.setdefault("shape_zyx", " x ".join(str(n) for n in volume.shape))
        result.attributes.setdefault("spacing_zyx_mm", " x ".join(f"{v:.3f}" for v in volume.spacing_zyx))
        if "both_lungs" in reference and volume.modality.upper() == "CT" and reference["both_lungs"].any():
            # The lung outputs recomputed on the REFERENCE mask with the analysis' own quantification: separates
            # segmentation differences from quantification, and checks that mask and image were read in register.
            from radpilot.analyses.lung_ct import lung_density_stats

            stats = lung_density_stats(volume.voxels, reference["both_lungs"], volume.ml_per_voxel)
            for name, value in (("total_lung_volume_ml", stats.volume_ml), ("laa950_percent", stats.laa950_percent),
                                ("perc15_hu", stats.perc15_hu), ("mean_lung_hu", stats.mean_hu)):
                if name in result.values:
                    result.values[name]["reference_mask"] = float(value)
        # The overlay: the slice where prediction and reference disagree most.
        union_pred = np.zeros(volume.shape, dtype=bool)
        union_ref = np.zeros(volume.shape, dtype=bool)
        for structure in self.structures:
            if structure != "both_lungs":
                union_pred |= predicted[structure]
                union_ref |= reference[structure]
        disagreement = (union_pred ^ union_ref).sum(axis=(1, 2))
        k = int(np.argmax(disagreement)) if disagreement.any() else int(np.argmax(union_ref.sum(axis=(1, 2))))
        shown = [s for s in self.structures if s != "both_lungs"]
        result.overlay = Overlay(
            data.ref.case_id,
            _display_slice(volume.voxels, k),
            {s: predicted[s][k] for s in shown},
            {s: reference[s][k] for s in shown},
            caption=f"slice {k} of {volume.num_slices} (most disagreement)",
        )


class RadiographModelEvaluator(Evaluator):
    """Radiographs through a segmentation model's ONNX session and the runtime's chest X-ray pre/post-processing."""

    classifications = (Classification("cardiomegaly", "Cardiomegaly (reference CTR > 0.5)", "ctr", 0.5, 0.5),)

    def __init__(self, subject: Subject, manifest: DatasetManifest) -> None:
        super().__init__(subject, manifest)
        from radpilot.engine.model_registry import ModelRegistry

        model = subject.model_manifest
        self.labels = {str(item["name"]): int(item["value"]) for item in model.labels if int(item["value"]) > 0}
        self.structures = [s for s in manifest.options.get("structures", []) if s in self.labels]
        if not self.structures:
            raise ValidationError(f"model {model.name} segments {sorted(self.labels)}, none of the dataset's structures")
        self.primary_metric = "dice_mean"
        self.outputs = ("ctr",) if "ctr" in (manifest.options.get("reference_values") or {}) else ()
        if not self.outputs:
            self.classifications = ()
        self.registry = ModelRegistry(subject.models_dir, providers=["CPUExecutionProvider"], intra_op_threads=1)
        self.session = self.registry.session(model.name, model.version)  # verifies the sha256 first
        self.input_name = str(model.input.get("name", "image"))
        self.code_path = (
            f"ModelRegistry.session({model.name!r}, {model.version!r}) - ONNX Runtime on CPU, file sha256 verified "
            f"against the manifest - with radpilot.analyses.chest_xray.preprocess.preprocess / labels_from_logits / "
            "cardiothoracic_ratio (the runtime pre- and post-processing); the model alone: an analysis' DICOM image "
            "handling, input checks and measurements are not part of this path (validate the analysis for those)"
        )

    def evaluate(self, data: CaseData, result: CaseResult) -> None:
        from radpilot.analyses.chest_xray.preprocess import cardiothoracic_ratio, labels_from_logits, preprocess

        image = data.image
        assert image is not None
        logits = self.session.run(None, {self.input_name: preprocess(image)})[0][0]
        labels = labels_from_logits(logits, image.shape)
        predicted = {s: labels == self.labels[s] for s in self.structures}
        for s in self.structures:
            result.metrics.update(segmentation_metrics(s, predicted[s], data.reference_masks[s], data.pixel_spacing_mm))
        result.metrics["dice_mean"] = float(np.mean([result.metrics[f"dice_{s}"] for s in self.structures]))
        if "ctr" in self.outputs:
            ratio = cardiothoracic_ratio(labels)
            pred = float(ratio.ratio) if ratio is not None else None
            ref = data.ref.reference_values.get("ctr")
            result.values["ctr"] = {"predicted": pred, "reference": ref}
            result.metrics.update(paired_metrics("ctr", pred, ref, relative=False))
            if pred is None:
                result.notes.append("no CTR: a lung or the heart is missing from the prediction")
        result.overlay = Overlay(data.ref.case_id, image, predicted, {s: data.reference_masks[s] for s in self.structures})

    def close(self) -> None:
        self.session = None


def radiograph_dataset(image: np.ndarray, pixel_spacing_mm: tuple[float, float] | None, case_id: str) -> Any:
    """A DX (for presentation) DICOM dataset holding a 2-D radiograph of a reference set, for the production reader.

    Values are stored as they are (unsigned 16-bit, MONOCHROME2: bone bright), with View
    Position PA, Patient Orientation L\\F (patient's right on the image left, head up, as
    the reference sets are stored) and the dataset's pixel spacing (PixelSpacing, when known).
    UIDs derive from the case id, so the same case always gives the same dataset.
    """
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    values = np.asarray(image)
    if values.min() < 0 or values.max() > 65535:
        raise ValueError(f"radiograph values {values.min()}..{values.max()} do not fit unsigned 16 bits")
    pixels = np.rint(values).astype(np.uint16)
    bits = max(8, int(pixels.max()).bit_length())
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    ds.StudyInstanceUID = generate_uid(entropy_srcs=["radpilot-validation-study", case_id])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=["radpilot-validation-series", case_id])
    ds.SOPInstanceUID = generate_uid(entropy_srcs=["radpilot-validation-instance", case_id])
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.PatientID = case_id
    ds.Modality = "DX"
    ds.ViewPosition = "PA"
    ds.PatientOrientation = ["L", "F"]
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = int(pixels.shape[0]), int(pixels.shape[1])
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits, bits - 1, 0
    if pixel_spacing_mm is not None:
        ds.PixelSpacing = [float(pixel_spacing_mm[0]), float(pixel_spacing_mm[1])]
    ds.PixelData = pixels.tobytes()
    assert isinstance(ds, pydicom.Dataset)
    return ds


class RadiographAnalysisEvaluator(Evaluator):
    """Radiographs through an Analysis on the production path; segments matched by SNOMED CT type."""

    classifications = RadiographModelEvaluator.classifications

    def __init__(self, subject: Subject, manifest: DatasetManifest) -> None:
        super().__init__(subject, manifest)
        self.structures = [s for s in manifest.options.get("structures", []) if s in STRUCTURE_CODES]
        self.primary_metric = "dice_mean"
        self.outputs = ("ctr",) if "ctr" in (manifest.options.get("reference_values") or {}) else ()
        if not self.outputs:
            self.classifications = ()
        cls = type(subject.analysis).__name__
        models = f", model {subject.model} {subject.model_version}" if subject.model else ""
        self.code_path = (
            f"production path on an in-memory DICOM: the PNG radiograph as a DX 'for presentation' instance (values unchanged, "
            f"View Position PA, Patient Orientation L\\F, the dataset's PixelSpacing) -> radpilot.dicom.volume.volume_from_datasets "
            f"-> {cls}.check_input -> {cls}.run ({subject.name} {subject.version}{models}); segments matched to the reference "
            "structures by SNOMED CT type"
        )

    def evaluate(self, data: CaseData, result: CaseResult) -> None:
        from radpilot.analyses.base import NotApplicableError
        from radpilot.dicom.volume import volume_from_datasets

        volume = volume_from_datasets([radiograph_dataset(data.image, data.pixel_spacing_mm, data.ref.case_id)])
        try:
            self.subject.analysis.check_input(volume)
        except NotApplicableError as exc:
            raise RuntimeError(f"the analysis refused the image (check_input): {exc}") from exc
        findings = self.subject.analysis.run(volume)
        result.notes.extend(n for n in findings.notes if "Research use only" not in n)
        if findings.segmentation is None:
            raise RuntimeError("the analysis returned no segmentation")
        predicted = {s: m[0] for s, m in _segments_by_structure(findings.segmentation, self.structures).items()}
        for s in self.structures:
            result.metrics.update(segmentation_metrics(s, predicted[s], data.reference_masks[s], data.pixel_spacing_mm))
        result.metrics["dice_mean"] = float(np.mean([result.metrics[f"dice_{s}"] for s in self.structures]))
        produced = findings_outputs(findings)
        for name in self.outputs:
            pred, ref = produced.get(name), data.ref.reference_values.get(name)
            result.values[name] = {"predicted": pred, "reference": ref}
            result.metrics.update(paired_metrics(name, pred, ref, relative=False))
            if pred is None:
                result.notes.append(f"no {name} reported by the analysis")
        result.overlay = Overlay(data.ref.case_id, data.image, predicted, {s: data.reference_masks[s] for s in self.structures})


def choose_evaluator(subject: Subject, manifest: DatasetManifest) -> Evaluator:
    """The evaluation path for ``subject`` on ``manifest``'s layout (see the module docstring)."""
    layout = manifest.layout
    if layout == "png-slices":
        if subject.analysis is None:
            raise ValidationError(f"model {subject.name} has no evaluation path on 2-D CT slices; validate the analysis that uses it")
        return SliceEvaluator(subject, manifest)
    if layout in ("dicom-series", "volume-files"):
        return VolumeEvaluator(subject, manifest)
    if layout == "png-radiographs":
        if subject.kind == "model":
            return RadiographModelEvaluator(subject, manifest)
        return RadiographAnalysisEvaluator(subject, manifest)
    raise ValidationError(f"no evaluation path for layout {layout!r}")


# ------------------------------------------------------------------------------------------ aggregation
def _finite(values: Sequence[float]) -> np.ndarray:
    arr = np.asarray([float(v) for v in values if v is not None], dtype=np.float64)
    return arr[np.isfinite(arr)]


def _ci_dict(ci: M.BootstrapCI) -> dict[str, Any]:
    return {"estimate": ci.estimate, "lower": ci.lower, "upper": ci.upper, "confidence": ci.confidence,
            "n_resamples": ci.n_resamples, "n_valid": ci.n_valid, "seed": ci.seed, "single_case": ci.single_case}


def aggregate(
    cases: Sequence[CaseResult],
    evaluator: Evaluator,
    *,
    seed: int = SEED,
    n_resamples: int = N_RESAMPLES,
    confidence: float = CONFIDENCE,
) -> tuple[dict[str, Any], dict[str, float]]:
    """Summaries with bootstrap CIs over the included cases, and the flat metrics the gate reads.

    Returns ``(summary, metrics)``. ``summary["per_metric"][m]`` is :func:`metrics.summarize`
    plus ``n_nonfinite`` (e.g. a HD95 of inf when a structure was missed; such values are
    counted, not averaged); ``summary["agreement"][output]`` holds Bland-Altman, MAE with
    its CI and ICC(2,1); ``summary["classification"][name]`` the ROC curve and AUC with
    its CI and sensitivity/specificity at the operating threshold.
    """
    included = [c for c in cases if c.included]
    pct = int(round(confidence * 100))
    summary: dict[str, Any] = {"confidence": confidence, "n_resamples": n_resamples, "seed": seed,
                               "per_metric": {}, "agreement": {}, "classification": {}}
    flat: dict[str, float] = {}
    names: list[str] = []
    for case in included:
        for name in case.metrics:
            if name not in names:
                names.append(name)
    for name in names:
        raw = [c.metrics.get(name) for c in included if c.metrics.get(name) is not None]
        values = _finite(raw)
        n_nonfinite = len(raw) - int(values.size)
        if values.size == 0:
            summary["per_metric"][name] = {"n": 0, "n_nonfinite": n_nonfinite}
            continue
        s = dict(M.summarize(values, seed=seed, n_resamples=n_resamples, confidence=confidence))
        s["n_nonfinite"] = n_nonfinite
        summary["per_metric"][name] = s
        flat[f"{name}_mean"] = s["mean"]
        flat[f"{name}_median"] = s["median"]
        flat[f"{name}_min"] = s["min"]
        flat[f"{name}_max"] = s["max"]
        if s["sd"] is not None:
            flat[f"{name}_sd"] = s["sd"]
        if s["n"] < MIN_CI_CASES:
            s["mean_ci"]["too_few_cases"] = True
        else:
            flat[f"{name}_ci{pct}_lower"] = s["mean_ci"]["lower"]
            flat[f"{name}_ci{pct}_upper"] = s["mean_ci"]["upper"]
        flat[f"{name}_n"] = float(s["n"])
        if n_nonfinite:
            flat[f"{name}_n_nonfinite"] = float(n_nonfinite)

    for output in evaluator.outputs:
        pairs = [(c.values[output]["predicted"], c.values[output]["reference"]) for c in included if output in c.values]
        pairs = [(float(p), float(r)) for p, r in pairs if p is not None and r is not None]
        n_missing = sum(1 for c in included if output not in c.values or c.values[output].get("predicted") is None)
        entry: dict[str, Any] = {"n": len(pairs), "n_missing_prediction": n_missing,
                                 "unit": OUTPUTS_BY_NAME[output].unit if output in OUTPUTS_BY_NAME else ""}
        if pairs:
            p, r = np.array([x for x, _ in pairs]), np.array([y for _, y in pairs])
            entry["predicted"], entry["reference"] = p.tolist(), r.tolist()
            entry["mae"] = M.mean_absolute_error(p, r) if len(p) >= 1 else None
            flat[f"{output}_mae"] = float(np.mean(np.abs(p - r)))
            flat[f"{output}_bias"] = float(np.mean(p - r))
            if len(pairs) >= 2:
                ba = M.bland_altman(p, r)
                entry["bland_altman"] = {"bias": ba.bias, "sd": ba.sd, "lower": ba.lower, "upper": ba.upper, "n": ba.n}
                flat[f"{output}_loa_lower"], flat[f"{output}_loa_upper"] = ba.lower, ba.upper
            if len(pairs) >= MIN_CI_CASES:
                mae_ci = M.bootstrap_ci((p, r), statistic=M.mean_absolute_error, n_resamples=n_resamples, confidence=confidence, seed=seed)
                entry["mae_ci"] = _ci_dict(mae_ci)
                flat[f"{output}_mae_ci{pct}_lower"], flat[f"{output}_mae_ci{pct}_upper"] = mae_ci.lower, mae_ci.upper
            if len(pairs) >= 2:
                icc = M.icc_2_1(np.column_stack([p, r]))
                entry["icc_2_1"] = icc
                if math.isfinite(icc):
                    flat[f"{output}_icc"] = icc
            if n_missing:
                flat[f"{output}_n_missing_prediction"] = float(n_missing)
        summary["agreement"][output] = entry

    for question in evaluator.classifications:
        rows = [c.values.get(question.output, {}) for c in included]
        rows = [(float(v["reference"]), float(v["predicted"])) for v in rows if v.get("reference") is not None and v.get("predicted") is not None]
        entry = {"label": question.label, "output": question.output, "reference_threshold": question.reference_threshold,
                 "operating_threshold": question.operating_threshold, "n": len(rows)}
        if rows:
            y = np.array([ref > question.reference_threshold for ref, _ in rows])
            score = np.array([pred for _, pred in rows])
            entry["n_positive"], entry["n_negative"] = int(y.sum()), int((~y).sum())
            counts = M.confusion_counts(y, score > question.operating_threshold)
            ss = M.sensitivity_specificity(y, score > question.operating_threshold)
            entry.update(tp=counts.tp, fp=counts.fp, tn=counts.tn, fn=counts.fn, sensitivity=ss.sensitivity, specificity=ss.specificity)
            flat[f"{question.name}_sensitivity"], flat[f"{question.name}_specificity"] = ss.sensitivity, ss.specificity
            if 0 < y.sum() < len(y) and len(y) >= MIN_CI_CASES:
                curve = M.roc_curve(y, score)
                entry["roc"] = {"fpr": curve.fpr.tolist(), "tpr": curve.tpr.tolist()}
                auc_ci = M.bootstrap_ci((y, score), statistic=M.roc_auc, n_resamples=n_resamples, confidence=confidence, seed=seed)
                entry["auc"], entry["auc_ci"] = auc_ci.estimate, _ci_dict(auc_ci)
                flat[f"{question.name}_auc"] = auc_ci.estimate
                flat[f"{question.name}_auc_ci{pct}_lower"], flat[f"{question.name}_auc_ci{pct}_upper"] = auc_ci.lower, auc_ci.upper
            else:
                entry["auc"] = None
                entry["note"] = "AUC not computed: it needs both classes among the reference labels and at least 5 cases"
        summary["classification"][question.name] = entry

    n_attempted = len(cases)
    n_failed = sum(1 for c in cases if c.status == "failed")
    flat["n_cases_evaluated"] = float(n_attempted)
    flat["n_cases_included"] = float(len(included))
    flat["n_failed"] = float(n_failed)
    flat["failure_rate"] = n_failed / n_attempted if n_attempted else float("nan")
    return summary, {k: float(v) for k, v in flat.items() if v is not None and math.isfinite(float(v))}


def detection_summary(cases: Sequence[M.DetectionResult], *, seed: int = SEED, n_resamples: int = N_RESAMPLES) -> dict[str, Any]:
    """FROC and CPM (LUNA16) with a case-level bootstrap CI, for analyses that output located findings."""
    curve = M.froc(cases)
    score = M.cpm(curve)
    ci = M.bootstrap_ci(list(cases), statistic=lambda cs: M.cpm(list(cs)), n_resamples=n_resamples, seed=seed)
    return {
        "fps_per_case": curve.fps_per_case.tolist(),
        "sensitivity": curve.sensitivity.tolist(),
        "cpm": score,
        "cpm_ci": _ci_dict(ci),
        "sensitivity_at_fp": dict(zip([str(r) for r in M.LUNA16_FP_RATES], M.sensitivity_at_fp(curve).tolist())),
        "n_cases": curve.n_cases,
        "n_references": curve.n_references,
    }


# ------------------------------------------------------------------------------------------ environment
def machine_info(subject: Subject | None = None) -> dict[str, Any]:
    """Where the numbers were made: host, OS, CPU count, library versions, the git commit if known."""
    import scipy

    from radpilot import __version__

    info: dict[str, Any] = {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or "",
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "radpilot": __version__,
    }
    if subject is not None and subject.model_manifest is not None:
        try:
            import onnxruntime

            info["onnxruntime"] = onnxruntime.__version__
        except ImportError:  # pragma: no cover - onnxruntime is a dependency
            pass
    try:
        repo = Path(__file__).resolve().parents[2]
        commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if commit.returncode == 0:
            info["git_commit"] = commit.stdout.strip()
            dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=5)
            info["git_dirty"] = bool(dirty.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    return info


# ------------------------------------------------------------------------------------------ the run
@dataclass
class ValidationOutcome:
    """A finished validation: the JSON document and the overlays of the worst (and excluded) cases."""

    result: dict[str, Any]
    overlays: list[Overlay]
    cases: list[CaseResult]

    @property
    def metrics(self) -> dict[str, float]:
        return self.result["metrics"]


ProgressCallback = Callable[[int, int, str], None]


def _independence(subject: Subject, manifest: DatasetManifest) -> tuple[bool, str]:
    names = {subject.name}
    if subject.model_manifest is not None:
        names.add(subject.model_manifest.name)
        training = json.dumps(subject.model_manifest.training_data)
        if manifest.name in training:
            return False, f"the model's manifest names {manifest.name} in its training data"
    used = sorted(names & set(manifest.development_use))
    if used:
        return False, f"the dataset manifest lists {', '.join(used)} under development_use (trained or tuned on it)"
    return True, ""


def run_validation(
    subject: Subject,
    manifest: DatasetManifest,
    registry: DatasetRegistry,
    *,
    limit: int | None = None,
    case_ids: Sequence[str] | None = None,
    allow_unverified: bool = False,
    progress: ProgressCallback | None = None,
    seed: int = SEED,
    n_resamples: int = N_RESAMPLES,
    worst: int = WORST_CASES,
) -> ValidationOutcome:
    """Evaluate ``subject`` on every case (or a subset) of ``manifest``'s dataset.

    The dataset's content hash is checked first; a changed (or unpinned) dataset is
    refused unless ``allow_unverified``, and a run on it never counts for the gate.
    ``limit``/``case_ids`` make a partial run, which never counts for the gate either.
    """
    verification = registry.verify(manifest)
    if verification.status in ("missing", "invalid"):
        raise ValidationError(f"dataset {manifest.name}: {verification.message}")
    if not verification.ok and not allow_unverified:
        raise ValidationError(
            f"dataset {manifest.name} cannot be verified: {verification.message}. Results on it would not be reproducible; "
            "restore the dataset, or run with --allow-unverified (such a run never counts for the gate)"
        )
    evaluator = choose_evaluator(subject, manifest)
    all_cases: list[CaseRef] = registry.cases(manifest)
    selected = all_cases
    if case_ids:
        wanted = list(dict.fromkeys(case_ids))
        known = {c.case_id: c for c in all_cases}
        missing = [c for c in wanted if c not in known]
        if missing:
            raise ValidationError(f"dataset {manifest.name} has no case(s) {missing[:5]}")
        selected = [known[c] for c in wanted]
    if limit is not None:
        if limit < 1:
            raise ValidationError("limit must be at least 1")
        selected = selected[:limit]
    independent, dependence = _independence(subject, manifest)
    started_at = datetime.now(timezone.utc)
    wall0 = time.perf_counter()
    results: list[CaseResult] = []
    heap: list[tuple[float, int, Overlay]] = []  # the worst included cases by the primary metric
    excluded_overlays: list[Overlay] = []
    try:
        for index, ref in enumerate(selected):
            if progress is not None:
                progress(index, len(selected), ref.case_id)
            result = CaseResult(ref.case_id, excluded=ref.excluded, attributes=dict(ref.attributes))
            result.attributes.pop("value_offset", None)
            t0, c0 = time.perf_counter(), time.process_time()
            try:
                data = registry.load_case(manifest, ref)
                evaluator.evaluate(data, result)
            except (DatasetError, OSError) as exc:
                raise ValidationError(f"case {ref.case_id} of {manifest.name} cannot be read: {exc}") from exc
            except Exception as exc:  # noqa: BLE001 - a failing case is a result, not a crash of the run
                logger.warning("validation case failed", extra={"case": ref.case_id, "error": str(exc)})
                result.status, result.error = "failed", f"{type(exc).__name__}: {exc}"
                result.metrics.clear()
            result.seconds, result.cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
            overlay, result.overlay = result.overlay, None
            if overlay is not None:
                overlay.excluded = result.excluded
                score = result.metrics.get(evaluator.primary_metric, float("nan"))
                overlay.caption = (f"{evaluator.primary_metric} {score:.4f}" if math.isfinite(score) else "") + (
                    f"; {overlay.caption}" if overlay.caption else "")
                if result.excluded:
                    excluded_overlays.append(overlay)
                elif math.isfinite(score) and worst > 0:
                    item = (-score, index, overlay)
                    if len(heap) < worst:
                        heapq.heappush(heap, item)
                    elif item > heap[0]:
                        heapq.heapreplace(heap, item)
            results.append(result)
        if progress is not None:
            progress(len(selected), len(selected), "")
    finally:
        evaluator.close()
    seconds = time.perf_counter() - wall0
    summary, flat = aggregate(results, evaluator, seed=seed, n_resamples=n_resamples)
    n_failed = sum(1 for r in results if r.status == "failed")
    complete = len(selected) == len(all_cases)
    outputs: dict[str, list[float]] = {}
    for r in results:
        if r.status != "ok":
            continue
        for name, v in r.values.items():
            spec = OUTPUTS_BY_NAME.get(name)
            if spec is not None and spec.key and v.get("predicted") is not None:
                outputs.setdefault(name, []).append(float(v["predicted"]))
    warnings_: list[str] = []
    if not verification.ok:
        warnings_.append(f"Dataset not verified ({verification.status}): {verification.message}. This run does not count for the gate.")
    if not complete:
        warnings_.append(f"Partial run: {len(selected)} of {len(all_cases)} cases. This run does not count for the gate.")
    if not independent:
        warnings_.append(f"Not independent: {dependence}. The figures are optimistic; an independent check is still needed.")
    if n_failed:
        warnings_.append(f"{n_failed} case(s) failed; they are listed in the table and counted in failure_rate.")
    n_included = sum(1 for r in results if r.included)
    if 0 < n_included < 10:
        warnings_.append(f"Only {n_included} case(s) in the statistics: confidence intervals are wide or meaningless.")
    nonfinite = {k: v["n_nonfinite"] for k, v in summary["per_metric"].items() if v.get("n_nonfinite")}
    if nonfinite:
        warnings_.append(f"Non-finite values (a missed structure) were left out of the averages: {nonfinite}.")
    ordered_overlays = [o for _, _, o in sorted(heap, key=lambda item: item[0], reverse=True)] + excluded_overlays
    result_doc: dict[str, Any] = {
        "format": RESULT_FORMAT,
        "status": "ok",
        "created_at": started_at.isoformat(),
        "seconds": round(seconds, 3),
        "subject": {
            "kind": subject.kind,
            "name": subject.name,
            "version": subject.version,
            "model": subject.model,
            "model_version": subject.model_version,
            "model_sha256": subject.model_manifest.sha256 if subject.model_manifest is not None else None,
            "code_path": evaluator.code_path,
        },
        "dataset": dict(
            manifest.summary(),
            content_hash=verification.actual_hash,
            verified=verification.ok,
            verification=verification.status,
            verification_message=verification.message,
            root=str(verification.root),
            n_cases=len(all_cases),
        ),
        "gate_view": {
            "complete": complete,
            "independent": independent,
            "dependence": dependence,
            "n_cases": len(all_cases),
            "n_evaluated": len(results),
            "n_included": n_included,
            "n_excluded": sum(1 for r in results if r.excluded and r.status == "ok"),
            "n_failed": n_failed,
        },
        "machine": machine_info(subject),
        "primary_metric": evaluator.primary_metric,
        "warnings": warnings_,
        "summary": summary,
        "metrics": flat,
        "outputs": outputs,
        "cases": [r.to_dict() for r in results],
    }
    return ValidationOutcome(result_doc, ordered_overlays, results)


def validate(
    subject_name: str,
    dataset_name: str,
    *,
    settings: Any,
    model_version: str | None = None,
    models_dir: Path | None = None,
    registry: DatasetRegistry | None = None,
    store: Any | None = None,
    limit: int | None = None,
    case_ids: Sequence[str] | None = None,
    allow_unverified: bool = False,
    progress: ProgressCallback | None = None,
    n_resamples: int = N_RESAMPLES,
    seed: int = SEED,
) -> tuple[ValidationOutcome, Any]:
    """Resolve, run, render the HTML report and store the run; returns ``(outcome, StoredRun)``."""
    from radpilot.validation.report import render_report
    from radpilot.validation.store import ValidationStore

    registry = registry or DatasetRegistry.from_settings(settings)
    try:
        manifest = registry.get(dataset_name)
    except KeyError as exc:
        raise ValidationError(str(exc.args[0])) from exc
    subject = resolve_subject(subject_name, model_version=model_version, models_dir=models_dir)
    if not manifest.checks(subject.name) and not (subject.model and manifest.checks(subject.model)):
        logger.info("dataset does not declare this subject", extra={"dataset": manifest.name, "subject": subject.name})
    outcome = run_validation(subject, manifest, registry, limit=limit, case_ids=case_ids, allow_unverified=allow_unverified,
                             progress=progress, n_resamples=n_resamples, seed=seed)
    store = store or ValidationStore.open(settings)
    stored = store.save(outcome.result, html=None)
    outcome.result["run_id"] = stored.id
    html = render_report(outcome.result, outcome.overlays)
    report_path = store.attach_report(stored.id, html)
    from radpilot.validation.store import StoredRun

    return outcome, StoredRun(stored.id, stored.result_path, report_path)
