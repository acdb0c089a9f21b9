"""The heart region of a non-contrast chest CT and the exclusions, by classical image processing.

Method (every step is an approximation stated here, so a reader can judge where it fails):

1. **Body** per slice: pixels above -500 HU, the largest 2-D component, holes filled.
2. **Lungs**: air (below -400 HU) inside the body, components of at least 400 mm².
3. **Mediastinum**: inside the per-slice convex hull of the lungs, not lung, above
   -300 HU (soft tissue, epicardial fat, vessels, calcium and bone).
4. **Bone**: 3-D components of >= 130 HU voxels larger than ``BONE_MIN_VOLUME_MM3``
   (spine, sternum, ribs are long continuous structures; a single coronary plaque is far
   smaller), with a margin of one block of the coarse grid (about 2 mm); excluded from scoring.
5. **Heart core**: on slices whose lung area is at least ``MIN_LUNG_FRACTION`` (60 %) of the
   largest (below the heart the lung bases are thin crescents whose hull holds the liver
   dome), the mediastinum opened per slice with a disk of radius
   ``OPENING_RADIUS_MM`` (20 mm).  Opening keeps what a 40 mm disk fits into: the heart
   (8-12 cm across) survives, the aorta (up to 40 mm across), the other great vessels,
   the oesophagus and the spine between the lungs do not.  The largest 3-D connected
   component of what remains is the heart core, cut to the contiguous slices around its
   widest slice whose area is at least 40 % of the widest (the heart is the widest
   part of the mediastinum; what survives the opening above it is the anterior
   mediastinum between the lungs' anterior edges, not heart), extended towards the head
   while the core continues, up to ``HEART_HEIGHT_MM`` (100 mm) above the run's lowest
   slice, so that the narrower heart base (aortic root, left main) stays in.
6. **Heart region**: the core dilated by ``HEART_MARGIN_MM`` (the coronary arteries run
   in the epicardial fat on the heart's surface), inside the mediastinum, minus bone.

Known limits: the aortic root and the ascending aorta where they lie against the heart
are inside the region, so aortic-root and valve calcium next to the coronary ostia can
be counted; pericardial calcification would be counted; a heart narrower than 40 mm on
every slice (not an adult heart) is not found.

**Artery territories** (an approximation by position, not a vessel tracking): around the
heart core's centroid in the axial plane, the angle of a lesion's centroid from anterior
towards the patient's left is 0 degrees.  Lesions in the cranial ``LM_BAND_MM`` of the core
on the left (angle -20 to 180 degrees) are LM; otherwise -20 to 70 degrees is LAD
(anterior interventricular groove), 70 to 180 degrees LCX (left atrioventricular groove)
and the rest, the patient's right and the inferior-posterior right, RCA (right
atrioventricular groove).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

BODY_HU = -500.0
LUNG_HU = -400.0
MEDIASTINUM_HU = -300.0
BONE_HU = 130.0
MIN_LUNG_AREA_MM2 = 400.0
BONE_MIN_VOLUME_MM3 = 2000.0
COARSE_PIXEL_MM = 2.0
OPENING_RADIUS_MM = 20.0
HEART_MARGIN_MM = 8.0
BLOOD_POOL_DEPTH_MM = 20.0
LM_BAND_MM = 25.0
MIN_SLICE_AREA_FRACTION = 0.4
MIN_LUNG_FRACTION = 0.6
HEART_HEIGHT_MM = 100.0

ARTERIES = ("LM", "LAD", "LCX", "RCA")


@dataclass
class HeartRegion:
    """Masks on the volume grid (z, y, x) and the heart core's geometry."""

    region: np.ndarray  # where calcium is scored
    core: np.ndarray  # the opened mediastinum's largest component (the heart)
    bone: np.ndarray  # excluded high-density structures (dilated)
    blood_pool_hu: float | None  # median HU deeper than BLOOD_POOL_DEPTH_MM inside the mediastinum; None when none is that deep


def _largest_component_filled(mask: np.ndarray) -> np.ndarray:
    labels, n = ndimage.label(mask)
    if n == 0:
        return mask
    sizes = ndimage.sum_labels(mask, labels, np.arange(1, n + 1))
    largest = labels == (int(np.argmax(sizes)) + 1)
    return ndimage.binary_fill_holes(largest)


