"""``liver_ct``: liver and spleen segmentation, volumes, attenuation, steatosis grade and focal lesion candidates
on abdominal CT.

Inputs: axial abdominal or chest-abdominal CT in HU, slices at most 5 mm apart (the series reader already
refuses gaps in slice positions), non-contrast or contrast-enhanced; the contrast phase is read from the
header and the measured aorta (:mod:`radpilot.analyses.liver_ct.contrast`) and reported.

Method: the model ``liver_spleen_ct_seg`` (a 2.5-D U-Net trained here on BTCV, see
``training/liver_ct/README.md``) runs on every slice after the training data's own preprocessing
(:mod:`radpilot.analyses.liver_ct.preprocess`: HU -> [-125, 275] -> 0..255 -> 2 mm in-plane); its
logits go back to the source grid and the largest 3-D component of each organ is kept.  Attenuation,
steatosis grade and lesion candidates: :mod:`radpilot.analyses.liver_ct.quantification`.

Outputs
-------
* SEG: segment 1 "Liver" (SCT 10200004), 2 "Spleen" (SCT 78961009), 3.. "Lesion candidate n"
  (SCT 52988006 "Lesion", category SCT 49755003 "Morphologically altered structure", region liver).
* SR measurements: liver and spleen volume (SCT 118565006, mL); mean parenchymal attenuation
  (DCM 112031 "Attenuation Coefficient", derivation mean, [hnsf'U]) and median (private code) of
  liver and spleen; liver minus spleen (private, [hnsf'U]) and liver/spleen ratio (private, 1); the
  measured aortic attenuation; per lesion candidate its longest axial diameter (mm), volume (mL) and
  mean HU.  Qualitative: contrast phase, steatosis grade (non-contrast only) or why none.
* Key slice: the slice with the largest liver area.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Mapping
from typing import Any

import numpy as np

from radpilot.analyses.liver_ct import contrast
from radpilot.analyses.liver_ct.preprocess import LIVER, SPLEEN, hu_to_u8, labels_from_logits, model_grid_shape, model_input
from radpilot.analyses.liver_ct.quantification import (
    Attenuation,
    LesionCandidate,
    in_plane_median,
    lesion_candidates,
    parenchyma,
    steatosis_grade,
)
from radpilot.contract import (
    Analysis,
    Code,
    Findings,
    InputRequirements,
    Measurement,
    NotApplicableError,
    OutputSpec,
    PointFinding,
    QualitativeFinding,
    Segment,
    Segmentation,
    StructureSpec,
)
from radpilot.dicom.volume import Volume
from radpilot.modelhub.registry import ModelRegistry

logger = logging.getLogger(__name__)

SEGMENTATION_MODEL = "liver_spleen_ct_seg"

ANATOMICAL_STRUCTURE = Code("123037004", "SCT", "Anatomical Structure")
ALTERED_STRUCTURE = Code("49755003", "SCT", "Morphologically Altered Structure")
LIVER_CODE = Code("10200004", "SCT", "Liver")
SPLEEN_CODE = Code("78961009", "SCT", "Spleen")
AORTA_CODE = Code("15825003", "SCT", "Aorta")
LESION = Code("52988006", "SCT", "Lesion")
VOLUME = Code("118565006", "SCT", "Volume")
ATTENUATION = Code("112031", "DCM", "Attenuation Coefficient")
MEAN = Code("373098007", "SCT", "Mean")
MEDIAN_ATTENUATION = Code("MEDIANHU", "99RADPILOT", "Median attenuation")
LIVER_MINUS_SPLEEN = Code("LSDIFF", "99RADPILOT", "Liver minus spleen attenuation")
LIVER_SPLEEN_RATIO = Code("LSRATIO", "99RADPILOT", "Liver to spleen attenuation ratio")
LESION_DIAMETER = Code("LESIONDIAM", "99RADPILOT", "Lesion candidate longest axial diameter")
LESION_VOLUME = Code("LESIONVOL", "99RADPILOT", "Lesion candidate volume")
LESION_MEAN_HU = Code("LESIONHU", "99RADPILOT", "Lesion candidate mean attenuation")
CONTRAST_PHASE = Code("CTPHASE", "99RADPILOT", "Contrast phase")
STEATOSIS = Code("STEATOSIS", "99RADPILOT", "Hepatic steatosis grade (CT)")
VALIDATION_STATUS = Code("VALSTATUS", "99RADPILOT", "Validation status")
CANDIDATES_NOT_VALIDATED = Code("NOTVALIDATED", "99RADPILOT", "Candidates, not validated on a cohort")
UNIT_ML = Code("mL", "UCUM", "milliliter")
UNIT_MM = Code("mm", "UCUM", "millimeter")
UNIT_HU = Code("[hnsf'U]", "UCUM", "Hounsfield unit")
UNIT_RATIO = Code("1", "UCUM", "no units")

PHASE_CODES = {
    contrast.NON_CONTRAST: Code("NONCON", "99RADPILOT", "Non-contrast"),
    contrast.PORTAL_VENOUS: Code("PORTALVENOUS", "99RADPILOT", "Portal-venous phase"),
    contrast.ARTERIAL: Code("ARTERIAL", "99RADPILOT", "Arterial phase"),
    contrast.ENHANCED: Code("ENHANCED", "99RADPILOT", "Contrast-enhanced, phase not determined"),
    contrast.UNDETERMINED: Code("UNDETERMINED", "99RADPILOT", "Contrast phase not determined"),
}
NO_GRADE = Code("NOGRADE", "99RADPILOT", "Not graded (contrast-enhanced or phase unknown)")

MIN_SLICES = 20
MAX_SLICE_SPACING_MM = 5.0
MAX_TILT_DEG = 10.0
MIN_LIVER_ML = 300.0  # below this the liver is not (or barely) in the field of view
CHUNK = 16
LESION_NOTE = (
    "Focal lesion candidates are classical (attenuation departures from the parenchyma, round, >= 5 mm): "
    "candidates, not validated on a cohort; the only reference here is one 3D-IRCADb patient with two tumours."
)
RESEARCH_NOTE = (
    "Research use only: the liver/spleen model was trained on 24 BTCV abdominal CT scans (Synapse challenge terms, "
    "research use) and checked on one 3D-IRCADb patient."
)


class LiverCT(Analysis):
    """Liver and spleen segmentation and quantification on abdominal CT."""

    name = "liver_ct"
    version = "0.3.0"
    description = (
        "Segments liver and spleen on abdominal CT with a model trained here, reports their volumes, parenchymal "
        "attenuation, the liver-spleen difference and ratio, the contrast phase, a steatosis grade on non-contrast CT "
        "and focal liver lesion candidates."
    )
    required_models = (SEGMENTATION_MODEL,)
    timeout_s = 300.0
    inputs = InputRequirements(
        ("CT",),
        f"axial abdominal or chest-abdominal CT in HU, at least {MIN_SLICES} slices at most {MAX_SLICE_SPACING_MM:.0f} mm "
        "apart without gaps, liver in the field of view; non-contrast or portal-venous",
    )
    outputs = (
        OutputSpec.of("liver_volume_ml", "Liver volume", "mL", VOLUME, LIVER_CODE, key=True, relative=True),
        OutputSpec.of("spleen_volume_ml", "Spleen volume", "mL", VOLUME, SPLEEN_CODE, relative=True),
        OutputSpec.of("liver_mean_hu", "Mean liver attenuation", "HU", ATTENUATION, LIVER_CODE, key=True),
        OutputSpec.of("liver_median_hu", "Median liver attenuation", "HU", MEDIAN_ATTENUATION, LIVER_CODE),
        OutputSpec.of("spleen_mean_hu", "Mean spleen attenuation", "HU", ATTENUATION, SPLEEN_CODE),
        OutputSpec.of("liver_minus_spleen_hu", "Liver minus spleen attenuation", "HU", LIVER_MINUS_SPLEEN),
        OutputSpec.of("liver_spleen_ratio", "Liver/spleen attenuation ratio", "", LIVER_SPLEEN_RATIO),
        OutputSpec.of("aorta_hu", "Aortic attenuation", "HU", ATTENUATION, AORTA_CODE),
    )
    structures = (
        StructureSpec("liver", (LIVER_CODE.value,)),
        StructureSpec("spleen", (SPLEEN_CODE.value,)),
    )
    display_windows = {"CT": (60.0, 400.0)}  # abdominal soft-tissue window

    def __init__(self, registry: Any | None = None) -> None:
        self._registry = registry
        self._lock = threading.Lock()

    @property
    def registry(self) -> Any:
        if self._registry is None:
            # two intra-op threads: the 2-core target machine (benchmarks/liver_ct_speed.py)
            self._registry = ModelRegistry(intra_op_threads=2)
        return self._registry

    # ------------------------------------------------------------------ input
    def check_input(self, volume: Volume) -> None:
        if not isinstance(volume, Volume):
            raise TypeError(f"volume must be a Volume, got {type(volume).__name__}")
        if volume.modality.upper() != "CT":
            raise NotApplicableError(f"series modality is {volume.modality or 'not recorded'}; {self.name} analyses CT only")
        if volume.num_slices < MIN_SLICES:
            raise NotApplicableError(
                f"series has {volume.num_slices} slice(s); {self.name} needs an abdominal CT volume of at least {MIN_SLICES} slices"
            )
        if volume.spacing_zyx[0] > MAX_SLICE_SPACING_MM + 0.01:
            raise NotApplicableError(
                f"slices are {volume.spacing_zyx[0]:.1f} mm apart; {self.name} needs slices at most {MAX_SLICE_SPACING_MM:.0f} mm apart"
            )
        if not volume.is_axial(MAX_TILT_DEG):
            raise NotApplicableError(f"series is not axial (tilted more than {MAX_TILT_DEG:.0f} degrees); {self.name} reads axial CT")
        d = np.asarray(volume.direction, dtype=float)
        if abs(d[0][0]) < 0.9 or abs(d[1][1]) < 0.9:
            raise NotApplicableError(
                "the image rows and columns are not aligned with the patient's left-right and front-back axes; "
                f"{self.name} reads standard axial slices"
            )

    # ------------------------------------------------------------------ segmentation
    def _standard(self, volume: Volume) -> tuple[bool, bool]:
        d = np.asarray(volume.direction, dtype=float)
        return bool(d[1][1] < 0), bool(d[0][0] < 0)  # flip rows, flip columns

    def segment(self, volume: Volume) -> np.ndarray:
        """uint8 labels (0, LIVER, SPLEEN) on the volume's grid."""
        flip_rows, flip_cols = self._standard(volume)
        hu = np.asarray(volume.voxels)
        if flip_rows:
            hu = hu[:, ::-1, :]
        if flip_cols:
            hu = hu[:, :, ::-1]
        spacing = tuple(float(s) for s in volume.spacing_zyx)
        x = model_input(hu_to_u8(hu), (spacing[0], spacing[1], spacing[2]))
        model_rc = model_grid_shape(hu.shape[1:], (spacing[1], spacing[2]))
        session = self.registry.session(SEGMENTATION_MODEL)
        input_name = session.get_inputs()[0].name
        logits = np.concatenate([session.run(None, {input_name: x[i : i + CHUNK]})[0] for i in range(0, x.shape[0], CHUNK)])
        labels = labels_from_logits(logits, model_rc, hu.shape[1:])
        if flip_rows:
            labels = labels[:, ::-1, :]
        if flip_cols:
            labels = labels[:, :, ::-1]
        return np.ascontiguousarray(labels)

    # ------------------------------------------------------------------ run
    def run(self, volume: Volume) -> Findings:
        self.check_input(volume)
        labels = self.segment(volume)
        liver, spleen = labels == LIVER, labels == SPLEEN
        ml = volume.ml_per_voxel
        liver_ml = float(liver.sum()) * ml
        if liver_ml < MIN_LIVER_ML:
            raise NotApplicableError(
                f"no liver in the field of view (the model found {liver_ml:.0f} mL of liver, at least {MIN_LIVER_ML:.0f} mL expected); "
                f"{self.name} needs an abdominal CT covering the liver"
            )
        hu = np.asarray(volume.voxels, dtype=np.float32)
        spacing = tuple(float(s) for s in volume.spacing_zyx)
        spacing3 = (spacing[0], spacing[1], spacing[2])
        notes = [RESEARCH_NOTE]
        liver_smoothed = in_plane_median(hu, liver)  # shared by the three measurements of the liver below
        liver_att0 = parenchyma(hu, liver, spacing3, smoothed=liver_smoothed)
        if liver_att0 is None:
            raise NotApplicableError("the liver found is too small to measure its attenuation")
        flip_rows, flip_cols = self._standard(volume)
        hu_std = hu[:, ::-1, :] if flip_rows else hu
        hu_std = hu_std[:, :, ::-1] if flip_cols else hu_std
        liver_std = liver[:, ::-1, :] if flip_rows else liver
        liver_std = liver_std[:, :, ::-1] if flip_cols else liver_std
        aorta = contrast.aorta_hu(hu_std, spacing3, liver_std)
        phase = contrast.decide_phase(contrast.header_phase(volume.metadata), aorta, liver_att0.mean_hu)

        lesion_labels, candidates = lesion_candidates(
            hu, liver, spacing3, liver_att0, include_hyper=phase.phase == contrast.NON_CONTRAST, smoothed=liver_smoothed
        )
        liver_att = parenchyma(hu, liver, spacing3, exclude=lesion_labels > 0, smoothed=liver_smoothed) or liver_att0
        spleen_ml = float(spleen.sum()) * ml
        spleen_att = parenchyma(hu, spleen, spacing3) if spleen.any() else None

        segments = [
            Segment(1, "Liver", ANATOMICAL_STRUCTURE, LIVER_CODE, algorithm_name=SEGMENTATION_MODEL),
            Segment(2, "Spleen", ANATOMICAL_STRUCTURE, SPLEEN_CODE, algorithm_name=SEGMENTATION_MODEL),
        ]
        out_labels = labels.astype(np.uint16)
        measurements = [
            Measurement(VOLUME, round(liver_ml, 1), UNIT_ML, LIVER_CODE, 1, description="Liver volume"),
            Measurement(ATTENUATION, round(liver_att.mean_hu, 1), UNIT_HU, LIVER_CODE, 1, MEAN, "Mean liver parenchymal attenuation"),
            Measurement(MEDIAN_ATTENUATION, round(liver_att.median_hu, 1), UNIT_HU, LIVER_CODE, 1, None, "Median liver attenuation"),
        ]
        if spleen.any():
            measurements.append(Measurement(VOLUME, round(spleen_ml, 1), UNIT_ML, SPLEEN_CODE, 2, description="Spleen volume"))
        else:
            notes.append("Spleen not found: no spleen values and no liver-spleen difference.")
        diff: float | None = None
        if spleen_att is not None:
            diff = liver_att.mean_hu - spleen_att.mean_hu
            measurements += [
                Measurement(
                    ATTENUATION, round(spleen_att.mean_hu, 1), UNIT_HU, SPLEEN_CODE, 2, MEAN, "Mean spleen parenchymal attenuation"
                ),
                Measurement(MEDIAN_ATTENUATION, round(spleen_att.median_hu, 1), UNIT_HU, SPLEEN_CODE, 2, None, "Median spleen attenuation"),
                Measurement(LIVER_MINUS_SPLEEN, round(diff, 1), UNIT_HU, description="Liver minus spleen mean attenuation"),
            ]
            if abs(spleen_att.mean_hu) > 1.0:
                ratio = liver_att.mean_hu / spleen_att.mean_hu
                measurements.append(
                    Measurement(LIVER_SPLEEN_RATIO, round(ratio, 3), UNIT_RATIO, description="Liver/spleen attenuation ratio")
                )
        if aorta is not None:
            measurements.append(Measurement(ATTENUATION, round(aorta, 1), UNIT_HU, AORTA_CODE, None, MEAN, "Aortic attenuation (phase)"))

        qualitative = [QualitativeFinding(CONTRAST_PHASE, PHASE_CODES[phase.phase], phase.explanation)]
        notes.append(f"Contrast phase: {phase.phase} ({phase.explanation}).")
        if phase.non_contrast:
            grade, rule = steatosis_grade(liver_att.mean_hu, diff)
            qualitative.append(QualitativeFinding(STEATOSIS, Code(grade.upper().replace(" ", "")[:16], "99RADPILOT", grade), rule))
            notes.append(
                f"Steatosis: {grade} ({rule}). Thresholds: liver < 40 HU or liver - spleen < -10 HU moderate-to-severe "
                "(Kodama, AJR 2007; Park, Radiology 2006); < 48 HU likely (Pickhardt, Eur Radiol 2012); liver - spleen < 1 HU "
                "mild possible (Park, Radiology 2011); non-contrast CT only."
            )
        else:
            reason = (
                "contrast-enhanced CT: unenhanced steatosis thresholds do not apply (liver and spleen enhance differently)"
                if phase.phase != contrast.UNDETERMINED and phase.phase != contrast.NON_CONTRAST
                else "the series could not be confirmed as non-contrast"
            )
            qualitative.append(QualitativeFinding(STEATOSIS, NO_GRADE, reason))
            notes.append(f"No steatosis grade: {reason}.")

        points = []
        for c in candidates:
            number = 2 + c.mask_index
            out_labels[lesion_labels == c.mask_index] = number
            label = f"Lesion candidate {c.mask_index}"
            segments.append(Segment(number, label, ALTERED_STRUCTURE, LESION, LIVER_CODE, algorithm_name="classical attenuation rule"))
            measurements += [
                Measurement(LESION_DIAMETER, round(c.diameter_mm, 1), UNIT_MM, None, number, None, f"{label} ({c.kind}) diameter"),
                Measurement(LESION_VOLUME, round(c.volume_ml, 2), UNIT_ML, None, number, None, f"{label} volume"),
                Measurement(LESION_MEAN_HU, round(c.mean_hu, 1), UNIT_HU, None, number, None, f"{label} mean attenuation"),
            ]
            points.append(
                PointFinding(
                    LESION, c.center_zyx, round(c.diameter_mm, 1), None, f"{label}: {c.kind}, {c.volume_ml:.1f} mL, {c.mean_hu:.0f} HU"
                )
            )
        qualitative.append(QualitativeFinding(VALIDATION_STATUS, CANDIDATES_NOT_VALIDATED, LESION_NOTE))
        notes.append(LESION_NOTE if candidates else "No focal lesion candidate of at least 5 mm. " + LESION_NOTE)

        z_liver = np.flatnonzero(liver.any(axis=(1, 2)))
        if z_liver[0] == 0 or z_liver[-1] == volume.num_slices - 1:
            notes.append("The liver reaches the first or last slice: it may extend beyond the scan, so its volume is a lower bound.")
        key = int(np.argmax(liver.sum(axis=(1, 2))))
        logger.info(
            "liver_ct done",
            extra={"liver_ml": round(liver_ml, 1), "spleen_ml": round(spleen_ml, 1), "phase": phase.phase, "candidates": len(candidates)},
        )
        return Findings(
            self.name,
            self.version,
            measurements=measurements,
            segmentation=Segmentation(out_labels, segments),
            qualitative=qualitative,
            points=points,
            key_slices=[key],
            notes=notes,
        )

    # ------------------------------------------------------------------ validation entry point
    def reference_outputs(self, volume: Volume, masks: Mapping[str, np.ndarray]) -> dict[str, float]:
        """Volumes and parenchymal attenuation measured by this analysis' own rules inside the reference masks."""
        out: dict[str, float] = {}
        if volume.modality.upper() != "CT":
            return out
        spacing = tuple(float(s) for s in volume.spacing_zyx)
        spacing3 = (spacing[0], spacing[1], spacing[2])
        hu = np.asarray(volume.voxels, dtype=np.float32)
        atts: dict[str, Attenuation | None] = {}
        for name in ("liver", "spleen"):
            mask = masks.get(name)
            if mask is None or not mask.any():
                continue
            out[f"{name}_volume_ml"] = float(mask.sum()) * volume.ml_per_voxel
            atts[name] = parenchyma(hu, mask.astype(bool), spacing3)
            if atts[name] is not None:
                out[f"{name}_mean_hu"] = atts[name].mean_hu  # type: ignore[union-attr]
        liver_att = atts.get("liver")
        if liver_att is not None:
            out["liver_median_hu"] = liver_att.median_hu
            spleen_att = atts.get("spleen")
            if spleen_att is not None:
                out["liver_minus_spleen_hu"] = liver_att.mean_hu - spleen_att.mean_hu
                if abs(spleen_att.mean_hu) > 1.0:
                    out["liver_spleen_ratio"] = liver_att.mean_hu / spleen_att.mean_hu
        return {k: v for k, v in out.items() if math.isfinite(v)}


__all__ = ["LesionCandidate", "LiverCT"]
