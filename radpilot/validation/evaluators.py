"""Evaluation paths: how one case of a reference dataset is evaluated with one subject.

Validation must measure what production runs. Each (subject, layout) pair has one
evaluation path, and every result records it (``code_path``):

* **3-D series** (``dicom-series``): the files are read with pydicom and go through
  exactly the production steps of the engine's pipeline:
  :func:`radpilot.dicom.volume.volume_from_datasets` -> ``analysis.check_input`` ->
  ``analysis.run``. Only DICOM encoding and storage are left out. A case the
  analysis refuses (``NotApplicableError``) is a *failed* case, as it would be in
  production.
* **volume files** (``volume-files``): as above, but the Volume is built from the
  NIfTI/MetaImage file (:func:`radpilot.validation.datasets.volume_from_label_image`)
  instead of the DICOM reader.
* **cine volume files** (``cine-volume-files``): one volume file per phase, read as one
  :class:`~radpilot.dicom.cine.CineVolume` (what the DICOM reader gives an analysis that
  declares a temporal input) -> ``check_input`` -> ``run``. The reference is per phase: each
  segmentation the analysis returns names the images it lies on (``source_uids``), which
  says its phase, and is compared with that phase's labels; metrics carry the phase's name
  (``dice_<structure>_<phase>``) and ``dice_<structure>`` is the mean over the phases.
* **2-D slices** (``png-slices``): a slice is not a valid input of a 3-D analysis; the
  analysis' own 2-D entry point (:meth:`~radpilot.contract.Analysis.run_slice`) is used,
  and the analysis says how it relates to its production path.
* **radiographs** (``png-radiographs``): for a model, the sha256-verified ONNX session
  with the pre/post-processing of the analysis that runs it
  (:meth:`~radpilot.contract.Analysis.predict_with_model`); for an analysis, the image as
  a one-slice ``DX`` Volume (what the DICOM reader gives for a radiograph) ->
  ``check_input`` -> ``run``.

Segments are matched to the reference structures by the SNOMED CT types the analysis
declares (:class:`~radpilot.contract.StructureSpec`); outputs by its
:class:`~radpilot.contract.OutputSpec` declarations.  No analysis is named here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from radpilot.contract import (
    Analysis,
    Classification,
    DetectionSpec,
    Findings,
    NotApplicableError,
    OutputSpec,
    Segmentation,
    StructureSpec,
)
from radpilot.dicom.volume import volume_from_datasets
from radpilot.modelhub.registry import ModelRegistry
from radpilot.validation import metrics as M
from radpilot.validation.datasets import CaseData, DatasetManifest, labels_on_volume_grid
from radpilot.validation.outputs import OutputCatalog
from radpilot.validation.subject import Subject, ValidationError


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
    detections: dict[str, M.DetectionResult] = field(default_factory=dict)  # detection name -> matched candidates

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
            "detections": {
                name: {
                    "references": int(d.reference_scores.size),
                    "found": int(np.isfinite(d.reference_scores).sum()),
                    "false_positives": int(d.fp_scores.size),
                }
                for name, d in self.detections.items()
            },
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


def segments_by_structure(segmentation: Segmentation, structures: Sequence[StructureSpec]) -> dict[str, np.ndarray]:
    """Predicted masks per structure: the union of the segments whose type is one of the structure's codes."""
    labels = np.asarray(segmentation.labels)
    out: dict[str, np.ndarray] = {}
    for structure in structures:
        numbers = [s.number for s in segmentation.segments if s.type.value in structure.codes]
        out[structure.name] = np.isin(labels, numbers) if numbers else np.zeros(labels.shape, dtype=bool)
    return out


def declared_structures(analysis: Analysis, names: Sequence[str], *, with_unions: bool = False) -> list[StructureSpec]:
    """The analysis' declarations of the dataset's structures (those it does not declare are not compared).

    ``with_unions`` adds the declared structures made of parts that are all among ``names``
    (e.g. both lungs, when the dataset has the right and the left lung).
    """
    specs = [s for s in (analysis.structure(n) for n in names) if s is not None]
    if with_unions:
        present = {s.name for s in specs}
        specs += [s for s in analysis.structures if s.parts and set(s.parts) <= present and s.name not in present]
    return specs


def scored_detections(analysis: Analysis, manifest: DatasetManifest) -> tuple[DetectionSpec, ...]:
    """The analysis' declared detections that the dataset has reference points for."""
    references = manifest.options.get("reference_points") or {}
    return tuple(d for d in analysis.detections if d.name in references)


