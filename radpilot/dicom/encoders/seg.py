"""DICOM Segmentation (SEG) encoder for an analysis' label volume (IHE AI Results).

One BINARY Segmentation instance per analysis run: one segment per
:class:`radpilot.contract.Segment`, each with its coded category, type and
anatomic region, algorithm type AUTOMATIC and the algorithm's identification.
Frames that hold no voxel of a segment are omitted.  The object belongs to the
study of its source series and opens a new series.

Sources are either a CT/MR series of single-frame slices (the label volume has
one plane per slice) or a single 2-D radiograph (CR/DX: one plane, no patient
frame of reference).
"""

from __future__ import annotations

import datetime as _dt
import logging
from collections.abc import Sequence

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from radpilot.contract import Findings, Segmentation
from radpilot.dicom.encoders.common import (
    DEFAULT_MANUFACTURER,
    DeviceIdentity,
    UidFactory,
    check_positive_int,
    check_text,
    content_label,
    copy_patient_study,
    declare_private_coding_schemes,
    make_uid_seed,
    patient_orientation,
    prepare_source_datasets,
    segment_color,
    segment_number_map,
    set_content_datetime,
    source_is_volumetric,
    to_coded_concept,
)

logger = logging.getLogger(__name__)

__all__ = ["encode_segmentation", "labels_on_source_grid"]

SEG_KIND = "seg"


def labels_on_source_grid(segmentation: Segmentation, sources: Sequence[Dataset]) -> np.ndarray:
    """Return the label volume as ``(slices, rows, columns)`` after checking it matches the sources.

    Parameters
    ----------
    segmentation
        The analysis' segmentation.
    sources
        Source images in volume order (see :func:`~radpilot.dicom.encoders.common.prepare_source_datasets`).

    Raises
    ------
    TypeError
        When the labels are not an integer numpy array.
    ValueError
        When the shape does not match the source series, or a label is negative or undescribed.
    """
    labels = segmentation.labels
    if not isinstance(labels, np.ndarray):
        raise TypeError(f"segmentation labels must be a numpy array, got {type(labels).__name__}")
    if labels.dtype.kind not in "ui":
        raise TypeError(f"segmentation labels must be an integer array, got dtype {labels.dtype}")
    expected = (len(sources), int(sources[0].Rows), int(sources[0].Columns))
    if labels.ndim == 2 and expected[0] == 1:
        labels = labels[np.newaxis]
    if labels.shape != expected:
        raise ValueError(
            f"segmentation labels have shape {tuple(labels.shape)} but the source series is {expected[0]} "
            f"image(s) of {expected[1]}x{expected[2]}: expected shape {expected} (slices, rows, columns)"
        )
    if labels.size and int(labels.min()) < 0:
        raise ValueError(f"segmentation labels must not be negative, found {int(labels.min())}")
    described = {s.number for s in segmentation.segments}
    present = set(np.unique(labels).tolist()) - {0}
    undescribed = sorted(present - described)
    if undescribed:
        raise ValueError(f"label values {undescribed} have no segment description")
    return labels


def _sources_named(segmentation: Segmentation, source_datasets: Sequence[Dataset]) -> tuple[list[Dataset], Segmentation]:
    """The images a segmentation names in ``source_uids``, in volume order, with its label slices in the same order.

    A series may hold several images per slice position (the phases of a cine): such a
    segmentation lies on one image per position, which it names.
    """
    by_uid = {str(ds.SOPInstanceUID): ds for ds in source_datasets if isinstance(ds, Dataset) and "SOPInstanceUID" in ds}
    wanted = list(segmentation.source_uids or ())
    missing = [u for u in wanted if u not in by_uid]
    if missing:
        raise ValueError(f"the segmentation lies on {len(missing)} instance(s) that are not among source_datasets, e.g. {missing[0]}")
    sources = prepare_source_datasets([by_uid[u] for u in wanted])
    order = [wanted.index(str(ds.SOPInstanceUID)) for ds in sources]
    labels = segmentation.labels[order]
    return sources, Segmentation(labels, segmentation.segments, tuple(wanted[i] for i in order), segmentation.label)


def _dimension_uids_deterministic(seg: Dataset, uids: UidFactory) -> None:
    """Replace highdicom's random Dimension Organization UID by a seeded one."""
    organization = seg.get("DimensionOrganizationSequence")
    if not organization:
        return
    old = str(organization[0].DimensionOrganizationUID)
    new = uids.uid(SEG_KIND, "dimension-organization")
    organization[0].DimensionOrganizationUID = new
    for item in seg.get("DimensionIndexSequence", []):
        if str(item.get("DimensionOrganizationUID", "")) == old:
            item.DimensionOrganizationUID = new


