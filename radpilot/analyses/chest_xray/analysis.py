"""``chest_xray``: lung fields, heart, cardiothoracic ratio and nodule candidates on a frontal chest radiograph.

Input
-----
One CR or DX image (a one-slice :class:`~radpilot.dicom.volume.Volume`) of any size, bit depth,
photometric interpretation, VOI LUT or window, pixel spacing and transfer syntax (pydicom
decodes compressed pixel data; JPEG lossless and JPEG 2000 need the pylibjpeg plugins that are
RadPilot dependencies).  :mod:`radpilot.analyses.chest_xray.image` turns it into the display
convention and the standard orientation the models were trained on.  Frontal views only:
lateral and oblique views (View Position) are refused, and so is an image whose segmentation
does not look like a frontal chest film (:mod:`radpilot.analyses.chest_xray.view`), each with a
plain-language reason.

Models (from the :class:`~radpilot.modelhub.registry.ModelRegistry`, sha256-verified)
-----------------------------------------------------------------------------------------
* ``cxr_lung_heart_seg``: right lung, left lung and heart (pre- and postprocessing of
  :mod:`radpilot.analyses.chest_xray.preprocess`);
* ``cxr_nodule_det``: nodule candidates, through
  :func:`radpilot.analyses.chest_xray.nodules.detect_nodules` at the operating point of its
  manifest.  When that module or model is not installed, the findings say so in a note and
  carry no candidates.

Outputs
-------
* Segmentation (on the source image grid): 1 "Right lung" (SCT 3341006), 2 "Left lung"
  (SCT 44029006), 3 "Heart" (SCT 80891009), category SCT 123037004 "Anatomical Structure".
  The patient's right lung is on the image left of a standard PA/AP display.
* Measurements (:mod:`radpilot.analyses.chest_xray.measurements`):

  - cardiothoracic ratio, private code ``(RP-CTR, 99RADPILOT, "Cardiothoracic ratio")``
    (neither SNOMED CT, LOINC nor DICOM has a concept for it), unit UCUM ``1``;
  - maximal horizontal cardiac width: SCT 103355008 "Width", finding site heart, segment 3, mm;
  - maximal inner thoracic width: SCT 103355008 "Width", finding site SCT 43799004
    "Thoracic cavity", mm;
  - area of each lung field, of both together (finding site SCT 74101002 "Both lungs") and of
    the heart: SCT 42798000 "Area", UCUM ``cm2``.

  Sizes need a pixel spacing (PixelSpacing, else ImagerPixelSpacing; see
  :func:`~radpilot.analyses.chest_xray.measurements.pixel_spacing`); without one only the CTR
  is reported.  The CTR, both widths and the cardiomegaly finding are left out (with a note)
  when the heart or a lung field's outer border runs along the image edge, where a width may be
  cut off (:func:`~radpilot.analyses.chest_xray.measurements.cut_off_structures`).
  The two widths' extreme points are on :class:`~radpilot.analyses.chest_xray.measurements.CTRGeometry`
  and in the measurements' descriptions (columns and rows), for drawing them as lines.
* Lines (:class:`~radpilot.contract.LineFinding`): the cardiac width, then the thoracic
  width, each named SCT 103355008 "Width" like its measurement, as a horizontal line on slice 0
  of the source grid (at the mean row of its extreme points, from the left edge of the first
  column to the right edge of the last, so its length is the width in mm); left out with the CTR.
* Qualitative: SCT 8186001 "Cardiomegaly" = SCT 52101004 "Present" when CTR > 0.50 or
  SCT 2667000 "Absent" otherwise, on a PA view only.  On an AP view the value is
  ``(RP-NR-AP, 99RADPILOT, "Not reliable on AP view")`` (the heart is magnified), on a
  decubitus view ``RP-NR-DECUB`` and when the view is not recorded ``RP-NR-VIEW``, each with
  a note.
* Segmentation quality (:mod:`radpilot.analyses.chest_xray.quality`): when the segmentation of an
  accepted image is implausible (lung sizes and heights, lung share of the image, heart size and
  level, CTR range, fragmented or ragged masks, low model confidence), the CTR, both widths and
  their lines, the cardiomegaly finding and the areas are withheld; the qualitative finding
  ``(RP-SEGQ, 99RADPILOT, "Segmentation quality")`` = ``(RP-SEGQ-IMPL, 99RADPILOT, "Implausible:
  CTR withheld")`` goes into the SR and the key image legend, and a note gives the reasons.  The
  segmentation itself is still returned, for review.
* Point findings: nodule candidates, SCT 27925004 "Nodule", centre (0, row, column) on the
  source grid, approximate diameter in mm and the detector score (0..1).
* Notes: the view, the image handling (inversion, VOI, orientation), spacing caveats, the
  nodule detector's operating point or why there are no candidates, and the intended use.
* Confidence: the segmentation model's mean top softmax probability over the pixels it
  labelled as lung or heart.
* Key slice 0 (the image itself).
"""

