"""Comprehensive 3D SR measurement report (TID 1500) for an analysis' findings (IHE AI Results).

Content tree built with highdicom (:class:`highdicom.sr.MeasurementReport`):

* observation context: the device observer (the analysis: name, version, manufacturer),
* procedure reported: a code chosen by the analysis (``procedure_code``) or, by
  default, the LOINC "<modality> unspecified body region" code of CID 100,
* imaging measurements, one measurement group each for

  - every segment that has measurements: TID 1411 Volumetric ROI (series of
    slices; the group references the SEG segment and the source series) or
    TID 1410 Planar ROI (a single 2-D image; the group references the SEG frame
    and its source image), with one TID 300 Measurement per
    :class:`~radpilot.contract.Measurement` (name, value, UCUM unit,
    finding site, derivation, algorithm identification),
  - every point finding: TID 1410 Planar ROI with an Image Region (SCOORD
    ``POINT``, or ``CIRCLE`` when the diameter is known, on the slice the point
    lies on; or SCOORD3D ``POINT`` in the patient frame of reference) and its
    detection score as DCM 111012 "Certainty of Finding" (unit UCUM ``1``, value
    0..1) and its diameter as SCT 81827009 "Diameter" (mm),
  - every line finding: TID 1410 Planar ROI with an Image Region (SCOORD
    ``POLYLINE`` of its two end points on the slice it lies on; or SCOORD3D
    ``POLYLINE`` in the patient frame of reference), its name as the finding type
    and its length (``length_mm``, else the length from the pixel spacing) as
    SCT 410668003 "Length" in UCUM ``mm``,
  - measurements without a segment (or whose segment has no voxel in the SEG)
    and qualitative findings: TID 1501 Measurement and Qualitative Evaluation
    Group referencing the source images.

Only standard coding schemes are introduced here, so dciodvfy stays silent
unless an analysis itself uses a private scheme (then declared in the Coding
Scheme Identification Sequence, which dciodvfy still flags as a warning).
"""

from __future__ import annotations

import datetime as _dt
import logging
from collections.abc import Sequence
from typing import Literal

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import SegmentationStorage

from radpilot.contract import Code, Findings, LineFinding, Measurement, PointFinding, Segment
from radpilot.dicom.encoders.common import (
    DEFAULT_MANUFACTURER,
    DeviceIdentity,
    UidFactory,
    check_positive_int,
    copy_patient_study,
    declare_private_coding_schemes,
    make_uid_seed,
    prepare_source_datasets,
    segment_number_map,
    set_content_datetime,
    source_is_volumetric,
    to_coded_concept,
    to_unit_concept,
)

logger = logging.getLogger(__name__)

__all__ = [
    "encode_measurement_report",
    "default_procedure_code",
    "SCORE_CONCEPT",
    "DIAMETER_CONCEPT",
    "LENGTH_CONCEPT",
]

SR_KIND = "sr"

#: Concept of a point finding's detection score: DCM 111012 "Certainty of Finding" (CID 6048, the
#: CAD certainty that the finding is real), value in 0..1 with UCUM unit "1".  A standard code was
#: chosen over a private "Probability of nodule" so that dciodvfy has nothing to warn about.
SCORE_CONCEPT = Code("111012", "DCM", "Certainty of Finding")
SCORE_UNIT = Code("1", "UCUM", "no units")
#: Concept of a point finding's diameter: SCT 81827009 "Diameter", unit mm.
DIAMETER_CONCEPT = Code("81827009", "SCT", "Diameter")
MILLIMETRE = Code("mm", "UCUM", "millimeter")
#: Concept of a line finding's length: SCT 410668003 "Length", unit mm (the line's own name, e.g. "Width",
#: is its finding type; a separate concept keeps the analysis' width measurements from being counted twice).
LENGTH_CONCEPT = Code("410668003", "SCT", "Length")

#: CID 100 (Quantitative Diagnostic Imaging Procedures) default per modality.
_PROCEDURES_BY_MODALITY = {
    "CT": Code("25045-6", "LN", "CT unspecified body region"),
    "MR": Code("25056-3", "LN", "MRI unspecified body region"),
    "CR": Code("43468-8", "LN", "XR unspecified body region"),
    "DX": Code("43468-8", "LN", "XR unspecified body region"),
    "PT": Code("44136-0", "LN", "PET unspecified body region"),
    "NM": Code("49118-3", "LN", "NM unspecified body region"),
}