def encode_segmentation(
    findings: Findings,
    source_datasets: Sequence[Dataset],
    *,
    series_number: int,
    algorithm_name: str | None = None,
    algorithm_version: str | None = None,
    manufacturer: str = DEFAULT_MANUFACTURER,
    uid_seed: str | None = None,
    instance_number: int = 1,
    series_description: str | None = None,
    content_datetime: _dt.datetime | None = None,
    device_serial_number: str = "1",
) -> hd.seg.Segmentation:
    """Encode ``findings.segmentation`` as a BINARY DICOM Segmentation.

    Parameters
    ----------
    findings
        The analysis result; ``findings.segmentation`` is encoded.
    source_datasets
        Headers of the source images (pixel data not needed): the slices of one
        series in volume (z) order, or one 2-D image.  They are re-sorted along
        the slice normal when they carry patient geometry.
    series_number
        Series Number of the new SEG series.
    algorithm_name, algorithm_version
        Algorithm identification; default ``findings.analysis`` / ``findings.version``.
    manufacturer
        Manufacturer of the device (default ``"RadPilot"``).
    uid_seed
        Seed of the deterministic Series and SOP Instance UIDs; default
        :func:`~radpilot.dicom.encoders.common.make_uid_seed` of the analysis
        name, version and source SOP Instance UIDs.
    instance_number
        Instance Number of the SEG.
    series_description
        Series Description; default ``"<algorithm> segmentation"``.
    content_datetime
        Content Date/Time; default now.
    device_serial_number
        Device Serial Number (General Equipment).

    Returns
    -------
    highdicom.seg.Segmentation
        The SEG (a :class:`pydicom.Dataset`), same study as the source, new series.

    Raises
    ------
    TypeError
        When an argument has the wrong type.
    ValueError
        When the findings hold no segmentation, the label volume does not match
        the source images or holds no labelled voxel.
    """
    if not isinstance(findings, Findings):
        raise TypeError(f"findings must be a radpilot Findings, got {type(findings).__name__}")
    segmentation = findings.segmentation
    if segmentation is None:
        raise ValueError(f"findings of {findings.analysis!r} hold no segmentation to encode")
    if not isinstance(segmentation, Segmentation):
        raise TypeError(f"findings.segmentation must be a Segmentation, got {type(segmentation).__name__}")
    if not segmentation.segments:
        raise ValueError("the segmentation describes no segment")
    series_number = check_positive_int(series_number, "series_number")
    instance_number = check_positive_int(instance_number, "instance_number")
    identity = DeviceIdentity.for_findings(findings, algorithm_name, algorithm_version, manufacturer, device_serial_number)
    if segmentation.source_uids is not None:
        sources, segmentation = _sources_named(segmentation, source_datasets)
    else:
        sources = prepare_source_datasets(source_datasets)
    labels = labels_on_source_grid(segmentation, sources)
    if not labels.any():
        raise ValueError("the segmentation is empty (no labelled voxel): there is nothing to encode as SEG")

    numbers = segment_number_map(segmentation.segments)
    uids = UidFactory(
        uid_seed or make_uid_seed(identity.algorithm_name, identity.algorithm_version, (str(d.SOPInstanceUID) for d in sources))
    )

    # Label map with contiguous SEG segment numbers 1..N (highdicom's label-map style input).
    lut = np.zeros(int(max(int(labels.max()), max(numbers))) + 1, dtype=np.uint16)
    for analysis_number, seg_number in numbers.items():
        lut[analysis_number] = seg_number
    dtype = np.uint8 if len(numbers) < 256 else np.uint16
    pixel_array = lut[labels].astype(dtype, copy=False)

    descriptions = []
    for segment in sorted(segmentation.segments, key=lambda s: s.number):
        seg_number = numbers[segment.number]
        rgb = segment_color(seg_number - 1)
        descriptions.append(
            hd.seg.SegmentDescription(
                segment_number=seg_number,
                segment_label=check_text(segment.label, f"segment {segment.number} label"),
                segmented_property_category=to_coded_concept(segment.category, what=f"segment {segment.number} category"),
                segmented_property_type=to_coded_concept(segment.type, what=f"segment {segment.number} type"),
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                algorithm_identification=identity.algorithm_identification_sequence(segment.algorithm_name or None),
                tracking_uid=uids.uid(SEG_KIND, "tracking", segment.number),
                tracking_id=segment.label[:64],
                anatomic_regions=(
                    [to_coded_concept(segment.anatomic_region, what=f"segment {segment.number} anatomic region")]
                    if segment.anatomic_region is not None
                    else None
                ),
                display_color=hd.color.CIELabColor.from_rgb(*rgb),
            )
        )

    seg = hd.seg.Segmentation(
        source_images=_as_one_series(_with_frame_of_reference(sources)),
        pixel_array=pixel_array,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=uids.series(SEG_KIND),
        series_number=series_number,
        sop_instance_uid=uids.instance(SEG_KIND, instance_number),
        instance_number=instance_number,
        manufacturer=identity.manufacturer,
        manufacturer_model_name=identity.algorithm_name,
        software_versions=identity.software_versions[0],
        device_serial_number=identity.device_serial_number,
        content_description=f"{identity.algorithm_name} {identity.algorithm_version} {segmentation.label or 'segmentation'}"[:64],
        content_label=content_label(identity.algorithm_name),
        omit_empty_frames=True,
    )

    first = sources[0]
    if not source_is_volumetric(sources) or "PatientOrientation" in first:
        # General Image module: Patient Orientation is type 2C, required when the image has no
        # Image Orientation (Patient) - the case of a SEG over a radiograph (dciodvfy reports it).
        seg.PatientOrientation = patient_orientation(first)
    copy_patient_study(first, seg)
    identity.apply(seg)
    set_content_datetime(seg, content_datetime)
    seg.SeriesDescription = (series_description or f"{identity.algorithm_name} segmentation")[:64]
    _dimension_uids_deterministic(seg, uids)
    _reference_own_series(seg, sources)
    declare_private_coding_schemes(seg)
    logger.info(
        "encoded SEG %s: %d segment(s), %d frame(s) over %d source image(s)",
        seg.SOPInstanceUID,
        len(descriptions),
        int(seg.NumberOfFrames),
        len(sources),
    )
    return seg


