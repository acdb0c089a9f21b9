"""Organ attenuation away from vessels, lesions and edges; steatosis grade; focal lesion candidates.

Attenuation (:func:`parenchyma`): the organ mask is eroded in-plane by :data:`EROSION_MM` (partial volume
with fat, lung, bowel at the edge), lesion candidates are removed, and of what is left only the voxels
whose locally smoothed value (3 x 3 in-plane median) lies within max(:data:`BAND_MIN_HU`, 2.5 robust SD)
of the organ's median are kept: this drops vessels (bright after contrast, dark before) and small
lesions.  Mean and median are of the original HU of the kept voxels.

Steatosis grade (non-contrast CT only; thresholds from biopsy-controlled studies):

* liver < 40 HU or liver minus spleen < -10 HU: moderate-to-severe steatosis (>= 30 % fat)
  (Kodama Y et al., AJR 2007;188:1307-1312; Park SH et al., Radiology 2006;239:105-112);
* liver 40-48 HU: moderate-to-severe steatosis likely (48 HU was 100 % specific for >= 30 % fat:
  Pickhardt PJ et al., Eur Radiol 2012;22:1075-1082);
* liver minus spleen < 1 HU (otherwise): mild steatosis possible (below the reference range 1-18 HU of
  biopsy-proven non-steatotic livers: Park YS et al., Radiology 2011;258:760-766);
* otherwise: no steatosis by these CT criteria.

On contrast-enhanced CT no grade is given: liver and spleen enhance differently with timing and
protocol, so these unenhanced thresholds do not apply.

Lesion candidates (:func:`lesion_candidates`; classical; CANDIDATES, NOT VALIDATED ON A COHORT): inside
the liver with its holes filled (slice by slice), the volume is smoothed (3 x 3 in-plane median, then a
Gaussian of 1 mm); voxels below the parenchymal median by more than max(:data:`HYPO_DELTA_HU`, 3 robust SD)
are hypo-attenuating, above it by more than max(:data:`HYPER_DELTA_HU`, 3 robust SD) hyper-attenuating
(hyper-attenuating ones only on non-contrast CT: after contrast, vessels cut across are bright and round).
Connected components (26-neighbourhood) are kept when their equivalent-sphere diameter is at least
:data:`MIN_DIAMETER_MM` and they are roughly round (ratio of the largest to the smallest principal axis
at most :data:`MAX_ELONGATION`), which drops tubular vessels.  The parameters were set on the one
3D-IRCADb patient, whose two tumours are the only reference here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

EROSION_MM = 5.0
BAND_MIN_HU = 20.0
HYPO_DELTA_HU = 20.0
HYPER_DELTA_HU = 40.0
MIN_DIAMETER_MM = 5.0
MAX_ELONGATION = 3.0
MAX_CANDIDATES = 10

GRADE_NONE = "no steatosis by CT criteria"
GRADE_MILD = "mild steatosis possible"
GRADE_MODERATE_LIKELY = "moderate-to-severe steatosis likely"
GRADE_MODERATE = "moderate-to-severe steatosis"


def _robust_sd(values: np.ndarray) -> float:
    return float(1.4826 * np.median(np.abs(values - np.median(values)))) if values.size else 0.0


def _bbox(mask: np.ndarray) -> tuple[slice, ...]:
    found = ndi.find_objects(mask.astype(np.uint8))
    return found[0] if found and found[0] is not None else tuple(slice(0, 0) for _ in mask.shape)


def _disc_struct(radius_mm: float, spacing_rc: tuple[float, float]) -> np.ndarray:
    ry, rx = radius_mm / spacing_rc[0], radius_mm / spacing_rc[1]
    y, x = np.ogrid[-int(ry) : int(ry) + 1, -int(rx) : int(rx) + 1]
    disc = ((y / max(ry, 0.5)) ** 2 + (x / max(rx, 0.5)) ** 2) <= 1.0
    return disc[np.newaxis]


def in_plane_median(hu: np.ndarray, organ: np.ndarray) -> np.ndarray:
    """The 3 x 3 in-plane median of ``hu`` over the organ's bounding box: what :func:`parenchyma` and
    :func:`lesion_candidates` smooth with, computed once by a caller that measures the same organ several times."""
    return np.asarray(ndi.median_filter(hu[_bbox(organ)], size=(1, 3, 3)))


@dataclass(frozen=True)
class Attenuation:
    mean_hu: float
    median_hu: float
    voxels: int
    sd_hu: float


def parenchyma(
    hu: np.ndarray,
    organ: np.ndarray,
    spacing_zrc: tuple[float, float, float],
    exclude: np.ndarray | None = None,
    smoothed: np.ndarray | None = None,
) -> Attenuation | None:
    """Mean and median HU of the organ's parenchyma (see the module text); None when too little is left.
    ``smoothed``: :func:`in_plane_median` of this organ, when the caller has it already."""
    box = _bbox(organ)
    if organ[box].sum() == 0:
        return None
    sub_hu = hu[box]
    sub = organ[box]
    eroded = ndi.binary_erosion(sub, structure=_disc_struct(EROSION_MM, spacing_zrc[1:]), border_value=0)
    if eroded.sum() < 50:
        eroded = sub
    if exclude is not None:
        eroded &= ~exclude[box]
    smooth = in_plane_median(hu, organ) if smoothed is None else smoothed
    values = smooth[eroded]
    if values.size < 50:
        return None
    median = float(np.median(values))
    band = max(BAND_MIN_HU, 2.5 * _robust_sd(values))
    keep = eroded & (np.abs(smooth - median) <= band)
    raw = sub_hu[keep].astype(np.float64)
    if raw.size < 50:
        return None
    return Attenuation(float(raw.mean()), float(np.median(raw)), int(raw.size), float(raw.std()))


def steatosis_grade(liver_hu: float, liver_minus_spleen: float | None) -> tuple[str, str]:
    """The grade and the rule that gave it (non-contrast CT only)."""
    diff = liver_minus_spleen
    if liver_hu < 40.0:
        return GRADE_MODERATE, f"liver {liver_hu:.0f} HU < 40 HU (Kodama 2007)"
    if diff is not None and diff < -10.0:
        return GRADE_MODERATE, f"liver - spleen {diff:.0f} HU < -10 HU (Park 2006)"
    if liver_hu < 48.0:
        return GRADE_MODERATE_LIKELY, f"liver {liver_hu:.0f} HU < 48 HU (Pickhardt 2012, 100 % specific)"
    if diff is not None and diff < 1.0:
        return GRADE_MILD, f"liver - spleen {diff:.0f} HU < 1 HU, below the normal range 1-18 HU (Park 2011)"
    if diff is None:
        return GRADE_NONE, f"liver {liver_hu:.0f} HU >= 48 HU (no spleen value for the difference)"
    return GRADE_NONE, f"liver {liver_hu:.0f} HU >= 48 HU and liver - spleen {diff:.0f} HU >= 1 HU"


@dataclass(frozen=True)
class LesionCandidate:
    mask_index: int  # label value in the candidate label volume
    kind: str  # "hypo-attenuating" or "hyper-attenuating"
    center_zyx: tuple[float, float, float]
    diameter_mm: float  # longest axial diameter, on the slice where it is largest
    volume_ml: float
    mean_hu: float


def _longest_axial_diameter(mask2d: np.ndarray, spacing_rc: tuple[float, float], origin_rc: tuple[int, int] = (0, 0)) -> float:
    """``mask2d`` may be a crop of the slice around the lesion, whose first pixel is ``origin_rc`` of the slice."""
    edge = mask2d & ~ndi.binary_erosion(mask2d)
    pts = (np.argwhere(edge) + np.array(origin_rc)).astype(np.float64) * np.array(spacing_rc)
    if len(pts) > 400:
        pts = pts[:: int(np.ceil(len(pts) / 400))]
    if len(pts) < 2:
        return float(max(spacing_rc))
    d = np.sqrt(((pts[:, None, :] - pts[None, :, :]) ** 2).sum(axis=-1)).max()
    return float(d + max(spacing_rc))  # edge pixel centres to pixel edges


def lesion_candidates(
    hu: np.ndarray,
    liver: np.ndarray,
    spacing_zrc: tuple[float, float, float],
    reference: Attenuation,
    *,
    include_hyper: bool = True,
    smoothed: np.ndarray | None = None,
) -> tuple[np.ndarray, list[LesionCandidate]]:
    """Label volume of the candidates (1..n, by decreasing volume) and their descriptions.

    ``include_hyper=False`` (contrast-enhanced CT): enhanced vessels cut across are bright and round, so only
    hypo-attenuating candidates are reported.  ``smoothed``: :func:`in_plane_median` of the liver, when the
    caller has it already."""
    out = np.zeros(hu.shape, dtype=np.uint16)
    box = _bbox(liver)
    if liver[box].sum() == 0:
        return out, []
    filled = np.stack([ndi.binary_fill_holes(s) for s in liver[box]])
    sub_hu = hu[box]
    smooth = in_plane_median(hu, liver) if smoothed is None else smoothed
    smooth = ndi.gaussian_filter(smooth, sigma=(0.0, 1.0 / spacing_zrc[1], 1.0 / spacing_zrc[2]))
    sd = reference.sd_hu
    hypo = filled & (smooth < reference.median_hu - max(HYPO_DELTA_HU, 3.0 * sd))
    hyper = filled & (smooth > reference.median_hu + max(HYPER_DELTA_HU, 3.0 * sd))
    voxel_ml = float(np.prod(spacing_zrc)) / 1000.0
    # each component is handled inside its own bounding box (find_objects), not as a mask of the whole liver box;
    # coordinates are shifted back to the liver box before any arithmetic, so the results are the same
    found: list[tuple[float, np.ndarray, int, tuple[slice, ...], str]] = []
    kinds = [("hypo-attenuating", hypo)] + ([("hyper-attenuating", hyper)] if include_hyper else [])
    for kind, mask in kinds:
        labels, n = ndi.label(mask, structure=np.ones((3, 3, 3), dtype=bool))
        if n == 0:
            continue
        sizes = np.bincount(labels.ravel())
        boxes = ndi.find_objects(labels)
        min_voxels = (np.pi / 6.0 * MIN_DIAMETER_MM**3) / float(np.prod(spacing_zrc))
        for index in np.flatnonzero(sizes >= max(min_voxels, 4)):
            if index == 0:
                continue
            where = boxes[index - 1]
            assert where is not None  # a label with voxels has a box
            starts = np.array([sl.start for sl in where])
            pts = (np.argwhere(labels[where] == index) + starts).astype(np.float64) * np.array(spacing_zrc)
            eig = np.linalg.eigvalsh(np.cov(pts.T)) if len(pts) > 3 else np.ones(3)
            if eig.min() <= 0 or np.sqrt(eig.max() / eig.min()) > MAX_ELONGATION:
                continue
            found.append((float(sizes[index]), labels, int(index), where, kind))
    found.sort(key=lambda t: -t[0])
    candidates: list[LesionCandidate] = []
    offset = np.array([s.start for s in box], dtype=np.float64)
    out_box = out[box]
    for number, (size, labels, index, where, kind) in enumerate(found[:MAX_CANDIDATES], start=1):
        comp = labels[where] == index
        starts = np.array([sl.start for sl in where])
        out_box[where][comp] = number
        k = int(np.argmax(comp.sum(axis=(1, 2))))
        # the centre of mass as scipy computes it over the liver box: sums of integer coordinates are exact
        centre = (np.argwhere(comp) + starts).sum(axis=0) / float(comp.sum()) + offset
        candidates.append(
            LesionCandidate(
                number,
                kind,
                (float(centre[0]), float(centre[1]), float(centre[2])),
                _longest_axial_diameter(comp[k], spacing_zrc[1:], (int(starts[1]), int(starts[2]))),
                size * voxel_ml,
                float(sub_hu[where][comp].mean()),
            )
        )
    return out, candidates