def compared_outputs(analysis: Analysis, manifest: DatasetManifest) -> tuple[OutputSpec, ...]:
    """The analysis' declared outputs that the dataset has reference values for."""
    references = manifest.options.get("reference_values") or {}
    return tuple(o for o in analysis.outputs if o.name in references)


# ------------------------------------------------------------------------------------------ evaluators
class Evaluator:
    """Evaluates one case of a dataset with one subject; subclasses set how."""

    code_path: str = ""
    primary_metric: str = ""  # the metric that ranks cases (lower = worse) for the worst-case overlays
    outputs: tuple[OutputSpec, ...] = ()  # paired outputs compared with reference values
    classifications: tuple[Classification, ...] = ()
    detections: tuple[DetectionSpec, ...] = ()  # located findings scored against the dataset's reference points

    def __init__(self, subject: Subject, manifest: DatasetManifest) -> None:
        self.subject = subject
        self.manifest = manifest

    def evaluate(self, data: CaseData, result: CaseResult) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Release resources (sessions); called once after the run."""

    def _compare_outputs(self, produced: dict[str, float | None], data: CaseData, result: CaseResult) -> None:
        for spec in self.outputs:
            pred, ref = produced.get(spec.name), data.ref.reference_values.get(spec.name)
            result.values[spec.name] = {"predicted": pred, "reference": ref}
            result.metrics.update(paired_metrics(spec.name, pred, ref, spec.relative))

    def _score_detections(
        self, analysis: Analysis, findings: Findings, data: CaseData, result: CaseResult, spacing: tuple[float, float] | None
    ) -> None:
        """Match the analysis' located findings to the case's reference points (2-D, on the image grid)."""
        if spacing is None:
            raise RuntimeError("detections need the pixel spacing to apply the hit distance in mm")
        for spec in scored_detections(analysis, self.manifest):
            candidates = [p for p in findings.points if p.name.value == spec.concept]
            references = data.ref.reference_points.get(spec.name, [])
            result.detections[spec.name] = M.detection_hits(
                np.array([p.center_zyx[1:] for p in candidates], dtype=float).reshape(-1, 2),
                np.array([1.0 if p.score is None else p.score for p in candidates], dtype=float),
                np.array([(r.row, r.column) for r in references], dtype=float).reshape(-1, 2),
                np.array([r.diameter_mm / 2.0 for r in references], dtype=float),
                spacing,
                margin_mm=spec.margin_mm,
            )

    def _scored(self, analysis: Analysis) -> tuple[Classification, ...]:
        names = {o.name for o in self.outputs}
        return tuple(c for c in analysis.classifications if c.output in names)


class SliceEvaluator(Evaluator):
    """2-D slices with one binary mask: the analysis' 2-D entry point (``run_slice``)."""

    def __init__(self, subject: Subject, manifest: DatasetManifest) -> None:
        super().__init__(subject, manifest)
        analysis = subject.analysis
        if analysis is None:
            raise ValidationError(f"model {subject.name} has no evaluation path on 2-D CT slices; validate the analysis that uses it")
        if not analysis.has_slice_entry:
            raise ValidationError(
                f"{subject.name} has no 2-D entry point (run_slice): it cannot be validated on the 2-D slices of {manifest.name}"
            )
        structure = manifest.options.get("structure")
        if not structure:
            raise ValidationError(f"dataset {manifest.name}: a png-slices manifest names its masks' structure in options.structure")
        self.structure = str(structure)
        self.primary_metric = f"dice_{self.structure}"
        spacing_note = (
            "pixel spacing unknown: the analysis' assumed spacing is used for its size rules"
            if manifest.options.get("pixel_spacing_mm") is None
            else "pixel spacing from the dataset"
        )
        entry = analysis.slice_entry_description or f"{type(analysis).__name__}.run_slice (the analysis' 2-D entry point) on each slice"
        self.code_path = f"{entry} ({analysis.name} {analysis.version}; {spacing_note})"

    def evaluate(self, data: CaseData, result: CaseResult) -> None:
        image = data.image
        assert image is not None
        reference = data.reference_masks[self.structure]
        predicted = np.asarray(self.subject.analysis.run_slice(image, data.pixel_spacing_mm), dtype=bool)
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
        mask_labels = manifest.options.get("mask_labels")
        if not mask_labels:
            raise ValidationError(f"dataset {manifest.name}: a 3-D manifest names its mask labels in options.mask_labels")
        names = [str(s) for s in mask_labels.values()]
        self.structures = declared_structures(analysis, names, with_unions=True)
        if not self.structures:
            raise ValidationError(f"{analysis.name} declares none of the structures {names} of {manifest.name}")
        unions = [s for s in self.structures if s.parts]
        self.primary_metric = f"dice_{(unions or self.structures)[0].name}"
        self.outputs = compared_outputs(analysis, manifest)
        cls = type(analysis).__name__
        if manifest.layout == "cine-volume-files":
            self.code_path = (
                f"CineVolume built from one volume file per phase (the manifest's nominal geometry where the files hold none; "
                f"not the DICOM reader) -> {cls}.check_input -> {cls}.run ({analysis.name} {analysis.version}); each returned "
                "segmentation compared with the reference of the phase whose images it names"
            )
        elif manifest.layout == "dicom-series":
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
        analysis = self.subject.analysis
        assert analysis is not None
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
        if data.reference_phases:
            self._evaluate_phases(analysis, volume, findings, data, result)
            return
        assert data.reference_labels is not None
        reference = self._references(labels_on_volume_grid(data.reference_labels, volume), data.structure_labels)
        if findings.segmentation is None:
            raise RuntimeError("the analysis returned no segmentation")
        predicted = segments_by_structure(findings.segmentation, self.structures)
        spacing = volume.spacing_zyx
        for structure in self.structures:
            result.metrics.update(
                segmentation_metrics(
                    structure.name, predicted[structure.name], reference[structure.name], spacing, surface=structure.surface
                )
            )
        self._record_outputs(analysis, volume, findings, data, result)
        # The outputs measured inside the REFERENCE masks by the analysis' own quantification: separates
        # segmentation differences from quantification, and checks that mask and image were read in register.
        for name, value in analysis.reference_outputs(volume, reference).items():
            if name in result.values:
                result.values[name]["reference_mask"] = float(value)
        # The overlay: the slice where prediction and reference disagree most (unions are drawn as their parts).
        shown = [s.name for s in self.structures if not s.parts]
        union_pred = np.logical_or.reduce([predicted[s] for s in shown])
        union_ref = np.logical_or.reduce([reference[s] for s in shown])
        disagreement = (union_pred ^ union_ref).sum(axis=(1, 2))
        k = int(np.argmax(disagreement)) if disagreement.any() else int(np.argmax(union_ref.sum(axis=(1, 2))))
        result.overlay = Overlay(
            data.ref.case_id,
            np.asarray(volume.voxels[k], dtype=np.float32),
            {s: predicted[s][k] for s in shown},
            {s: reference[s][k] for s in shown},
            caption=f"slice {k} of {volume.num_slices} (most disagreement)",
        )

    def _record_outputs(self, analysis: Analysis, volume: Any, findings: Findings, data: CaseData, result: CaseResult) -> None:
        """The analysis' declared outputs, compared with the case's reference values where it has them, and the
        volume's shape and spacing."""
        produced = OutputCatalog({analysis.name: analysis}).findings_outputs(findings)
        self._compare_outputs(dict(produced), data, result)
        for name, value in produced.items():
            result.values.setdefault(name, {"predicted": value, "reference": None})
        result.attributes.setdefault("shape_zyx", " x ".join(str(n) for n in volume.shape))
        result.attributes.setdefault("spacing_zyx_mm", " x ".join(f"{v:.3f}" for v in volume.spacing_zyx))

    def _references(self, labels: np.ndarray, structure_labels: dict[str, int]) -> dict[str, np.ndarray]:
        reference = {name: labels == value for name, value in structure_labels.items()}
        for structure in self.structures:
            if structure.parts:
                reference[structure.name] = np.logical_or.reduce([reference[p] for p in structure.parts])
        return reference

    def _evaluate_phases(self, analysis: Analysis, volume: Any, findings: Findings, data: CaseData, result: CaseResult) -> None:
        """A cine with a reference per phase: each phase against the segmentation the analysis returned on that phase's images."""
        frame_uids = [tuple(u) for u in getattr(volume, "frame_sop_instance_uids", ())]
        by_phase: dict[int, Segmentation] = {}
        for segmentation in (s for s in (findings.segmentation, *findings.extra_segmentations) if s is not None):
            # A segmentation without source_uids lies on the volume's own slices, which are the cine's first phase.
            uids = tuple(segmentation.source_uids) if segmentation.source_uids is not None else tuple(volume.sop_instance_uids)
            phase = next((p for p, phase_uids in enumerate(frame_uids) if phase_uids == uids), None)
            if phase is not None:
                by_phase.setdefault(phase, segmentation)
        spacing = volume.spacing_zyx
        per_structure: dict[str, list[float]] = {s.name: [] for s in self.structures}
        worst: tuple[int, int, int, dict[str, np.ndarray], dict[str, np.ndarray]] | None = None
        shown = [s.name for s in self.structures if not s.parts]
        for ref in data.reference_phases:
            segmentation = by_phase.get(ref.phase)
            if segmentation is None:
                raise RuntimeError(
                    f"the analysis returned no segmentation of phase {ref.phase + 1} ({ref.name}), which the reference labels; "
                    f"it segmented phase(s) {sorted(p + 1 for p in by_phase) or 'none'}"
                )
            predicted = segments_by_structure(segmentation, self.structures)
            reference = self._references(ref.labels, data.structure_labels)
            for structure in self.structures:
                metrics = segmentation_metrics(
                    f"{structure.name}_{ref.name}",
                    predicted[structure.name],
                    reference[structure.name],
                    spacing,
                    surface=structure.surface,
                )
                result.metrics.update(metrics)
                per_structure[structure.name].append(metrics[f"dice_{structure.name}_{ref.name}"])
            union_pred = np.logical_or.reduce([predicted[s] for s in shown])
            union_ref = np.logical_or.reduce([reference[s] for s in shown])
            disagreement = (union_pred ^ union_ref).sum(axis=(1, 2))
            k = int(np.argmax(disagreement)) if disagreement.any() else int(np.argmax(union_ref.sum(axis=(1, 2))))
            if worst is None or int(disagreement[k]) > worst[0]:
                worst = (int(disagreement[k]), ref.phase, k, predicted, reference)
        # The phases together (e.g. ED and ES): what a target "mean Dice over both phases" reads.
        for name, values in per_structure.items():
            result.metrics[f"dice_{name}"] = float(np.mean(values))
        self._record_outputs(analysis, volume, findings, data, result)
        result.attributes.setdefault("phases", str(len(frame_uids)))
        assert worst is not None
        _, phase, k, predicted, reference = worst
        name = next(r.name for r in data.reference_phases if r.phase == phase)
        result.overlay = Overlay(
            data.ref.case_id,
            np.asarray(volume.frames[phase][k], dtype=np.float32),
            {s: predicted[s][k] for s in shown},
            {s: reference[s][k] for s in shown},
            caption=f"phase {name}, slice {k} of {volume.num_slices} (most disagreement)",
        )


