"""Classical, threshold-based lung segmentation for chest CT.

Method
------
The method uses intensities, connected components and shape rules; no trained
model.  It has a 2-D core that runs on one axial slice
(:func:`segment_lungs_slice`), and a 3-D pipeline (:func:`segment_lungs`) that
runs the same core on every slice and then cleans up and splits the result in 3-D.

1. **Thresholds** (:func:`estimate_thresholds`).  Otsu's method on the values
   clipped to [-1200, 300] gives a first body mask.  Otsu's method again on the
   values *inside* the body separates lung and airways (low class) from soft
   tissue (high class), whatever the amount of outside air.  That threshold is
   the *body* threshold.  The *lung* threshold sits a fixed fraction
   (``lung_offset_fraction``, default 0.1) of the distance between the two
   class means above it.  This puts the lung boundary close to where a human
   reader traces it (the fraction was chosen on the ct-lung-slices manual
   masks).  Both thresholds come from the image's own histogram, so the method
   also works on scans whose values are not calibrated HU.  On the shared
   chest CT series they come out near -420 HU (body) and -335 HU (lung).
   Fixed thresholds can be given instead.
2. **Body** (per slice).  The largest connected component at or above the body
   threshold, with its holes filled.  This removes outside air, the table and
   padding.
3. **Lung candidates** (per slice).  Voxels inside the body and below the lung
   threshold, as connected components.  Three kinds are dropped.  Components
   that touch the outside of the body are the partial-volume rim at the skin.
   Components whose mean is not below the body threshold, or whose largest
   inscribed radius is under ``min_thickness_mm``, are streak artefacts in
   soft tissue.  Components smaller than ``min_area_mm2`` are noise.
4. **Airways** (per slice).  Components smaller than ``airway_max_area_mm2``
   whose centre is within ``airway_midline_mm`` of the body's left-right centre
   are the trachea, main bronchi or oesophagus, and are removed.
5. **Closing and holes** (per slice).  A small in-plane closing
   (``closing_radius_mm``) smooths the outline.  Holes inside each lung
   component are then filled, so vessels and nodules enclosed by lung count as
   lung.  Concavities open to the mediastinum, such as the hilum, stay outside.
   Steps 1 to 5 are the 2-D core, :func:`segment_lungs_slice`.
6. **3-D clean-up** (volume only).  Steps 2 to 4 run on every slice with the
   volume's thresholds.  Of the result, 3-D connected components of at least
   ``min_lung_volume_ml`` (default 100 mL) whose top reaches the upper third of
   the lungs are kept.  This drops gas in the stomach and bowel.
7. **Left/right** (volume only).  Components lying clearly on one side of the
   body midline get that side.  A component on both sides (lungs joined at the
   anterior or posterior junction line) is eroded in-plane until it falls
   apart into two large parts.  Every voxel of the component then goes to the
   nearer part within its slice.  If erosion never separates the lungs, the
   component is cut at the body midline.  The patient's right lung is the part
   with the lower LPS x, label 1; the left lung is label 2.  Step 5 then runs
   for each lung separately.

Limitations: airways attached to a lung in a slice (lobar bronchi, sometimes a
main bronchus) stay in the lung.  Dense disease touching the chest wall, such
as a tumour, consolidation or effusion, is outside the mask because it is above
the lung threshold.  Slices must be roughly axial.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

logger = logging.getLogger(__name__)

RIGHT_LUNG_LABEL = 1
LEFT_LUNG_LABEL = 2

#: Values outside this window are ignored when estimating thresholds (bone, metal, padding).
HISTOGRAM_WINDOW = (-1200.0, 300.0)
_STRUCT_2D_CROSS = ndi.generate_binary_structure(2, 1)
_STRUCT_2D_FULL = ndi.generate_binary_structure(2, 2)


@dataclass(frozen=True)
class Thresholds:
    """Intensity thresholds in the image's value units.

    Attributes
    ----------
    body
        Voxels at or above it are tissue (the body is built from them).
    lung
        Voxels inside the body and below it are lung candidates.
    """

    body: float
    lung: float

    def __post_init__(self) -> None:
        if not (np.isfinite(self.body) and np.isfinite(self.lung)):
            raise ValueError(f"thresholds must be finite, got body={self.body}, lung={self.lung}")


@dataclass(frozen=True)
class SegmentationParams:
    """Parameters of the lung segmentation (sizes in mm/mm²/mL, so they hold across pixel spacings).

    Attributes
    ----------
    lung_offset_fraction
        Lung threshold = Otsu threshold + this fraction of the distance between
        the Otsu class means (only for adaptive thresholds).
    min_area_mm2
        Smallest lung component kept in one slice.
    min_thickness_mm
        A slice component whose largest inscribed radius is smaller is dropped
        (streak artefacts, rims); so is one whose mean value is not below the body threshold.
    airway_max_area_mm2, airway_midline_mm
        A slice component smaller than the area whose centre lies within this
        distance of the body's left-right centre is taken as airway or oesophagus.
    max_hole_area_mm2
        Holes up to this area are filled (``None``: all holes inside a lung component).
    min_lung_volume_ml
        Smallest 3-D component kept as lung.
    closing_radius_mm
        Radius of the in-plane morphological closing applied to each lung (0: none).
    max_split_erosion_mm
        Largest in-plane erosion tried when separating two joined lungs.
    """

    lung_offset_fraction: float = 0.1
    min_area_mm2: float = 20.0
    min_thickness_mm: float = 1.5
    airway_max_area_mm2: float = 600.0
    airway_midline_mm: float = 30.0
    max_hole_area_mm2: float | None = None
    min_lung_volume_ml: float = 100.0
    closing_radius_mm: float = 2.0
    max_split_erosion_mm: float = 25.0

    def __post_init__(self) -> None:
        for name in (
            "min_area_mm2",
            "min_thickness_mm",
            "airway_max_area_mm2",
            "airway_midline_mm",
            "min_lung_volume_ml",
            "closing_radius_mm",
            "max_split_erosion_mm",
        ):
            value = getattr(self, name)
            if not np.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a non-negative number, got {value!r}")
        if self.max_hole_area_mm2 is not None and self.max_hole_area_mm2 < 0:
            raise ValueError(f"max_hole_area_mm2 must be non-negative or None, got {self.max_hole_area_mm2!r}")
        if not 0 <= self.lung_offset_fraction < 0.5:
            raise ValueError(f"lung_offset_fraction must be in [0, 0.5), got {self.lung_offset_fraction!r}")


DEFAULT_PARAMS = SegmentationParams()


# ---------------------------------------------------------------------------- thresholds
def otsu_threshold(values: np.ndarray, bins: int = 256) -> tuple[float, float, float]:
    """Otsu's threshold of ``values`` and the means of the two classes it separates.

    Parameters
    ----------
    values
        Any array of numbers (flattened).
    bins
        Histogram bins.

    Returns
    -------
    (threshold, low_mean, high_mean)
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size < 2:
        raise ValueError(f"Otsu's method needs at least 2 values, got {values.size}")
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        raise ValueError(f"Otsu's method needs values that vary, all are {lo}")
    counts, edges = np.histogram(values, bins=bins, range=(lo, hi))
    centres = (edges[:-1] + edges[1:]) / 2
    counts = counts.astype(np.float64)
    w0 = np.cumsum(counts)
    w1 = w0[-1] - w0
    s0 = np.cumsum(counts * centres)
    s1 = s0[-1] - s0
    valid = (w0 > 0) & (w1 > 0)
    m0 = np.divide(s0, w0, out=np.zeros_like(s0), where=w0 > 0)
    m1 = np.divide(s1, w1, out=np.zeros_like(s1), where=w1 > 0)
    between = np.where(valid, w0 * w1 * (m0 - m1) ** 2, -1.0)
    # well separated classes leave empty bins between them, where the criterion is flat:
    # take the middle of that plateau rather than its first bin
    first = int(np.argmax(between))
    last = first
    while last + 1 < between.size and between[last + 1] >= between[first] * (1.0 - 1e-9):
        last += 1
    k = (first + last) // 2
    return float(edges[k + 1]), float(m0[k]), float(m1[k])


