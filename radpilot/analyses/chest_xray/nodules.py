"""Lung nodule candidates on a chest radiograph (model ``cxr_nodule_det``), numpy + onnxruntime only.

The model (trained in ``training/chest_xray/nodules``) is a small fully-convolutional network
that takes the same input as the lung/heart segmentation model
(:func:`radpilot.analyses.chest_xray.preprocess.preprocess`: the whole film area-resampled to
256 x 256, 1st/99th-percentile normalisation) and returns, at stride 2 (128 x 128):

* ``heatmap``: the probability that a nodule centre lies at that pixel (sigmoid, in the graph);
* ``diameter``: the nodule diameter in pixels of the 256 x 256 model grid (exp, in the graph).

Candidates (:func:`candidates_from_outputs`, the one definition shared with the training
evaluation): local maxima of the heatmap (5 x 5 neighbourhood) with score >= ``min_score``,
centre refined to the score-weighted centroid of its 3 x 3 neighbourhood, mapped to the input
image's pixel grid (half-pixel centres); greedy non-maximum suppression (a weaker peak closer than
``nms_mm`` to a stronger one is dropped); candidates farther than ``mask_margin_mm`` from the lung
mask are dropped; at most ``max_candidates`` are kept, strongest first.

**Research use only** (trained on JSRT, see the model manifest).  A candidate is not a
diagnosis: at the default operating point the cross-validated rate is about one false
positive per image, and about four in ten JSRT nodules are missed (see the manifest metrics).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from radpilot.analyses.chest_xray.preprocess import MODEL_SIZE, labels_from_logits, preprocess
from radpilot.modelhub.registry import ModelRegistry

MODEL_NAME = "cxr_nodule_det"
SEGMENTATION_MODEL_NAME = "cxr_lung_heart_seg"
OUTPUT_STRIDE = 2
PEAK_WINDOW = 5
# Defaults of the candidate extraction (the values used for the cross-validated metrics; the
# manifest's "postprocessing" block overrides them when present).
MIN_SCORE = 0.02
NMS_MM = 10.0
MASK_MARGIN_MM = 5.0
MAX_CANDIDATES = 30


@dataclass(frozen=True)
class NoduleCandidate:
    """One nodule candidate: centre in the input image's pixel grid (row, column; fractional),
    estimated diameter in mm, and the model score (0..1, higher = more likely a nodule)."""

    row: float
    col: float
    diameter_mm: float
    score: float


def _local_max(values: np.ndarray, window: int) -> np.ndarray:
    """Max filter with a square window (edges padded with -inf), numpy only."""
    half = window // 2
    padded = np.pad(values, half, mode="constant", constant_values=-np.inf)
    view = np.lib.stride_tricks.sliding_window_view(padded, (window, window))
    return view.max(axis=(-2, -1))


def _near_mask(mask: np.ndarray, row: float, col: float, radius_px: tuple[float, float]) -> bool:
    """True when the pixel under (row, col) or any mask pixel within the ellipse of radii ``radius_px``
    (rows, columns) around it is set."""
    ri = min(max(int(round(row)), 0), mask.shape[0] - 1)
    ci = min(max(int(round(col)), 0), mask.shape[1] - 1)
    if mask[ri, ci]:
        return True
    rr, rc = max(radius_px[0], 1e-6), max(radius_px[1], 1e-6)
    r0, r1 = max(int(math.floor(row - rr)), 0), min(int(math.ceil(row + rr)), mask.shape[0] - 1)
    c0, c1 = max(int(math.floor(col - rc)), 0), min(int(math.ceil(col + rc)), mask.shape[1] - 1)
    if r0 > r1 or c0 > c1:
        return False
    window = mask[r0 : r1 + 1, c0 : c1 + 1]
    if not window.any():
        return False
    rows = ((np.arange(r0, r1 + 1) - row) / rr)[:, None]
    cols = ((np.arange(c0, c1 + 1) - col) / rc)[None, :]
    return bool((window & (rows**2 + cols**2 <= 1.0 + 1e-9)).any())


def candidates_from_outputs(
    heatmap: np.ndarray,
    diameter_px: np.ndarray,
    image_shape: tuple[int, int],
    pixel_spacing_mm: tuple[float, float],
    lung_mask: np.ndarray | None = None,
    *,
    min_score: float = MIN_SCORE,
    nms_mm: float = NMS_MM,
    mask_margin_mm: float | None = MASK_MARGIN_MM,
    max_candidates: int = MAX_CANDIDATES,
) -> list[NoduleCandidate]:
    """Model outputs of one image -> candidates in the input grid ``image_shape``, strongest first.

    ``heatmap`` and ``diameter_px`` are (h, w) arrays at the model's output grid (128 x 128 for a
    256 model input); ``diameter_px`` is in pixels of the 256 model grid.  ``lung_mask`` (boolean,
    ``image_shape``) restricts candidates to within ``mask_margin_mm`` of the mask (None, or
    ``mask_margin_mm`` None: no restriction).
    """
    heatmap = np.asarray(heatmap, dtype=np.float64)
    diameter_px = np.asarray(diameter_px, dtype=np.float64)
    if heatmap.ndim != 2 or heatmap.shape != diameter_px.shape:
        raise ValueError(f"heatmap {heatmap.shape} and diameter {diameter_px.shape} must be the same 2-D shape")
    rows_in, cols_in = int(image_shape[0]), int(image_shape[1])
    sr, sc = (float(s) for s in pixel_spacing_mm)
    if not (sr > 0 and sc > 0):
        raise ValueError(f"pixel_spacing_mm must be positive, got {pixel_spacing_mm!r}")
    h, w = heatmap.shape
    scale_r, scale_c = rows_in / h, cols_in / w  # input pixels per output pixel
    model_px_mm = math.sqrt((sr * rows_in / MODEL_SIZE) * (sc * cols_in / MODEL_SIZE))

    peaks = (heatmap >= _local_max(heatmap, PEAK_WINDOW)) & (heatmap >= min_score)
    pr, pc = np.nonzero(peaks)
    order = np.argsort(-heatmap[pr, pc], kind="stable")
    padded = np.pad(heatmap, 1, mode="constant", constant_values=0.0)
    offsets = np.arange(-1, 2, dtype=np.float64)

    if lung_mask is not None and mask_margin_mm is not None:
        mask = np.asarray(lung_mask, dtype=bool)
        if mask.shape != (rows_in, cols_in):
            raise ValueError(f"lung_mask has shape {mask.shape}, expected the image shape {(rows_in, cols_in)}")
        if not mask.any():
            mask = None
    else:
        mask = None

    kept: list[NoduleCandidate] = []
    kept_mm: list[tuple[float, float]] = []
    for index in order:
        i, j = int(pr[index]), int(pc[index])
        patch = padded[i : i + 3, j : j + 3]
        total = patch.sum()
        di = float((patch.sum(axis=1) * offsets).sum() / total) if total > 0 else 0.0
        dj = float((patch.sum(axis=0) * offsets).sum() / total) if total > 0 else 0.0
        row = (i + di + 0.5) * scale_r - 0.5
        col = (j + dj + 0.5) * scale_c - 0.5
        row_mm, col_mm = row * sr, col * sc
        if any((row_mm - a) ** 2 + (col_mm - b) ** 2 < nms_mm**2 for a, b in kept_mm):
            continue
        if mask is not None and not _near_mask(mask, row, col, (mask_margin_mm / sr, mask_margin_mm / sc)):
            continue
        kept.append(
            NoduleCandidate(row=float(row), col=float(col), diameter_mm=float(diameter_px[i, j] * model_px_mm), score=float(heatmap[i, j]))
        )
        kept_mm.append((row_mm, col_mm))
        if len(kept) >= max_candidates:
            break
    return kept


def run_model(session, image_display: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # noqa: ANN001 - onnxruntime session
    """(heatmap, diameter_px) of one image, each (h, w), from an onnxruntime session of the model."""
    heatmap, diameter = session.run(["heatmap", "diameter"], {"image": preprocess(image_display)})
    return heatmap[0, 0], diameter[0, 0]


def _lung_mask_from_segmentation(registry, image: np.ndarray) -> np.ndarray:  # noqa: ANN001
    session = registry.session(SEGMENTATION_MODEL_NAME)
    logits = session.run(["logits"], {"image": preprocess(image)})[0][0]
    labels = labels_from_logits(logits, image.shape)
    return (labels == 1) | (labels == 2)


def detect_nodules(
    image_display: np.ndarray,
    pixel_spacing_mm: tuple[float, float],
    lung_mask: np.ndarray | None,
    registry: ModelRegistry | None = None,
    *,
    score_threshold: float | None = None,
) -> list[NoduleCandidate]:
    """Nodule candidates on a PA chest radiograph, strongest first.

    Parameters
    ----------
    image_display
        2-D radiograph in the display convention (MONOCHROME2: bone bright, lungs dark), any size,
        PA view, not flipped (as for the lung/heart segmentation).
    pixel_spacing_mm
        (row, column) spacing of ``image_display`` in mm (used for the diameters, the suppression
        distance and the lung-mask margin).
    lung_mask
        Boolean lung-field mask on the image grid (e.g. right | left lung of
        ``cxr_lung_heart_seg``); candidates farther than the manifest's margin from it are dropped.
        None: the mask is computed with ``cxr_lung_heart_seg`` from the same registry (the
        operating point was calibrated with such a mask).
    registry
        Model registry (default ``ModelRegistry()``); the session is verified against the sha256.
    score_threshold
        Keep candidates with score >= this; default the manifest's operating point (about one
        false positive per image in cross-validation on JSRT).

    Returns
    -------
    list of NoduleCandidate, coordinates in ``image_display``'s pixel grid.
    """
    image = np.asarray(image_display)
    if image.ndim != 2:
        raise ValueError(f"expected a 2-D image, got shape {image.shape}")
    if registry is None:
        registry = ModelRegistry()
    manifest = registry.manifest(MODEL_NAME)
    post = dict(manifest.raw.get("postprocessing_parameters") or {})
    if score_threshold is None:
        score_threshold = float(manifest.raw["operating_point"]["score_threshold"])
    session = registry.session(MODEL_NAME)
    heatmap, diameter = run_model(session, image)
    if lung_mask is None:
        lung_mask = _lung_mask_from_segmentation(registry, image)
    candidates = candidates_from_outputs(
        heatmap,
        diameter,
        image.shape,
        pixel_spacing_mm,
        lung_mask,
        min_score=min(float(score_threshold), float(post.get("min_score", MIN_SCORE))),
        nms_mm=float(post.get("nms_mm", NMS_MM)),
        mask_margin_mm=post.get("mask_margin_mm", MASK_MARGIN_MM),
        max_candidates=int(post.get("max_candidates", MAX_CANDIDATES)),
    )
    return [c for c in candidates if c.score >= score_threshold]