def default_procedure_code(modality: str) -> Code:
    """The CID 100 "<modality> unspecified body region" LOINC code for ``modality``.

    Raises
    ------
    ValueError
        For a modality without a default (pass ``procedure_code`` then).
    """
    try:
        return _PROCEDURES_BY_MODALITY[str(modality).upper()]
    except KeyError:
        raise ValueError(
            f"no default procedure code for modality {modality!r}; pass procedure_code "
            f"(modalities with a default: {sorted(_PROCEDURES_BY_MODALITY)})"
        ) from None


def _pixel_spacing(ds: Dataset) -> tuple[float, float] | None:
    spacing = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing")
    if not spacing or len(spacing) != 2:
        return None
    return float(spacing[0]), float(spacing[1])


def _point_to_patient(sources: Sequence[Dataset], zyx: tuple[float, float, float]) -> np.ndarray:
    """LPS coordinates (mm) of a voxel index (z may be fractional: positions are interpolated)."""
    z, y, x = (float(v) for v in zyx)
    lower = int(np.clip(np.floor(z), 0, len(sources) - 1))
    upper = int(np.clip(lower + 1, 0, len(sources) - 1))
    fraction = z - lower
    p0 = np.array([float(v) for v in sources[lower].ImagePositionPatient])
    p1 = np.array([float(v) for v in sources[upper].ImagePositionPatient])
    if upper == lower and len(sources) > 1:  # beyond the last slice: extrapolate with the last gap
        p1 = p0 + (p0 - np.array([float(v) for v in sources[lower - 1].ImagePositionPatient]))
    position = p0 + fraction * (p1 - p0)
    orientation = np.array([float(v) for v in sources[lower].ImageOrientationPatient])
    row_spacing, column_spacing = _pixel_spacing(sources[lower]) or (1.0, 1.0)
    return position + x * column_spacing * orientation[:3] + y * row_spacing * orientation[3:]


def _check_point(point: PointFinding, sources: Sequence[Dataset], index: int) -> tuple[float, float, float]:
    if not isinstance(point, PointFinding):
        raise TypeError(f"findings.points[{index}] must be a PointFinding, got {type(point).__name__}")
    try:
        z, y, x = (float(v) for v in point.center_zyx)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"point finding {index} center_zyx must be three numbers (z, y, x), got {point.center_zyx!r}") from exc
    rows, columns = int(sources[0].Rows), int(sources[0].Columns)
    if not (-0.5 <= z <= len(sources) - 0.5 and 0 <= y < rows and 0 <= x < columns):
        raise ValueError(
            f"point finding {index} ({point.name.meaning}) at (z, y, x) = {(z, y, x)} lies outside the source "
            f"series of {len(sources)} image(s) of {rows}x{columns}"
        )
    if point.score is not None and not np.isfinite(point.score):
        raise ValueError(f"point finding {index} score must be finite, got {point.score!r}")
    if point.diameter_mm is not None and not (np.isfinite(point.diameter_mm) and point.diameter_mm > 0):
        raise ValueError(f"point finding {index} diameter_mm must be positive, got {point.diameter_mm!r}")
    return z, y, x


def _check_line(line: LineFinding, sources: Sequence[Dataset], index: int) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(line, LineFinding):
        raise TypeError(f"findings.lines[{index}] must be a LineFinding, got {type(line).__name__}")
    rows, columns = int(sources[0].Rows), int(sources[0].Columns)
    ends = []
    for zyx in (line.start_zyx, line.end_zyx):
        z, y, x = (float(v) for v in zyx)
        # an end may lie on the outer edge of a border pixel (a width spanning whole pixels)
        if not (-0.5 <= z <= len(sources) - 0.5 and -0.5 <= y <= rows - 0.5 and -0.5 <= x <= columns - 0.5):
            raise ValueError(
                f"line finding {index} ({line.name.meaning}) end (z, y, x) = {(z, y, x)} lies outside the source "
                f"series of {len(sources)} image(s) of {rows}x{columns}"
            )
        ends.append(np.array([z, y, x]))
    if round(ends[0][0]) != round(ends[1][0]):
        raise ValueError(f"line finding {index} ({line.name.meaning}) runs across slices; a line must lie on one image")
    if np.allclose(ends[0], ends[1]):
        raise ValueError(f"line finding {index} ({line.name.meaning}) has the same start and end point")
    return ends[0], ends[1]


