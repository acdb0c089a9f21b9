"""Which view a chest radiograph is, and whether the segmentation looks like a frontal chest film.

Two checks decide whether ``chest_xray`` analyses an image:

1. **The header** (:func:`view_from_header`).  View Position (0018,5101):

   * ``PA`` - posteroanterior, the view the CTR threshold is defined for;
   * ``AP`` - anteroposterior: analysed, but the heart is magnified (it lies farther from the
     detector), so CTR > 0.50 is **not a reliable** sign of cardiomegaly;
   * ``LLD`` / ``RLD`` (lateral decubitus, a frontal projection of a lying patient): analysed,
     cardiomegaly not reliable, as for AP;
   * ``LL`` / ``RL`` / ``LATERAL`` / ``LAT`` (lateral) and ``LLO`` / ``RLO`` (oblique): **not
     analysed** - the analysis reads frontal (PA/AP) radiographs only;
   * absent or another value: the view is unknown; the image is analysed if it passes the
     plausibility check below, and cardiomegaly is reported as not reliable (the threshold is
     defined for PA views only).

2. **The segmentation** (:func:`frontal_plausibility`), the model's own judgement: an image is
   accepted as a frontal chest radiograph only when, in the standard orientation,

   * the right lung, the left lung and the heart are all found;
   * each lung covers at least 2 % of the image and the heart at least 1 %;
   * the smaller lung is at least 0.30 times the area of the larger;
   * left to right, the centres are ordered right lung < heart < left lung;
   * the heart lies between the lungs' outer borders;
   * the two lungs overlap over at least half of the shorter one's height;
   * the thoracic width (outer border to outer border) is at least 30 % of the image width;
   * the model's mean confidence over the structures it labelled (mean top softmax probability)
     is at least 0.85.

   On the 199 JSRT developer films (shipped model) the extremes were: lung areas >= 7.0 %,
   heart >= 5.9 %, area ratio >= 0.57, vertical overlap >= 0.96, thoracic width >= 64 % of the
   image, confidence >= 0.968, and every film had the right order and the heart inside; the
   limits leave a wide margin for other detectors, collimation and disease.  A lateral film, an
   image of another body part or a badly rotated one fails one of them (see the unit tests),
   and the reason names the rule that failed.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np

from radpilot.analyses.chest_xray.measurements import HEART_LABEL, LEFT_LUNG_LABEL, RIGHT_LUNG_LABEL

MIN_LUNG_AREA_FRACTION = 0.02
MIN_HEART_AREA_FRACTION = 0.01
MIN_LUNG_AREA_RATIO = 0.30
MIN_VERTICAL_OVERLAP = 0.50
MIN_THORAX_WIDTH_FRACTION = 0.30
MIN_CONFIDENCE = 0.85

LATERAL_VIEWS = frozenset({"LL", "RL", "LATERAL", "LAT", "LLAT", "RLAT"})
OBLIQUE_VIEWS = frozenset({"LLO", "RLO", "LAO", "RAO", "LPO", "RPO", "OBLIQUE"})
DECUBITUS_VIEWS = frozenset({"LLD", "RLD"})


class View(Enum):
    PA = "PA"
    AP = "AP"
    DECUBITUS = "decubitus"
    LATERAL = "lateral"
    OBLIQUE = "oblique"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class HeaderView:
    view: View
    view_position: str  # as recorded, upper case; "" when absent


def view_from_header(view_position: object) -> HeaderView:
    """Classify the View Position value (see the module text)."""
    if isinstance(view_position, (list, tuple)):
        view_position = view_position[0] if view_position else ""
    value = str(view_position or "").strip().upper()
    if value == "PA":
        return HeaderView(View.PA, value)
    if value == "AP":
        return HeaderView(View.AP, value)
    if value in DECUBITUS_VIEWS:
        return HeaderView(View.DECUBITUS, value)
    if value in LATERAL_VIEWS:
        return HeaderView(View.LATERAL, value)
    if value in OBLIQUE_VIEWS:
        return HeaderView(View.OBLIQUE, value)
    return HeaderView(View.UNKNOWN, value)


def frontal_plausibility(labels: np.ndarray, confidence: float | None = None) -> list[str]:
    """The rules of the module text that ``labels`` (standard orientation) break; empty when it looks frontal."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"expected a 2-D label map, got shape {labels.shape}")
    rows, cols = labels.shape
    total = float(rows * cols)
    masks = {
        name: labels == value for name, value in (("right lung", RIGHT_LUNG_LABEL), ("left lung", LEFT_LUNG_LABEL), ("heart", HEART_LABEL))
    }
    missing = [name for name, mask in masks.items() if not mask.any()]
    if missing:
        return [f"no {' and no '.join(missing)} found"]
    problems: list[str] = []
    area = {name: float(mask.sum()) / total for name, mask in masks.items()}
    for name in ("right lung", "left lung"):
        if area[name] < MIN_LUNG_AREA_FRACTION:
            problems.append(
                f"the {name} field covers only {100 * area[name]:.1f} % of the image (at least {100 * MIN_LUNG_AREA_FRACTION:.0f} % expected)"
            )
    if area["heart"] < MIN_HEART_AREA_FRACTION:
        problems.append(
            f"the heart covers only {100 * area['heart']:.1f} % of the image (at least {100 * MIN_HEART_AREA_FRACTION:.0f} % expected)"
        )
    ratio = min(area["right lung"], area["left lung"]) / max(area["right lung"], area["left lung"])
    if ratio < MIN_LUNG_AREA_RATIO:
        problems.append(
            f"the two lung fields differ too much in size (smaller / larger = {ratio:.2f}, at least {MIN_LUNG_AREA_RATIO:.2f} expected)"
        )
    col_index = np.arange(cols)
    centre = {name: float((mask.sum(axis=0) * col_index).sum() / mask.sum()) for name, mask in masks.items()}
    if not centre["right lung"] < centre["heart"] < centre["left lung"]:
        problems.append("the heart does not lie between the two lung fields")
    extent = {name: np.flatnonzero(mask.any(axis=0)) for name, mask in masks.items()}
    if not (extent["right lung"][0] < extent["heart"][0] and extent["heart"][-1] < extent["left lung"][-1]):
        problems.append("the heart reaches beyond the outer border of a lung field")
    row_extent = {name: np.flatnonzero(masks[name].any(axis=1)) for name in ("right lung", "left lung")}
    heights = [float(r[-1] - r[0] + 1) for r in row_extent.values()]
    overlap = min(r[-1] for r in row_extent.values()) - max(r[0] for r in row_extent.values()) + 1
    if overlap / min(heights) < MIN_VERTICAL_OVERLAP:
        problems.append("the two lung fields are not side by side")
    thorax = float(extent["left lung"][-1] - extent["right lung"][0] + 1) / cols
    if thorax < MIN_THORAX_WIDTH_FRACTION:
        problems.append(
            f"the lung fields span only {100 * thorax:.0f} % of the image width (at least {100 * MIN_THORAX_WIDTH_FRACTION:.0f} % expected)"
        )
    if confidence is not None and confidence < MIN_CONFIDENCE:
        problems.append(
            f"the segmentation model is unsure of the anatomy (mean confidence {confidence:.2f}, at least {MIN_CONFIDENCE:.2f} expected)"
        )
    return problems


