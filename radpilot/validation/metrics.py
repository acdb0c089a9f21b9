"""Clinical validation metrics: every accuracy number RadPilot reports comes from here.

The module is pure NumPy/SciPy, deterministic (the only randomness is the bootstrap,
driven by an explicit integer seed) and validates its inputs: a wrong shape, a
spacing of the wrong length, an empty input or a non-binary mask raises
:class:`ValueError` or :class:`TypeError` with a message that says what was wrong
and what was expected.

Sections
--------
* Segmentation overlap: :func:`dice`, :func:`jaccard`.
* Surface distances (2-D/3-D, anisotropic spacing): :func:`surface_distances`,
  :func:`hausdorff`, :func:`hausdorff_95`, :func:`average_surface_distance`.
* Volumes: :func:`mask_volume_mm3`, :func:`volume_difference`, :func:`mm3_to_ml`.
* Detection (LUNA16-style): :func:`detection_hits`, :func:`match_detections`,
  :func:`froc`, :func:`sensitivity_at_fp`, :func:`cpm`,
  :func:`sensitivity_per_case`, :func:`false_positives_per_case`.
* Classification: :func:`confusion_counts`, :func:`sensitivity_specificity`,
  :func:`roc_curve`, :func:`roc_auc`.
* Measurement agreement: :func:`bland_altman`, :func:`icc_2_1`,
  :func:`mean_absolute_error`.
* Ordinal agreement: :func:`cohen_kappa`, :func:`cohen_kappa_from_table`.
* Uncertainty: :func:`bootstrap_ci`, :func:`summarize`.

Conventions
-----------
* Masks are boolean arrays (integer arrays holding only 0/1 are accepted too);
  probability maps are refused: threshold them explicitly first.
* ``spacing`` is the physical voxel size along each array axis, in the same axis
  order as the array (e.g. ``(z, y, x)`` in mm). Distances are then in mm and
  volumes in mm³ (``mm3_to_ml`` converts to mL).
* Undefined ratios (e.g. sensitivity on a case without lesions) are ``nan`` and
  documented as such in each function; they are never silently turned into 0 or 1.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, TypedDict

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import ndimage

__all__ = [
    "LUNA16_FP_RATES",
    "BlandAltman",
    "BootstrapCI",
    "ConfusionCounts",
    "DetectionResult",
    "DirectedSurfaceDistances",
    "FrocCurve",
    "MeanCI",
    "RocCurve",
    "SensitivitySpecificity",
    "Summary",
    "VolumeDifference",
    "average_surface_distance",
    "bland_altman",
    "bootstrap_ci",
    "cohen_kappa",
    "cohen_kappa_from_table",
    "confusion_counts",
    "cpm",
    "detection_hits",
    "dice",
    "false_positives_per_case",
    "froc",
    "hausdorff",
    "hausdorff_95",
    "icc_2_1",
    "jaccard",
    "mask_volume_mm3",
    "match_detections",
    "mean_absolute_error",
    "mm3_to_ml",
    "roc_auc",
    "roc_curve",
    "sensitivity_at_fp",
    "sensitivity_per_case",
    "sensitivity_specificity",
    "summarize",
    "surface_distances",
    "volume_difference",
]

#: The seven false-positive rates (per scan) of the LUNA16 competition performance metric.
LUNA16_FP_RATES: tuple[float, ...] = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)

#: Tolerance (mm) added to the hit radius so that a centre exactly on the sphere
#: surface is not lost to floating-point rounding of ``spacing`` products.
_HIT_TOLERANCE_MM = 1e-9


# ---------------------------------------------------------------------------
# Input validation helpers
# ---------------------------------------------------------------------------


def _as_mask(x: ArrayLike, name: str) -> NDArray[np.bool_]:
    """Return ``x`` as a non-empty boolean array, or raise a descriptive error."""
    if isinstance(x, (str, bytes)) or x is None:
        raise TypeError(f"{name} must be a boolean array, got {type(x).__name__}")
    arr = np.asarray(x)
    if arr.dtype == np.bool_:
        out = arr
    elif arr.dtype.kind in "iu":
        if arr.size and not np.isin(arr, (0, 1)).all():
            raise TypeError(
                f"{name} must be a boolean mask (dtype bool, or integers 0/1); "
                f"got integer values {np.unique(arr)[:5].tolist()}... - for a label map "
                f"select one label explicitly, e.g. labels == 1"
            )
        out = arr.astype(bool)
    else:
        raise TypeError(
            f"{name} must be a boolean mask (dtype bool, or integers 0/1), got dtype "
            f"{arr.dtype}; threshold probability maps explicitly, e.g. prob >= 0.5"
        )
    if out.ndim == 0:
        raise ValueError(f"{name} must be an array with at least one dimension, got a scalar")
    if out.size == 0:
        raise ValueError(f"{name} is empty (shape {out.shape}); expected at least one voxel")
    return out


def _same_shape(a: NDArray[Any], b: NDArray[Any], name_a: str = "a", name_b: str = "b") -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"shape mismatch: {name_a} has shape {a.shape} but {name_b} has shape {b.shape}; both must be defined on the same voxel grid"
        )


def _as_spacing(spacing: Sequence[float] | ArrayLike, ndim: int) -> NDArray[np.float64]:
    """Validate a voxel spacing: ``ndim`` positive finite numbers."""
    if spacing is None or isinstance(spacing, (str, bytes)) or np.ndim(spacing) != 1:
        raise TypeError(f"spacing must be a sequence of {ndim} positive numbers (one per array axis, in array axis order), got {spacing!r}")
    try:
        sp = np.asarray(spacing, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"spacing must contain numbers, got {spacing!r}") from exc
    if sp.shape != (ndim,):
        raise ValueError(f"spacing has length {sp.shape[0]} but the array has {ndim} dimensions; expected one spacing value per axis")
    if not np.all(np.isfinite(sp)) or np.any(sp <= 0):
        raise ValueError(f"spacing values must be finite and > 0, got {sp.tolist()}")
    return sp


def _as_1d_numbers(x: ArrayLike, name: str, *, allow_empty: bool = False) -> NDArray[np.float64]:
    """A 1-D float array of finite numbers."""
    if isinstance(x, (str, bytes)) or x is None:
        raise TypeError(f"{name} must be a 1-D array of numbers, got {type(x).__name__}")
    arr = np.asarray(x)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must contain numbers, got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one value per case), got shape {arr.shape}")
    if arr.size == 0 and not allow_empty:
        raise ValueError(f"{name} is empty; expected at least one value")
    out = arr.astype(np.float64)
    if not np.all(np.isfinite(out)):
        raise ValueError(f"{name} contains NaN or infinite values; expected finite numbers")
    return out


def _as_binary_labels(y: ArrayLike, name: str) -> NDArray[np.bool_]:
    """A non-empty 1-D array of binary labels (bool, or numbers equal to 0/1)."""
    if isinstance(y, (str, bytes)) or y is None:
        raise TypeError(f"{name} must be a 1-D array of binary labels, got {type(y).__name__}")
    arr = np.asarray(y)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold binary labels (bool or 0/1 numbers), got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one label per case), got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty; expected at least one case")
    if arr.dtype != np.bool_ and not np.isin(arr, (0, 1)).all():
        raise ValueError(f"{name} must hold only 0/1 (or False/True), got values {np.unique(arr)[:5].tolist()}")
    return arr.astype(bool)


def _same_length(a: NDArray[Any], b: NDArray[Any], name_a: str, name_b: str) -> None:
    if a.shape[0] != b.shape[0]:
        raise ValueError(
            f"length mismatch: {name_a} has {a.shape[0]} values but {name_b} has {b.shape[0]}; expected one value per case in both"
        )


def _ratio(num: float, den: float) -> float:
    """``num / den`` or nan when ``den`` is 0."""
    return float(num) / float(den) if den else float("nan")


# ---------------------------------------------------------------------------
# Segmentation overlap
# ---------------------------------------------------------------------------


def dice(a: ArrayLike, b: ArrayLike) -> float:
    r"""Dice similarity coefficient of two binary masks.

    .. math:: \mathrm{DSC}(A, B) = \frac{2 |A \cap B|}{|A| + |B|}

    Parameters
    ----------
    a, b : array_like of bool
        Masks of identical shape (any number of dimensions). Integer arrays holding
        only 0/1 are accepted; probability maps are refused.

    Returns
    -------
    float
        Value in [0, 1]. By convention both masks empty gives **1.0** (perfect
        agreement that nothing is there); exactly one empty gives 0.0.

    Raises
    ------
    TypeError
        If a mask is not boolean (or 0/1 integers).
    ValueError
        If the shapes differ or a mask has no voxels.

    References
    ----------
    Dice LR. Measures of the amount of ecologic association between species.
    Ecology 1945;26(3):297-302.
    """
    ma, mb = _as_mask(a, "a"), _as_mask(b, "b")
    _same_shape(ma, mb)
    size_a, size_b = int(ma.sum()), int(mb.sum())
    if size_a + size_b == 0:
        return 1.0
    inter = int(np.logical_and(ma, mb).sum())
    return 2.0 * inter / (size_a + size_b)


def jaccard(a: ArrayLike, b: ArrayLike) -> float:
    r"""Jaccard index (intersection over union) of two binary masks.

    .. math:: J(A, B) = \frac{|A \cap B|}{|A \cup B|} = \frac{\mathrm{DSC}}{2 - \mathrm{DSC}}

    Parameters
    ----------
    a, b : array_like of bool
        Masks of identical shape.

    Returns
    -------
    float
        Value in [0, 1]; both empty gives **1.0** by convention, one empty gives 0.0.

    Raises
    ------
    TypeError, ValueError
        As for :func:`dice`.

    References
    ----------
    Jaccard P. The distribution of the flora in the alpine zone.
    New Phytologist 1912;11(2):37-50.
    """
    ma, mb = _as_mask(a, "a"), _as_mask(b, "b")
    _same_shape(ma, mb)
    union = int(np.logical_or(ma, mb).sum())
    if union == 0:
        return 1.0
    return int(np.logical_and(ma, mb).sum()) / union


# ---------------------------------------------------------------------------
# Surface distances
# ---------------------------------------------------------------------------


class DirectedSurfaceDistances(NamedTuple):
    """The two directed sets of surface distances (mm when ``spacing`` is in mm)."""

    a_to_b: NDArray[np.float64]
    """For every surface voxel of ``a``: distance to the nearest surface voxel of ``b``."""
    b_to_a: NDArray[np.float64]
    """For every surface voxel of ``b``: distance to the nearest surface voxel of ``a``."""


def _surface(mask: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """Face-connectivity surface: mask voxels with at least one face neighbour outside."""
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    eroded = ndimage.binary_erosion(mask, structure=structure, border_value=0)
    return mask & ~eroded


def _validated_pair(
    a: ArrayLike, b: ArrayLike, spacing: Sequence[float] | ArrayLike
) -> tuple[NDArray[np.bool_], NDArray[np.bool_], NDArray[np.float64]]:
    ma, mb = _as_mask(a, "a"), _as_mask(b, "b")
    _same_shape(ma, mb)
    if ma.ndim not in (2, 3):
        raise ValueError(f"surface distances need 2-D or 3-D masks, got {ma.ndim}-D arrays of shape {ma.shape}")
    return ma, mb, _as_spacing(spacing, ma.ndim)


def surface_distances(a: ArrayLike, b: ArrayLike, spacing: Sequence[float] | ArrayLike) -> DirectedSurfaceDistances:
    """Directed surface-to-surface distances between two masks, in physical units.

    Definition
    ----------
    * **Surface** of a mask: the foreground voxels with at least one *face*
      neighbour (4-neighbourhood in 2-D, 6-neighbourhood in 3-D) in the
      background, i.e. ``mask & ~binary_erosion(mask, face_structure)``. Voxels
      outside the array count as background, so foreground touching the array
      border is surface. This is the convention of MONAI's ``get_mask_edges``.
    * **Distance** from a surface voxel of A to B: the Euclidean distance between
      voxel centres, scaled per axis by ``spacing``, to the nearest surface voxel
      of B; computed with ``scipy.ndimage.distance_transform_edt(~surface_b,
      sampling=spacing)``. Distances are therefore exact on anisotropic grids.

    The computation is cropped to the bounding box of ``a | b`` (padded by one
    voxel), which gives identical results and keeps large CT volumes fast.

    Parameters
    ----------
    a, b : array_like of bool
        2-D or 3-D masks of identical shape.
    spacing : sequence of float
        Voxel size per array axis (same order as the array axes), e.g. mm.

    Returns
    -------
    DirectedSurfaceDistances
        ``(a_to_b, b_to_a)`` as float64 arrays. Both masks empty: two empty
        arrays. Only ``b`` empty: ``a_to_b`` is all ``inf`` (one per surface voxel
        of ``a``) and ``b_to_a`` is empty; symmetrically for ``a`` empty.

    Raises
    ------
    TypeError
        Non-boolean masks or non-numeric spacing.
    ValueError
        Shape mismatch, masks not 2-D/3-D, ``len(spacing) != ndim``, spacing <= 0.

    References
    ----------
    Heimann T et al. Comparison and evaluation of methods for liver segmentation
    from CT datasets. IEEE Trans Med Imaging 2009;28(8):1251-1265.
    Maier-Hein L et al. Metrics reloaded. Nat Methods 2024;21:195-212.
    """
    ma, mb, sp = _validated_pair(a, b, spacing)
    any_a, any_b = bool(ma.any()), bool(mb.any())
    empty = np.zeros(0, dtype=np.float64)
    if not any_a and not any_b:
        return DirectedSurfaceDistances(empty, empty.copy())
    # Crop to the bounding box of the union, padded by one voxel (exact: all
    # surface voxels lie inside it, and outside-array voxels are background anyway).
    coords = np.argwhere(ma | mb)
    lo = np.maximum(coords.min(axis=0) - 1, 0)
    hi = np.minimum(coords.max(axis=0) + 2, ma.shape)
    box = tuple(slice(int(s), int(e)) for s, e in zip(lo, hi))
    sa, sb = _surface(ma[box]), _surface(mb[box])
    if not any_b:
        return DirectedSurfaceDistances(np.full(int(sa.sum()), np.inf), empty)
    if not any_a:
        return DirectedSurfaceDistances(empty, np.full(int(sb.sum()), np.inf))
    dt_to_b = ndimage.distance_transform_edt(~sb, sampling=sp)
    dt_to_a = ndimage.distance_transform_edt(~sa, sampling=sp)
    return DirectedSurfaceDistances(np.asarray(dt_to_b[sa], dtype=np.float64), np.asarray(dt_to_a[sb], dtype=np.float64))


def _empty_case(ma: NDArray[np.bool_], mb: NDArray[np.bool_]) -> float | None:
    """0.0 when both masks are empty, inf when exactly one is, None otherwise."""
    any_a, any_b = bool(ma.any()), bool(mb.any())
    if not any_a and not any_b:
        return 0.0
    if any_a != any_b:
        return float("inf")
    return None


def hausdorff(a: ArrayLike, b: ArrayLike, spacing: Sequence[float] | ArrayLike) -> float:
    r"""Symmetric (maximum) Hausdorff distance between the surfaces of two masks.

    .. math:: \mathrm{HD}(A, B) = \max\{\max_{x \in \partial A} d(x, \partial B),
              \max_{y \in \partial B} d(y, \partial A)\}

    with surfaces and distances as defined in :func:`surface_distances`.

    Parameters
    ----------
    a, b : array_like of bool
        2-D or 3-D masks of identical shape.
    spacing : sequence of float
        Voxel size per array axis.

    Returns
    -------
    float
        Distance in the unit of ``spacing``. Both masks empty: **0.0**; exactly one
        empty: **inf** (the distance to an absent structure is unbounded).

    Raises
    ------
    TypeError, ValueError
        As for :func:`surface_distances`.

    References
    ----------
    Huttenlocher DP, Klanderman GA, Rucklidge WJ. Comparing images using the
    Hausdorff distance. IEEE TPAMI 1993;15(9):850-863.
    """
    ma, mb, sp = _validated_pair(a, b, spacing)
    special = _empty_case(ma, mb)
    if special is not None:
        return special
    d = surface_distances(ma, mb, sp)
    return float(max(d.a_to_b.max(), d.b_to_a.max()))


def hausdorff_95(
    a: ArrayLike,
    b: ArrayLike,
    spacing: Sequence[float] | ArrayLike,
    *,
    percentile: float = 95.0,
    method: Literal["union", "max_directed"] = "union",
) -> float:
    r"""Robust (95th-percentile) Hausdorff distance.

    Definition (``method="union"``, the default)
        The ``percentile``-th percentile of the **union** of both directed
        distance sets, ``np.percentile(np.concatenate([a_to_b, b_to_a]), 95)``
        with NumPy's default *linear* interpolation between order statistics.
        This is the definition of MedPy's ``hd95`` (used by many challenge
        evaluation scripts).

    Alternative (``method="max_directed"``)
        ``max(P95(a_to_b), P95(b_to_a))``: the maximum of the two directed
        percentiles, as computed by MONAI's ``compute_hausdorff_distance(...,
        percentile=95)`` and DeepMind's ``surface-distance`` package (the latter
        weights by surface element area, which is not reproduced here). The two
        definitions differ when the directed sets have different sizes or
        distributions; report which one was used.

    Parameters
    ----------
    a, b : array_like of bool
        2-D or 3-D masks of identical shape.
    spacing : sequence of float
        Voxel size per array axis.
    percentile : float, default 95
        Percentile in [0, 100].
    method : {"union", "max_directed"}
        See above.

    Returns
    -------
    float
        Distance in the unit of ``spacing``. Both masks empty: **0.0**; exactly one
        empty: **inf**.

    Raises
    ------
    TypeError, ValueError
        As for :func:`surface_distances`; also an unknown ``method`` or a
        percentile outside [0, 100].

    References
    ----------
    Huttenlocher DP et al. IEEE TPAMI 1993;15(9):850-863.
    Taha AA, Hanbury A. Metrics for evaluating 3D medical image segmentation:
    analysis, selection, and tool. BMC Med Imaging 2015;15:29.
    """
    if method not in ("union", "max_directed"):
        raise ValueError(f"method must be 'union' or 'max_directed', got {method!r}")
    if not isinstance(percentile, numbers.Real) or not 0.0 <= float(percentile) <= 100.0:
        raise ValueError(f"percentile must be a number in [0, 100], got {percentile!r}")
    ma, mb, sp = _validated_pair(a, b, spacing)
    special = _empty_case(ma, mb)
    if special is not None:
        return special
    d = surface_distances(ma, mb, sp)
    if method == "union":
        return float(np.percentile(np.concatenate([d.a_to_b, d.b_to_a]), percentile))
    return float(max(np.percentile(d.a_to_b, percentile), np.percentile(d.b_to_a, percentile)))


def average_surface_distance(a: ArrayLike, b: ArrayLike, spacing: Sequence[float] | ArrayLike) -> float:
    r"""Average symmetric surface distance (ASSD).

    .. math:: \mathrm{ASSD}(A, B) = \frac{\sum_{x \in \partial A} d(x, \partial B)
              + \sum_{y \in \partial B} d(y, \partial A)}{|\partial A| + |\partial B|}

    i.e. the mean over the **union** of both directed distance sets (each surface
    voxel weighs the same; this matches MONAI's ``symmetric=True`` and Heimann et
    al. 2009). Note that MedPy's ``assd`` instead averages the two directed means,
    which differs when the surfaces have different sizes.

    Parameters
    ----------
    a, b : array_like of bool
        2-D or 3-D masks of identical shape.
    spacing : sequence of float
        Voxel size per array axis.

    Returns
    -------
    float
        Distance in the unit of ``spacing``. Both empty: **0.0**; exactly one
        empty: **inf**.

    Raises
    ------
    TypeError, ValueError
        As for :func:`surface_distances`.

    References
    ----------
    Heimann T et al. IEEE Trans Med Imaging 2009;28(8):1251-1265.
    """
    ma, mb, sp = _validated_pair(a, b, spacing)
    special = _empty_case(ma, mb)
    if special is not None:
        return special
    d = surface_distances(ma, mb, sp)
    return float(np.concatenate([d.a_to_b, d.b_to_a]).mean())


# ---------------------------------------------------------------------------
# Volumes
# ---------------------------------------------------------------------------


def mm3_to_ml(volume_mm3: float) -> float:
    """Convert a volume from mm³ to mL (1 mL = 1 cm³ = 1000 mm³)."""
    if not isinstance(volume_mm3, numbers.Real):
        raise TypeError(f"volume_mm3 must be a number, got {type(volume_mm3).__name__}")
    return float(volume_mm3) / 1000.0


def mask_volume_mm3(mask: ArrayLike, spacing: Sequence[float] | ArrayLike) -> float:
    r"""Volume of a 3-D mask: number of voxels times the voxel volume.

    .. math:: V = |M| \cdot \prod_i s_i

    Parameters
    ----------
    mask : array_like of bool
        3-D mask.
    spacing : sequence of float
        Voxel size per axis in mm (gives mm³).

    Returns
    -------
    float
        Volume in mm³ (the cube of the unit of ``spacing``).
    """
    m = _as_mask(mask, "mask")
    if m.ndim != 3:
        raise ValueError(f"mask must be 3-D to have a volume, got shape {m.shape}")
    sp = _as_spacing(spacing, 3)
    return float(int(m.sum()) * float(np.prod(sp)))


@dataclass(frozen=True)
class VolumeDifference:
    """Volume comparison of a test mask ``a`` against a reference mask ``b``."""

    volume_a_mm3: float
    volume_b_mm3: float
    difference_mm3: float
    """Signed ``V_a - V_b``."""
    absolute_difference_mm3: float
    """``|V_a - V_b|``."""
    relative_difference_percent: float
    """Signed ``100 (V_a - V_b) / V_b``; 0.0 when both are empty, inf when only ``b`` is."""

    @property
    def volume_a_ml(self) -> float:
        return mm3_to_ml(self.volume_a_mm3)

    @property
    def volume_b_ml(self) -> float:
        return mm3_to_ml(self.volume_b_mm3)

    @property
    def difference_ml(self) -> float:
        return mm3_to_ml(self.difference_mm3)

    @property
    def absolute_difference_ml(self) -> float:
        return mm3_to_ml(self.absolute_difference_mm3)


def volume_difference(a: ArrayLike, b: ArrayLike, spacing: Sequence[float] | ArrayLike) -> VolumeDifference:
    r"""Absolute and relative volume difference of a test mask ``a`` versus reference ``b``.

    .. math:: \Delta V = V_a - V_b, \qquad
              \Delta V_{\%} = 100 \, \frac{V_a - V_b}{V_b}

    Parameters
    ----------
    a : array_like of bool
        Test (e.g. AI) 3-D mask.
    b : array_like of bool
        Reference 3-D mask, same shape.
    spacing : sequence of float
        Voxel size per axis in mm; volumes are then in mm³ (``*_ml`` properties
        give mL).

    Returns
    -------
    VolumeDifference
        The relative difference is signed (positive = over-segmentation). When the
        reference is empty it is **0.0** if ``a`` is also empty and **inf**
        otherwise (documented convention, consistent with the surface distances).

    Raises
    ------
    TypeError, ValueError
        Non-boolean masks, shape mismatch, masks not 3-D, invalid spacing.
    """
    ma, mb = _as_mask(a, "a"), _as_mask(b, "b")
    _same_shape(ma, mb)
    va, vb = mask_volume_mm3(ma, spacing), mask_volume_mm3(mb, spacing)
    diff = va - vb
    if vb > 0:
        rel = 100.0 * diff / vb
    else:
        rel = 0.0 if va == 0 else float("inf")
    return VolumeDifference(va, vb, diff, abs(diff), rel)


# ---------------------------------------------------------------------------
# Detection: hits, FROC, CPM
# ---------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class DetectionResult:
    """Outcome of matching one case's candidates to its reference findings.

    Attributes
    ----------
    reference_scores : ndarray of float, shape (n_references,)
        For each reference: the score of its highest-scoring hitting candidate,
        ``nan`` if no candidate hit it.
    matched_candidate : ndarray of int, shape (n_references,)
        Index of that candidate, -1 if missed.
    fp_scores : ndarray of float
        Scores of candidates that hit no reference (false positives).
    candidate_outcome : ndarray of str, shape (n_candidates,)
        ``"tp"`` (counted hit of at least one reference), ``"fp"`` (hits nothing) or
        ``"ignored"`` (hits a reference that a higher-scoring candidate already
        counts for: neither TP nor FP, as in LUNA16).
    """

    reference_scores: NDArray[np.float64]
    matched_candidate: NDArray[np.int64]
    fp_scores: NDArray[np.float64]
    candidate_outcome: NDArray[np.str_]

    @property
    def n_references(self) -> int:
        return int(self.reference_scores.shape[0])

    @property
    def n_candidates(self) -> int:
        return int(self.candidate_outcome.shape[0])

    @property
    def tp_scores(self) -> NDArray[np.float64]:
        """Scores of the detected references (one per detected reference)."""
        return self.reference_scores[~np.isnan(self.reference_scores)]


def match_detections(pred_scores: ArrayLike, hits: ArrayLike) -> DetectionResult:
    """Count each reference once, by its highest-scoring hit (LUNA16 convention).

    Parameters
    ----------
    pred_scores : array_like of float, shape (n_candidates,)
        Finite candidate scores (higher = more suspicious).
    hits : array_like of bool, shape (n_candidates, n_references)
        ``hits[i, j]`` is True when candidate ``i`` hits reference ``j`` (any hit
        criterion: distance, IoU, ...).

    Returns
    -------
    DetectionResult
        Convention: a reference is detected at threshold ``t`` when its best
        hitting candidate scores ``>= t``; that candidate is the TP (ties: lowest
        candidate index). Further candidates hitting the same reference are
        **ignored** (neither TP nor FP). A candidate that is the best hit of
        several references counts for each of them, as in the LUNA16 evaluation
        script. A candidate hitting no reference is a false positive.

    Raises
    ------
    TypeError, ValueError
        Non-numeric/non-finite scores, ``hits`` of the wrong shape or dtype.

    References
    ----------
    Setio AAA et al. Validation, comparison, and combination of algorithms for
    automatic detection of pulmonary nodules in computed tomography images: the
    LUNA16 challenge. Med Image Anal 2017;42:1-13.
    """
    scores = _as_1d_numbers(pred_scores, "pred_scores", allow_empty=True)
    h = np.asarray(hits)
    if h.dtype != np.bool_:
        raise TypeError(f"hits must be a boolean matrix, got dtype {h.dtype}")
    if h.ndim != 2 or h.shape[0] != scores.shape[0]:
        raise ValueError(f"hits must have shape (n_candidates={scores.shape[0]}, n_references), got {h.shape}")
    n_cand, n_ref = h.shape
    masked = np.where(h, scores[:, None], -np.inf)  # (n_cand, n_ref)
    detected = h.any(axis=0)
    best = np.argmax(masked, axis=0) if n_cand else np.zeros(n_ref, dtype=np.int64)
    matched = np.where(detected, best, -1).astype(np.int64)
    ref_scores = np.where(detected, scores[best] if n_cand else np.nan, np.nan).astype(np.float64)
    outcome = np.full(n_cand, "fp", dtype="<U7")
    outcome[h.any(axis=1)] = "ignored"
    outcome[matched[matched >= 0]] = "tp"
    fp_scores = scores[outcome == "fp"]
    return DetectionResult(ref_scores, matched, fp_scores, outcome)


def _as_points(x: ArrayLike, name: str, ndim: int) -> NDArray[np.float64]:
    arr = np.asarray(x, dtype=np.float64) if np.size(x) else np.zeros((0, ndim))
    if arr.ndim != 2 or arr.shape[1] != ndim:
        raise ValueError(
            f"{name} must have shape (n, {ndim}) (one row per point, coordinates in array axis order matching spacing), got {arr.shape}"
        )
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite coordinates")
    return arr


def detection_hits(
    pred_points: ArrayLike,
    pred_scores: ArrayLike,
    ref_points: ArrayLike,
    ref_radii_mm: ArrayLike | float,
    spacing: Sequence[float] | ArrayLike,
    margin_mm: float = 0.0,
) -> DetectionResult:
    r"""Match point candidates to spherical reference findings in one case.

    A candidate **hits** a reference when the Euclidean distance between the
    candidate centre and the reference centre, in mm, is at most the reference
    radius plus ``margin_mm``:

    .. math:: \left\| (p - r) \odot s \right\|_2 \le \rho_r + m

    where ``s`` is ``spacing`` (a 1e-9 mm tolerance absorbs floating-point
    rounding). Each reference is then counted once through its highest-scoring
    hit; other hits on it are ignored; candidates hitting nothing are false
    positives (see :func:`match_detections`). LUNA16 uses the strict ``<`` with
    ``radius = diameter / 2`` and no margin.

    Parameters
    ----------
    pred_points : array_like, shape (n_candidates, ndim)
        Candidate centres in voxel (index) coordinates, axis order as ``spacing``.
        Points already in mm can be passed with ``spacing=(1, 1, 1)``.
    pred_scores : array_like, shape (n_candidates,)
        Candidate scores.
    ref_points : array_like, shape (n_references, ndim)
        Reference centres in voxel coordinates. Zero references is allowed (a
        case without lesions: every candidate is a false positive).
    ref_radii_mm : float or array_like, shape (n_references,)
        Reference radii in mm (>= 0).
    spacing : sequence of float
        Voxel size per axis in mm.
    margin_mm : float, default 0
        Extra tolerance (>= 0) added to every radius.

    Returns
    -------
    DetectionResult

    Raises
    ------
    TypeError, ValueError
        Wrong point shapes, length mismatches, negative radii or margin, invalid spacing.
    """
    if np.ndim(spacing) != 1:
        raise TypeError(f"spacing must be a sequence of numbers, got {spacing!r}")
    ndim = len(spacing)  # type: ignore[arg-type]
    sp = _as_spacing(spacing, ndim)
    cand = _as_points(pred_points, "pred_points", ndim)
    refs = _as_points(ref_points, "ref_points", ndim)
    scores = _as_1d_numbers(pred_scores, "pred_scores", allow_empty=True)
    _same_length(cand, scores, "pred_points", "pred_scores")
    radii = np.asarray(ref_radii_mm, dtype=np.float64)
    if radii.ndim == 0:
        radii = np.full(refs.shape[0], float(radii))
    if radii.shape != (refs.shape[0],):
        raise ValueError(f"ref_radii_mm must be a number or have one radius per reference ({refs.shape[0]}), got shape {radii.shape}")
    if not np.all(np.isfinite(radii)) or np.any(radii < 0):
        raise ValueError(f"ref_radii_mm must be finite and >= 0, got {radii.tolist()}")
    if not isinstance(margin_mm, numbers.Real) or not math.isfinite(margin_mm) or margin_mm < 0:
        raise ValueError(f"margin_mm must be a finite number >= 0, got {margin_mm!r}")
    diff_mm = (cand[:, None, :] - refs[None, :, :]) * sp
    dist = np.sqrt(np.sum(diff_mm * diff_mm, axis=-1))
    hits = dist <= radii[None, :] + float(margin_mm) + _HIT_TOLERANCE_MM
    return match_detections(scores, hits)


def _as_cases(cases: Iterable[DetectionResult] | DetectionResult) -> list[DetectionResult]:
    if isinstance(cases, DetectionResult):
        raise TypeError("cases must be a sequence of DetectionResult (one per case), got one")
    try:
        out = list(cases)
    except TypeError as exc:
        raise TypeError(f"cases must be a sequence of DetectionResult, got {type(cases).__name__}") from exc
    if not out:
        raise ValueError("cases is empty; expected at least one case")
    for i, c in enumerate(out):
        if not isinstance(c, DetectionResult):
            raise TypeError(f"cases[{i}] is {type(c).__name__}; expected DetectionResult (from detection_hits or match_detections)")
    return out


def _threshold(value: float, name: str = "threshold") -> float:
    if not isinstance(value, numbers.Real) or math.isnan(value):
        raise ValueError(f"{name} must be a number (not NaN), got {value!r}")
    return float(value)


def sensitivity_per_case(cases: Iterable[DetectionResult], threshold: float = -math.inf) -> NDArray[np.float64]:
    """Per-case sensitivity: detected references / references, at ``score >= threshold``.

    Parameters
    ----------
    cases : sequence of DetectionResult
    threshold : float, default -inf (all candidates)

    Returns
    -------
    ndarray of float, shape (n_cases,)
        **nan** for a case without references (sensitivity undefined there).
    """
    t = _threshold(threshold)
    out = []
    for c in _as_cases(cases):
        n = c.n_references
        out.append(_ratio(int(np.sum(c.reference_scores >= t)), n))
    return np.asarray(out, dtype=np.float64)


def false_positives_per_case(cases: Iterable[DetectionResult], threshold: float = -math.inf) -> NDArray[np.int64]:
    """Number of false-positive candidates with ``score >= threshold`` in each case.

    Cases without references are counted normally (all their candidates are FPs).

    Returns
    -------
    ndarray of int, shape (n_cases,)
    """
    t = _threshold(threshold)
    return np.asarray([int(np.sum(c.fp_scores >= t)) for c in _as_cases(cases)], dtype=np.int64)


@dataclass(frozen=True, eq=False)
class FrocCurve:
    """Free-response ROC operating points, one per threshold (descending)."""

    thresholds: NDArray[np.float64]
    """Descending; the first is always +inf (no candidate kept: 0 FP, sensitivity 0)."""
    fps_per_case: NDArray[np.float64]
    """Mean number of false positives per case at each threshold (non-decreasing)."""
    sensitivity: NDArray[np.float64]
    """Detected references / all references, pooled over cases (non-decreasing; nan if none)."""
    false_positives: NDArray[np.int64]
    """Total false positives at each threshold."""
    n_cases: int
    n_references: int


def froc(cases: Iterable[DetectionResult], thresholds: ArrayLike | None = None) -> FrocCurve:
    r"""FROC curve over several cases (scans).

    At threshold :math:`t` (a candidate is kept when ``score >= t``):

    .. math:: \mathrm{FP/case}(t) = \frac{\#\{\text{FP with score} \ge t\}}{N_\text{cases}},
              \qquad
              \mathrm{sens}(t) = \frac{\#\{\text{references whose best hit} \ge t\}}
              {N_\text{references}}

    Sensitivity is pooled over all references of all cases (LUNA16). Cases
    without references contribute false positives but no references; if there
    are no references at all the sensitivity is **nan** everywhere.

    Parameters
    ----------
    cases : sequence of DetectionResult
        One per case (an object ndarray of them, e.g. a bootstrap resample, works).
    thresholds : array_like of float, optional
        Thresholds to evaluate (any order; NaN refused). Default: every distinct
        score of a TP or FP candidate. +inf is always added as the first point.

    Returns
    -------
    FrocCurve
    """
    cs = _as_cases(cases)
    tp = np.sort(np.concatenate([c.tp_scores for c in cs] + [np.zeros(0)]))
    fp = np.sort(np.concatenate([c.fp_scores for c in cs] + [np.zeros(0)]))
    n_refs = sum(c.n_references for c in cs)
    if thresholds is None:
        thr = np.unique(np.concatenate([tp, fp]))
    else:
        thr = np.asarray(thresholds, dtype=np.float64).ravel()
        if np.any(np.isnan(thr)):
            raise ValueError("thresholds contain NaN; expected numbers")
        thr = np.unique(thr)
    thr = thr[::-1]
    if thr.size == 0 or thr[0] != np.inf:
        thr = np.concatenate([[np.inf], thr])
    n_tp = tp.size - np.searchsorted(tp, thr, side="left")
    n_fp = (fp.size - np.searchsorted(fp, thr, side="left")).astype(np.int64)
    sens = n_tp / n_refs if n_refs else np.full(thr.shape, np.nan)
    return FrocCurve(
        thresholds=thr,
        fps_per_case=n_fp / len(cs),
        sensitivity=np.asarray(sens, dtype=np.float64),
        false_positives=n_fp,
        n_cases=len(cs),
        n_references=int(n_refs),
    )


def sensitivity_at_fp(
    froc_curve: FrocCurve,
    fp_rates: Sequence[float] = LUNA16_FP_RATES,
    *,
    interpolation: Literal["step", "linear"] = "step",
) -> NDArray[np.float64]:
    """Sensitivity of an FROC curve at given false-positive rates per case.

    ``interpolation="step"`` (default, conservative)
        The highest sensitivity among the operating points whose FP/case is
        ``<= rate``, i.e. the sensitivity at the *lowest* threshold that still
        keeps FP/case within the rate. This is an operating point the system can
        actually be run at. The point at threshold +inf (0 FP, sensitivity 0)
        is always available.
    ``interpolation="linear"``
        Linear interpolation along the polyline through the operating points
        (``np.interp(rate, fps, sens)``), as done by the LUNA16 evaluation script
        (``noduleCADEvaluationLUNA16.py``). It equals the step value except where
        a TP and an FP share a score (a diagonal segment), where it interpolates.

    Beyond the largest FP/case of the curve both return the final sensitivity.

    Parameters
    ----------
    froc_curve : FrocCurve
    fp_rates : sequence of float, default (1/8, 1/4, 1/2, 1, 2, 4, 8)
        Non-negative FP rates per case.
    interpolation : {"step", "linear"}

    Returns
    -------
    ndarray of float, shape (len(fp_rates),)
        nan everywhere when the curve has no references.
    """
    if not isinstance(froc_curve, FrocCurve):
        raise TypeError(f"froc_curve must be a FrocCurve (from froc()), got {type(froc_curve).__name__}")
    if interpolation not in ("step", "linear"):
        raise ValueError(f"interpolation must be 'step' or 'linear', got {interpolation!r}")
    rates = _as_1d_numbers(fp_rates, "fp_rates")
    if np.any(rates < 0):
        raise ValueError(f"fp_rates must be >= 0, got {rates.tolist()}")
    if froc_curve.n_references == 0:
        return np.full(rates.shape, np.nan)
    counts = froc_curve.false_positives.astype(np.float64)
    sens = froc_curve.sensitivity
    n = froc_curve.n_cases
    out = np.empty(rates.shape, dtype=np.float64)
    for k, rate in enumerate(rates):
        limit = rate * n  # compare integer FP counts, avoiding FP/n rounding
        j = int(np.searchsorted(counts, limit + 1e-9 * max(1.0, limit), side="right")) - 1
        value = float(sens[j])
        if interpolation == "linear" and j + 1 < counts.size and counts[j] < limit:
            frac = (limit - counts[j]) / (counts[j + 1] - counts[j])
            value += frac * float(sens[j + 1] - sens[j])
        out[k] = value
    return out


def cpm(
    curve_or_cases: FrocCurve | Iterable[DetectionResult],
    fp_rates: Sequence[float] = LUNA16_FP_RATES,
    *,
    interpolation: Literal["step", "linear"] = "step",
) -> float:
    """Competition performance metric: mean sensitivity at 1/8, 1/4, 1/2, 1, 2, 4, 8 FP/scan.

    Parameters
    ----------
    curve_or_cases : FrocCurve or sequence of DetectionResult
        A curve, or the cases to build it from (so that
        ``bootstrap_ci(cases, statistic=cpm)`` resamples cases).
    fp_rates : sequence of float
        Defaults to :data:`LUNA16_FP_RATES`.
    interpolation : {"step", "linear"}
        See :func:`sensitivity_at_fp`.

    Returns
    -------
    float
        nan if there are no references.

    References
    ----------
    Niemeijer M et al. On combining computer-aided detection systems. IEEE Trans
    Med Imaging 2011;30(2):215-223. Setio AAA et al. Med Image Anal 2017;42:1-13.
    """
    curve = curve_or_cases if isinstance(curve_or_cases, FrocCurve) else froc(curve_or_cases)
    return float(np.mean(sensitivity_at_fp(curve, fp_rates, interpolation=interpolation)))


# ---------------------------------------------------------------------------
# Classification
# ---------------------------------------------------------------------------


class ConfusionCounts(NamedTuple):
    tp: int
    fp: int
    tn: int
    fn: int


class SensitivitySpecificity(NamedTuple):
    sensitivity: float
    specificity: float


class RocCurve(NamedTuple):
    fpr: NDArray[np.float64]
    tpr: NDArray[np.float64]
    thresholds: NDArray[np.float64]
    """Descending; the first is +inf (the (0, 0) point)."""


def confusion_counts(y_true: ArrayLike, y_pred: ArrayLike) -> ConfusionCounts:
    """True/false positive/negative counts of binary predictions.

    Parameters
    ----------
    y_true, y_pred : array_like of bool or 0/1, shape (n,)

    Returns
    -------
    ConfusionCounts
        ``(tp, fp, tn, fn)`` as Python ints.
    """
    t, p = _as_binary_labels(y_true, "y_true"), _as_binary_labels(y_pred, "y_pred")
    _same_length(t, p, "y_true", "y_pred")
    return ConfusionCounts(tp=int(np.sum(t & p)), fp=int(np.sum(~t & p)), tn=int(np.sum(~t & ~p)), fn=int(np.sum(t & ~p)))


def sensitivity_specificity(y_true: ArrayLike, y_pred: ArrayLike) -> SensitivitySpecificity:
    r"""Sensitivity :math:`TP/(TP+FN)` and specificity :math:`TN/(TN+FP)`.

    Returns
    -------
    SensitivitySpecificity
        Each is **nan** when undefined (no positive, resp. no negative, cases).
    """
    c = confusion_counts(y_true, y_pred)
    return SensitivitySpecificity(_ratio(c.tp, c.tp + c.fn), _ratio(c.tn, c.tn + c.fp))


def _roc_inputs(y_true: ArrayLike, scores: ArrayLike) -> tuple[NDArray[np.bool_], NDArray[np.float64]]:
    y = _as_binary_labels(y_true, "y_true")
    s = _as_1d_numbers(scores, "scores")
    _same_length(y, s, "y_true", "scores")
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == y.size:
        raise ValueError(f"ROC needs both classes: y_true has {n_pos} positives and {y.size - n_pos} negatives")
    return y, s


def roc_curve(y_true: ArrayLike, scores: ArrayLike) -> RocCurve:
    """Empirical ROC curve, one point per distinct score (ties form one step).

    A case is called positive when ``score >= threshold``. Tied scores are
    processed together, so a tie between a positive and a negative gives a
    diagonal segment (Fawcett 2006, Algorithm 2).

    Parameters
    ----------
    y_true : array_like of bool or 0/1, shape (n,)
    scores : array_like of float, shape (n,)
        Finite; higher = more likely positive.

    Returns
    -------
    RocCurve
        ``(fpr, tpr, thresholds)``, starting at (0, 0) with threshold +inf and
        ending at (1, 1).

    Raises
    ------
    ValueError
        Only one class present, length mismatch, non-finite scores.

    References
    ----------
    Fawcett T. An introduction to ROC analysis. Pattern Recognit Lett 2006;27:861-874.
    """
    y, s = _roc_inputs(y_true, scores)
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(s_sorted)), s_sorted.size - 1]
    tps = np.cumsum(y_sorted)[last_of_tie]
    fps = (last_of_tie + 1) - tps
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    return RocCurve(
        fpr=np.r_[0.0, fps / n_neg],
        tpr=np.r_[0.0, tps / n_pos],
        thresholds=np.r_[np.inf, s_sorted[last_of_tie]],
    )


def roc_auc(y_true: ArrayLike, scores: ArrayLike) -> float:
    r"""Area under the empirical ROC curve (trapezoidal rule).

    With ties handled as diagonal segments (see :func:`roc_curve`) the trapezoidal
    area equals the Mann-Whitney U statistic divided by :math:`n_+ n_-`:

    .. math:: \mathrm{AUC} = \frac{1}{n_+ n_-} \sum_{i \in +} \sum_{j \in -}
              \left( [s_i > s_j] + \tfrac12 [s_i = s_j] \right)

    Raises
    ------
    ValueError
        Only one class present (AUC undefined), length mismatch, non-finite scores.

    References
    ----------
    Hanley JA, McNeil BJ. The meaning and use of the area under a receiver
    operating characteristic (ROC) curve. Radiology 1982;143:29-36.
    """
    fpr, tpr, _ = roc_curve(y_true, scores)
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))


# ---------------------------------------------------------------------------
# Agreement for measurements
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class BlandAltman:
    """Bland-Altman agreement of paired measurements ``a`` and ``b``."""

    bias: float
    """Mean of ``a - b``."""
    sd: float
    """Sample standard deviation of ``a - b`` (ddof=1)."""
    lower: float
    """Lower 95 % limit of agreement, ``bias - 1.96 sd``."""
    upper: float
    """Upper 95 % limit of agreement, ``bias + 1.96 sd``."""
    n: int


def _paired(a: ArrayLike, b: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    x, y = _as_1d_numbers(a, "a"), _as_1d_numbers(b, "b")
    _same_length(x, y, "a", "b")
    return x, y


def bland_altman(a: ArrayLike, b: ArrayLike) -> BlandAltman:
    r"""Bland-Altman bias and 95 % limits of agreement.

    .. math:: d_i = a_i - b_i,\quad \bar d = \frac1n\sum d_i,\quad
              s_d = \sqrt{\frac{\sum (d_i - \bar d)^2}{n-1}},\quad
              \mathrm{LoA} = \bar d \pm 1.96\, s_d

    Parameters
    ----------
    a, b : array_like of float, shape (n,), n >= 2
        Paired measurements (e.g. AI and radiologist diameters in mm).

    Raises
    ------
    ValueError
        Fewer than two pairs, length mismatch, non-finite values.

    References
    ----------
    Bland JM, Altman DG. Statistical methods for assessing agreement between two
    methods of clinical measurement. Lancet 1986;1(8476):307-310.
    """
    x, y = _paired(a, b)
    if x.size < 2:
        raise ValueError(f"bland_altman needs at least 2 pairs (sd uses ddof=1), got {x.size}")
    d = x - y
    bias = float(d.mean())
    sd = float(d.std(ddof=1))
    return BlandAltman(bias=bias, sd=sd, lower=bias - 1.96 * sd, upper=bias + 1.96 * sd, n=int(d.size))


def mean_absolute_error(a: ArrayLike, b: ArrayLike) -> float:
    r"""Mean absolute error :math:`\frac1n \sum |a_i - b_i|` of paired measurements."""
    x, y = _paired(a, b)
    return float(np.mean(np.abs(x - y)))


def icc_2_1(ratings: ArrayLike) -> float:
    r"""ICC(2,1): two-way random effects, absolute agreement, single rater.

    From the two-way ANOVA of an ``n x k`` table (``n`` subjects, ``k`` raters)
    with mean squares for subjects (BMS), raters (JMS) and residual (EMS):

    .. math:: \mathrm{ICC}(2,1) = \frac{BMS - EMS}
              {BMS + (k-1)\,EMS + k\,(JMS - EMS)/n}

    Parameters
    ----------
    ratings : array_like of float, shape (n_subjects, k_raters)
        Complete table (no missing values), n >= 2, k >= 2.

    Returns
    -------
    float
        nan when the denominator is 0 (e.g. all ratings identical).

    Raises
    ------
    ValueError
        Not 2-D, fewer than 2 subjects or raters, non-finite values.

    References
    ----------
    Shrout PE, Fleiss JL. Intraclass correlations: uses in assessing rater
    reliability. Psychol Bull 1979;86(2):420-428 (Table 2 example: ICC(2,1) = .29).
    McGraw KO, Wong SP. Psychol Methods 1996;1(1):30-46 (ICC(A,1)).
    """
    if isinstance(ratings, (str, bytes)) or ratings is None:
        raise TypeError(f"ratings must be a 2-D numeric array, got {type(ratings).__name__}")
    x = np.asarray(ratings)
    if x.dtype.kind not in "biuf":
        raise TypeError(f"ratings must be numeric, got dtype {x.dtype}")
    if x.ndim != 2:
        raise ValueError(f"ratings must be 2-D (n_subjects x k_raters), got shape {x.shape}")
    n, k = x.shape
    if n < 2 or k < 2:
        raise ValueError(f"ICC needs at least 2 subjects and 2 raters, got shape {x.shape}")
    x = x.astype(np.float64)
    if not np.all(np.isfinite(x)):
        raise ValueError("ratings contain NaN or infinite values; ICC(2,1) needs a complete table")
    grand = x.mean()
    ss_rows = k * float(np.sum((x.mean(axis=1) - grand) ** 2))
    ss_cols = n * float(np.sum((x.mean(axis=0) - grand) ** 2))
    ss_err = float(np.sum((x - grand) ** 2)) - ss_rows - ss_cols
    bms = ss_rows / (n - 1)
    jms = ss_cols / (k - 1)
    ems = ss_err / ((n - 1) * (k - 1))
    den = bms + (k - 1) * ems + k * (jms - ems) / n
    return _ratio(bms - ems, den) if abs(den) > 1e-12 * max(1.0, abs(bms)) else float("nan")


# ---------------------------------------------------------------------------
# Ordinal agreement
# ---------------------------------------------------------------------------


def cohen_kappa_from_table(table: ArrayLike, weights: Literal["linear", "quadratic"] | None = None) -> float:
    r"""Cohen's (weighted) kappa from a ``K x K`` contingency table.

    With observed proportions :math:`p_{ij}` (rater A category *i*, rater B
    category *j*), marginals :math:`p_{i\cdot}, p_{\cdot j}` and disagreement
    weights :math:`w_{ij}`:

    .. math:: \kappa_w = 1 - \frac{\sum_{ij} w_{ij} p_{ij}}
              {\sum_{ij} w_{ij} p_{i\cdot} p_{\cdot j}}

    * ``None`` (unweighted): :math:`w_{ij} = [i \ne j]`, which gives
      :math:`\kappa = (p_o - p_e)/(1 - p_e)`;
    * ``"linear"``: :math:`w_{ij} = |i-j|/(K-1)`;
    * ``"quadratic"``: :math:`w_{ij} = (i-j)^2/(K-1)^2`.

    Returns
    -------
    float
        nan when the expected disagreement is 0 (e.g. both raters used a single
        category): kappa is undefined there.

    References
    ----------
    Cohen J. A coefficient of agreement for nominal scales. Educ Psychol Meas
    1960;20:37-46. Cohen J. Weighted kappa. Psychol Bull 1968;70(4):213-220.
    """
    t = np.asarray(table)
    if t.dtype.kind not in "biuf":
        raise TypeError(f"table must be numeric counts, got dtype {t.dtype}")
    if t.ndim != 2 or t.shape[0] != t.shape[1] or t.shape[0] < 1:
        raise ValueError(f"table must be a square K x K matrix, got shape {t.shape}")
    t = t.astype(np.float64)
    if not np.all(np.isfinite(t)) or np.any(t < 0):
        raise ValueError("table must hold finite non-negative counts")
    total = t.sum()
    if total <= 0:
        raise ValueError("table is empty (total count 0); expected at least one rated case")
    if weights not in (None, "linear", "quadratic"):
        raise ValueError(f"weights must be None, 'linear' or 'quadratic', got {weights!r}")
    k = t.shape[0]
    i, j = np.indices((k, k))
    if weights is None:
        w = (i != j).astype(np.float64)
    else:
        scale = max(k - 1, 1)
        w = np.abs(i - j) / scale if weights == "linear" else ((i - j) / scale) ** 2
    p = t / total
    expected = np.outer(p.sum(axis=1), p.sum(axis=0))
    den = float(np.sum(w * expected))
    if den <= 1e-15:
        return float("nan")
    return 1.0 - float(np.sum(w * p)) / den


def cohen_kappa(
    a: ArrayLike,
    b: ArrayLike,
    categories: Sequence[Any] | None = None,
    weights: Literal["linear", "quadratic"] | None = None,
) -> float:
    """Cohen's kappa between two raters' labels, optionally weighted for ordinal scales.

    Parameters
    ----------
    a, b : array_like, shape (n,)
        Labels of the same cases by two raters (numbers or strings).
    categories : sequence, optional
        The ordered category list. Weights use the *positions* in this list, so
        it fixes order and spacing for weighted kappa: an unused category in the
        middle changes weighted kappa, one at either end does not (the weights
        scale uniformly), and unused categories never change unweighted kappa.
        Default: the sorted union of the observed labels - pass it explicitly for
        non-numeric ordinal labels (strings sort alphabetically).
    weights : {None, "linear", "quadratic"}
        See :func:`cohen_kappa_from_table`.

    Returns
    -------
    float
        nan when undefined (see :func:`cohen_kappa_from_table`).

    Raises
    ------
    ValueError
        Length mismatch, empty input, a label not in ``categories``, duplicate categories.
    """
    x, y = np.asarray(a), np.asarray(b)
    if x.ndim != 1 or y.ndim != 1:
        raise ValueError(f"a and b must be 1-D label arrays, got shapes {x.shape} and {y.shape}")
    if x.size == 0:
        raise ValueError("a is empty; expected at least one rated case")
    _same_length(x, y, "a", "b")
    if categories is None:
        cats = sorted(set(x.tolist()) | set(y.tolist()))
    else:
        cats = list(categories)
        if len(set(cats)) != len(cats):
            raise ValueError(f"categories contain duplicates: {cats}")
    index = {c: n for n, c in enumerate(cats)}
    try:
        ia = np.asarray([index[v] for v in x.tolist()], dtype=np.int64)
        ib = np.asarray([index[v] for v in y.tolist()], dtype=np.int64)
    except KeyError as exc:
        raise ValueError(f"label {exc.args[0]!r} is not in categories {cats}") from exc
    table = np.zeros((len(cats), len(cats)), dtype=np.int64)
    np.add.at(table, (ia, ib), 1)
    return cohen_kappa_from_table(table, weights=weights)


# ---------------------------------------------------------------------------
# Bootstrap confidence intervals and summaries
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class BootstrapCI:
    """A percentile bootstrap confidence interval."""

    estimate: float
    """The statistic on the original (not resampled) data."""
    lower: float
    upper: float
    confidence: float
    method: str
    n_resamples: int
    """Resamples requested."""
    n_valid: int
    """Resamples whose statistic was defined and used for the percentiles."""
    n_skipped: int
    """Degenerate resamples skipped (statistic raised ValueError/ZeroDivisionError or was not finite)."""
    seed: int
    n_cases: int
    single_case: bool
    """True when there was a single case: no resampling, ``lower == upper == estimate``."""


_DEGENERATE_ERRORS = (ValueError, ZeroDivisionError, FloatingPointError)


def _bootstrap_data(data: Any) -> tuple[list[NDArray[Any]], bool]:
    """Return the list of arrays to resample along axis 0 and whether there are several."""
    if isinstance(data, tuple):
        if not data:
            raise ValueError("data is an empty tuple; expected one or more aligned arrays")
        arrays = [np.asarray(x) for x in data]
        for i, arr in enumerate(arrays):
            if arr.ndim == 0:
                raise TypeError(
                    f"data[{i}] is a scalar: a tuple is read as several aligned arrays "
                    f"(cases along axis 0); pass a list or array for a single set of values"
                )
        n = arrays[0].shape[0]
        for i, arr in enumerate(arrays[1:], start=1):
            if arr.shape[0] != n:
                raise ValueError(f"aligned arrays must have the same number of cases: data[0] has {n}, data[{i}] has {arr.shape[0]}")
        return arrays, True
    if isinstance(data, (str, bytes)) or data is None:
        raise TypeError(f"data must be an array or a tuple of aligned arrays, got {type(data).__name__}")
    if isinstance(data, np.ndarray):
        arr = data
    elif isinstance(data, Sequence) and data and not isinstance(data[0], (numbers.Number, np.generic, Sequence, np.ndarray)):
        # e.g. a list of DetectionResult: keep the objects, resample the list.
        arr = np.empty(len(data), dtype=object)
        arr[:] = list(data)
    else:
        arr = np.asarray(data)
    if arr.ndim == 0:
        raise TypeError("data must have a case axis (axis 0), got a scalar")
    return [arr], False


def _scalar(value: Any) -> float:
    arr = np.asarray(value)
    if arr.shape != () or arr.dtype.kind not in "biuf":
        raise TypeError(f"statistic must return a real scalar, got {value!r}")
    return float(arr)


def bootstrap_ci(
    data: Any,
    statistic: Callable[..., Any] = np.mean,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> BootstrapCI:
    """Case-level percentile bootstrap confidence interval of a statistic.

    Cases (axis 0, i.e. rows) are resampled with replacement, ``n_resamples``
    times, with ``numpy.random.default_rng(seed)``; the interval is the
    ``(1 - confidence)/2`` and ``(1 + confidence)/2`` percentiles (NumPy linear
    interpolation) of the resampled statistics. Same inputs and seed give the
    same interval.

    Parameters
    ----------
    data : array_like, sequence of objects, or tuple of array_like
        * an array (e.g. per-case Dice values, or an ``n x k`` ratings table whose
          rows are resampled): ``statistic(resampled_array)``;
        * a list of objects (e.g. :class:`DetectionResult` per case):
          the statistic receives an object array of the resampled cases
          (``bootstrap_ci(cases, statistic=cpm)``);
        * a **tuple** of aligned arrays with the same number of cases: the same
          case indices are drawn for every array and ``statistic(*arrays)`` is
          called, e.g. ``bootstrap_ci((y_true, scores), statistic=roc_auc)`` or
          ``bootstrap_ci((ai, reader), statistic=lambda a, b: bland_altman(a, b).bias)``.
          A tuple is always read this way; use a list for a single set of values.
    statistic : callable, default numpy.mean
        Returns a real scalar.
    n_resamples : int, default 2000
    confidence : float, default 0.95
        In (0, 1).
    seed : int, default 0

    Returns
    -------
    BootstrapCI
        ``method='percentile'``. Degenerate resamples - the statistic raises
        ``ValueError``/``ZeroDivisionError``/``FloatingPointError`` or returns a
        non-finite value (e.g. AUC of a resample holding one class) - are skipped
        and counted in ``n_skipped``; if all are skipped the bounds are nan.
        With a **single case** no resampling is possible: ``lower = upper =
        estimate`` and ``single_case=True``; such an interval carries no
        uncertainty information and must not be reported as a CI.

    Raises
    ------
    TypeError, ValueError
        Invalid parameters, empty data, misaligned arrays, a statistic that does
        not return a scalar; errors of the statistic on the original data
        propagate.

    References
    ----------
    Efron B, Tibshirani RJ. An Introduction to the Bootstrap. Chapman & Hall, 1993.
    """
    if not callable(statistic):
        raise TypeError(f"statistic must be callable, got {type(statistic).__name__}")
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, numbers.Integral) or n_resamples < 1:
        raise ValueError(f"n_resamples must be a positive integer, got {n_resamples!r}")
    if not isinstance(confidence, numbers.Real) or not 0.0 < float(confidence) < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an integer (for reproducibility), got {seed!r}")
    arrays, several = _bootstrap_data(data)
    n = int(arrays[0].shape[0])
    if n == 0:
        raise ValueError("data has no cases; expected at least one")

    def call(arrs: list[NDArray[Any]]) -> Any:
        return statistic(*arrs) if several else statistic(arrs[0])

    estimate = _scalar(call(arrays))
    if n == 1:
        return BootstrapCI(estimate, estimate, estimate, float(confidence), "percentile", int(n_resamples), 0, 0, int(seed), 1, True)
    rng = np.random.default_rng(int(seed))
    values: list[float] = []
    skipped = 0
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        for _ in range(int(n_resamples)):
            idx = rng.integers(0, n, size=n)
            try:
                v = _scalar(call([arr[idx] for arr in arrays]))
            except _DEGENERATE_ERRORS:
                skipped += 1
                continue
            if not math.isfinite(v):
                skipped += 1
                continue
            values.append(v)
    alpha = (1.0 - float(confidence)) / 2.0
    if values:
        lower, upper = (float(q) for q in np.quantile(np.asarray(values), [alpha, 1.0 - alpha]))
    else:
        lower = upper = float("nan")
    return BootstrapCI(estimate, lower, upper, float(confidence), "percentile", int(n_resamples), len(values), skipped, int(seed), n, False)


class MeanCI(TypedDict):
    lower: float
    upper: float
    confidence: float
    method: str
    n_resamples: int
    seed: int
    single_case: bool


class Summary(TypedDict):
    """JSON-serialisable summary of per-case values (see :func:`summarize`)."""

    n: int
    mean: float
    median: float
    sd: float | None
    min: float
    max: float
    mean_ci: MeanCI


def summarize(values: ArrayLike, seed: int = 0, *, n_resamples: int = 2000, confidence: float = 0.95) -> Summary:
    """Descriptive summary of per-case values with a bootstrap CI of the mean.

    Parameters
    ----------
    values : array_like of float, shape (n,)
        Finite per-case values. Drop undefined cases (nan, e.g. sensitivity of a
        lesion-free case) and decide about infinite ones (e.g. Hausdorff to a
        missed structure) before summarising: both are refused.
    seed : int, default 0
    n_resamples : int, default 2000
    confidence : float, default 0.95

    Returns
    -------
    Summary
        A plain ``dict`` of Python ``int``/``float``/``str``/``bool``
        (``json.dumps(..., allow_nan=False)`` works): ``n, mean, median, sd, min,
        max`` and ``mean_ci`` (percentile bootstrap of the mean, see
        :func:`bootstrap_ci`). ``sd`` uses ddof=1 and is ``None`` for a single
        value; with a single value ``mean_ci.single_case`` is True and the bounds
        equal the mean.
    """
    v = _as_1d_numbers(values, "values")
    ci = bootstrap_ci(v, np.mean, n_resamples=n_resamples, confidence=confidence, seed=seed)
    return Summary(
        n=int(v.size),
        mean=float(v.mean()),
        median=float(np.median(v)),
        sd=float(v.std(ddof=1)) if v.size > 1 else None,
        min=float(v.min()),
        max=float(v.max()),
        mean_ci=MeanCI(
            lower=ci.lower,
            upper=ci.upper,
            confidence=ci.confidence,
            method=ci.method,
            n_resamples=ci.n_resamples,
            seed=ci.seed,
            single_case=ci.single_case,
        ),
    )