def _measurement(m: Measurement, identity: DeviceIdentity, index: int) -> hd.sr.Measurement:
    if not isinstance(m, Measurement):
        raise TypeError(f"findings.measurements[{index}] must be a Measurement, got {type(m).__name__}")
    what = f"measurement {index} ({m.name.meaning})"
    return hd.sr.Measurement(
        name=to_coded_concept(m.name, what=f"{what} name"),
        value=float(m.value),
        unit=to_unit_concept(m.unit, what=f"{what} unit"),
        algorithm_id=identity.sr_algorithm_identification(),
        derivation=to_coded_concept(m.derivation, what=f"{what} derivation") if m.derivation is not None else None,
        finding_sites=(
            [hd.sr.FindingSite(to_coded_concept(m.finding_site, what=f"{what} finding site"))] if m.finding_site is not None else None
        ),
    )


def _check_seg_dataset(seg: Dataset, sources: Sequence[Dataset], segments: Sequence[Segment]) -> set[int]:
    """Check ``seg`` is the SEG of these findings over these sources; return the SEG segment numbers with frames."""
    if not isinstance(seg, Dataset):
        raise TypeError(f"seg_dataset must be a pydicom Dataset (the SEG), got {type(seg).__name__}")
    if str(seg.get("SOPClassUID", "")) != SegmentationStorage:
        raise ValueError(f"seg_dataset is not a Segmentation (SOP Class {seg.get('SOPClassUID')!r}, expected {SegmentationStorage})")
    first = sources[0]
    if str(seg.get("StudyInstanceUID", "")) != str(first.StudyInstanceUID):
        raise ValueError("seg_dataset belongs to another study than the source images")
    referenced = {str(item.SeriesInstanceUID) for item in seg.get("ReferencedSeriesSequence", [])}
    if str(first.SeriesInstanceUID) not in referenced:
        raise ValueError(f"seg_dataset does not reference the source series {first.SeriesInstanceUID}")
    seg_labels = {int(item.SegmentNumber): str(item.SegmentLabel) for item in seg.get("SegmentSequence", [])}
    numbers = segment_number_map(segments)
    for segment in segments:
        seg_number = numbers[segment.number]
        if seg_labels.get(seg_number) != segment.label:
            raise ValueError(
                f"seg_dataset does not match the findings: segment {segment.number} ({segment.label!r}) should be "
                f"SEG segment {seg_number}, which is {seg_labels.get(seg_number)!r}"
            )
    return {_frame_segment_number(seg, frame) for frame in seg.get("PerFrameFunctionalGroupsSequence", [])}