def _as_one_series(sources: list[Dataset]) -> list[Dataset]:
    """The sources, or copies under the first one's Series Instance UID when they are one series per slice position.

    highdicom builds a SEG over one source series only. The copies go to highdicom; every frame still points to its
    own source instance by SOP Instance UID, and :func:`_reference_own_series` then lists each image under its own
    series in the Common Instance Reference module.
    """
    if len({str(ds.SeriesInstanceUID) for ds in sources}) == 1:
        return sources
    copies = []
    for ds in sources:
        copy = Dataset()  # shares the elements, not the dict: the caller's datasets stay unchanged
        copy.update(ds)
        copy.file_meta = getattr(ds, "file_meta", Dataset())
        # a new element: assigning .SeriesInstanceUID would change the value of the element the caller's dataset shares
        copy.add_new(0x0020000E, "UI", str(sources[0].SeriesInstanceUID))
        copies.append(copy)
    return copies


def _reference_own_series(seg: Dataset, sources: list[Dataset]) -> None:
    """Referenced Series Sequence: each source image under the series it belongs to (see :func:`_as_one_series`)."""
    series_of = {str(ds.SOPInstanceUID): str(ds.SeriesInstanceUID) for ds in sources}
    if len(set(series_of.values())) == 1:
        return
    by_series: dict[str, list[Dataset]] = {}
    for item in seg.ReferencedSeriesSequence:
        for ref in item.ReferencedInstanceSequence:
            by_series.setdefault(series_of[str(ref.ReferencedSOPInstanceUID)], []).append(ref)
    references = []
    for series_uid, refs in by_series.items():
        item = Dataset()
        item.SeriesInstanceUID = series_uid
        item.ReferencedInstanceSequence = refs
        references.append(item)
    seg.ReferencedSeriesSequence = references


def _with_frame_of_reference(sources: list[Dataset]) -> list[Dataset]:
    """The sources, or copies with a Frame of Reference UID when slices with positions carry none.

    The SEG IOD requires a Frame of Reference for positioned slices, but some real series lack it
    (e.g. research exports such as 3D-IRCADb); the SEG still points to each source instance, so a UID
    derived from the series UID (the same on every run) lets it be written without altering the sources.
    """
    if all("FrameOfReferenceUID" in ds for ds in sources) or not all("ImagePositionPatient" in ds for ds in sources):
        return sources
    uid = generate_uid(entropy_srcs=["radpilot-frame-of-reference", str(sources[0].SeriesInstanceUID)])
    logger.warning(
        "source series has no Frame of Reference UID: the SEG gets one derived from the series", extra={"frame_of_reference_uid": uid}
    )
    copies = []
    for ds in sources:
        copy = Dataset()  # a new dataset sharing the elements (not the dict): the caller's datasets stay unchanged
        copy.update(ds)
        copy.file_meta = getattr(ds, "file_meta", Dataset())
        copy.FrameOfReferenceUID = uid
        copies.append(copy)
    return copies
