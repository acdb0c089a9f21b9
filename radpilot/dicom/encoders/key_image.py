"""Annotated key image: a Secondary Capture of the key slice with findings burned in (IHE AI Results).

The key slice (``findings.key_slices[0]``, else the middle slice) is windowed
for display (the window the analysis declares for the modality; without one, CT
soft tissue W400/L40, other modalities the image's own VOI (its VOI LUT, else its
first window, with its VOI LUT Function) as a viewer shows it, and 1st-99th
percentile when the image has none), with the polarity of its Photometric
Interpretation and Presentation LUT Shape (:mod:`radpilot.dicom.grayscale`),
scaled so that its short side is at least ``min_size`` pixels (integer factor,
nearest neighbour) and its long side at most ``max_size``, and converted to RGB.
On it are drawn:

* the outline of every segment in its own colour (the same colour as the SEG's
  Recommended Display CIELab Value, see :data:`~radpilot.dicom.encoders.common.SEGMENT_COLORS_RGB`),
* point findings on or near the slice as yellow circles (their diameter, or a
  fixed 8-pixel radius),
* line findings on the slice (e.g. the two widths of a cardiothoracic ratio), each
  in its own colour of :data:`LINE_COLORS_RGB` (magenta, cyan, ... in the order of
  ``findings.lines``), 2 pixels wide with short end ticks,
* a legend band appended below the image (so that no anatomy is hidden),
  written with Pillow's built-in bitmap font: the analysis, the main
  measurements (in their segment's colour), qualitative findings, point
  findings, line findings with their length (in the line's colour), and the slice number.

The result is stored as a single-frame Secondary Capture Image (RGB, 8 bits),
Conversion Type WSD, Burned In Annotation YES, referencing the source slice in
the Source Image Sequence and Referenced Image Sequence.
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import highdicom as hd
import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from scipy import ndimage

from radpilot.contract import Figure, Findings, LineFinding
from radpilot.dicom.encoders.common import (
    DEFAULT_MANUFACTURER,
    POINT_COLOR_RGB,
    DeviceIdentity,
    UidFactory,
    check_positive_int,
    copy_body_part_and_laterality,
    copy_patient_study,
    make_uid_seed,
    patient_orientation,
    prepare_source_datasets,
    segment_color,
    segment_number_map,
    set_content_datetime,
)
from radpilot.dicom.grayscale import apply_voi, has_voi, is_inverted
from radpilot.dicom.volume import Volume

logger = logging.getLogger(__name__)

__all__ = [
    "encode_figure",
    "KeyImage",
    "default_display_window",
    "render_key_image",
    "encode_key_image",
    "SOFT_TISSUE_WINDOW",
    "LINE_COLORS_RGB",
    "line_color",
]

KEY_IMAGE_KIND = "key-image"
#: (center, width) of the CT soft-tissue window, for a CT whose analysis declares no window.
SOFT_TISSUE_WINDOW = (40.0, 400.0)
TEXT_COLOR = (255, 255, 255)
LEGEND_BACKGROUND = (0, 0, 0)
_POINT_MIN_RADIUS_PX = 8
#: Colours of line findings, by their index in ``findings.lines`` (chest_xray: heart width magenta,
#: thoracic width cyan), distinct from the first three segment colours and the point colour.
LINE_COLORS_RGB: tuple[tuple[int, int, int], ...] = ((255, 0, 255), (0, 255, 255), (255, 128, 0), (128, 255, 128))
_LINE_WIDTH_PX = 2
_LINE_TICK_HALF_PX = 6


def line_color(index: int) -> tuple[int, int, int]:
    """The colour of ``findings.lines[index]`` in the key image."""
    return LINE_COLORS_RGB[index % len(LINE_COLORS_RGB)]


def _line_on_slice(line: LineFinding, slice_index: int) -> bool:
    return abs(float(line.start_zyx[0]) - slice_index) <= 0.5 and abs(float(line.end_zyx[0]) - slice_index) <= 0.5


def _draw_line(draw: ImageDraw.ImageDraw, line: LineFinding, scale: float, color: tuple[int, int, int]) -> None:
    """The segment between the line's end points (pixel centres at +0.5) with a perpendicular tick at each end."""
    x0, y0 = (float(line.start_zyx[2]) + 0.5) * scale, (float(line.start_zyx[1]) + 0.5) * scale
    x1, y1 = (float(line.end_zyx[2]) + 0.5) * scale, (float(line.end_zyx[1]) + 0.5) * scale
    draw.line([(x0, y0), (x1, y1)], fill=color, width=_LINE_WIDTH_PX)
    length = math.hypot(x1 - x0, y1 - y0)
    if length == 0:
        return
    nx, ny = -(y1 - y0) / length * _LINE_TICK_HALF_PX, (x1 - x0) / length * _LINE_TICK_HALF_PX
    for x, y in ((x0, y0), (x1, y1)):
        draw.line([(x - nx, y - ny), (x + nx, y + ny)], fill=color, width=_LINE_WIDTH_PX)