def _convex_hull_mask(mask: np.ndarray) -> np.ndarray:
    """The filled convex hull of a 2-D mask (half-plane test against the hull's facets)."""
    points = np.argwhere(mask)
    if len(points) < 3:
        return mask.copy()
    try:
        hull = ConvexHull(points)
    except QhullError:  # collinear points: no area
        return mask.copy()
    rows, cols = np.indices(mask.shape)
    inside = np.ones(mask.shape, dtype=bool)
    for a, b, c in hull.equations:
        inside &= a * rows + b * cols + c <= 1e-9
    return inside | mask


def _erode_mm(mask: np.ndarray, radius_mm: float, spacing_yx: tuple[float, float]) -> np.ndarray:
    if not mask.any():
        return mask.copy()
    return ndimage.distance_transform_edt(mask, sampling=spacing_yx) > radius_mm


def _dilate_mm(mask: np.ndarray, radius_mm: float, spacing_yx: tuple[float, float]) -> np.ndarray:
    if not mask.any():
        return mask.copy()
    return ndimage.distance_transform_edt(~mask, sampling=spacing_yx) <= radius_mm


def bone_mask(voxels: np.ndarray, spacing_zyx: tuple[float, float, float]) -> np.ndarray:
    """High-density 3-D components too large to be a coronary plaque (full resolution, not dilated)."""
    dense = voxels >= BONE_HU
    labels, n = ndimage.label(dense)
    if n == 0:
        return dense
    voxel_mm3 = float(np.prod(spacing_zyx))
    sizes = np.bincount(labels.ravel(), minlength=n + 1) * voxel_mm3
    sizes[0] = 0
    big = sizes >= BONE_MIN_VOLUME_MM3
    return big[labels]


def _block_factor(spacing_yx: tuple[float, float]) -> int:
    return max(1, int(round(COARSE_PIXEL_MM / min(spacing_yx))))


