"""Coronary calcium scoring arithmetic: Agatston, volume and mass scores, CAC-DRS.

Definitions
-----------
* **Lesion (per slice).** Agatston is defined slice by slice (Agatston et al., J Am Coll
  Cardiol 1990;15:827-832): on each axial slice, pixels at or above 130 HU inside the
  scoring region are grouped into 2-D connected components (8-connected); a component of
  at least 1 mm² is a lesion.  The original paper asked for 2 adjacent pixels (about
  1 mm² at its pixel size); 1 mm² is the threshold of the multi-vendor standard
  (McCollough et al., Radiology 2007;243:527-538).
* **Density weight** from the lesion's peak HU: 1 for 130-199, 2 for 200-299, 3 for
  300-399, 4 for 400 and above.  HU values are real numbers here (interpolated or
  rescaled data are not integers), so the bands are half-open: 199.9 HU weighs 1,
  200.0 weighs 2.
* **Agatston score** of a slice lesion = area (mm²) x weight; the total is the sum.
* **Slice-thickness rule.** Agatston defined the score on contiguous 3 mm slices.  For
  any other slice increment the per-slice sum is multiplied by ``increment / 3 mm``
  (the convention of commercial scoring software for overlapping or thinner
  reconstructions, so that the sum of area x increment, a volume, is counted as on 3 mm
  slices).  The result on thin slices is an *Agatston-equivalent* score, not identical
  to a 3 mm score (thin slices see smaller, denser lesions); the notes of every result
  say which increment was scored.
* **Volume score** = the number of lesion voxels x the voxel volume (mm³), i.e. the sum
  of area x increment.  No isotropic interpolation is applied.
* **Mass score** (McCollough 2007) = ``c_HA`` x mean HU of the lesion x its volume, with
  ``c_HA`` the calibration factor in mg hydroxyapatite per cm³ per HU measured on a
  calibration phantom for the scanner and kVp.  Without a configured factor no mass
  score is reported (a default factor would pretend a calibration that was never made).
* **CAC-DRS** (Hecht et al., J Cardiovasc Comput Tomogr 2018;12:185-191): A0 for a total
  Agatston of 0, A1 for 1-99, A2 for 100-299, A3 for 300 and above; the N modifier is
  the number of vessels (LM, LAD, LCX, RCA) with calcium.  Scores between 0 and 1 (a
  single tiny lesion) are rounded as the standard reports whole Agatston units.

MESA percentile: McClelland et al. (Circulation 2006;113:30-37) estimated the percentiles
non-parametrically and publish them through an interactive calculator, not as a formula
with coefficients, and they need race/ethnicity, which a DICOM header does not carry.
This module does not compute them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

CALCIUM_THRESHOLD_HU = 130.0
MIN_LESION_AREA_MM2 = 1.0
REFERENCE_INCREMENT_MM = 3.0
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)
_WEIGHT_BANDS = ((400.0, 4), (300.0, 3), (200.0, 2), (CALCIUM_THRESHOLD_HU, 1))


def density_weight(peak_hu: float) -> int:
    """Agatston density weight of a lesion with peak attenuation ``peak_hu`` (0 below 130 HU)."""
    if not np.isfinite(peak_hu):
        raise ValueError(f"peak HU must be a finite number, got {peak_hu!r}")
    for lower, weight in _WEIGHT_BANDS:
        if peak_hu >= lower:
            return weight
    return 0


def agatston_scale(increment_mm: float) -> float:
    """The factor applied to per-slice sums of area x weight for slices ``increment_mm`` apart (1 at 3 mm)."""
    if not (np.isfinite(increment_mm) and increment_mm > 0):
        raise ValueError(f"slice increment must be a positive number of mm, got {increment_mm!r}")
    return increment_mm / REFERENCE_INCREMENT_MM


@dataclass(frozen=True)
class SliceLesion:
    """One 2-D lesion: a connected component of >= 130 HU pixels on one slice."""

    slice_index: int
    label: int  # its label in the slice's component image
    area_mm2: float
    peak_hu: float
    mean_hu: float
    n_pixels: int

    @property
    def weight(self) -> int:
        return density_weight(self.peak_hu)

    @property
    def agatston_area_weight(self) -> float:
        """Area x density weight, before the slice-increment scale."""
        return self.area_mm2 * self.weight


def slice_lesions(
    image_hu: np.ndarray,
    pixel_area_mm2: float,
    slice_index: int = 0,
    region: np.ndarray | None = None,
    exclude: np.ndarray | None = None,
    min_area_mm2: float = MIN_LESION_AREA_MM2,
) -> tuple[np.ndarray, list[SliceLesion]]:
    """The lesions of one axial slice: (component label image, lesions of at least ``min_area_mm2``).

    ``exclude`` (bool) removes pixels before the components are formed (bone).  ``region``
    (bool) is the scoring region (the heart): a component counts when at least half of its
    pixels lie inside it, and then counts whole, so that a plaque on the region's edge is
    neither cut in two nor dropped.
    """
    if image_hu.ndim != 2:
        raise ValueError(f"a slice must be 2-D, got shape {image_hu.shape}")
    if not (np.isfinite(pixel_area_mm2) and pixel_area_mm2 > 0):
        raise ValueError(f"pixel area must be a positive number of mm², got {pixel_area_mm2!r}")
    candidates = image_hu >= CALCIUM_THRESHOLD_HU
    for name, mask in (("region", region), ("exclude", exclude)):
        if mask is not None and mask.shape != image_hu.shape:
            raise ValueError(f"{name} shape {mask.shape} differs from the slice shape {image_hu.shape}")
    if exclude is not None:
        candidates &= ~exclude
    labels, n = ndimage.label(candidates, structure=_EIGHT_CONNECTED)
    if n == 0:
        return labels, []
    # bincount over the candidate pixels only: one pass each, much cheaper than ndimage's per-label statistics.
    where = np.flatnonzero(labels)
    flat = labels.ravel()[where]
    values = image_hu.ravel()[where].astype(np.float64)
    counts = np.bincount(flat, minlength=n + 1)
    inside = np.bincount(flat, weights=region.ravel()[where], minlength=n + 1) if region is not None else counts
    sums = np.bincount(flat, weights=values, minlength=n + 1)
    peaks = np.full(n + 1, -np.inf)
    np.maximum.at(peaks, flat, values)
    index = np.arange(1, n + 1)
    counts, inside, means, peaks = counts[1:], inside[1:], sums[1:] / np.maximum(counts[1:], 1), peaks[1:]
    lesions = []
    # A small tolerance so that a lesion of exactly 1 mm² (e.g. 4 pixels of 0.5 mm) is kept despite float rounding.
    tolerance = 1e-9 * max(1.0, min_area_mm2)
    for label, count, n_inside, peak, mean in zip(index, counts, inside, peaks, means):
        area = float(count) * pixel_area_mm2
        if area + tolerance >= min_area_mm2 and 2 * n_inside >= count:
            lesions.append(SliceLesion(slice_index, int(label), area, float(peak), float(mean), int(count)))
    return labels, lesions


@dataclass(frozen=True)
class CalciumScores:
    """Agatston, volume and (optionally) mass score of a set of slice lesions."""

    agatston: float
    volume_mm3: float
    mass_mg: float | None
    n_slice_lesions: int


def score_lesions(
    lesions: list[SliceLesion],
    increment_mm: float,
    mass_calibration_mg_per_cm3_per_hu: float | None = None,
) -> CalciumScores:
    """Agatston (scaled to 3 mm), volume (mm³) and mass (mg, only with a calibration) of ``lesions``."""
    scale = agatston_scale(increment_mm)
    agatston = scale * sum(lesion.agatston_area_weight for lesion in lesions)
    volume = increment_mm * sum(lesion.area_mm2 for lesion in lesions)
    mass = None
    if mass_calibration_mg_per_cm3_per_hu is not None:
        factor = float(mass_calibration_mg_per_cm3_per_hu)
        if not (np.isfinite(factor) and factor > 0):
            raise ValueError(f"mass calibration factor must be a positive number (mg HA/cm³ per HU), got {factor!r}")
        # mg = (mg/cm³ per HU) x HU x cm³
        mass = factor * sum(lesion.mean_hu * lesion.area_mm2 * increment_mm / 1000.0 for lesion in lesions)
    return CalciumScores(float(agatston), float(volume), None if mass is None else float(mass), len(lesions))


def cac_drs_category(total_agatston: float) -> int:
    """CAC-DRS Agatston category 0-3 of a total Agatston score (Hecht et al. 2018)."""
    if not (np.isfinite(total_agatston) and total_agatston >= 0):
        raise ValueError(f"an Agatston score must be a non-negative number, got {total_agatston!r}")
    rounded = round(total_agatston)
    if rounded == 0 and total_agatston > 0:
        rounded = 1  # any counted lesion is calcium present (CAC > 0), however small
    if rounded == 0:
        return 0
    if rounded < 100:
        return 1
    if rounded < 300:
        return 2
    return 3


def cac_drs_label(total_agatston: float, n_vessels: int) -> str:
    """CAC-DRS as reported, e.g. ``"A2/N3"`` (``"A0"`` without calcium: no vessel modifier)."""
    if not 0 <= n_vessels <= 4:
        raise ValueError(f"the CAC-DRS vessel count is 0-4 (LM, LAD, LCX, RCA), got {n_vessels}")
    category = cac_drs_category(total_agatston)
    if category == 0:
        return "A0"
    return f"A{category}/N{max(1, n_vessels)}"