@dataclass(frozen=True)
class KeyImage:
    """A rendered key image.

    Attributes
    ----------
    rgb
        ``(rows, columns, 3)`` uint8 pixels.
    slice_index
        Index (z) of the rendered slice in the volume.
    scale
        Output pixels per source pixel.
    window
        ``(center, width)`` used, or ``None`` when percentiles were used.
    legend
        The legend lines drawn.
    image_rows
        Rows of the (scaled) slice at the top; the legend band fills the rows below.
    """

    rgb: np.ndarray
    slice_index: int
    scale: float
    window: tuple[float, float] | None
    legend: tuple[str, ...]
    image_rows: int


def default_display_window(volume: Volume) -> tuple[float, float] | None:
    """The display window (center, width) when the caller gives none: soft tissue for CT, else ``None`` (a percentile stretch).

    An analysis declares its own window (:meth:`radpilot.contract.Analysis.display_window`);
    the engine passes it as ``window``.
    """
    return SOFT_TISSUE_WINDOW if volume.modality.upper() == "CT" else None


def _to_grey(image: np.ndarray, window: tuple[float, float] | None, invert: bool, metadata: Mapping[str, Any] | None = None) -> np.ndarray:
    values = image.astype(np.float64)
    if window is None and metadata is not None and has_voi(metadata):
        grey, _ = apply_voi(values, metadata)  # already 0..1
        if invert:
            grey = 1.0 - grey
        return np.nan_to_num(grey * 255.0).round().astype(np.uint8)
    if window is not None:
        center, width = window
        low, high = center - width / 2.0, center + width / 2.0
    else:
        finite = values[np.isfinite(values)]
        low, high = (float(np.percentile(finite, 1)), float(np.percentile(finite, 99))) if finite.size else (0.0, 1.0)
    if high <= low:
        high = low + 1.0
    grey = np.clip((values - low) / (high - low), 0.0, 1.0)
    if invert:
        grey = 1.0 - grey
    return np.nan_to_num(grey * 255.0).round().astype(np.uint8)


def _scale_factor(rows: int, columns: int, min_size: int, max_size: int) -> float:
    shortest, longest = min(rows, columns), max(rows, columns)
    if min_size and shortest < min_size:
        factor = max(1, math.ceil(min_size / shortest))
        while factor > 1 and longest * factor > max_size:
            factor -= 1
        return float(factor)
    if max_size and longest > max_size:
        return max_size / longest
    return 1.0


