"""Measurements on a chest radiograph's lung/heart label map: pixel spacing, CTR geometry, areas.

The label map is on the source image's grid: 1 = right lung (patient's right, image left in
the standard orientation), 2 = left lung, 3 = heart (see ``models/cxr_lung_heart_seg``).

Cardiothoracic ratio (the JSRT reference definition of ``shared/data/cxr-jsrt/README.md``,
computed by :func:`radpilot.analyses.chest_xray.preprocess.cardiothoracic_ratio`):

* cardiac width = rightmost - leftmost heart column + 1, over all rows (the maximal
  horizontal cardiac width; the two extreme points may lie on different rows);
* thoracic width = lateral-most column of one lung field - lateral-most column of the
  other + 1, over all rows (the maximal inner thoracic width, between the lung fields'
  outer borders);
* CTR = cardiac width / thoracic width, a ratio of pixel counts along the rows, so it needs
  no pixel spacing.  Widths in mm use the column spacing.

:func:`ctr_geometry` also returns the extreme points of both widths, so that a viewer or a key
image can draw them as horizontal lines.

Pixel spacing (:func:`pixel_spacing`): PixelSpacing (calibrated to the patient when the
modality did so) is preferred; else ImagerPixelSpacing divided by the Estimated Radiographic
Magnification Factor when present; else ImagerPixelSpacing as it is, i.e. sizes at the
detector plane, which overstate the patient's anatomy by the geometric magnification
(typically 5-15 % on a PA chest film).  Without any spacing, no size in mm or cm2 is reported.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from radpilot.analyses.chest_xray.preprocess import cardiothoracic_ratio

RIGHT_LUNG_LABEL, LEFT_LUNG_LABEL, HEART_LABEL = 1, 2, 3


@dataclass(frozen=True)
class Spacing:
    """Pixel spacing (row, column) in mm and where it came from."""

    row_mm: float
    column_mm: float
    source: str  # "PixelSpacing", "ImagerPixelSpacing / magnification factor", "ImagerPixelSpacing"
    note: str = ""  # a plain-language caveat for the findings, or ""

    @property
    def mm2_per_pixel(self) -> float:
        return self.row_mm * self.column_mm


def _pair(value: Any) -> tuple[float, float] | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        value = value.split("\\")
    try:
        numbers = [float(v) for v in value]
    except (TypeError, ValueError):
        return None
    if len(numbers) != 2 or not all(math.isfinite(v) and v > 0 for v in numbers):
        return None
    return numbers[0], numbers[1]


def pixel_spacing(metadata: Mapping[str, Any]) -> Spacing | None:
    """The pixel spacing to measure with (see the module text), or None when the header has none."""
    calibrated = _pair(metadata.get("PixelSpacing"))
    if calibrated is not None:
        return Spacing(calibrated[0], calibrated[1], "PixelSpacing")
    imager = _pair(metadata.get("ImagerPixelSpacing"))
    if imager is None:
        return None
    try:
        factor = float(metadata.get("EstimatedRadiographicMagnificationFactor") or 0.0)
    except (TypeError, ValueError):
        factor = 0.0
    if math.isfinite(factor) and factor >= 1.0:
        return Spacing(
            imager[0] / factor,
            imager[1] / factor,
            "ImagerPixelSpacing / magnification factor",
            f"Sizes use the imager pixel spacing divided by the estimated radiographic magnification factor {factor:g}.",
        )
    return Spacing(
        imager[0],
        imager[1],
        "ImagerPixelSpacing",
        "Sizes in mm and cm2 are measured at the detector plane (ImagerPixelSpacing, no magnification "
        "correction recorded): they overstate the patient's anatomy by the geometric magnification, "
        "typically 5-15 % on a PA chest film. The CTR is a ratio and is not affected.",
    )


@dataclass(frozen=True)
class WidthLine:
    """A horizontal width between two extreme points (row, column) on the source grid.

    ``start`` is the extreme point on the image left, ``end`` the one on the image right; the
    width spans columns ``start[1]`` .. ``end[1]`` inclusive.  ``row`` is where to draw it as one
    horizontal line (the mean row of the two extreme points).
    """

    start: tuple[int, int]
    end: tuple[int, int]

    @property
    def width_px(self) -> int:
        return int(self.end[1] - self.start[1] + 1)

    @property
    def row(self) -> float:
        return (self.start[0] + self.end[0]) / 2.0


@dataclass(frozen=True)
class CTRGeometry:
    """Cardiothoracic ratio with its two widths."""

    cardiac: WidthLine
    thoracic: WidthLine

    @property
    def ratio(self) -> float:
        return self.cardiac.width_px / self.thoracic.width_px


def _extreme_point(mask: np.ndarray, column: int) -> tuple[int, int]:
    """The (row, column) of the middle of the mask's run in ``column`` (where the extreme is reached)."""
    rows = np.flatnonzero(mask[:, column])
    return int(rows[rows.size // 2]), int(column)


def ctr_geometry(labels: np.ndarray) -> CTRGeometry | None:
    """CTR and the extreme points of both widths from a 2-D label map; None when a structure is missing.

    The label map must be in the standard orientation's left-right sense or mirrored: the thoracic
    width runs from the outer border of the lung on the image left to that of the lung on the image
    right, whichever label each has (the widths of :func:`cardiothoracic_ratio` assume the standard
    orientation; a mirrored map gives the same widths, computed here by position).
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"expected a 2-D label map, got shape {labels.shape}")
    right, left, heart = (labels == RIGHT_LUNG_LABEL), (labels == LEFT_LUNG_LABEL), (labels == HEART_LABEL)
    if not (right.any() and left.any() and heart.any()):
        return None
    right_cols = np.flatnonzero(right.any(axis=0))
    left_cols = np.flatnonzero(left.any(axis=0))
    if right_cols.mean() <= left_cols.mean():
        reference = cardiothoracic_ratio(labels)  # the one definition, standard orientation
        lung_a, lung_b = right, left
    else:  # mirrored image: the right lung lies on the image right
        reference = cardiothoracic_ratio(labels[:, ::-1])
        lung_a, lung_b = left, right
    if reference is None:
        return None
    heart_cols = np.flatnonzero(heart.any(axis=0))
    cardiac = WidthLine(_extreme_point(heart, int(heart_cols[0])), _extreme_point(heart, int(heart_cols[-1])))
    a_col = int(np.flatnonzero(lung_a.any(axis=0))[0])
    b_col = int(np.flatnonzero(lung_b.any(axis=0))[-1])
    thoracic = WidthLine(_extreme_point(lung_a, a_col), _extreme_point(lung_b, b_col))
    if thoracic.width_px <= 0:
        return None
    assert cardiac.width_px == reference.heart_width_px and thoracic.width_px == reference.thorax_width_px
    return CTRGeometry(cardiac=cardiac, thoracic=thoracic)


def areas_cm2(labels: np.ndarray, spacing: Spacing) -> dict[int, float]:
    """Area in cm2 of each structure label (1, 2, 3) present in ``labels``."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64).ravel(), minlength=4)
    return {value: float(counts[value]) * spacing.mm2_per_pixel / 100.0 for value in (1, 2, 3) if counts[value] > 0}


#: A structure "reaches" an image edge when it runs along it for at least this fraction of its own extent
#: along that edge (a border that only grazes the edge, tangentially, does not cut a width off).
EDGE_RUN_FRACTION = 0.05


def _runs_along(edge: np.ndarray, axis_extent: int) -> bool:
    return axis_extent > 0 and float(edge.sum()) >= max(2.0, EDGE_RUN_FRACTION * axis_extent)


def cut_off_structures(labels: np.ndarray) -> list[str]:
    """What the CTR needs that reaches the image edge (so a width may be cut off): names, or empty.

    The heart must not run along any image edge; the lung field on the image left must not run
    along the left edge, nor the one on the image right along the right edge (their outer borders
    give the thoracic width).  "Runs along" means touching the edge over at least
    :data:`EDGE_RUN_FRACTION` of the structure's height (side edges) or width (top and bottom edges).
    On the JSRT developer films the heart stayed at least 19 pixels (of 512) from every edge; one
    lung field touched the film's side over 4 rows of its 378 (a tangent, not a cut).
    """
    labels = np.asarray(labels)
    out: list[str] = []
    heart = labels == HEART_LABEL
    if heart.any():
        height = int(np.ptp(np.flatnonzero(heart.any(axis=1)))) + 1
        width = int(np.ptp(np.flatnonzero(heart.any(axis=0)))) + 1
        if (
            _runs_along(heart[:, 0], height)
            or _runs_along(heart[:, -1], height)
            or _runs_along(heart[0], width)
            or _runs_along(heart[-1], width)
        ):
            out.append("the heart")
    lungs = [(labels == value, name) for value, name in ((RIGHT_LUNG_LABEL, "right lung"), (LEFT_LUNG_LABEL, "left lung"))]
    lungs = [(mask, name) for mask, name in lungs if mask.any()]
    if len(lungs) == 2:
        lungs.sort(key=lambda item: float(np.flatnonzero(item[0].any(axis=0)).mean()))
        for (mask, name), column in zip(lungs, (0, -1)):
            height = int(np.ptp(np.flatnonzero(mask.any(axis=1)))) + 1
            if _runs_along(mask[:, column], height):
                out.append(f"the {name} field")
    return out