def heart_side_warning(labels: np.ndarray) -> str:
    """A caution when the heart's centre lies on the image left of the thoracic midline (standard orientation), else "".

    On the JSRT developer films the heart's centre was always right of the midline of the image
    (the patient's left), by 2-14 % of the thoracic width; a centre left of it suggests a mirrored
    image (a wrong R/L marker or Patient Orientation), dextrocardia or a mediastinal shift, when
    the right/left labels and the CTR need checking.  It is a caution, not a refusal: the
    margin on the developer films is too thin to reject images on it.
    """
    labels = np.asarray(labels)
    right = np.flatnonzero((labels == RIGHT_LUNG_LABEL).any(axis=0))
    left = np.flatnonzero((labels == LEFT_LUNG_LABEL).any(axis=0))
    heart_cols = np.nonzero(labels == HEART_LABEL)[1]
    if not (right.size and left.size and heart_cols.size):
        return ""
    midline = (right.min() + left.max()) / 2.0
    offset = (float(heart_cols.mean()) - midline) / float(left.max() - right.min() + 1)
    if offset >= 0:
        return ""
    return (
        "Caution: the heart's centre lies on the image left of the thoracic midline (the patient's right on a "
        "standard display); the image may be mirrored (check the R/L marker), or the heart displaced: check the "
        "right/left lung labels and the CTR."
    )