def _pool(array: np.ndarray, factor: int, how: str) -> np.ndarray:
    """Block mean (``"mean"``) or block any (``"any"``) over ``factor`` x ``factor`` pixels, edges padded."""
    if factor == 1:
        return array
    z, y, x = array.shape
    py, px = -y % factor, -x % factor
    padded = np.pad(array, ((0, 0), (0, py), (0, px)), mode="edge")
    blocks = padded.reshape(z, (y + py) // factor, factor, (x + px) // factor, factor)
    return blocks.mean(axis=(2, 4), dtype=np.float32) if how == "mean" else blocks.any(axis=(2, 4))


def _unpool(mask: np.ndarray, factor: int, shape: tuple[int, ...]) -> np.ndarray:
    if factor == 1:
        return mask
    return np.repeat(np.repeat(mask, factor, axis=1), factor, axis=2)[:, : shape[1], : shape[2]]


def heart_region(voxels: np.ndarray, spacing_zyx: tuple[float, float, float], superior: int = 1) -> HeartRegion:
    """The heart region of a chest CT in HU (see the module docstring for the method).

    The anatomy (body, lungs, mediastinum, opening) is found on a grid of about
    ``COARSE_PIXEL_MM`` pixels (block means): the region is a coarse anatomical mask
    with an 8 mm margin, and the fine grid would cost ten times as much for nothing.
    Bone is found on the full grid; a block holding any bone voxel is bone (which makes
    the bone margin one block, about 2 mm).
    """
    factor = _block_factor((spacing_zyx[1], spacing_zyx[2]))
    spacing_yx = (spacing_zyx[1] * factor, spacing_zyx[2] * factor)
    pixel_mm2 = spacing_yx[0] * spacing_yx[1]
    coarse = _pool(voxels, factor, "mean")
    bone_coarse = _pool(bone_mask(voxels, spacing_zyx), factor, "any")
    mediastinum = np.zeros(coarse.shape, dtype=bool)
    opened = np.zeros(coarse.shape, dtype=bool)
    deep_all = np.zeros(coarse.shape, dtype=bool)
    lung_area = np.zeros(coarse.shape[0])
    for z, image in enumerate(coarse):
        body = _largest_component_filled(image > BODY_HU)
        air = (image < LUNG_HU) & body
        labels, n = ndimage.label(air)
        if n == 0:
            continue
        sizes = np.bincount(labels.ravel(), minlength=n + 1) * pixel_mm2
        sizes[0] = 0
        lungs = (sizes >= MIN_LUNG_AREA_MM2)[labels]
        if not lungs.any():
            continue
        lung_area[z] = float(lungs.sum())
        hull = _convex_hull_mask(lungs)
        mediastinum[z] = hull & ~lungs & body & (image > MEDIASTINUM_HU)
        core = _erode_mm(mediastinum[z] & ~bone_coarse[z], OPENING_RADIUS_MM, spacing_yx)
        opened[z] = _dilate_mm(core, OPENING_RADIUS_MM, spacing_yx) & mediastinum[z]
        # The blood pool is measured deep inside the mediastinum *with* its dense voxels: an iodinated heart is
        # one large >= 130 HU structure that the bone rule would otherwise remove before it could be measured.
        deep_all[z] = _erode_mm(mediastinum[z], BLOOD_POOL_DEPTH_MM, spacing_yx)
    blood_pool = float(np.median(coarse[deep_all])) if deep_all.any() else None
    # Below the heart the lung bases are thin crescents around the liver dome, whose hull holds the liver:
    # slices with little lung are not heart slices.
    opened[lung_area < MIN_LUNG_FRACTION * lung_area.max(initial=0.0)] = False
    labels, n = ndimage.label(opened)
    if n == 0:
        empty = np.zeros(voxels.shape, dtype=bool)
        return HeartRegion(empty, empty, _unpool(bone_coarse, factor, voxels.shape), blood_pool)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    sizes[0] = 0
    core = _heart_slices(labels == int(np.argmax(sizes)), spacing_zyx[0], superior)
    region = np.stack([_dilate_mm(c, HEART_MARGIN_MM, spacing_yx) if c.any() else c for c in core]) & mediastinum & ~bone_coarse
    shape = voxels.shape
    return HeartRegion(_unpool(region, factor, shape), _unpool(core, factor, shape), _unpool(bone_coarse, factor, shape), blood_pool)


def _heart_slices(core: np.ndarray, increment_mm: float, superior: int) -> np.ndarray:
    """Cut the core to the heart's slices (see step 5 of the module docstring).

    The run of contiguous slices around the widest whose area is at least
    ``MIN_SLICE_AREA_FRACTION`` of the widest, extended towards the head (``superior``: +1 when
    the slice index grows towards the head, -1 otherwise) while the core continues, up to
    ``HEART_HEIGHT_MM`` above the run's lowest slice: the heart base (aortic root, left main)
    is narrower than the ventricles and the 40 % rule alone cuts it off.
    """
    areas = core.sum(axis=(1, 2))
    if not areas.any():
        return core
    widest = int(np.argmax(areas))
    keep = areas >= MIN_SLICE_AREA_FRACTION * areas[widest]
    lo = widest
    while lo > 0 and keep[lo - 1]:
        lo -= 1
    hi = widest
    while hi < len(areas) - 1 and keep[hi + 1]:
        hi += 1
    reach = int(HEART_HEIGHT_MM // increment_mm)
    if superior >= 0:
        while hi < min(len(areas) - 1, lo + reach) and areas[hi + 1] > 0:
            hi += 1
    else:
        while lo > max(0, hi - reach) and areas[lo - 1] > 0:
            lo -= 1
    cut = core.copy()
    cut[:lo] = False
    cut[hi + 1 :] = False
    return cut


def artery_of(
    lesion_zyx: tuple[float, float, float],
    core_centroid_zyx: tuple[float, float, float],
    core_top_z: float,
    affine_lps: np.ndarray,
) -> str:
    """The artery territory (LM, LAD, LCX, RCA) of a lesion centroid, in voxel indices, by the rule in the module docstring."""

    def lps(zyx: tuple[float, float, float]) -> np.ndarray:
        z, y, x = zyx
        return (affine_lps @ np.array([x, y, z, 1.0]))[:3]

    lesion = lps(lesion_zyx)
    centre = lps(core_centroid_zyx)
    top = lps((core_top_z, core_centroid_zyx[1], core_centroid_zyx[2]))
    left = lesion[0] - centre[0]  # LPS x grows towards the patient's left
    anterior = centre[1] - lesion[1]  # LPS y grows towards posterior
    angle = math.degrees(math.atan2(left, anterior))  # 0 anterior, +90 patient left, +-180 posterior, -90 right
    on_left = -20.0 <= angle <= 180.0
    if on_left and abs(top[2] - lesion[2]) <= LM_BAND_MM:
        return "LM"
    if -20.0 <= angle < 70.0:
        return "LAD"
    if 70.0 <= angle <= 180.0:
        return "LCX"
    return "RCA"