def _resize(grey: np.ndarray, labels: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    if scale == 1.0:
        return grey, labels
    if scale > 1.0 and float(scale).is_integer():
        factor = int(scale)
        return (
            np.repeat(np.repeat(grey, factor, axis=0), factor, axis=1),
            np.repeat(np.repeat(labels, factor, axis=0), factor, axis=1),
        )
    size = (max(1, round(grey.shape[1] * scale)), max(1, round(grey.shape[0] * scale)))
    grey_out = np.asarray(Image.fromarray(grey).resize(size, Image.Resampling.LANCZOS))
    labels_out = np.asarray(Image.fromarray(labels.astype(np.int32), mode="I").resize(size, Image.Resampling.NEAREST))
    return grey_out, labels_out


def _font() -> ImageFont.ImageFont:
    loader = getattr(ImageFont, "load_default_imagefont", None)  # Pillow >= 10.1: the bitmap font
    return loader() if loader is not None else ImageFont.load_default()  # type: ignore[return-value]


def _latin1(text: str) -> str:
    return text.encode("latin-1", "replace").decode("latin-1")


#: How UCUM codes read in the legend (anything else is shown as its code).
_UNIT_DISPLAY = {"[hnsf'U]": "HU", "1": "", "{ratio}": "", "{score}": ""}


def _format_value(value: float, unit: str) -> str:
    magnitude = abs(value)
    text = f"{value:.0f}" if magnitude >= 100 else f"{value:.1f}" if magnitude >= 10 else f"{value:.3g}"
    shown = _UNIT_DISPLAY.get(unit, unit)
    return f"{text} {shown}" if shown else text


def _legend_lines(
    findings: Findings, slice_index: int, num_slices: int, colors: dict[int, tuple[int, int, int]]
) -> list[tuple[str, tuple[int, int, int]]]:
    segments = {s.number: s for s in (findings.segmentation.segments if findings.segmentation else [])}
    lines: list[tuple[str, tuple[int, int, int]]] = [(f"{findings.analysis} {findings.version} - AI result, unverified", TEXT_COLOR)]
    for m in findings.measurements:
        label = segments[m.segment_number].label + ": " if m.segment_number in segments else ""
        color = colors.get(m.segment_number, TEXT_COLOR) if m.segment_number is not None else TEXT_COLOR
        lines.append((f"{label}{m.name.meaning} {_format_value(m.value, m.unit.value)}", color))
    for q in findings.qualitative:
        lines.append((f"{q.name.meaning}: {q.value.meaning}", TEXT_COLOR))
    for i, p in enumerate(findings.points):
        details = []
        if p.score is not None:
            details.append(f"score {p.score:.2f}")
        if p.diameter_mm is not None:
            details.append(f"{p.diameter_mm:.1f} mm")
        if num_slices > 1:
            details.append(f"slice {int(round(p.center_zyx[0])) + 1}")
        lines.append((f"{p.name.meaning} {i + 1}" + (f": {', '.join(details)}" if details else ""), POINT_COLOR_RGB))
    for i, line in enumerate(findings.lines):
        if not _line_on_slice(line, slice_index):
            continue
        label = line.description.split(",")[0].strip() if line.description else line.name.meaning
        length = f" {_format_value(line.length_mm, 'mm')}" if line.length_mm is not None else ""
        lines.append((f"{label[:1].upper()}{label[1:]}{length} (line)", line_color(i)))
    if num_slices > 1:
        lines.append((f"slice {slice_index + 1}/{num_slices}", TEXT_COLOR))
    return lines


def _legend_band(width: int, lines: list[tuple[str, tuple[int, int, int]]], max_lines: int) -> tuple[np.ndarray, list[str]]:
    """The legend as an RGB band ``(height, width, 3)`` to append below the image, and its text lines."""
    font = _font()
    line_height = max(10, font.getbbox("Ag")[3] + 2)
    char_width = max(1, font.getbbox("M")[2])
    margin = 3
    max_chars = max(4, (width - 2 * margin) // char_width)
    if len(lines) > max_lines:
        hidden = len(lines) - (max_lines - 1)
        lines = lines[: max_lines - 1] + [(f"... {hidden} more", TEXT_COLOR)]
    texts = []
    for text, _color in lines:
        text = _latin1(text)
        texts.append(text if len(text) <= max_chars else text[: max_chars - 3] + "...")
    band = Image.new("RGB", (width, len(texts) * line_height + 2 * margin), LEGEND_BACKGROUND)
    draw = ImageDraw.Draw(band)
    for row, (text, (_, color)) in enumerate(zip(texts, lines)):
        draw.text((margin, margin + row * line_height), text, fill=color, font=font)
    return np.asarray(band, dtype=np.uint8), texts


def _key_slice(findings: Findings, num_slices: int, slice_index: int | None) -> int:
    if slice_index is None:
        slice_index = findings.key_slices[0] if findings.key_slices else num_slices // 2
    if isinstance(slice_index, bool) or not isinstance(slice_index, (int, np.integer)):
        raise TypeError(f"key slice index must be an int, got {type(slice_index).__name__}")
    if not 0 <= int(slice_index) < num_slices:
        raise ValueError(f"key slice {slice_index} is outside the volume of {num_slices} slice(s)")
    return int(slice_index)


def render_key_image(
    findings: Findings,
    volume: Volume,
    slice_index: int | None = None,
    *,
    window: tuple[float, float] | None = None,
    min_size: int = 512,
    max_size: int = 1024,
    legend_lines: int = 16,
) -> KeyImage:
    """Render the annotated key slice as RGB pixels.

    Parameters
    ----------
    findings
        The analysis result (segmentation outlines, point findings, legend).
    volume
        The analysed volume.
    slice_index
        Slice to render; default ``findings.key_slices[0]`` or the middle slice.
    window
        ``(center, width)`` display window (the analysis' declared window); default :func:`default_display_window`.
    min_size, max_size
        Bounds of the output size in pixels (short side at least ``min_size`` by an
        integer upscaling, long side at most ``max_size``); ``min_size=0`` keeps
        small images at their native size.
    legend_lines
        Most lines in the legend band below the image (the last one then says how many were left out).

    Raises
    ------
    TypeError
        When ``findings`` or ``volume`` have the wrong type.
    ValueError
        When the segmentation does not match the volume or the slice is outside it.
    """
    if not isinstance(findings, Findings):
        raise TypeError(f"findings must be a radpilot Findings, got {type(findings).__name__}")
    if not isinstance(volume, Volume):
        raise TypeError(f"volume must be a radpilot Volume, got {type(volume).__name__}")
    if isinstance(min_size, bool) or not isinstance(min_size, int) or min_size < 0:
        raise ValueError(f"min_size must be a non-negative int, got {min_size!r}")
    if isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 16:
        raise ValueError(f"max_size must be an int of at least 16, got {max_size!r}")
    if isinstance(legend_lines, bool) or not isinstance(legend_lines, int) or legend_lines < 1:
        raise ValueError(f"legend_lines must be a positive int, got {legend_lines!r}")
    if window is not None:
        if len(window) != 2 or not all(np.isfinite(v) for v in window) or window[1] <= 0:
            raise ValueError(f"window must be (center, width) with a positive width, got {window!r}")
        window = (float(window[0]), float(window[1]))
    else:
        window = default_display_window(volume)
    index = _key_slice(findings, volume.num_slices, slice_index)

    labels = np.zeros(volume.shape[1:], dtype=np.int32)
    colors: dict[int, tuple[int, int, int]] = {}
    if findings.segmentation is not None:
        volume_labels = findings.segmentation.labels
        if volume_labels.ndim == 2 and volume.num_slices == 1:
            volume_labels = volume_labels[np.newaxis]
        if volume_labels.shape != volume.shape:
            raise ValueError(
                f"segmentation labels have shape {tuple(findings.segmentation.labels.shape)} but the volume is "
                f"{volume.shape} (slices, rows, columns)"
            )
        labels = np.asarray(volume_labels[index], dtype=np.int32)
        numbers = segment_number_map(findings.segmentation.segments)
        colors = {number: segment_color(seg_number - 1) for number, seg_number in numbers.items()}

    invert = is_inverted(volume.metadata)
    grey = _to_grey(volume.voxels[index], window, invert, volume.metadata)
    scale = _scale_factor(grey.shape[0], grey.shape[1], min_size, max_size)
    grey, labels = _resize(grey, labels, scale)
    rgb = np.repeat(grey[:, :, np.newaxis], 3, axis=2)

    thickness = max(1, int(round(scale / 3))) if scale > 1 else 1
    for number, color in colors.items():
        mask = labels == number
        if not mask.any():
            continue
        boundary = mask & ~ndimage.binary_erosion(mask, iterations=thickness, border_value=0)
        rgb[boundary] = color

    canvas = Image.fromarray(rgb, mode="RGB")
    draw = ImageDraw.Draw(canvas)
    slice_gap, row_spacing, column_spacing = volume.spacing_zyx
    in_plane = (row_spacing + column_spacing) / 2.0
    for point in findings.points:
        z, y, x = (float(v) for v in point.center_zyx)
        radius_mm = (point.diameter_mm or 0.0) / 2.0
        if abs(z - index) > max(0.5, radius_mm / slice_gap):
            continue
        radius = max(_POINT_MIN_RADIUS_PX, radius_mm / in_plane * scale)
        cx, cy = (x + 0.5) * scale, (y + 0.5) * scale
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], outline=POINT_COLOR_RGB, width=max(1, thickness))
    for i, line in enumerate(findings.lines):
        if not isinstance(line, LineFinding):
            raise TypeError(f"findings.lines[{i}] must be a LineFinding, got {type(line).__name__}")
        if _line_on_slice(line, index):
            _draw_line(draw, line, scale, line_color(i))

    band, legend = _legend_band(canvas.width, _legend_lines(findings, index, volume.num_slices, colors), legend_lines)
    return KeyImage(
        rgb=np.concatenate([np.asarray(canvas, dtype=np.uint8), band], axis=0),
        image_rows=canvas.height,
        slice_index=index,
        scale=scale,
        window=window,
        legend=tuple(legend),
    )