class RadiographModelEvaluator(Evaluator):
    """Radiographs through a model's ONNX session and the pre/post-processing of the analysis that runs it."""

    def __init__(self, subject: Subject, manifest: DatasetManifest) -> None:
        super().__init__(subject, manifest)
        model, owner = subject.model_manifest, subject.owner
        assert model is not None
        if owner is None or not owner.has_model_entry:
            raise ValidationError(
                f"model {model.name} has no model-only evaluation path: no installed analysis that uses it offers one "
                "(predict_with_model); validate the analysis instead"
            )
        self.owner = owner
        self.structures = [s.name for s in declared_structures(owner, manifest.options.get("structures", []))]
        if not self.structures:
            raise ValidationError(f"model {model.name} ({owner.name}) segments none of the dataset's structures")
        self.primary_metric = "dice_mean"
        self.outputs = compared_outputs(owner, manifest)
        self.classifications = self._scored(owner)
        self.registry = ModelRegistry(subject.models_dirs, providers=["CPUExecutionProvider"], intra_op_threads=1)
        self.session = self.registry.session(model.name, model.version)  # verifies the sha256 first
        self.code_path = (
            f"ModelRegistry.session({model.name!r}, {model.version!r}) - ONNX Runtime on CPU, file sha256 verified "
            f"against the manifest - with {type(owner).__name__}.predict_with_model ({owner.name} {owner.version}: the "
            "runtime pre- and post-processing); the model alone: an analysis' DICOM image handling, input checks and "
            "measurements are not part of this path (validate the analysis for those)"
        )

    def evaluate(self, data: CaseData, result: CaseResult) -> None:
        image = data.image
        assert image is not None and self.subject.model is not None
        prediction = self.owner.predict_with_model(self.subject.model, self.session, image)
        predicted = {s: np.asarray(prediction.masks[s], dtype=bool) for s in self.structures}
        for s in self.structures:
            result.metrics.update(segmentation_metrics(s, predicted[s], data.reference_masks[s], data.pixel_spacing_mm))
        result.metrics["dice_mean"] = float(np.mean([result.metrics[f"dice_{s}"] for s in self.structures]))
        self._compare_outputs(dict(prediction.outputs), data, result)
        result.notes.extend(prediction.notes)
        result.overlay = Overlay(data.ref.case_id, image, predicted, {s: data.reference_masks[s] for s in self.structures})

    def close(self) -> None:
        self.session = None


