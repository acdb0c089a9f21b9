"""Is this segmentation plausible enough to report a CTR from? A per-image quality check.

:func:`~radpilot.analyses.chest_xray.view.frontal_plausibility` refuses images that do not
look like a frontal chest film at all.  An image that passes it can still be segmented badly
(a film cut off at the bases, a tilted or unusual film, a wrong polarity that the header did not
reveal, an image of something else that happens to look vaguely like a thorax).  Then the SEG may
be wrong and a CTR taken from it would be reported with false confidence.

:func:`segmentation_quality` measures, on the label map in the standard orientation (patient's
right on the image left, head up):

* ``lung_area_ratio``: smaller lung field area / larger;
* ``lung_height_ratio``: shorter lung field height / taller;
* ``lung_fraction``: both lung fields' area / image area;
* ``heart_lung_ratio``: heart area / both lung fields' area;
* ``heart_level``: the heart's centre row, as a fraction of the lung fields' top-to-bottom
  extent (0 at the apices, 1 at the lowest lung row); the heart lies in the lower half;
* ``ctr``: cardiac width / thoracic width (the reported CTR);
* ``fragmentation``: the largest share of any structure's area that lies outside its largest
  connected component (a clean mask is one piece);
* ``solidity``: the smallest of the three structures' area / convex hull area (a lung field is
  a filled shape, not a ragged scatter);
* ``confidence``: the model's mean top softmax probability over the labelled pixels.

Each has a plausible range (the ``LIMITS`` table).  The ranges come from the 199 JSRT
developer films segmented by the shipped model (``benchmarks/chest_xray_quality_check.py``
prints their extremes) with a margin, and from anatomy: a CTR below 0.30 or above 0.80 is not a
heart measured between two lungs.  Extremes on those films (min..max): lung area ratio
0.57..1.0, lung height ratio 0.80..1.0, lung share 0.18..0.46, heart/lung area 0.19..0.54,
heart level 0.62..0.86, CTR 0.36..0.65, fragmentation 0, solidity 0.74..0.94 (lung fields are
crescents, so 0.75 fired on two good films and the limit is 0.65), confidence 0.968..0.982.  Those films are the model's training data, so they show that
the check is quiet on films like them, not how it behaves on other detectors; the benchmark
also measures how often it fires on deliberately bad inputs.  A measure outside its range is a
*problem*, named in words; any problem makes the segmentation implausible, and the analysis then
withholds the CTR, the widths, the cardiomegaly finding and the areas, and says why.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

from radpilot.analyses.chest_xray.measurements import HEART_LABEL, LEFT_LUNG_LABEL, RIGHT_LUNG_LABEL
from radpilot.analyses.chest_xray.preprocess import cardiothoracic_ratio

#: name -> (lowest plausible, highest plausible, what it is in words).
LIMITS: dict[str, tuple[float, float, str]] = {
    "lung_area_ratio": (0.45, 1.0, "the smaller lung field's area relative to the larger"),
    "lung_height_ratio": (0.70, 1.0, "the shorter lung field's height relative to the taller"),
    "lung_fraction": (0.12, 0.75, "the lung fields' share of the image"),
    "heart_lung_ratio": (0.12, 0.80, "the heart's area relative to the lung fields'"),
    "heart_level": (0.45, 1.05, "the heart's centre height within the lung fields (0 apex, 1 base)"),
    "ctr": (0.30, 0.80, "the cardiothoracic ratio"),
    "fragmentation": (0.0, 0.05, "the share of a structure outside its main connected piece"),
    "solidity": (0.65, 1.0, "the least filled structure's area relative to its convex hull"),
    "confidence": (0.94, 1.0, "the segmentation model's mean confidence"),
}


@dataclass(frozen=True)
class QualityReport:
    """The measures of the module text and the problems found (empty when plausible)."""

    measures: dict[str, float] = field(default_factory=dict)
    problems: tuple[str, ...] = ()

    @property
    def plausible(self) -> bool:
        return not self.problems


def _solidity(mask: np.ndarray) -> float:
    rows, cols = np.nonzero(mask)
    if rows.size < 3:
        return 0.0
    # Pixel corners, not centres, so that a filled rectangle has solidity 1.
    points = np.concatenate([np.stack([rows + dr, cols + dc], axis=1) for dr in (0, 1) for dc in (0, 1)])
    try:
        hull_area = float(ConvexHull(points).volume)  # 'volume' of a 2-D hull is its area
    except QhullError:
        return 0.0
    return min(1.0, float(rows.size) / hull_area) if hull_area > 0 else 0.0


def _fragmentation(mask: np.ndarray) -> float:
    components, count = ndimage.label(mask)
    if count <= 1:
        return 0.0
    sizes = np.bincount(components.ravel())[1:]
    return float(1.0 - sizes.max() / sizes.sum())


def measure(labels: np.ndarray, confidence: float | None) -> dict[str, float]:
    """The measures of the module text for a label map in the standard orientation; structures must all be present."""
    labels = np.asarray(labels)
    masks = {value: labels == value for value in (RIGHT_LUNG_LABEL, LEFT_LUNG_LABEL, HEART_LABEL)}
    areas = {value: float(mask.sum()) for value, mask in masks.items()}
    if min(areas.values()) == 0:
        raise ValueError("a lung field or the heart is missing from the label map")
    lung_rows = {value: np.flatnonzero(masks[value].any(axis=1)) for value in (RIGHT_LUNG_LABEL, LEFT_LUNG_LABEL)}
    heights = [float(r[-1] - r[0] + 1) for r in lung_rows.values()]
    top = min(int(r[0]) for r in lung_rows.values())
    bottom = max(int(r[-1]) for r in lung_rows.values())
    heart_row = float(np.nonzero(masks[HEART_LABEL])[0].mean())
    lungs = areas[RIGHT_LUNG_LABEL] + areas[LEFT_LUNG_LABEL]
    ratio = cardiothoracic_ratio(labels)
    out = {
        "lung_area_ratio": min(areas[RIGHT_LUNG_LABEL], areas[LEFT_LUNG_LABEL]) / max(areas[RIGHT_LUNG_LABEL], areas[LEFT_LUNG_LABEL]),
        "lung_height_ratio": min(heights) / max(heights),
        "lung_fraction": lungs / float(labels.size),
        "heart_lung_ratio": areas[HEART_LABEL] / lungs,
        "heart_level": (heart_row - top) / max(1.0, float(bottom - top)),
        "ctr": float(ratio.ratio) if ratio is not None else float("nan"),
        "fragmentation": max(_fragmentation(mask) for mask in masks.values()),
        "solidity": min(_solidity(mask) for mask in masks.values()),
    }
    if confidence is not None:
        out["confidence"] = float(confidence)
    return {name: round(value, 4) for name, value in out.items()}


def segmentation_quality(labels: np.ndarray, confidence: float | None = None) -> QualityReport:
    """Check ``labels`` (standard orientation) against :data:`LIMITS`; see the module text."""
    try:
        measures = measure(labels, confidence)
    except ValueError as exc:
        return QualityReport({}, (str(exc),))
    problems = []
    for name, value in measures.items():
        low, high, what = LIMITS[name]
        if not (low <= value <= high):  # also catches NaN
            problems.append(f"{what} is {value:.2f}, outside the plausible {low:.2f}-{high:.2f}")
    return QualityReport(measures, tuple(problems))