def _frame_segment_number(seg: Dataset, frame: Dataset) -> int:
    """Segment number of one frame (per-frame functional group, or the shared one for a single segment)."""
    for group in (frame, *seg.get("SharedFunctionalGroupsSequence", [])):
        if "SegmentIdentificationSequence" in group:
            return int(group.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
    raise ValueError("seg_dataset has a frame without Segment Identification")


def _frames_of_segment(seg: Dataset, seg_number: int) -> list[int]:
    return [
        index + 1 for index, frame in enumerate(seg.PerFrameFunctionalGroupsSequence) if _frame_segment_number(seg, frame) == seg_number
    ]


def encode_measurement_report(
    findings: Findings,
    source_datasets: Sequence[Dataset],
    seg_dataset: Dataset | None = None,
    *,
    series_number: int,
    procedure_code: Code | None = None,
    algorithm_name: str | None = None,
    algorithm_version: str | None = None,
    manufacturer: str = DEFAULT_MANUFACTURER,
    uid_seed: str | None = None,
    instance_number: int = 1,
    series_description: str | None = None,
    content_datetime: _dt.datetime | None = None,
    device_serial_number: str = "1",
    point_coordinates: Literal["image", "patient"] = "image",
) -> hd.sr.Comprehensive3DSR:
    """Encode findings as a TID 1500 Measurement Report in a Comprehensive 3D SR.

    Parameters
    ----------
    findings
        The analysis result: measurements, qualitative findings and point findings are reported.
    source_datasets
        Headers of the source images (slices of one series in volume order, or one 2-D image).
    seg_dataset
        The SEG made by :func:`~radpilot.dicom.encoders.seg.encode_segmentation` from the same
        findings; measurements with a ``segment_number`` reference its segments.  ``None`` when the
        findings have no (non-empty) segmentation: such measurements are then reported without a
        region reference.
    series_number
        Series Number of the new SR series.
    procedure_code
        Procedure reported (CID 100, e.g. LOINC 24627-2 "CT chest"); default by modality
        (:func:`default_procedure_code`).
    algorithm_name, algorithm_version
        Device observer and algorithm identification; default ``findings.analysis`` / ``findings.version``.
    manufacturer
        Manufacturer of the device (default ``"RadPilot"``).
    uid_seed
        Seed of the deterministic UIDs (see :func:`~radpilot.dicom.encoders.seg.encode_segmentation`).
    instance_number, series_description, content_datetime, device_serial_number
        As for the SEG encoder.
    point_coordinates
        ``"image"`` (default): point findings as SCOORD on the slice image they lie on (what
        viewers such as OHIF display); ``"patient"``: SCOORD3D POINT in the frame of reference.

    Returns
    -------
    highdicom.sr.Comprehensive3DSR
        The SR document (a :class:`pydicom.Dataset`): complete, preliminary, unverified.

    Raises
    ------
    TypeError
        When an argument has the wrong type.
    ValueError
        When the findings hold nothing to report, ``seg_dataset`` does not match the findings
        or the source, a measurement unit is not UCUM, or a point lies outside the images.
    """
    if not isinstance(findings, Findings):
        raise TypeError(f"findings must be a radpilot Findings, got {type(findings).__name__}")
    if not (findings.measurements or findings.qualitative or findings.points or findings.lines):
        raise ValueError(
            f"findings of {findings.analysis!r} are empty: no measurements, qualitative findings, point or line "
            "findings to report in a measurement report"
        )
    if point_coordinates not in ("image", "patient"):
        raise ValueError(f"point_coordinates must be 'image' or 'patient', got {point_coordinates!r}")
    if procedure_code is not None and not isinstance(procedure_code, Code):
        raise TypeError(f"procedure_code must be a radpilot Code, got {type(procedure_code).__name__}")
    series_number = check_positive_int(series_number, "series_number")
    instance_number = check_positive_int(instance_number, "instance_number")
    identity = DeviceIdentity.for_findings(findings, algorithm_name, algorithm_version, manufacturer, device_serial_number)
    sources = prepare_source_datasets(source_datasets)
    first = sources[0]
    volumetric = source_is_volumetric(sources)
    if point_coordinates == "patient" and (findings.points or findings.lines) and not volumetric:
        raise ValueError("point_coordinates='patient' needs sources with a frame of reference and image position")
    procedure = procedure_code or default_procedure_code(str(first.get("Modality", "")))
    uids = UidFactory(
        uid_seed or make_uid_seed(identity.algorithm_name, identity.algorithm_version, (str(d.SOPInstanceUID) for d in sources))
    )
    algorithm_id = identity.sr_algorithm_identification()

    segments = {s.number: s for s in (findings.segmentation.segments if findings.segmentation else [])}
    numbers = segment_number_map(list(segments.values())) if segments else {}
    segments_with_frames: set[int] = set()
    if seg_dataset is not None:
        if findings.segmentation is None:
            raise ValueError("seg_dataset was given but the findings hold no segmentation")
        segments_with_frames = _check_seg_dataset(seg_dataset, sources, list(segments.values()))

    # Sort measurements: by referenced segment (present in the SEG) or unsegmented.
    by_segment: dict[int, list[hd.sr.Measurement]] = {}
    unsegmented: list[hd.sr.Measurement] = []
    for index, m in enumerate(findings.measurements):
        item = _measurement(m, identity, index)
        if m.segment_number is not None and segments and m.segment_number not in segments:
            raise ValueError(
                f"measurement {index} ({m.name.meaning}) refers to segment {m.segment_number}, which the "
                f"segmentation does not describe (segments {sorted(segments)})"
            )
        if m.segment_number is not None and seg_dataset is not None and numbers[m.segment_number] in segments_with_frames:
            by_segment.setdefault(m.segment_number, []).append(item)
        else:
            if m.segment_number is not None:
                logger.info(
                    "measurement %r refers to segment %s, which has no voxel in a SEG: reported without region",
                    m.name.meaning,
                    m.segment_number,
                )
            unsegmented.append(item)

    groups: list[
        hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations
        | hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations
        | hd.sr.MeasurementsAndQualitativeEvaluations
    ] = []
    for number in sorted(by_segment):
        segment = segments[number]
        seg_number = numbers[number]
        tracking = hd.sr.TrackingIdentifier(uid=uids.uid(SR_KIND, "segment", number), identifier=segment.label)
        sites = (
            [hd.sr.FindingSite(to_coded_concept(segment.anatomic_region, what=f"segment {number} anatomic region"))]
            if segment.anatomic_region is not None
            else None
        )
        group_args = dict(
            tracking_identifier=tracking,
            finding_type=to_coded_concept(segment.type),
            finding_category=to_coded_concept(segment.category),
            algorithm_id=algorithm_id,
            finding_sites=sites,
            measurements=by_segment[number],
        )
        if seg_dataset is None:  # unreachable: by_segment is only filled when a SEG was given
            raise ValueError("segment measurements need seg_dataset")
        if len(sources) > 1:
            reference = hd.sr.ReferencedSegment(
                sop_class_uid=str(seg_dataset.SOPClassUID),
                sop_instance_uid=str(seg_dataset.SOPInstanceUID),
                segment_number=seg_number,
                source_series=hd.sr.SourceSeriesForSegmentation(str(first.SeriesInstanceUID)),
            )
            groups.append(hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(referenced_segment=reference, **group_args))
        else:
            frame = _frames_of_segment(seg_dataset, seg_number)
            # Built by hand: highdicom's from_segmentation() expects the Segment Identification in the
            # per-frame functional groups, which a one-segment, one-frame SEG keeps in the shared group.
            frame_reference = hd.sr.ReferencedSegmentationFrame(
                sop_class_uid=str(seg_dataset.SOPClassUID),
                sop_instance_uid=str(seg_dataset.SOPInstanceUID),
                frame_number=frame[0],
                segment_number=seg_number,
                source_image=hd.sr.SourceImageForSegmentation.from_source_image(first),
            )
            # PS3.3 Table 10-3b: Referenced Segment Number shall not be present with Referenced Frame
            # Number (the frame identifies the segment); highdicom writes both, dciodvfy flags an error.
            del frame_reference[0].ReferencedSOPSequence[0].ReferencedSegmentNumber
            groups.append(hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(referenced_segment=frame_reference, **group_args))

    for index, point in enumerate(findings.points):
        z, y, x = _check_point(point, sources, index)
        name = to_coded_concept(point.name, what=f"point finding {index} name")
        if point_coordinates == "patient":
            region: hd.sr.ImageRegion | hd.sr.ImageRegion3D = hd.sr.ImageRegion3D(
                graphic_type=hd.sr.GraphicTypeValues3D.POINT,
                graphic_data=_point_to_patient(sources, (z, y, x))[np.newaxis],
                frame_of_reference_uid=str(first.FrameOfReferenceUID),
            )
        else:
            image = sources[int(np.clip(round(z), 0, len(sources) - 1))]
            centre = np.array([x + 0.5, y + 0.5])  # SCOORD: (column, row), pixel TLHC at 0,0
            spacing = _pixel_spacing(image)
            if point.diameter_mm is not None and spacing is not None:
                radius_px = point.diameter_mm / 2.0 / spacing[1]
                graphic_data = np.array([centre, centre + [radius_px, 0.0]])
                graphic_type = hd.sr.GraphicTypeValues.CIRCLE
            else:
                graphic_data = centre[np.newaxis]
                graphic_type = hd.sr.GraphicTypeValues.POINT
            region = hd.sr.ImageRegion(
                graphic_type=graphic_type,
                graphic_data=graphic_data,
                source_image=hd.sr.SourceImageForRegion.from_source_image(image),
            )
        point_measurements = []
        if point.score is not None:
            point_measurements.append(
                hd.sr.Measurement(
                    name=to_coded_concept(SCORE_CONCEPT),
                    value=float(point.score),
                    unit=to_unit_concept(SCORE_UNIT),
                    algorithm_id=algorithm_id,
                )
            )
        if point.diameter_mm is not None:
            point_measurements.append(
                hd.sr.Measurement(
                    name=to_coded_concept(DIAMETER_CONCEPT),
                    value=float(point.diameter_mm),
                    unit=to_unit_concept(MILLIMETRE),
                    algorithm_id=algorithm_id,
                )
            )
        groups.append(
            hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(
                    uid=uids.uid(SR_KIND, "point", index), identifier=f"{point.name.meaning} {index + 1}"[:64]
                ),
                referenced_region=region,
                finding_type=name,
                algorithm_id=algorithm_id,
                measurements=point_measurements or None,
            )
        )

    for index, line in enumerate(findings.lines):
        start, end = _check_line(line, sources, index)
        name = to_coded_concept(line.name, what=f"line finding {index} name")
        image = sources[int(np.clip(round(start[0]), 0, len(sources) - 1))]
        spacing = _pixel_spacing(image)
        if point_coordinates == "patient":
            line_region: hd.sr.ImageRegion | hd.sr.ImageRegion3D = hd.sr.ImageRegion3D(
                graphic_type=hd.sr.GraphicTypeValues3D.POLYLINE,
                graphic_data=np.array([_point_to_patient(sources, tuple(start)), _point_to_patient(sources, tuple(end))]),
                frame_of_reference_uid=str(first.FrameOfReferenceUID),
            )
        else:
            line_region = hd.sr.ImageRegion(
                graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
                # SCOORD: (column, row), pixel TLHC at 0,0
                graphic_data=np.array([[start[2] + 0.5, start[1] + 0.5], [end[2] + 0.5, end[1] + 0.5]]),
                source_image=hd.sr.SourceImageForRegion.from_source_image(image),
            )
        length = line.length_mm
        if length is None and spacing is not None:
            length = float(np.hypot((end[1] - start[1]) * spacing[0], (end[2] - start[2]) * spacing[1]))
        line_measurements = None
        if length is not None:
            line_measurements = [
                hd.sr.Measurement(
                    name=to_coded_concept(LENGTH_CONCEPT),
                    value=float(length),
                    unit=to_unit_concept(MILLIMETRE),
                    algorithm_id=algorithm_id,
                )
            ]
        label = line.description.split(",")[0].strip() if line.description else line.name.meaning
        groups.append(
            hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(uid=uids.uid(SR_KIND, "line", index), identifier=f"{label} {index + 1}"[:64]),
                referenced_region=line_region,
                finding_type=name,
                algorithm_id=algorithm_id,
                measurements=line_measurements,
            )
        )

    qualitative = []
    for index, q in enumerate(findings.qualitative):
        qualitative.append(
            hd.sr.QualitativeEvaluation(
                name=to_coded_concept(q.name, what=f"qualitative finding {index} name"),
                value=to_coded_concept(q.value, what=f"qualitative finding {index} value"),
            )
        )
    if unsegmented or qualitative:
        groups.append(
            hd.sr.MeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(
                    uid=uids.uid(SR_KIND, "series-level"), identifier=f"{identity.algorithm_name} results"[:64]
                ),
                algorithm_id=algorithm_id,
                measurements=unsegmented or None,
                qualitative_evaluations=qualitative or None,
                source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(ds) for ds in sources],
            )
        )

    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=identity.observer_context()),
        procedure_reported=to_coded_concept(procedure, what="procedure_code"),
        imaging_measurements=groups,
        title=codes.cid7021.ImagingMeasurementReport,
    )
    evidence = list(sources) + ([seg_dataset] if seg_dataset is not None else [])
    sr = hd.sr.Comprehensive3DSR(
        evidence=evidence,
        content=report[0],
        series_instance_uid=uids.series(SR_KIND),
        series_number=series_number,
        sop_instance_uid=uids.instance(SR_KIND, instance_number),
        instance_number=instance_number,
        manufacturer=identity.manufacturer,
        is_complete=True,
        is_final=False,
        is_verified=False,
    )
    copy_patient_study(first, sr)
    identity.apply(sr)
    set_content_datetime(sr, content_datetime)
    sr.SeriesDescription = (series_description or f"{identity.algorithm_name} measurements")[:64]
    declare_private_coding_schemes(sr)
    logger.info(
        "encoded SR %s: %d measurement group(s) (%d segment, %d point, %d line)",
        sr.SOPInstanceUID,
        len(groups),
        len(by_segment),
        len(findings.points),
        len(findings.lines),
    )
    return sr
