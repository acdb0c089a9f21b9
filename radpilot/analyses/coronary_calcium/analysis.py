"""``coronary_calcium``: Agatston, volume and mass scores, per-artery scores and CAC-DRS on non-contrast chest CT.

Validated on digital phantoms only (see :mod:`.phantom`); every result says so.

Outputs
-------
* Measurements (site: coronary artery, SCT 41801008, unless stated):

  - total Agatston score: SCT 450360000 "Coronary artery calcium score", unit UCUM ``1``
    (Agatston units are dimensionless), 3 mm equivalent (see :mod:`.scoring`);
  - Agatston per artery: the same concept at finding site LM (SCT 3227004), LAD
    (SCT 59438005), LCX (SCT 57396003) or RCA (SCT 13647002);
  - volume score: DCM 122660 "Calcium Volume", unit ``mm3``;
  - mass score: DCM 122661 "Calcium Mass", unit ``mg``, only when a calibration factor is
    configured (``mass_calibration_mg_per_cm3_per_hu``);
  - CAC-DRS Agatston category 0-3 and the number of vessels with calcium (private codes:
    no standard concept exists).

* Qualitative findings: CAC-DRS as reported (e.g. "A2/N3"), and the validation status
  "Validated on phantoms only" (private code), so that the SR itself says it.
* Segmentation: the lesions by artery, segment 1 LM, 2 LAD, 3 LCX, 4 RCA (only those
  present), type SCT 29483008 "Calcified atheromatous plaque" with the artery as the
  anatomic region.
* Key slice: the slice with the largest Agatston contribution.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping

import numpy as np

from radpilot.analyses.coronary_calcium.lesions import ARTERY_LABEL, CalciumResult, measure_calcium
from radpilot.analyses.coronary_calcium.region import heart_region
from radpilot.analyses.coronary_calcium.scoring import (
    CALCIUM_THRESHOLD_HU,
    MIN_LESION_AREA_MM2,
    REFERENCE_INCREMENT_MM,
    cac_drs_category,
    cac_drs_label,
    score_lesions,
    slice_lesions,
)
from radpilot.contract import (
    Analysis,
    Code,
    Findings,
    InputRequirements,
    Measurement,
    NotApplicableError,
    OutputSpec,
    QualitativeFinding,
    Segment,
    Segmentation,
    StructureSpec,
)
from radpilot.dicom.volume import Volume

logger = logging.getLogger(__name__)

CAC_SCORE = Code("450360000", "SCT", "Coronary artery calcium score")
CALCIUM_VOLUME = Code("122660", "DCM", "Calcium Volume")
CALCIUM_MASS = Code("122661", "DCM", "Calcium Mass")
AGATSTON_METHOD = Code("112055", "DCM", "Agatston scoring method")
CAC_DRS = Code("CACDRS", "99RADPILOT", "CAC-DRS")
CAC_DRS_CATEGORY = Code("CACDRSA", "99RADPILOT", "CAC-DRS Agatston category")
VESSELS_WITH_CALCIUM = Code("CACVESSELS", "99RADPILOT", "Number of coronary arteries with calcium")
CORONARY_ARTERY = Code("41801008", "SCT", "Coronary artery")
ARTERY_CODES = {
    "LM": Code("3227004", "SCT", "Left coronary artery main stem"),
    "LAD": Code("59438005", "SCT", "Left anterior descending coronary artery"),
    "LCX": Code("57396003", "SCT", "Circumflex coronary artery"),
    "RCA": Code("13647002", "SCT", "Right coronary artery"),
}
ABNORMAL = Code("49755003", "SCT", "Morphologically Abnormal Structure")
CALCIFIED_PLAQUE = Code("29483008", "SCT", "Calcified atheromatous plaque")
VALIDATION_STATUS = Code("VALIDATION", "99RADPILOT", "Validation status")
PHANTOMS_ONLY = Code("PHANTOMONLY", "99RADPILOT", "Validated on phantoms only")
UNIT_NONE = Code("1", "UCUM", "no units")
UNIT_MM3 = Code("mm3", "UCUM", "cubic millimeter")
UNIT_MG = Code("mg", "UCUM", "milligram")

MIN_SLICES = 20
MIN_COVERAGE_MM = 60.0
MAX_THICKNESS_MM = 3.0
MAX_TILT_DEG = 10.0
CONTRAST_BLOOD_POOL_HU = 150.0  # non-contrast blood is 30-60 HU; any iodinated blood pool is well above this
NO_CONTRAST_WORDS = {"NONE", "NO", "N/A", "NA", "NO CONTRAST", "WITHOUT"}
PHANTOM_NOTE = (
    "Validated on phantoms only: coronary_calcium was checked against digital thorax phantoms with calcium inserts of "
    "exactly known size and density, not against patient data with a reference score."
)


class CoronaryCalcium(Analysis):
    """Coronary artery calcium scoring (Agatston 1990) with CAC-DRS on non-contrast chest CT.

    Parameters
    ----------
    mass_calibration_mg_per_cm3_per_hu
        The scanner's calcium calibration factor (mg hydroxyapatite per cm³ per HU at the
        protocol's kVp); without it no mass score is reported.
    """

    name = "coronary_calcium"
    version = "0.1.0"
    description = (
        "Scores coronary artery calcium on a non-contrast chest CT: lesions of at least 130 HU and 1 mm² inside a classical "
        "heart region, Agatston, volume and (with a calibration) mass score, per-artery scores and CAC-DRS. "
        "Validated on phantoms only."
    )
    inputs = InputRequirements(
        ("CT",),
        f"non-contrast axial chest or cardiac CT in HU (ECG-gated or not): at least {MIN_SLICES} contiguous slices of at most "
        f"{MAX_THICKNESS_MM:.0f} mm covering at least {MIN_COVERAGE_MM:.0f} mm, no ContrastBolusAgent",
    )
    outputs = (
        OutputSpec.of("agatston_total", "Agatston score (total)", "1", CAC_SCORE, CORONARY_ARTERY, key=True, relative=True),
        OutputSpec.of("volume_score_mm3", "Calcium volume score", "mm3", CALCIUM_VOLUME, CORONARY_ARTERY, relative=True),
        OutputSpec.of("mass_score_mg", "Calcium mass score", "mg", CALCIUM_MASS, CORONARY_ARTERY, relative=True),
        OutputSpec.of("agatston_lm", "Agatston score (LM)", "1", CAC_SCORE, ARTERY_CODES["LM"]),
        OutputSpec.of("agatston_lad", "Agatston score (LAD)", "1", CAC_SCORE, ARTERY_CODES["LAD"]),
        OutputSpec.of("agatston_lcx", "Agatston score (LCX)", "1", CAC_SCORE, ARTERY_CODES["LCX"]),
        OutputSpec.of("agatston_rca", "Agatston score (RCA)", "1", CAC_SCORE, ARTERY_CODES["RCA"]),
        OutputSpec.of("cac_drs_category", "CAC-DRS Agatston category", "1", CAC_DRS_CATEGORY, CORONARY_ARTERY),
        OutputSpec.of("vessels_with_calcium", "Coronary arteries with calcium", "1", VESSELS_WITH_CALCIUM, CORONARY_ARTERY),
    )
    structures = (StructureSpec("coronary_calcium", (CALCIFIED_PLAQUE.value,)),)
    display_windows = {"CT": (300.0, 1500.0)}  # calcium stands out, soft tissue stays grey

    def __init__(self, mass_calibration_mg_per_cm3_per_hu: float | None = None) -> None:
        if mass_calibration_mg_per_cm3_per_hu is not None and not (
            isinstance(mass_calibration_mg_per_cm3_per_hu, (int, float))
            and math.isfinite(mass_calibration_mg_per_cm3_per_hu)
            and mass_calibration_mg_per_cm3_per_hu > 0
        ):
            raise ValueError(
                f"mass_calibration_mg_per_cm3_per_hu must be a positive number (mg HA/cm³ per HU), got {mass_calibration_mg_per_cm3_per_hu!r}"
            )
        self.mass_calibration = mass_calibration_mg_per_cm3_per_hu

    # ------------------------------------------------------------------ input
    def check_input(self, volume: Volume) -> None:
        """Refuse, with the reason, anything but a non-contrast axial CT of contiguous slices of at most 3 mm."""
        if not isinstance(volume, Volume):
            raise TypeError(f"volume must be a Volume, got {type(volume).__name__}")
        if volume.modality.upper() != "CT":
            raise NotApplicableError(f"series modality is {volume.modality or 'not recorded'}; {self.name} scores CT only")
        agent = str(volume.metadata.get("ContrastBolusAgent", "") or "").strip()
        if agent and agent.upper() not in NO_CONTRAST_WORDS:
            raise NotApplicableError(
                f"series was acquired with contrast (ContrastBolusAgent {agent!r}); calcium scoring needs a non-contrast CT "
                "because iodinated blood above 130 HU would be counted as calcium"
            )
        n_slices, coverage = volume.num_slices, volume.extent_mm[0]
        if n_slices < MIN_SLICES or coverage < MIN_COVERAGE_MM:
            raise NotApplicableError(
                f"series has {n_slices} slice(s) covering {coverage:.0f} mm; {self.name} needs at least {MIN_SLICES} contiguous "
                f"slices covering at least {MIN_COVERAGE_MM:.0f} mm (the whole heart)"
            )
        if not volume.is_axial(MAX_TILT_DEG):
            raise NotApplicableError(f"series is not axial; {self.name} scores axial slices (Agatston is defined per axial slice)")
        increment = volume.spacing_zyx[0]
        thickness = volume.metadata.get("SliceThickness")
        if isinstance(thickness, float) and thickness > 0:
            if thickness > MAX_THICKNESS_MM + 0.05:
                raise NotApplicableError(
                    f"slices are {thickness:g} mm thick; Agatston scoring is defined on slices of at most {MAX_THICKNESS_MM:g} mm "
                    "(thicker slices blur small plaques below 130 HU)"
                )
            if increment > thickness * 1.05 + 0.05:
                raise NotApplicableError(
                    f"slices are {thickness:g} mm thick but {increment:g} mm apart: there are gaps between them, and calcium in a gap "
                    "would be missed; Agatston scoring needs contiguous (or overlapping) slices"
                )
        elif increment > MAX_THICKNESS_MM + 0.05:
            raise NotApplicableError(f"slices are {increment:g} mm apart; Agatston scoring needs contiguous slices of at most 3 mm")
        sample = volume.voxels[:: max(1, n_slices // 8), ::4, ::4]
        if float(np.percentile(sample, 1)) > -500.0 or float(sample.max()) < 0.0:
            raise NotApplicableError(
                f"the values do not look like Hounsfield units (no air below -500 HU or no tissue above 0 HU); {self.name} needs CT in HU"
            )

    # ------------------------------------------------------------------ run
    def run(self, volume: Volume) -> Findings:
        """Find the heart, refuse a contrast-enhanced blood pool, score the calcium."""
        self.check_input(volume)
        # LPS z grows towards the head: the sign of the slice normal's z says which way the slice index goes.
        region = heart_region(volume.voxels, volume.spacing_zyx, superior=1 if volume.direction[2][2] >= 0 else -1)
        if region.blood_pool_hu is not None and region.blood_pool_hu > CONTRAST_BLOOD_POOL_HU:
            raise NotApplicableError(
                f"the blood pool measures {region.blood_pool_hu:.0f} HU (non-contrast blood is 30-60 HU): this looks like a "
                f"contrast-enhanced CT; calcium scoring needs a non-contrast CT"
            )
        if not region.core.any():
            raise NotApplicableError(f"no heart was found between the lungs; {self.name} needs a chest CT that shows the heart and lungs")
        result = measure_calcium(volume.voxels, volume.spacing_zyx, volume.affine_lps, region, self.mass_calibration)
        findings = Findings(
            analysis=self.name,
            version=self.version,
            measurements=self._measurements(result),
            segmentation=self._segmentation(result),
            # The SR carries coded findings, not notes: the validation status travels as one, so a reader of the SR sees it.
            qualitative=[self._cac_drs(result), QualitativeFinding(VALIDATION_STATUS, PHANTOMS_ONLY, PHANTOM_NOTE)],
            key_slices=[int(np.argmax(result.agatston_per_slice))] if result.total.agatston > 0 else [],
            notes=self._notes(volume, result, region.blood_pool_hu),
        )
        logger.info(
            "coronary_calcium done",
            extra={"series_uid": volume.series_uid, "agatston": round(result.total.agatston, 1), "lesions": len(result.lesions)},
        )
        return findings

    # ------------------------------------------------------------------ validation entry point
    def reference_outputs(self, volume: Volume, masks: Mapping[str, np.ndarray]) -> dict[str, float]:
        """Agatston and volume score of the >= 130 HU voxels inside the reference calcium mask (the arithmetic alone)."""
        mask = masks.get("coronary_calcium")
        if mask is None or volume.modality.upper() != "CT" or not mask.any():
            return {}
        pixel_area = volume.spacing_zyx[1] * volume.spacing_zyx[2]
        lesions = [
            lesion
            for z in range(volume.num_slices)
            if mask[z].any()
            for lesion in slice_lesions(volume.voxels[z], pixel_area, z, region=mask[z])[1]
        ]
        scores = score_lesions(lesions, volume.spacing_zyx[0])
        return {"agatston_total": scores.agatston, "volume_score_mm3": scores.volume_mm3}

    # ------------------------------------------------------------------ findings
    def _measurements(self, result: CalciumResult) -> list[Measurement]:
        total = result.total
        out = [
            Measurement(
                CAC_SCORE,
                round(total.agatston, 1),
                UNIT_NONE,
                CORONARY_ARTERY,
                derivation=AGATSTON_METHOD,
                description="Agatston score, all coronary arteries (3 mm equivalent)",
            ),
            Measurement(CALCIUM_VOLUME, round(total.volume_mm3, 1), UNIT_MM3, CORONARY_ARTERY, description="Calcium volume score"),
        ]
        if total.mass_mg is not None:
            out.append(Measurement(CALCIUM_MASS, round(total.mass_mg, 2), UNIT_MG, CORONARY_ARTERY, description="Calcium mass score"))
        for artery, scores in result.per_artery.items():
            out.append(
                Measurement(
                    CAC_SCORE,
                    round(scores.agatston, 1),
                    UNIT_NONE,
                    ARTERY_CODES[artery],
                    segment_number=ARTERY_LABEL[artery] if scores.n_slice_lesions else None,
                    derivation=AGATSTON_METHOD,
                    description=f"Agatston score, {artery} territory",
                )
            )
        out.append(
            Measurement(
                CAC_DRS_CATEGORY,
                float(cac_drs_category(total.agatston)),
                UNIT_NONE,
                CORONARY_ARTERY,
                description="CAC-DRS Agatston category (0: 0, 1: 1-99, 2: 100-299, 3: 300 or more)",
            )
        )
        out.append(
            Measurement(
                VESSELS_WITH_CALCIUM,
                float(result.vessels_with_calcium),
                UNIT_NONE,
                CORONARY_ARTERY,
                description="Coronary arteries (LM, LAD, LCX, RCA) with calcium: the CAC-DRS N modifier",
            )
        )
        return out

    def _segmentation(self, result: CalciumResult) -> Segmentation:
        # Without calcium the segmentation is empty (no segment): the engine writes no SEG for it, and the
        # workbench can still compare "no lesion" with a reference that has none.
        present = [a for a, s in result.per_artery.items() if s.n_slice_lesions]
        algorithm = f"RadPilot {self.name} {self.version} (threshold {CALCIUM_THRESHOLD_HU:.0f} HU)"
        segments = [
            Segment(ARTERY_LABEL[a], f"{a} calcium", ABNORMAL, CALCIFIED_PLAQUE, ARTERY_CODES[a], algorithm_name=algorithm) for a in present
        ]
        return Segmentation(result.labels, segments)

    @staticmethod
    def _cac_drs(result: CalciumResult) -> QualitativeFinding:
        label = cac_drs_label(result.total.agatston, result.vessels_with_calcium)
        return QualitativeFinding(
            CAC_DRS,
            Code(label.replace("/", "-"), "99RADPILOT", f"CAC-DRS {label}"),
            description=f"CAC-DRS {label} (Agatston {result.total.agatston:.0f}; Hecht et al. 2018)",
        )

    def _notes(self, volume: Volume, result: CalciumResult, blood_pool_hu: float | None) -> list[str]:
        increment = volume.spacing_zyx[0]
        notes = [PHANTOM_NOTE]
        rule = (
            f"Lesions: >= {CALCIUM_THRESHOLD_HU:.0f} HU, >= {MIN_LESION_AREA_MM2:g} mm² per slice, inside a classical heart region "
            "(bone, descending aorta and great vessels excluded; aortic root and valve calcium next to the heart are not excluded)."
        )
        notes.append(rule)
        if abs(increment - REFERENCE_INCREMENT_MM) > 0.05:
            notes.append(
                f"Slices are {increment:g} mm apart; the Agatston score is scaled by {increment:g}/3 to a 3 mm equivalent, "
                "which may differ from a score on 3 mm slices."
            )
        notes.append("Artery territories are assigned by position around the heart (an approximation, not vessel tracking).")
        if self.mass_calibration is None:
            notes.append("No mass score: no calcium calibration factor is configured for this scanner.")
        notes.append("MESA percentile not computed (the published percentiles need race/ethnicity and have no closed formula).")
        if blood_pool_hu is not None:
            notes.append(f"Blood pool {blood_pool_hu:.0f} HU (non-contrast).")
        return notes