def _source_of_slice(volume: Volume, sources: Sequence[Dataset], index: int) -> Dataset:
    if volume.sop_instance_uids:
        wanted = volume.sop_instance_uids[index]
        for ds in sources:
            if str(ds.SOPInstanceUID) == wanted:
                return ds
        raise ValueError(f"slice {index} of the volume is instance {wanted}, which is not among source_datasets")
    if len(sources) != volume.num_slices:
        raise ValueError(f"source_datasets has {len(sources)} image(s) but the volume has {volume.num_slices} slice(s)")
    return sources[index]


def encode_key_image(
    findings: Findings,
    volume: Volume,
    source_datasets: Sequence[Dataset],
    *,
    series_number: int,
    slice_index: int | None = None,
    window: tuple[float, float] | None = None,
    algorithm_name: str | None = None,
    algorithm_version: str | None = None,
    manufacturer: str = DEFAULT_MANUFACTURER,
    uid_seed: str | None = None,
    instance_number: int = 1,
    series_description: str | None = None,
    content_datetime: _dt.datetime | None = None,
    device_serial_number: str = "1",
    min_size: int = 512,
    max_size: int = 1024,
    legend_lines: int = 16,
) -> hd.sc.SCImage:
    """Encode the annotated key slice as a Secondary Capture Image (RGB).

    Parameters
    ----------
    findings, volume, slice_index, window, min_size, max_size, legend_lines
        See :func:`render_key_image`.
    source_datasets
        Headers of the source images (the slice's instance is referenced).
    series_number
        Series Number of the new key-image series.
    algorithm_name, algorithm_version, manufacturer, uid_seed, instance_number, series_description, content_datetime, device_serial_number
        As for :func:`~radpilot.dicom.encoders.seg.encode_segmentation`.

    Returns
    -------
    highdicom.sc.SCImage
        Secondary Capture Image Storage instance (a :class:`pydicom.Dataset`).

    Raises
    ------
    TypeError, ValueError
        On invalid input (see :func:`render_key_image`), or when the source images do
        not belong to the volume.
    """
    series_number = check_positive_int(series_number, "series_number")
    instance_number = check_positive_int(instance_number, "instance_number")
    if not isinstance(findings, Findings):
        raise TypeError(f"findings must be a radpilot Findings, got {type(findings).__name__}")
    identity = DeviceIdentity.for_findings(findings, algorithm_name, algorithm_version, manufacturer, device_serial_number)
    sources = prepare_source_datasets(source_datasets)
    if not isinstance(volume, Volume):
        raise TypeError(f"volume must be a radpilot Volume, got {type(volume).__name__}")
    if volume.series_uid and volume.series_uid != str(sources[0].SeriesInstanceUID):
        raise ValueError("source_datasets belong to another series than the volume")
    key = render_key_image(findings, volume, slice_index, window=window, min_size=min_size, max_size=max_size, legend_lines=legend_lines)
    source = _source_of_slice(volume, sources, key.slice_index)
    uids = UidFactory(
        uid_seed or make_uid_seed(identity.algorithm_name, identity.algorithm_version, (str(d.SOPInstanceUID) for d in sources))
    )

    _, row_spacing, column_spacing = volume.spacing_zyx
    image = _secondary_capture(
        key.rgb,
        source,
        identity,
        uids,
        series_number=series_number,
        instance_number=instance_number,
        pixel_spacing=(row_spacing / key.scale, column_spacing / key.scale),
        content_datetime=content_datetime,
        series_description=series_description or f"{identity.algorithm_name} key images",
        derivation="RadPilot key image: windowed slice with segmentation outlines, point and line findings and measurements burned in",
    )
    logger.info(
        "encoded key image %s: slice %d of %d, %dx%d",
        image.SOPInstanceUID,
        key.slice_index,
        volume.num_slices,
        key.rgb.shape[1],
        key.rgb.shape[0],
    )
    return image