def radiograph_dataset(image: np.ndarray, pixel_spacing_mm: tuple[float, float] | None, case_id: str) -> Dataset:
    """A DX (for presentation) DICOM dataset holding a 2-D radiograph of a reference set, for the production reader.

    Values are stored as they are (unsigned 16-bit, MONOCHROME2: bone bright), with View
    Position PA, Patient Orientation L\\F (patient's right on the image left, head up, as
    the reference sets are stored) and the dataset's pixel spacing (PixelSpacing, when known).
    UIDs derive from the case id, so the same case always gives the same dataset.
    """
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
    """Radiographs through an Analysis on the production path; segments matched by their declared SNOMED CT types."""

    def __init__(self, subject: Subject, manifest: DatasetManifest) -> None:
        super().__init__(subject, manifest)
        analysis = subject.analysis
        assert analysis is not None
        self.structures = declared_structures(analysis, manifest.options.get("structures", []))
        if not self.structures:
            raise ValidationError(f"{analysis.name} declares none of the structures of {manifest.name}")
        self.primary_metric = "dice_mean"
        self.outputs = compared_outputs(analysis, manifest)
        self.classifications = self._scored(analysis)
        self.detections = scored_detections(analysis, manifest)
        cls = type(analysis).__name__
        models = f", model {subject.model} {subject.model_version}" if subject.model else ""
        self.code_path = (
            f"production path on an in-memory DICOM: the PNG radiograph as a DX 'for presentation' instance (values unchanged, "
            f"View Position PA, Patient Orientation L\\F, the dataset's PixelSpacing) -> radpilot.dicom.volume.volume_from_datasets "
            f"-> {cls}.check_input -> {cls}.run ({subject.name} {subject.version}{models}); segments matched to the reference "
            "structures by SNOMED CT type"
        )

    def evaluate(self, data: CaseData, result: CaseResult) -> None:
        analysis = self.subject.analysis
        assert analysis is not None and data.image is not None
        volume = volume_from_datasets([radiograph_dataset(data.image, data.pixel_spacing_mm, data.ref.case_id)])
        try:
            analysis.check_input(volume)
        except NotApplicableError as exc:
            raise RuntimeError(f"the analysis refused the image (check_input): {exc}") from exc
        findings = analysis.run(volume)
        result.notes.extend(n for n in findings.notes if "Research use only" not in n)
        if findings.segmentation is None:
            raise RuntimeError("the analysis returned no segmentation")
        predicted = {s: m[0] for s, m in segments_by_structure(findings.segmentation, self.structures).items()}
        names = [s.name for s in self.structures]
        for s in names:
            result.metrics.update(segmentation_metrics(s, predicted[s], data.reference_masks[s], data.pixel_spacing_mm))
        result.metrics["dice_mean"] = float(np.mean([result.metrics[f"dice_{s}"] for s in names]))
        produced = OutputCatalog({analysis.name: analysis}).findings_outputs(findings)
        self._compare_outputs(dict(produced), data, result)
        for spec in self.outputs:
            if produced.get(spec.name) is None:
                result.notes.append(f"no {spec.name} reported by the analysis")
        if self.detections:
            self._score_detections(analysis, findings, data, result, data.pixel_spacing_mm)
        result.overlay = Overlay(data.ref.case_id, data.image, predicted, {s: data.reference_masks[s] for s in names})


def choose_evaluator(subject: Subject, manifest: DatasetManifest) -> Evaluator:
    """The evaluation path for ``subject`` on ``manifest``'s layout (see the module docstring)."""
    layout = manifest.layout
    if layout == "png-slices":
        return SliceEvaluator(subject, manifest)
    if layout in ("dicom-series", "volume-files", "cine-volume-files"):
        return VolumeEvaluator(subject, manifest)
    if layout == "png-radiographs":
        if subject.kind == "model":
            return RadiographModelEvaluator(subject, manifest)
        return RadiographAnalysisEvaluator(subject, manifest)
    raise ValidationError(f"no evaluation path for layout {layout!r}")
