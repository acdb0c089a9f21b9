"""``cardiac_mr_function``: LV and RV volumes, ejection fractions and LV mass from a short-axis cine MR.

Input: every slice and phase of a short-axis cine (one series; single-frame images or enhanced
multi-frame), read by the engine as a :class:`~radpilot.dicom.cine.CineVolume` because this
analysis declares a temporal input. The slices and phases come from ImagePositionPatient /
ImageOrientationPatient, TriggerTime, CardiacNumberOfImages and InstanceNumber.

Steps: find the heart from what moves over the cycle (:mod:`.segment`), segment the RV cavity,
LV myocardium and LV cavity in every phase with ``cmr_sax_seg`` (trained here on ACDC, research
use only), take end-diastole / end-systole from the LV volume curve and compute the function
figures (:mod:`.function`).

Outputs: SEG of the three structures at ED and at ES (two instances of one SEG series, each on
its phase's images), a TID 1500 SR with every value, its unit and the phases used, a key image
with the contours at ED and ES and a volume-time curve (Secondary Captures).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from radpilot.analyses.cardiac_mr_function.figures import contour_montage, volume_time_curve
from radpilot.analyses.cardiac_mr_function.function import Function, VolumeCurves, cardiac_function, volume_curves
from radpilot.analyses.cardiac_mr_function.segment import HeartNotFound, segment_cine
from radpilot.contract import (
    Analysis,
    Code,
    Figure,
    Findings,
    InputRequirements,
    Measurement,
    NotApplicableError,
    OutputSpec,
    Segment,
    Segmentation,
    StructureSpec,
)
from radpilot.dicom.cine import CineVolume
from radpilot.dicom.volume import Volume
from radpilot.modelhub.registry import DEFAULT_MODELS_DIR, ModelRegistry

logger = logging.getLogger(__name__)

SEGMENTATION_MODEL = "cmr_sax_seg"
MIN_SLICES = 5
MIN_PHASES = 2  # ED and ES at least (ACDC's reference phases); fewer than FEW_PHASES gets a note
FEW_PHASES = 10
MIN_AXIS_ANGLE_DEG = 20.0  # a short-axis plane is oblique: its normal lies this far from every body axis
MAX_PIXEL_MM = 3.0

PRIVATE = "99RADPILOT"
LEFT_VENTRICLE = Code("87878005", "SCT", "Left ventricle")
RIGHT_VENTRICLE = Code("53085002", "SCT", "Right ventricle")
HEART = Code("80891009", "SCT", "Heart")
ANATOMY = Code("123037004", "SCT", "Anatomical Structure")
LV_CAVITY = Code("LVCAVITY", PRIVATE, "Left ventricle cavity")
LV_MYOCARDIUM = Code("LVMYO", PRIVATE, "Left ventricle myocardium")
RV_CAVITY = Code("RVCAVITY", PRIVATE, "Right ventricle cavity")

EDV = Code("EDV", PRIVATE, "End-diastolic volume")
ESV = Code("ESV", PRIVATE, "End-systolic volume")
SV = Code("SV", PRIVATE, "Stroke volume")
EF = Code("EF", PRIVATE, "Ejection fraction")
LV_EF = Code("250908004", "SCT", "Left ventricular ejection fraction")
MASS = Code("MYOMASS", PRIVATE, "Myocardial mass")
CO = Code("CO", PRIVATE, "Cardiac output")
CI = Code("CI", PRIVATE, "Cardiac index")
BSA = Code("BSA", PRIVATE, "Body surface area")
ED_PHASE = Code("EDPHASE", PRIVATE, "End-diastolic phase number")
ES_PHASE = Code("ESPHASE", PRIVATE, "End-systolic phase number")
ED_TIME = Code("EDTIME", PRIVATE, "End-diastolic trigger time")
ES_TIME = Code("ESTIME", PRIVATE, "End-systolic trigger time")
INDEXED = " indexed to body surface area"

UNITS = {
    "mL": Code("mL", "UCUM", "milliliter"),
    "%": Code("%", "UCUM", "percent"),
    "g": Code("g", "UCUM", "gram"),
    "L/min": Code("L/min", "UCUM", "liter per minute"),
    "m2": Code("m2", "UCUM", "square meter"),
    "mL/m2": Code("mL/m2", "UCUM", "milliliter per square meter"),
    "g/m2": Code("g/m2", "UCUM", "gram per square meter"),
    "L/min/m2": Code("L/min/m2", "UCUM", "liter per minute per square meter"),
    "1": Code("1", "UCUM", "no units"),
    "ms": Code("ms", "UCUM", "millisecond"),
}
SEG_LABELS = {
    1: ("RV cavity", RV_CAVITY, RIGHT_VENTRICLE),
    2: ("LV myocardium", LV_MYOCARDIUM, LEFT_VENTRICLE),
    3: ("LV cavity", LV_CAVITY, LEFT_VENTRICLE),
}


def _indexed(code: Code) -> Code:
    return Code(code.value + "I", PRIVATE, (code.meaning + INDEXED)[:64])


class CardiacMrFunction(Analysis):
    """Biventricular function from a short-axis cine MR with a segmentation model trained here on ACDC."""

    name = "cardiac_mr_function"
    version = "0.3.0"
    description = (
        "Segments the LV cavity, LV myocardium and RV cavity in every phase of a short-axis cine MR, picks end-diastole and "
        "end-systole from the LV volume curve and reports LV/RV volumes, ejection fractions, LV mass and cardiac output. "
        "Model trained on ACDC: research use only."
    )
    inputs = InputRequirements(
        ("MR",),
        f"short-axis cine MR covering the ventricles: all slices (at least {MIN_SLICES}) and all phases (at least {MIN_PHASES}) in one "
        "series, single- or multi-frame",
        temporal=True,
    )
    required_models = (SEGMENTATION_MODEL,)
    timeout_s = 300.0
    outputs = (
        OutputSpec.of("lv_edv_ml", "LV end-diastolic volume", "mL", EDV, LEFT_VENTRICLE, relative=True),
        OutputSpec.of("lv_esv_ml", "LV end-systolic volume", "mL", ESV, LEFT_VENTRICLE, relative=True),
        OutputSpec.of("lv_sv_ml", "LV stroke volume", "mL", SV, LEFT_VENTRICLE, relative=True),
        OutputSpec.of("lv_ef_percent", "LV ejection fraction", "%", LV_EF, LEFT_VENTRICLE, key=True),
        OutputSpec.of("lv_mass_g", "LV mass", "g", MASS, LEFT_VENTRICLE, relative=True),
        OutputSpec.of("rv_edv_ml", "RV end-diastolic volume", "mL", EDV, RIGHT_VENTRICLE, relative=True),
        OutputSpec.of("rv_esv_ml", "RV end-systolic volume", "mL", ESV, RIGHT_VENTRICLE, relative=True),
        OutputSpec.of("rv_ef_percent", "RV ejection fraction", "%", EF, RIGHT_VENTRICLE, key=True),
        OutputSpec.of("cardiac_output_l_min", "Cardiac output", "L/min", CO, LEFT_VENTRICLE),
        OutputSpec.of("ed_phase", "End-diastolic phase", "1", ED_PHASE, HEART),
        OutputSpec.of("es_phase", "End-systolic phase", "1", ES_PHASE, HEART),
    )
    structures = (
        StructureSpec("rv_cavity", (RV_CAVITY.value,)),
        StructureSpec("lv_myocardium", (LV_MYOCARDIUM.value,)),
        StructureSpec("lv_cavity", (LV_CAVITY.value,)),
    )
    display_windows: dict[str, tuple[float, float]] = {}  # MR has no absolute scale: the key images stretch percentiles

    def __init__(self, registry: Any | None = None) -> None:
        self._registry = registry

    @property
    def registry(self) -> Any:
        if self._registry is None:
            self._registry = ModelRegistry([DEFAULT_MODELS_DIR, self.models_dir()], intra_op_threads=1)
        return self._registry

    # ------------------------------------------------------------------ input
    def check_input(self, volume: Volume) -> None:
        """Refuse, with the reason, anything but a short-axis cine of enough slices and phases."""
        if not isinstance(volume, Volume):
            raise TypeError(f"volume must be a Volume, got {type(volume).__name__}")
        if volume.modality.upper() != "MR":
            raise NotApplicableError(f"series modality is {volume.modality or 'not recorded'}; {self.name} reads cine MR")
        if not isinstance(volume, CineVolume):
            raise NotApplicableError(f"{self.name} needs a cine (every slice over the cardiac cycle); this series was read as one volume")
        if volume.num_phases < MIN_PHASES:
            raise NotApplicableError(
                f"missing phases: the cine has {volume.num_phases} phase(s) per slice; {self.name} needs at least {MIN_PHASES} "
                "over the cardiac cycle to find end-diastole and end-systole"
            )
        if volume.num_slices < MIN_SLICES:
            raise NotApplicableError(
                f"too few slices: the cine has {volume.num_slices} slice position(s); {self.name} needs a short-axis stack of at least "
                f"{MIN_SLICES} covering the ventricles from base to apex"
            )
        normal = np.abs(volume.direction[2])
        angle = math.degrees(math.acos(min(1.0, float(normal.max()))))
        if angle < MIN_AXIS_ANGLE_DEG:
            plane = ("sagittal", "coronal", "axial")[int(np.argmax(normal))]
            raise NotApplicableError(
                f"not short axis: the slices are {plane} (their normal is {angle:.0f} degrees from a body axis); {self.name} needs a "
                "short-axis stack, planned perpendicular to the LV long axis"
            )
        if max(volume.spacing_zyx[1:]) > MAX_PIXEL_MM:
            raise NotApplicableError(
                f"pixels of {max(volume.spacing_zyx[1:]):.1f} mm are too coarse; {self.name} needs at most {MAX_PIXEL_MM} mm"
            )

    # ------------------------------------------------------------------ run
    def predictor(self) -> tuple[Any, bool]:
        """The model as a function of a tile batch, and whether it takes the reference channel (input (N, 2, H, W))."""
        session = self.registry.session(SEGMENTATION_MODEL)
        model_input = session.get_inputs()[0]

        def predict(x: np.ndarray) -> np.ndarray:
            return session.run(None, {model_input.name: x})[0]

        return predict, model_input.shape[1] == 2

    def run(self, volume: Volume) -> Findings:
        self.check_input(volume)
        assert isinstance(volume, CineVolume)  # check_input refused anything else
        spacing_rc = (volume.spacing_zyx[1], volume.spacing_zyx[2])
        try:
            predict, reference_channel = self.predictor()
            seg = segment_cine(np.asarray(volume.frames), spacing_rc, predict, reference_channel)
        except HeartNotFound as exc:
            raise NotApplicableError(str(exc)) from exc
        curves = volume_curves(seg.labels, volume.ml_per_voxel)
        meta = volume.metadata
        function = cardiac_function(curves, meta.get("HeartRate"), meta.get("PatientSize"), meta.get("PatientWeight"))
        if function.lv_edv_ml <= 0 or function.lv_esv_ml >= function.lv_edv_ml:
            raise NotApplicableError("the left ventricle was not segmented in enough phases to measure its function")
        phase_numbers = list(range(1, volume.num_phases + 1))
        times = [t for t in volume.trigger_times_ms if t is not None]
        times_ms = [float(t) for t in volume.trigger_times_ms] if len(times) == volume.num_phases else None  # type: ignore[arg-type]
        segmentation, es_segmentation = (
            self._segmentation(volume, seg.labels, p, name)
            for p, name in ((function.ed_phase, "end-diastole"), (function.es_phase, "end-systole"))
        )
        mid = int(np.nonzero((seg.labels[function.ed_phase] == 3).any(axis=(1, 2)))[0].mean().round())
        ed_uids = volume.frame_sop_instance_uids[function.ed_phase]
        findings = Findings(
            analysis=self.name,
            version=self.version,
            measurements=self._measurements(function, phase_numbers, times_ms),
            segmentation=segmentation,
            extra_segmentations=[es_segmentation],
            figures=[
                Figure(
                    "LV/RV contours at end-diastole and end-systole",
                    contour_montage(np.asarray(volume.frames), seg.labels, function, seg.centre_rc, spacing_rc, phase_numbers),
                    ed_uids[mid],
                ),
                Figure("LV and RV volume-time curve", volume_time_curve(curves, function, times_ms, phase_numbers), ed_uids[mid]),
            ],
            key_slices=[mid],
            confidence=round(seg.confidence, 4),
            notes=self._notes(volume, function, curves, seg.candidates_tried, phase_numbers, times_ms),
        )
        logger.info(
            "cardiac_mr_function done",
            extra={
                "series_uid": volume.series_uid,
                "lv_ef": round(function.lv_ef_percent, 1),
                "ed": function.ed_phase,
                "es": function.es_phase,
            },
        )
        return findings

    # ------------------------------------------------------------------ findings
    def _segmentation(self, volume: CineVolume, labels: np.ndarray, phase: int, name: str) -> Segmentation:
        algorithm = f"RadPilot {self.name} {self.version} ({SEGMENTATION_MODEL})"
        segments = [
            Segment(n, f"{label} ({name})", ANATOMY, code, region, algorithm_name=algorithm)
            for n, (label, code, region) in SEG_LABELS.items()
        ]
        return Segmentation(labels[phase].astype(np.uint8), segments, volume.frame_sop_instance_uids[phase], f"{name}, phase {phase + 1}")

    def _measurements(self, f: Function, phase_numbers: list[int], times_ms: list[float] | None) -> list[Measurement]:
        u = UNITS
        out = [
            Measurement(EDV, round(f.lv_edv_ml, 1), u["mL"], LEFT_VENTRICLE, 3, description="LV end-diastolic volume"),
            Measurement(ESV, round(f.lv_esv_ml, 1), u["mL"], LEFT_VENTRICLE, 3, description="LV end-systolic volume"),
            Measurement(SV, round(f.lv_sv_ml, 1), u["mL"], LEFT_VENTRICLE, description="LV stroke volume (EDV - ESV)"),
            Measurement(LV_EF, round(f.lv_ef_percent, 1), u["%"], LEFT_VENTRICLE, description="LV ejection fraction (SV / EDV)"),
            Measurement(
                MASS,
                round(f.lv_mass_g, 1),
                u["g"],
                LEFT_VENTRICLE,
                2,
                description="LV mass at end-diastole (myocardial volume x 1.05 g/mL)",
            ),
            Measurement(
                EDV, round(f.rv_edv_ml, 1), u["mL"], RIGHT_VENTRICLE, 1, description="RV end-diastolic volume (at the LV's ED phase)"
            ),
            Measurement(
                ESV, round(f.rv_esv_ml, 1), u["mL"], RIGHT_VENTRICLE, 1, description="RV end-systolic volume (at the LV's ES phase)"
            ),
            Measurement(SV, round(f.rv_sv_ml, 1), u["mL"], RIGHT_VENTRICLE, description="RV stroke volume"),
            Measurement(EF, round(f.rv_ef_percent, 1), u["%"], RIGHT_VENTRICLE, description="RV ejection fraction"),
            Measurement(
                ED_PHASE, float(phase_numbers[f.ed_phase]), u["1"], HEART, description="End-diastolic phase (1 = first by trigger time)"
            ),
            Measurement(
                ES_PHASE, float(phase_numbers[f.es_phase]), u["1"], HEART, description="End-systolic phase (1 = first by trigger time)"
            ),
        ]
        if times_ms is not None:
            out.append(
                Measurement(ED_TIME, round(times_ms[f.ed_phase], 1), u["ms"], HEART, description="Trigger time of the end-diastolic phase")
            )
            out.append(
                Measurement(ES_TIME, round(times_ms[f.es_phase], 1), u["ms"], HEART, description="Trigger time of the end-systolic phase")
            )
        if f.cardiac_output_l_min is not None:
            out.append(
                Measurement(
                    CO, round(f.cardiac_output_l_min, 2), u["L/min"], LEFT_VENTRICLE, description="Cardiac output (LV SV x HeartRate)"
                )
            )
        if f.bsa_m2 is not None:
            bsa = f.bsa_m2
            out.append(
                Measurement(BSA, round(bsa, 2), u["m2"], description="Body surface area (Mosteller, from PatientSize and PatientWeight)")
            )
            for code, value, unit, site in (
                (EDV, f.lv_edv_ml, "mL/m2", LEFT_VENTRICLE),
                (ESV, f.lv_esv_ml, "mL/m2", LEFT_VENTRICLE),
                (SV, f.lv_sv_ml, "mL/m2", LEFT_VENTRICLE),
                (MASS, f.lv_mass_g, "g/m2", LEFT_VENTRICLE),
                (EDV, f.rv_edv_ml, "mL/m2", RIGHT_VENTRICLE),
                (ESV, f.rv_esv_ml, "mL/m2", RIGHT_VENTRICLE),
            ):
                out.append(Measurement(_indexed(code), round(value / bsa, 1), u[unit], site, description=f"{code.meaning} indexed to BSA"))
            if f.cardiac_output_l_min is not None:
                out.append(
                    Measurement(CI, round(f.cardiac_output_l_min / bsa, 2), u["L/min/m2"], LEFT_VENTRICLE, description="Cardiac index")
                )
        return out

    def _notes(
        self, volume: CineVolume, f: Function, curves: VolumeCurves, tried: int, phase_numbers: list[int], times_ms: list[float] | None
    ) -> list[str]:
        ed, es = phase_numbers[f.ed_phase], phase_numbers[f.es_phase]
        when = f" (trigger times {times_ms[f.ed_phase]:.0f} and {times_ms[f.es_phase]:.0f} ms)" if times_ms else ""
        notes = [
            "Model cmr_sax_seg trained on ACDC (Bernard et al., IEEE TMI 2018): research use only, not for diagnosis.",
            f"End-diastole = phase {ed}, end-systole = phase {es} of {volume.num_phases}{when}: largest and smallest LV cavity volume; "
            "the RV is measured at the same phases.",
            f"Volumes by summation of discs: {volume.num_slices} slices x {volume.spacing_zyx[0]:.1f} mm slice spacing; papillary muscles "
            "and trabeculae counted as cavity; LV mass = myocardial volume at ED x 1.05 g/mL.",
            "The heart was found from the motion over the cardiac cycle"
            + (f" (candidate {tried}: the stronger moving regions held no left ventricle)." if tried > 1 else "."),
        ]
        if volume.num_phases < FEW_PHASES:
            notes.append(
                f"Only {volume.num_phases} phases: end-diastole and end-systole were picked among them, and the true extremes may lie "
                "between them (volumes and EF then underestimate the excursion)."
            )
        if f.cardiac_output_l_min is None:
            notes.append("No cardiac output: the header states no HeartRate.")
        if f.bsa_m2 is None:
            notes.append("No indexed values: the header lacks PatientSize (height) or PatientWeight.")
        return notes


ANALYSIS_CLASS = CardiacMrFunction