def _secondary_capture(
    rgb: np.ndarray,
    source: Dataset,
    identity: DeviceIdentity,
    uids: UidFactory,
    *,
    series_number: int,
    instance_number: int,
    pixel_spacing: tuple[float, float] | None,
    content_datetime: _dt.datetime | None,
    series_description: str,
    derivation: str,
) -> hd.sc.SCImage:
    """An RGB Secondary Capture in the key-image series, in ``source``'s study, referencing ``source``."""
    image = hd.sc.SCImage(
        pixel_array=rgb,
        photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
        bits_allocated=8,
        coordinate_system=hd.CoordinateSystemNames.PATIENT,
        study_instance_uid=str(source.StudyInstanceUID),
        series_instance_uid=uids.series(KEY_IMAGE_KIND),
        series_number=series_number,
        sop_instance_uid=uids.instance(KEY_IMAGE_KIND, instance_number),
        instance_number=instance_number,
        manufacturer=identity.manufacturer,
        patient_orientation=("L", "P"),  # replaced below by the source's own orientation
        pixel_spacing=pixel_spacing,
        transfer_syntax_uid=ExplicitVRLittleEndian,
    )
    copy_patient_study(source, image)
    image.PatientOrientation = patient_orientation(source)
    identity.apply(image)
    set_content_datetime(image, content_datetime)
    image.DateOfSecondaryCapture = image.ContentDate
    image.TimeOfSecondaryCapture = image.ContentTime
    image.SeriesDescription = series_description[:64]
    image.ConversionType = "WSD"
    image.BurnedInAnnotation = "YES"
    image.ImageType = ["DERIVED", "SECONDARY", "OTHER"]
    image.LossyImageCompression = "00"
    copy_body_part_and_laterality(source, image)
    image.DerivationDescription = derivation
    purpose = Dataset()
    purpose.CodeValue = "121322"
    purpose.CodingSchemeDesignator = "DCM"
    purpose.CodeMeaning = "Source image for image processing operation"
    reference = Dataset()
    reference.ReferencedSOPClassUID = source.SOPClassUID
    reference.ReferencedSOPInstanceUID = source.SOPInstanceUID
    reference.PurposeOfReferenceCodeSequence = [purpose]
    image.SourceImageSequence = [reference]
    referenced = Dataset()
    referenced.ReferencedSOPClassUID = source.SOPClassUID
    referenced.ReferencedSOPInstanceUID = source.SOPInstanceUID
    image.ReferencedImageSequence = [referenced]
    return image