from __future__ import annotations

import logging
import threading
import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np

from radpilot.analyses.chest_xray.image import DisplayImage, NotDisplayableError, display_image
from radpilot.analyses.chest_xray.measurements import (
    HEART_LABEL,
    LEFT_LUNG_LABEL,
    RIGHT_LUNG_LABEL,
    CTRGeometry,
    Spacing,
    areas_cm2,
    ctr_geometry,
    cut_off_structures,
    pixel_spacing,
)
from radpilot.analyses.chest_xray.preprocess import cardiothoracic_ratio, labels_from_logits, preprocess
from radpilot.analyses.chest_xray.quality import QualityReport, segmentation_quality
from radpilot.analyses.chest_xray.view import HeaderView, View, frontal_plausibility, heart_side_warning, view_from_header
from radpilot.contract import (
    Analysis,
    Classification,
    Code,
    DetectionSpec,
    Findings,
    InputRequirements,
    LineFinding,
    Measurement,
    ModelPrediction,
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

SEGMENTATION_MODEL = "cxr_lung_heart_seg"
NODULE_MODEL = "cxr_nodule_det"
CTR_THRESHOLD = 0.50
MIN_IMAGE_SIZE = 128  # pixels along the shorter side
RADIOGRAPH_MODALITIES = ("CR", "DX")

ANATOMICAL_STRUCTURE = Code("123037004", "SCT", "Anatomical Structure")
RIGHT_LUNG = Code("3341006", "SCT", "Right lung")
LEFT_LUNG = Code("44029006", "SCT", "Left lung")
BOTH_LUNGS = Code("74101002", "SCT", "Both lungs")
HEART = Code("80891009", "SCT", "Heart")
THORACIC_CAVITY = Code("43799004", "SCT", "Thoracic cavity")
AREA = Code("42798000", "SCT", "Area")
WIDTH = Code("103355008", "SCT", "Width")
CTR = Code("RP-CTR", "99RADPILOT", "Cardiothoracic ratio")
CARDIOMEGALY = Code("8186001", "SCT", "Cardiomegaly")
PRESENT = Code("52101004", "SCT", "Present")
ABSENT = Code("2667000", "SCT", "Absent")
NOT_RELIABLE_AP = Code("RP-NR-AP", "99RADPILOT", "Not reliable on AP view")
NOT_RELIABLE_DECUBITUS = Code("RP-NR-DECUB", "99RADPILOT", "Not reliable on decubitus view")
NOT_RELIABLE_UNKNOWN_VIEW = Code("RP-NR-VIEW", "99RADPILOT", "Not reliable: view position not recorded")
NODULE = Code("27925004", "SCT", "Nodule")
SEGMENTATION_QUALITY = Code("RP-SEGQ", "99RADPILOT", "Segmentation quality")
IMPLAUSIBLE_SEGMENTATION = Code("RP-SEGQ-IMPL", "99RADPILOT", "Implausible: CTR withheld")
UNIT_RATIO = Code("1", "UCUM", "no units")
UNIT_MM = Code("mm", "UCUM", "millimeter")
UNIT_CM2 = Code("cm2", "UCUM", "square centimeter")

INTENDED_USE_NOTE = (
    "Research use only: the models were trained on 199 JSRT posteroanterior films of adults (film "
    "digitiser, Japan); performance on digital detectors, AP or portable films, children and other "
    "populations is unknown. AI result, to be verified by a radiologist."
)


@dataclass(frozen=True)
class _Prepared:
    """What check_input computes once per volume and run reuses."""

    display: DisplayImage
    header_view: HeaderView
    labels_std: np.ndarray  # uint8, standard orientation
    confidence: float


def _confidence(logits: np.ndarray) -> float:
    """Mean top softmax probability over the model-grid pixels labelled as a structure (1.0 when none)."""
    shifted = logits - logits.max(axis=0, keepdims=True)
    probabilities = np.exp(shifted)
    probabilities /= probabilities.sum(axis=0, keepdims=True)
    top = probabilities.max(axis=0)
    foreground = probabilities.argmax(axis=0) > 0
    return float(top[foreground].mean()) if foreground.any() else 1.0


class ChestXray(Analysis):
    """Lung/heart segmentation, CTR, lung areas and nodule candidates on a frontal chest radiograph.

    Parameters
    ----------
    registry
        Model registry to load the models from; default a
        :class:`~radpilot.modelhub.registry.ModelRegistry` of the repository's ``models/``
        with one intra-op thread per session (deterministic, and what the speed benchmark measures).
    detect_nodules
        Run the nodule detector (default True).
    """

    name = "chest_xray"
    version = "1.1.0"  # 1.1.0: nodule candidates from cxr_nodule_det 2.0.0
    description = (
        "Segments the lung fields and the heart on a frontal chest radiograph (CR/DX), reports the "
        "cardiothoracic ratio with both widths, lung areas and nodule candidates."
    )
    required_models = (SEGMENTATION_MODEL, NODULE_MODEL)
    inputs = InputRequirements(
        RADIOGRAPH_MODALITIES,
        f"one frontal (PA or AP) chest radiograph, CR or DX, at least {MIN_IMAGE_SIZE} pixels on its shorter side; "
        "lateral and oblique views are refused",
    )
    outputs = (OutputSpec.of("ctr", "Cardiothoracic ratio", "", CTR, key=True),)
    structures = (
        StructureSpec("right_lung", (RIGHT_LUNG.value,)),
        StructureSpec("left_lung", (LEFT_LUNG.value,)),
        StructureSpec("heart", (HEART.value,)),
    )
    classifications = (Classification("cardiomegaly", "Cardiomegaly (reference CTR > 0.5)", "ctr", CTR_THRESHOLD, CTR_THRESHOLD),)
    # Hit: within the nodule's radius + 5 mm of its centre, as the detector's cross-validation counts it.
    detections = (DetectionSpec("nodule", NODULE.value, margin_mm=5.0),)

    def __init__(self, registry: Any | None = None, *, detect_nodules: bool = True) -> None:
        self._registry = registry
        self.detect_nodules = bool(detect_nodules)
        self._lock = threading.Lock()
        self._prepared: weakref.WeakKeyDictionary[Volume, _Prepared] = weakref.WeakKeyDictionary()

    @property
    def registry(self) -> Any:
        if self._registry is None:
            self._registry = ModelRegistry(intra_op_threads=1)
        return self._registry

    # ------------------------------------------------------------------ validation entry point
    def predict_with_model(self, model: str, session: Any, image: np.ndarray) -> ModelPrediction:
        """The lung/heart model alone on a reference radiograph (display convention, standard orientation).

        Uses the runtime pre/post-processing of :mod:`radpilot.analyses.chest_xray.preprocess`
        and its CTR; the DICOM image handling, input checks and measurements of :meth:`run` are
        not part of this path (validate the analysis for those).
        """
        if model != SEGMENTATION_MODEL:
            raise NotImplementedError(f"{self.name} offers a model-only evaluation of {SEGMENTATION_MODEL} only, not {model}")
        input_name = session.get_inputs()[0].name
        logits = session.run(None, {input_name: preprocess(image)})[0][0]
        labels = labels_from_logits(logits, image.shape)
        masks = {"right_lung": labels == RIGHT_LUNG_LABEL, "left_lung": labels == LEFT_LUNG_LABEL, "heart": labels == HEART_LABEL}
        ratio = cardiothoracic_ratio(labels)
        notes = [] if ratio is not None else ["no CTR: a lung or the heart is missing from the prediction"]
        return ModelPrediction(masks, {"ctr": float(ratio.ratio) if ratio is not None else None}, notes)

    # ------------------------------------------------------------------ input
    def check_input(self, volume: Volume) -> None:
        """Raise :class:`NotApplicableError` unless ``volume`` is one frontal chest radiograph (CR/DX).

        Header checks come first (modality, one image, view position, size, displayable values);
        then the segmentation model runs and its result must look like a frontal chest film
        (:func:`~radpilot.analyses.chest_xray.view.frontal_plausibility`).  The segmentation is kept
        for :meth:`run` of the same volume object.
        """
        self._prepare(volume)

    def _header_checks(self, volume: Volume) -> HeaderView:
        if not isinstance(volume, Volume):
            raise TypeError(f"volume must be a Volume, got {type(volume).__name__}")
        modality = volume.modality.upper()
        if modality not in RADIOGRAPH_MODALITIES:
            raise NotApplicableError(
                f"series modality is {volume.modality or 'not recorded'}; {self.name} analyses CR and DX radiographs only"
            )
        if volume.num_slices != 1:
            raise NotApplicableError(f"series holds {volume.num_slices} images as one volume; {self.name} analyses a single radiograph")
        header_view = view_from_header(volume.metadata.get("ViewPosition"))
        if header_view.view in (View.LATERAL, View.OBLIQUE):
            raise NotApplicableError(
                f"{header_view.view.value} view (ViewPosition {header_view.view_position}): "
                f"{self.name} analyses frontal (PA/AP) radiographs only"
            )
        rows, cols = volume.shape[1:]
        if min(rows, cols) < MIN_IMAGE_SIZE:
            raise NotApplicableError(
                f"image is only {cols} x {rows} pixels; {self.name} needs at least {MIN_IMAGE_SIZE} pixels along each side"
            )
        return header_view

    def _prepare(self, volume: Volume) -> _Prepared:
        with self._lock:
            cached = self._prepared.get(volume) if isinstance(volume, Volume) else None
        if cached is not None:
            return cached
        header_view = self._header_checks(volume)
        try:
            display = display_image(volume)
        except NotDisplayableError as exc:
            raise NotApplicableError(f"{exc}; {self.name} cannot analyse it") from exc
        if float(np.ptp(display.pixels)) <= 0.0:
            raise NotApplicableError(f"the image is blank (every pixel has the same value); {self.name} cannot analyse it")
        session = self.registry.session(SEGMENTATION_MODEL)
        input_name = session.get_inputs()[0].name
        logits = session.run(None, {input_name: preprocess(display.pixels)})[0][0]
        labels_std = labels_from_logits(logits, display.pixels.shape)
        confidence = _confidence(logits)
        problems = frontal_plausibility(labels_std, confidence)
        if problems:
            raise NotApplicableError("image does not look like a frontal chest radiograph: " + "; ".join(problems))
        prepared = _Prepared(display=display, header_view=header_view, labels_std=labels_std, confidence=confidence)
        with self._lock:
            self._prepared[volume] = prepared
        return prepared

    # ------------------------------------------------------------------ run
    def run(self, volume: Volume) -> Findings:
        """Segment, measure and look for nodule candidates; pure and deterministic."""
        prepared = self._prepare(volume)
        with self._lock:
            self._prepared.pop(volume, None)
        display = prepared.display
        labels = display.to_source(prepared.labels_std).astype(np.uint8)
        spacing = pixel_spacing(volume.metadata)
        notes = self._image_notes(volume, prepared, spacing)
        quality = segmentation_quality(prepared.labels_std, prepared.confidence)
        geometry = ctr_geometry(labels) if quality.plausible else None
        cut_off = cut_off_structures(labels)
        if geometry is not None and cut_off:
            geometry = None
            notes.append(
                f"The cardiothoracic ratio is not reported: {' and '.join(cut_off)} reach{'es' if len(cut_off) == 1 else ''} "
                "the image edge, so a width may be cut off."
            )
        warning = heart_side_warning(prepared.labels_std)
        if warning:
            notes.append(warning)

        measurements = self._measurements(labels, geometry, spacing if quality.plausible else None)
        lines = self._width_lines(geometry, spacing)
        qualitative: list[QualitativeFinding] = []
        if not quality.plausible:
            qualitative.append(self._implausible(quality, notes))
        if geometry is not None:
            qualitative.append(self._cardiomegaly(geometry.ratio, prepared.header_view, notes))

        points, nodule_notes = self._nodules(display, labels, spacing)
        notes.extend(nodule_notes)
        notes.append(INTENDED_USE_NOTE)

        algorithm = f"RadPilot {self.name} {self.version} ({SEGMENTATION_MODEL})"
        segments = [
            Segment(RIGHT_LUNG_LABEL, "Right lung", ANATOMICAL_STRUCTURE, RIGHT_LUNG, algorithm_name=algorithm),
            Segment(LEFT_LUNG_LABEL, "Left lung", ANATOMICAL_STRUCTURE, LEFT_LUNG, algorithm_name=algorithm),
            Segment(HEART_LABEL, "Heart", ANATOMICAL_STRUCTURE, HEART, algorithm_name=algorithm),
        ]
        logger.info(
            "chest_xray done",
            extra={
                "series_uid": volume.series_uid,
                "ctr": None if geometry is None else round(geometry.ratio, 3),
                "view": prepared.header_view.view.value,
                "segmentation_plausible": quality.plausible,
                "nodule_candidates": len(points),
            },
        )
        return Findings(
            analysis=self.name,
            version=self.version,
            measurements=measurements,
            segmentation=Segmentation(labels=labels[np.newaxis], segments=segments),
            qualitative=qualitative,
            points=points,
            key_slices=[0],
            confidence=round(prepared.confidence, 4),
            notes=notes,
            lines=lines,
        )

    # ------------------------------------------------------------------ pieces
    @staticmethod
    def _image_notes(volume: Volume, prepared: _Prepared, spacing: Spacing | None) -> list[str]:
        notes: list[str] = []
        view = prepared.header_view
        if view.view in (View.PA, View.AP):
            notes.append(f"{view.view.value} view (ViewPosition {view.view_position}).")
        elif view.view is View.DECUBITUS:
            notes.append(f"Lateral decubitus frontal view (ViewPosition {view.view_position}).")
        else:
            recorded = (
                f"ViewPosition {view.view_position!r} is not a known chest view" if view.view_position else "ViewPosition is not recorded"
            )
            notes.append(f"{recorded}; the image was accepted as a frontal chest radiograph because its segmentation looks like one.")
        display = prepared.display
        handling = []
        if display.inverted:
            photometric = str(volume.metadata.get("PhotometricInterpretation", "") or "")
            handling.append(f"values inverted ({photometric or 'INVERSE presentation LUT'})")
        if display.voi != "none":
            handling.append(f"{display.voi} applied")
        if display.flip_columns or display.flip_rows:
            flips = " and ".join(
                n for n, f in (("mirrored left-right", display.flip_columns), ("turned upside down", display.flip_rows)) if f
            )
            handling.append(
                f"{flips} for the models (Patient Orientation {volume.metadata.get('PatientOrientation')}), results mapped back"
            )
        if handling:
            notes.append("Image: " + "; ".join(handling) + ".")
        if spacing is None:
            notes.append(
                "The image has no pixel spacing (PixelSpacing or ImagerPixelSpacing): widths and areas are not "
                "reported, only the cardiothoracic ratio."
            )
        elif spacing.note:
            notes.append(spacing.note)
        return notes

    @staticmethod
    def _measurements(labels: np.ndarray, geometry: CTRGeometry | None, spacing: Spacing | None) -> list[Measurement]:
        out: list[Measurement] = []
        if geometry is not None:
            out.append(
                Measurement(
                    name=CTR,
                    value=round(geometry.ratio, 3),
                    unit=UNIT_RATIO,
                    description=(
                        "cardiothoracic ratio: maximal horizontal cardiac width / maximal inner thoracic width "
                        f"({geometry.cardiac.width_px} / {geometry.thoracic.width_px} pixels)"
                    ),
                )
            )
            if spacing is not None:
                out.append(
                    Measurement(
                        name=WIDTH,
                        value=round(geometry.cardiac.width_px * spacing.column_mm, 1),
                        unit=UNIT_MM,
                        finding_site=HEART,
                        segment_number=HEART_LABEL,
                        description=(
                            "maximal horizontal cardiac width, columns "
                            f"{geometry.cardiac.start[1]}-{geometry.cardiac.end[1]} "
                            f"(extremes at rows {geometry.cardiac.start[0]} and {geometry.cardiac.end[0]})"
                        ),
                    )
                )
                out.append(
                    Measurement(
                        name=WIDTH,
                        value=round(geometry.thoracic.width_px * spacing.column_mm, 1),
                        unit=UNIT_MM,
                        finding_site=THORACIC_CAVITY,
                        description=(
                            "maximal inner thoracic width (outer borders of the lung fields), columns "
                            f"{geometry.thoracic.start[1]}-{geometry.thoracic.end[1]} "
                            f"(extremes at rows {geometry.thoracic.start[0]} and {geometry.thoracic.end[0]})"
                        ),
                    )
                )
        if spacing is not None:
            areas = areas_cm2(labels, spacing)
            for value, site in ((RIGHT_LUNG_LABEL, RIGHT_LUNG), (LEFT_LUNG_LABEL, LEFT_LUNG)):
                if value in areas:
                    out.append(
                        Measurement(
                            name=AREA,
                            value=round(areas[value], 1),
                            unit=UNIT_CM2,
                            finding_site=site,
                            segment_number=value,
                            description=f"{site.meaning} field area (projected)",
                        )
                    )
            lungs = areas.get(RIGHT_LUNG_LABEL, 0.0) + areas.get(LEFT_LUNG_LABEL, 0.0)
            if lungs > 0:
                out.append(
                    Measurement(
                        name=AREA,
                        value=round(lungs, 1),
                        unit=UNIT_CM2,
                        finding_site=BOTH_LUNGS,
                        description="area of both lung fields (projected)",
                    )
                )
            if HEART_LABEL in areas:
                out.append(
                    Measurement(
                        name=AREA,
                        value=round(areas[HEART_LABEL], 1),
                        unit=UNIT_CM2,
                        finding_site=HEART,
                        segment_number=HEART_LABEL,
                        description="heart area (projected)",
                    )
                )
        return out

    @staticmethod
    def _width_lines(geometry: CTRGeometry | None, spacing: Spacing | None) -> list[LineFinding]:
        """The cardiac and thoracic widths as horizontal lines on slice 0 of the source grid (heart first).

        ``geometry`` was computed on the label map already mapped back to the source grid
        (``display.to_source``), so its points need no further orientation mapping (mapping them
        again with ``display.point_to_source`` would flip a mirrored film twice).  Each line is
        drawn at the mean row of its two extreme points and spans the width's outer pixel edges
        (columns ``start - 0.5`` .. ``end + 0.5``), so that its length is the reported width.
        """
        if geometry is None:
            return []
        out = []
        for width, what in ((geometry.cardiac, "maximal horizontal cardiac width"), (geometry.thoracic, "maximal inner thoracic width")):
            row = float(width.row)
            length = round(width.width_px * spacing.column_mm, 1) if spacing is not None else None
            out.append(
                LineFinding(
                    name=WIDTH,
                    start_zyx=(0.0, row, width.start[1] - 0.5),
                    end_zyx=(0.0, row, width.end[1] + 0.5),
                    length_mm=length,
                    description=(
                        f"{what}, columns {width.start[1]}-{width.end[1]} at row {row:g} "
                        f"(extremes at rows {width.start[0]} and {width.end[0]})"
                    ),
                )
            )
        return out

    @staticmethod
    def _implausible(quality: QualityReport, notes: list[str]) -> QualitativeFinding:
        reasons = "; ".join(quality.problems)
        notes.append(
            f"Segmentation implausible: {reasons}. The cardiothoracic ratio, the widths, the cardiomegaly finding and the "
            "areas are withheld; the outlines are shown for review only, and nodule candidates were searched only inside them."
        )
        return QualitativeFinding(SEGMENTATION_QUALITY, IMPLAUSIBLE_SEGMENTATION, description=f"segmentation implausible: {reasons}")

    @staticmethod
    def _cardiomegaly(ratio: float, header_view: HeaderView, notes: list[str]) -> QualitativeFinding:
        above = ratio > CTR_THRESHOLD
        comparison = f"CTR {ratio:.2f} {'>' if above else '<='} {CTR_THRESHOLD:.2f}"
        if header_view.view is View.PA:
            return QualitativeFinding(CARDIOMEGALY, PRESENT if above else ABSENT, description=f"{comparison} on a PA view")
        if header_view.view is View.AP:
            value = NOT_RELIABLE_AP
            notes.append(
                f"AP view: the heart is magnified on an AP projection, so the CTR ({ratio:.2f}) is reported but "
                "cardiomegaly is not assessed (CTR > 0.50 is defined for PA views)."
            )
        elif header_view.view is View.DECUBITUS:
            value = NOT_RELIABLE_DECUBITUS
            notes.append(
                f"Decubitus view: the CTR ({ratio:.2f}) is reported but cardiomegaly is not assessed "
                "(CTR > 0.50 is defined for erect PA views)."
            )
        else:
            value = NOT_RELIABLE_UNKNOWN_VIEW
            notes.append(
                f"View position not recorded: the CTR ({ratio:.2f}) is reported but cardiomegaly is not assessed "
                "(CTR > 0.50 is defined for PA views; an AP film would overstate it)."
            )
        return QualitativeFinding(CARDIOMEGALY, value, description=f"{comparison}; {value.meaning.lower()}")

    def _nodules(self, display: DisplayImage, labels: np.ndarray, spacing: Spacing | None) -> tuple[list[PointFinding], list[str]]:
        if not self.detect_nodules:
            return [], ["Nodule detection was turned off for this run."]
        try:
            from radpilot.analyses.chest_xray import nodules  # noqa: PLC0415 - optional module: its absence is a note, not a failure
        except ImportError:
            return [], ["Nodule candidates: nodule detector not installed (radpilot.analyses.chest_xray.nodules is missing)."]
        try:
            manifest = self.registry.manifest(NODULE_MODEL)
        except KeyError:
            return [], [f"Nodule candidates: nodule detector not installed (no model {NODULE_MODEL!r} in the model registry)."]
        if spacing is None:
            return [], ["Nodule candidates: not searched, the image has no pixel spacing (the detector needs sizes in mm)."]
        lung_std = display.to_source(np.isin(labels, (RIGHT_LUNG_LABEL, LEFT_LUNG_LABEL)))  # flips are involutions
        candidates = nodules.detect_nodules(display.pixels, (spacing.row_mm, spacing.column_mm), lung_std, self.registry)
        rows, cols = labels.shape
        points = []
        for candidate in candidates:
            row, col = display.point_to_source(float(candidate.row), float(candidate.col))
            row = float(np.clip(row, 0.0, rows - 1))
            col = float(np.clip(col, 0.0, cols - 1))
            points.append(
                PointFinding(
                    name=NODULE,
                    center_zyx=(0.0, round(row, 1), round(col, 1)),
                    diameter_mm=round(float(candidate.diameter_mm), 1) if candidate.diameter_mm > 0 else None,
                    score=round(float(candidate.score), 3),
                    description="nodule candidate (AI detection, not a diagnosis)",
                )
            )
        return points, [self._nodule_note(len(points), manifest)]

    @staticmethod
    def _nodule_note(count: int, manifest: Any) -> str:
        """The nodule detector's operating point in words, from its manifest."""
        operating = manifest.raw.get("operating_point") or {}
        threshold = operating.get("score_threshold")
        what = f"score >= {float(threshold):.3g}" if threshold is not None else "the model's operating point"
        details = []
        if operating.get("expected_fp_per_image") is not None:
            details.append(f"about {float(operating['expected_fp_per_image']):.1f} false positive per image")
        if operating.get("sensitivity") is not None:
            ci = operating.get("sensitivity_ci95")
            ci_text = f" (95 % CI {float(ci[0]):.2f}-{float(ci[1]):.2f})" if isinstance(ci, (list, tuple)) and len(ci) == 2 else ""
            details.append(f"{100 * float(operating['sensitivity']):.0f} % of nodules found{ci_text}")
        if operating.get("description"):
            details.append(str(operating["description"]).strip())
        measured = f" (cross-validated on JSRT: {', '.join(details)})" if details else ""
        return (
            f"Nodule candidates: {count} at the operating point {what} of {NODULE_MODEL} {manifest.version}{measured}; "
            "a candidate is not a diagnosis, and a film without candidates may still hold a nodule."
        )