def _window(values: np.ndarray) -> np.ndarray:
    return values[(values > HISTOGRAM_WINDOW[0]) & (values < HISTOGRAM_WINDOW[1])]


def estimate_thresholds(image: np.ndarray, params: SegmentationParams = DEFAULT_PARAMS) -> Thresholds:
    """Adaptive body and lung thresholds from the image's own histogram (see the module docstring).

    Two passes: Otsu's method on the whole image gives a first body mask per
    slice (every slice of a 2-D image, up to 16 evenly spaced slices of a
    volume); Otsu's method on the values inside those body masks then
    separates lung from soft tissue, whatever the amount of outside air.

    Parameters
    ----------
    image
        A slice ``(rows, columns)`` or a volume ``(z, rows, columns)`` of CT
        values (HU or an uncalibrated HU-like scale).
    params
        ``lung_offset_fraction`` is used.

    Raises
    ------
    ValueError
        When the image has no air/tissue contrast inside the histogram window.
    """
    image = np.asarray(image)
    if image.ndim not in (2, 3):
        raise ValueError(f"image must be 2-D or 3-D, got shape {image.shape}")
    stack = image[np.newaxis] if image.ndim == 2 else image[:: max(1, image.shape[0] // 16)]
    values = _window(stack.ravel())
    if values.size < 100:
        raise ValueError(
            f"too few values between {HISTOGRAM_WINDOW[0]:.0f} and {HISTOGRAM_WINDOW[1]:.0f}: the image does not look like CT in HU"
        )
    first, _, _ = otsu_threshold(values)
    inside = [_window(plane[body_mask_slice(plane, first)]) for plane in stack]
    inside_values = np.concatenate(inside) if inside else np.empty(0)
    if inside_values.size >= 100 and np.ptp(inside_values) > 0:
        body, low_mean, high_mean = otsu_threshold(inside_values)
    else:
        body, low_mean, high_mean = otsu_threshold(values)
    lung = body + params.lung_offset_fraction * (high_mean - low_mean)
    return Thresholds(body=body, lung=lung)


# ---------------------------------------------------------------------------- 2-D core
def _largest_component(mask: np.ndarray, structure: np.ndarray | None = None) -> np.ndarray:
    labels, n = ndi.label(mask, structure=structure)
    if n == 0:
        return np.zeros_like(mask, dtype=bool)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def fill_holes_2d(mask: np.ndarray) -> np.ndarray:
    """Fill the holes of a 2-D mask: background not 4-connected to the image border.

    Same result as :func:`scipy.ndimage.binary_fill_holes`, computed by one labelling pass (faster).
    """
    padded = np.pad(~mask, 1, constant_values=True)
    background, _ = ndi.label(padded, structure=_STRUCT_2D_CROSS)
    outside = background == background[0, 0]
    return ~outside[1:-1, 1:-1]


def body_mask_slice(image: np.ndarray, body_threshold: float) -> np.ndarray:
    """Body of one slice: the largest component at or above ``body_threshold``, holes filled."""
    body = _largest_component(image >= body_threshold, _STRUCT_2D_FULL)
    return fill_holes_2d(body)


def fill_holes_slice(mask: np.ndarray, max_hole_area_px: float | None = None) -> np.ndarray:
    """Fill the holes of each connected component of a 2-D mask separately.

    Filling per component keeps the gap between two components (the mediastinum
    between two lungs) open even when the two components touch front and back.
    Holes larger than ``max_hole_area_px`` pixels stay open when it is given.
    """
    labels, n = ndi.label(mask, structure=_STRUCT_2D_FULL)
    out = mask.copy()
    if n == 0:
        return out
    for index, sl in enumerate(ndi.find_objects(labels), start=1):
        component = labels[sl] == index
        holes = fill_holes_2d(component) & ~component
        if not holes.any():
            continue
        if max_hole_area_px is not None:
            hole_labels, n_holes = ndi.label(holes)
            sizes = np.bincount(hole_labels.ravel())
            small = sizes <= max_hole_area_px
            small[0] = False
            holes = small[hole_labels]
        out[sl] |= holes
    return out


def _slice_lungs(
    image: np.ndarray,
    thresholds: Thresholds,
    spacing_yx: tuple[float, float],
    params: SegmentationParams,
) -> tuple[np.ndarray, np.ndarray]:
    """The 2-D core: (lung mask, body mask) of one slice."""
    sy, sx = spacing_yx
    pixel_area_mm2 = sy * sx
    body = body_mask_slice(image, thresholds.body)
    if not body.any():
        return np.zeros(image.shape, dtype=bool), body
    candidates = (image < thresholds.lung) & body
    labels, n = ndi.label(candidates, structure=_STRUCT_2D_CROSS)
    if n == 0:
        return candidates, body
    flat = labels.ravel()
    counts = np.bincount(flat, minlength=n + 1)
    areas = counts * pixel_area_mm2
    keep = areas >= params.min_area_mm2
    keep[0] = False
    # a component touching the outside of the body is the partial-volume rim at the skin
    outside_rim = ndi.binary_dilation(~body, structure=_STRUCT_2D_FULL)
    keep[np.unique(labels[outside_rim])] = False
    # trachea, main bronchi, oesophagus: small and near the left-right centre of the body
    columns = np.nonzero(body.any(axis=0))[0]
    body_centre_x = (columns[0] + columns[-1]) / 2.0
    _, xx = np.indices(image.shape, sparse=True)
    centre_x = np.bincount(flat, weights=np.broadcast_to(xx, image.shape).ravel(), minlength=n + 1) / np.maximum(counts, 1)
    airway = (areas < params.airway_max_area_mm2) & (np.abs(centre_x - body_centre_x) * sx < params.airway_midline_mm)
    keep &= ~airway
    # streak artefacts in soft tissue are thin and only a little darker than tissue; lung is neither
    mean_value = np.bincount(flat, weights=image.ravel(), minlength=n + 1) / np.maximum(counts, 1)
    keep &= mean_value < thresholds.body
    if params.min_thickness_mm > 0 and keep.any():
        for index, sl in enumerate(ndi.find_objects(labels), start=1):
            if sl is None or not keep[index]:
                continue
            component = np.pad(labels[sl] == index, 1)
            if ndi.distance_transform_edt(component, sampling=(sy, sx)).max() < params.min_thickness_mm:
                keep[index] = False
    lungs = keep[labels]
    max_hole_px = None if params.max_hole_area_mm2 is None else params.max_hole_area_mm2 / pixel_area_mm2
    return fill_holes_slice(lungs, max_hole_px), body


def _check_pixel_spacing(pixel_spacing_mm: tuple[float, float]) -> tuple[float, float]:
    try:
        row, col = (float(v) for v in pixel_spacing_mm)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"pixel_spacing_mm must be two numbers (row, column), got {pixel_spacing_mm!r}") from exc
    if not (np.isfinite(row) and np.isfinite(col) and row > 0 and col > 0):
        raise ValueError(f"pixel_spacing_mm must be positive, got {pixel_spacing_mm!r}")
    return row, col


def segment_lungs_slice(
    image: np.ndarray,
    thresholds: Thresholds | None = None,
    *,
    pixel_spacing_mm: tuple[float, float] = (0.7, 0.7),
    params: SegmentationParams = DEFAULT_PARAMS,
) -> np.ndarray:
    """Segment both lungs (one label) on one axial CT slice.

    Parameters
    ----------
    image
        2-D array ``(rows, columns)`` of CT values, in HU or an uncalibrated HU-like scale.
    thresholds
        Fixed thresholds; ``None`` estimates them from this slice
        (:func:`estimate_thresholds`), which also works on uncalibrated values.
    pixel_spacing_mm
        ``(row, column)`` spacing, used only to turn the size rules into pixels.
        When it is unknown, the default of 0.7 mm is a typical chest CT value.
    params
        Segmentation parameters.

    Returns
    -------
    numpy.ndarray
        Boolean lung mask of the slice's shape.
    """
    if not isinstance(image, np.ndarray):
        raise TypeError(f"image must be a numpy array, got {type(image).__name__}")
    if image.ndim != 2:
        raise ValueError(f"image must be 2-D (rows, columns), got shape {image.shape}")
    row_mm, col_mm = _check_pixel_spacing(pixel_spacing_mm)
    image = np.asarray(image, dtype=np.float32)
    if thresholds is None:
        thresholds = estimate_thresholds(image, params)
    lungs, _ = _slice_lungs(image, thresholds, (row_mm, col_mm), params)
    return close_and_fill_slice(lungs, (row_mm, col_mm), params)


# ---------------------------------------------------------------------------- 3-D pipeline
@dataclass(frozen=True)
class LungSegmentation:
    """Result of :func:`segment_lungs`.

    Attributes
    ----------
    labels
        uint8 array ``(z, y, x)``: 0 background, 1 right lung, 2 left lung.
    body
        Boolean body mask.
    thresholds
        The thresholds used.
    split_method
        How left and right were separated: ``"components"`` (already apart),
        ``"erosion"`` (joined lungs separated by erosion) or ``"midline"``
        (fallback: a cut at the body midline).
    """

    labels: np.ndarray
    body: np.ndarray
    thresholds: Thresholds
    split_method: str


def _disk(radius_px_y: float, radius_px_x: float) -> np.ndarray:
    ry, rx = max(int(np.floor(radius_px_y)), 0), max(int(np.floor(radius_px_x)), 0)
    y, x = np.ogrid[-ry : ry + 1, -rx : rx + 1]
    return ((y / max(radius_px_y, 1e-9)) ** 2 + (x / max(radius_px_x, 1e-9)) ** 2) <= 1.0


def _keep_lung_components(candidates: np.ndarray, ml_per_voxel: float, head_is_high_z: bool, params: SegmentationParams) -> np.ndarray:
    """Keep 3-D components large enough to be lung whose top reaches the upper part of the lungs."""
    if not head_is_high_z:
        return _keep_lung_components(candidates[::-1], ml_per_voxel, True, params)[::-1]
    labels, n = ndi.label(candidates)
    if n == 0:
        return candidates
    volumes = np.bincount(labels.ravel(), minlength=n + 1) * ml_per_voxel
    volumes[0] = 0
    big = np.nonzero(volumes >= params.min_lung_volume_ml)[0]
    if big.size == 0:
        return np.zeros_like(candidates)
    slices = ndi.find_objects(labels)
    largest = int(big[np.argmax(volumes[big])])
    top_z = slices[largest - 1][0].stop
    bottom_z = slices[largest - 1][0].start
    extent = max(top_z - bottom_z, 1)
    keep = np.zeros(n + 1, dtype=bool)
    for index in big:
        z_range = slices[index - 1][0]
        # gas below the diaphragm (stomach, bowel) does not reach the upper third of the lungs
        reaches_upper_part = z_range.stop >= top_z - extent / 3.0
        keep[index] = reaches_upper_part or index == largest
        if not keep[index]:
            logger.debug("dropped a %.0f mL air component below the lungs", volumes[index])
    return keep[labels]


def _assign_to_nearest_seed(seeds: np.ndarray, mask: np.ndarray, spacing_yx: tuple[float, float]) -> np.ndarray:
    """Give every voxel of ``mask`` the label of the nearest seed pixel in its slice.

    A slice without seeds (e.g. a lung tip that erosion removed) uses the seeds
    of the nearest slice that has some.  Lungs do not interleave within a
    slice, so in-plane nearest-seed assignment separates them along the gap
    that erosion opened.
    """
    out = np.zeros(mask.shape, dtype=np.uint8)
    seeded = np.nonzero(seeds.any(axis=(1, 2)))[0]
    if seeded.size == 0:
        return out
    nearest_cache: dict[int, np.ndarray] = {}
    for z in np.nonzero(mask.any(axis=(1, 2)))[0]:
        source = int(seeded[np.argmin(np.abs(seeded - z))])
        if source not in nearest_cache:
            indices = ndi.distance_transform_edt(seeds[source] == 0, sampling=spacing_yx, return_distances=False, return_indices=True)
            nearest_cache[source] = seeds[source][indices[0], indices[1]]
        out[z][mask[z]] = nearest_cache[source][mask[z]]
    return out


def _split_by_erosion(component: np.ndarray, spacing_zyx: tuple[float, float, float], params: SegmentationParams) -> np.ndarray | None:
    """Separate two joined lungs: erode in-plane until two large parts appear, then grow them back.

    Returns a uint8 array (1 and 2 for the two parts, unordered) or ``None`` when erosion never separates them.
    """
    _, sy, sx = spacing_zyx
    # in-plane distance to the background, slice by slice: erosion by a disk of radius r == distance > r
    distance = np.zeros(component.shape, dtype=np.float32)
    for z in range(component.shape[0]):
        if component[z].any():
            distance[z] = ndi.distance_transform_edt(component[z], sampling=(sy, sx))
    total = int(component.sum())
    step = max(min(sy, sx), 0.5)
    radius = step
    while radius <= params.max_split_erosion_mm:
        eroded = distance > radius
        labels, n = ndi.label(eroded)
        if n >= 2:
            sizes = np.bincount(labels.ravel())
            sizes[0] = 0
            order = np.argsort(sizes)[::-1]
            first, second = int(order[0]), int(order[1])
            if sizes[second] >= 0.1 * sizes[first] and sizes[second] >= 0.01 * total:
                seeds = np.zeros(component.shape, dtype=np.uint8)
                seeds[labels == first] = 1
                seeds[labels == second] = 2
                return _assign_to_nearest_seed(seeds, component, (sy, sx))
        radius += step
    return None


def _lateral_position_mm(volume_shape: tuple[int, int, int], spacing_zyx, direction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Patient x (LPS, mm, relative to voxel 0) contributed by the row and column index."""
    _, sy, sx = spacing_zyx
    per_column = direction[0][0] * sx * np.arange(volume_shape[2])
    per_row = direction[1][0] * sy * np.arange(volume_shape[1])
    return per_row, per_column


def _split_left_right(
    lungs: np.ndarray,
    body: np.ndarray,
    spacing_zyx: tuple[float, float, float],
    direction: np.ndarray,
    params: SegmentationParams,
) -> tuple[np.ndarray, str]:
    """Label the patient's right lung 1 and left lung 2."""
    shape = lungs.shape
    per_row, per_column = _lateral_position_mm(shape, spacing_zyx, direction)
    # patient x of every voxel (relative): x depends on the row and column index (and slice, ignored for axial)
    patient_x = per_row[:, np.newaxis] + per_column[np.newaxis, :]
    # left-right body centre per slice, in the same units
    body_centre = np.zeros(shape[0])
    for z in range(shape[0]):
        xs = patient_x[body[z]]
        body_centre[z] = (xs.min() + xs.max()) / 2.0 if xs.size else np.nan
    if np.all(np.isnan(body_centre)):
        body_centre[:] = 0.0
    else:
        body_centre = np.where(np.isnan(body_centre), np.nanmedian(body_centre), body_centre)
    # side of every voxel: negative = patient right (lower LPS x)
    out = np.zeros(shape, dtype=np.uint8)
    labels, n = ndi.label(lungs)
    method = "components"
    for index, sl in enumerate(ndi.find_objects(labels), start=1):
        component = labels[sl] == index
        offsets = np.broadcast_to(patient_x[sl[1], sl[2]][np.newaxis] - body_centre[sl[0], np.newaxis, np.newaxis], component.shape)
        side = np.where(component, np.sign(offsets), 0)
        right, left = int((side < 0).sum()), int((side > 0).sum())
        count = int(component.sum())
        if min(right, left) < 0.2 * count:
            out[sl][component] = RIGHT_LUNG_LABEL if right >= left else LEFT_LUNG_LABEL
            continue
        parts = _split_by_erosion(component, spacing_zyx, params)
        if parts is not None:
            method = "erosion"
            # leftover voxels the growth did not reach go by the midline
            rest = component & (parts == 0)
            mean_offset = [float(offsets[parts == v].mean()) for v in (1, 2)]
            right_part = 1 if mean_offset[0] < mean_offset[1] else 2
            block = out[sl]
            block[parts == right_part] = RIGHT_LUNG_LABEL
            block[(parts != right_part) & (parts > 0)] = LEFT_LUNG_LABEL
            block[rest & (offsets < 0)] = RIGHT_LUNG_LABEL
            block[rest & (offsets >= 0)] = LEFT_LUNG_LABEL
        else:
            method = "midline"
            logger.info("joined lungs could not be separated by erosion; cutting at the body midline")
            block = out[sl]
            block[component & (offsets < 0)] = RIGHT_LUNG_LABEL
            block[component & (offsets >= 0)] = LEFT_LUNG_LABEL
    return out, method


def close_and_fill_slice(mask: np.ndarray, spacing_yx: tuple[float, float], params: SegmentationParams = DEFAULT_PARAMS) -> np.ndarray:
    """Smooth one slice of a lung mask: in-plane closing (``closing_radius_mm``), then hole filling."""
    sy, sx = spacing_yx
    if not mask.any():
        return mask.copy()
    out = np.zeros_like(mask)
    if params.closing_radius_mm > 0:
        disk = _disk(params.closing_radius_mm / sy, params.closing_radius_mm / sx)
        pad = max(disk.shape)
        rows = np.nonzero(mask.any(axis=1))[0]
        cols = np.nonzero(mask.any(axis=0))[0]
        r0, r1 = max(rows[0] - pad, 0), min(rows[-1] + pad + 1, mask.shape[0])
        c0, c1 = max(cols[0] - pad, 0), min(cols[-1] + pad + 1, mask.shape[1])
        crop = np.pad(mask[r0:r1, c0:c1], pad)
        out[r0:r1, c0:c1] = ndi.binary_closing(crop, structure=disk)[pad:-pad, pad:-pad]
    else:
        out = mask.copy()
    max_hole_px = None if params.max_hole_area_mm2 is None else params.max_hole_area_mm2 / (sy * sx)
    return fill_holes_slice(out, max_hole_px)


def _finish_labels(labels: np.ndarray, spacing_yx: tuple[float, float], params: SegmentationParams) -> np.ndarray:
    """Per lung and slice: small closing, then hole filling (first label wins where they meet)."""
    out = np.zeros_like(labels)
    for value in (RIGHT_LUNG_LABEL, LEFT_LUNG_LABEL):
        mask = labels == value
        for z in np.nonzero(mask.any(axis=(1, 2)))[0]:
            piece = close_and_fill_slice(mask[z], spacing_yx, params)
            out[z][piece & (out[z] == 0)] = value
    return out


def segment_lungs(
    voxels: np.ndarray,
    spacing_zyx: tuple[float, float, float],
    direction: np.ndarray | None = None,
    *,
    thresholds: Thresholds | None = None,
    params: SegmentationParams = DEFAULT_PARAMS,
) -> LungSegmentation:
    """Segment and separate the right and left lung in an axial CT volume.

    Parameters
    ----------
    voxels
        CT values ``(z, y, x)`` in HU.
    spacing_zyx
        Voxel spacing in mm.
    direction
        3x3 direction matrix of the volume (rows: x, y, z index directions in
        LPS); identity when ``None``.  Used to tell the patient's right from left.
    thresholds
        Fixed thresholds; ``None`` estimates them from the volume.
    params
        Segmentation parameters.

    Returns
    -------
    LungSegmentation
    """
    if not isinstance(voxels, np.ndarray):
        raise TypeError(f"voxels must be a numpy array, got {type(voxels).__name__}")
    if voxels.ndim != 3:
        raise ValueError(f"voxels must be 3-D (z, y, x), got shape {voxels.shape}")
    direction = np.eye(3) if direction is None else np.asarray(direction, dtype=np.float64)
    if direction.shape != (3, 3):
        raise ValueError(f"direction must be 3x3, got shape {direction.shape}")
    sz, sy, sx = (float(v) for v in spacing_zyx)
    if min(sz, sy, sx) <= 0:
        raise ValueError(f"spacing_zyx must be positive, got {spacing_zyx!r}")
    if thresholds is None:
        thresholds = estimate_thresholds(voxels, params)
    logger.debug("lung thresholds body=%.1f lung=%.1f", thresholds.body, thresholds.lung)

    candidates = np.zeros(voxels.shape, dtype=bool)
    body = np.zeros(voxels.shape, dtype=bool)
    for z in range(voxels.shape[0]):
        candidates[z], body[z] = _slice_lungs(voxels[z], thresholds, (sy, sx), params)
    lungs = _keep_lung_components(candidates, sz * sy * sx / 1000.0, bool(direction[2][2] >= 0), params)
    labels, method = _split_left_right(lungs, body, (sz, sy, sx), direction, params)
    labels = _finish_labels(labels, (sy, sx), params)
    return LungSegmentation(labels=labels, body=body, thresholds=thresholds, split_method=method)