def encode_figure(
    figure: Figure,
    findings: Findings,
    source_datasets: Sequence[Dataset],
    *,
    series_number: int,
    instance_number: int,
    algorithm_name: str | None = None,
    algorithm_version: str | None = None,
    manufacturer: str = DEFAULT_MANUFACTURER,
    uid_seed: str | None = None,
    content_datetime: _dt.datetime | None = None,
    device_serial_number: str = "1",
) -> hd.sc.SCImage:
    """Encode a picture the analysis drew itself (``findings.figures``) as a Secondary Capture of the key-image series.

    The figure is not an image of the patient's anatomy on the source grid (a chart, a montage),
    so it carries no pixel spacing; it references the source image it names.
    """
    if not isinstance(figure, Figure):
        raise TypeError(f"figure must be a radpilot Figure, got {type(figure).__name__}")
    series_number = check_positive_int(series_number, "series_number")
    instance_number = check_positive_int(instance_number, "instance_number")
    identity = DeviceIdentity.for_findings(findings, algorithm_name, algorithm_version, manufacturer, device_serial_number)
    sources = prepare_source_datasets(source_datasets)
    source = next((ds for ds in sources if str(ds.SOPInstanceUID) == figure.source_uid), None)
    if source is None:
        raise ValueError(f"figure {figure.title!r} references instance {figure.source_uid}, which is not among source_datasets")
    uids = UidFactory(
        uid_seed or make_uid_seed(identity.algorithm_name, identity.algorithm_version, (str(d.SOPInstanceUID) for d in sources))
    )
    image = _secondary_capture(
        figure.rgb,
        source,
        identity,
        uids,
        series_number=series_number,
        instance_number=instance_number,
        pixel_spacing=None,
        content_datetime=content_datetime,
        series_description=f"{identity.algorithm_name} key images",
        derivation=f"RadPilot figure: {figure.title}"[:1024],
    )
    logger.info("encoded figure %s: %s, %dx%d", image.SOPInstanceUID, figure.title, figure.rgb.shape[1], figure.rgb.shape[0])
    return image
