"""Find the heart in a short-axis cine and segment every phase with the ``cmr_sax_seg`` model.

Heart localisation
------------------
A scanner's field of view is far wider than the heart-centred crops the model was trained
on, so the heart is found first, from what moves: the per-pixel standard deviation over the
phases, divided by the slice's signal level so that coil shading does not decide, averaged
over the middle slices and smoothed (Gaussian, 8 mm). Its strongest peaks are candidate
centres, tried in order; a candidate is accepted when the model, run on a tile around it,
finds an LV cavity in at least ``MIN_LV_SLICES`` slices near the tile centre (the
model-based check). The tile is then re-centred on the segmented heart. When no candidate
passes, :class:`HeartNotFound` says so.

Reference channel
-----------------
A model with two input channels also sees, beside each slice of each phase, the same slice in
the cine's first phase: the ECG trigger at the R wave, so end-diastole. It then knows how the
slice moved over the cycle: at end-systole the base descends towards the apex and the most basal
slice shows the atria, which ACDC's experts leave unlabelled but a single-frame model labels as
ventricle.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from radpilot.analyses.cardiac_mr_function.preprocess import MODEL_PIXEL_MM, TILE, normalise_tile

logger = logging.getLogger(__name__)

MIN_LV_SLICES = 2
MAX_CANDIDATES = 3
CANDIDATE_SEPARATION_MM = 60.0
# The LV found must lie this close to the candidate centre: the tile reaches 96 mm from it, so an LV of up to
# 30 mm radius centred 65 mm away is still whole in the tile. The motion peak is often the RV or the atria, not
# the LV: at 50 mm a normal heart (ACDC patient069, LV 53-59 mm from every peak) was refused.
MAX_CENTRE_OFFSET_MM = 65.0
BATCH = 32

#: ``predict(x)`` with x (N, C, TILE, TILE) float32 returns logits (N, 4, TILE, TILE); C is 1, or 2 for a model with
#: the reference channel (the same slice in the first phase).
Predictor = Callable[[np.ndarray], np.ndarray]


class HeartNotFound(ValueError):
    """No candidate region of the cine holds a heart the model recognises."""


@dataclass
class CineSegmentation:
    labels: np.ndarray  # (phases, slices, rows, columns) uint8 on the source grid
    centre_rc: tuple[float, float]  # heart centre on the source grid (row, column)
    confidence: float  # mean top softmax probability over labelled tile pixels
    candidates_tried: int


def motion_map(frames: np.ndarray) -> np.ndarray:
    """(phases, slices, rows, cols) -> (rows, cols): the temporal standard deviation, level-normalised, over the middle slices."""
    n_slices = frames.shape[1]
    lo, hi = int(n_slices * 0.2), max(int(np.ceil(n_slices * 0.8)), int(n_slices * 0.2) + 1)
    acc = np.zeros(frames.shape[2:], dtype=np.float64)
    for z in range(lo, hi):
        stack = frames[:, z].astype(np.float32)
        level = float(np.percentile(stack.mean(0), 99)) or 1.0
        acc += stack.std(0) / level
    return acc / (hi - lo)


def candidate_centres(frames: np.ndarray, spacing_rc: tuple[float, float]) -> list[tuple[float, float]]:
    """Peaks of the smoothed motion map, strongest first, at least ``CANDIDATE_SEPARATION_MM`` apart."""
    smooth = ndimage.gaussian_filter(motion_map(frames), sigma=(8.0 / spacing_rc[0], 8.0 / spacing_rc[1]))
    work = smooth.copy()
    rows, cols = np.indices(work.shape)
    out: list[tuple[float, float]] = []
    floor = float(work.max()) * 0.25
    while len(out) < MAX_CANDIDATES and work.max() > floor and work.max() > 0:
        r, c = np.unravel_index(int(np.argmax(work)), work.shape)
        out.append((float(r), float(c)))
        near = ((rows - r) * spacing_rc[0]) ** 2 + ((cols - c) * spacing_rc[1]) ** 2 <= CANDIDATE_SEPARATION_MM**2
        work[near] = 0.0
    return out


class _TileGeometry:
    """The source-grid window that maps to one model tile (``TILE`` pixels of ``MODEL_PIXEL_MM``)."""

    def __init__(self, centre_rc: tuple[float, float], spacing_rc: tuple[float, float], shape: tuple[int, int]) -> None:
        self.size = (max(8, int(round(TILE * MODEL_PIXEL_MM / spacing_rc[0]))), max(8, int(round(TILE * MODEL_PIXEL_MM / spacing_rc[1]))))
        self.r0 = int(round(centre_rc[0])) - self.size[0] // 2
        self.c0 = int(round(centre_rc[1])) - self.size[1] // 2
        self.shape = shape

    def cut(self, image: np.ndarray) -> np.ndarray:
        """(..., rows, cols) -> (..., TILE, TILE) float32, resampled; outside the image: 0."""
        h, w = self.shape
        out = np.zeros((*image.shape[:-2], *self.size), dtype=np.float32)
        rs, re = max(self.r0, 0), min(self.r0 + self.size[0], h)
        cs, ce = max(self.c0, 0), min(self.c0 + self.size[1], w)
        if rs < re and cs < ce:
            out[..., rs - self.r0 : re - self.r0, cs - self.c0 : ce - self.c0] = image[..., rs:re, cs:ce]
        factors = (1,) * (image.ndim - 2) + (TILE / self.size[0], TILE / self.size[1])
        if self.size == (TILE, TILE):
            return out
        return ndimage.zoom(out, factors, order=1, grid_mode=True, mode="grid-constant")

    def paste(self, logits: np.ndarray) -> np.ndarray:
        """(N, 4, TILE, TILE) logits -> (N, rows, cols) labels on the source grid (background outside the tile)."""
        if self.size != (TILE, TILE):
            logits = ndimage.zoom(logits, (1, 1, self.size[0] / TILE, self.size[1] / TILE), order=1, grid_mode=True, mode="nearest")
        labels = logits.argmax(1).astype(np.uint8)
        h, w = self.shape
        out = np.zeros((labels.shape[0], h, w), dtype=np.uint8)
        rs, re = max(self.r0, 0), min(self.r0 + self.size[0], h)
        cs, ce = max(self.c0, 0), min(self.c0 + self.size[1], w)
        if rs < re and cs < ce:
            out[:, rs:re, cs:ce] = labels[:, rs - self.r0 : re - self.r0, cs - self.c0 : ce - self.c0]
        return out


def _predict_tiles(predict: Predictor, tiles: np.ndarray, references: np.ndarray | None = None) -> np.ndarray:
    """``tiles`` (N, TILE, TILE), and with a reference channel ``references`` (N, TILE, TILE): each tile's slice in the first phase."""
    x = np.stack([normalise_tile(t) for t in tiles])[:, None]
    if references is not None:
        x = np.concatenate([x, np.stack([normalise_tile(t) for t in references])[:, None]], axis=1)
    return np.concatenate([predict(np.ascontiguousarray(x[s : s + BATCH])) for s in range(0, len(x), BATCH)])


def _confidence(logits: np.ndarray) -> float:
    """Mean top softmax probability over the tile pixels labelled as a structure; the top probability is
    1 / sum(exp(logit - max)), which spares normalising every class."""
    top_logit = logits.max(axis=1, keepdims=True)
    top = 1.0 / np.exp(logits - top_logit).sum(axis=1)
    fg = logits.argmax(1) > 0
    return float(top[fg].mean()) if fg.any() else 0.0


def keep_heart(labels: np.ndarray) -> np.ndarray:
    """Per phase, keep only the largest 3-D connected component of the labelled heart (drops stray blobs)."""
    out = labels.copy()
    for p in range(labels.shape[0]):
        mask = labels[p] > 0
        components, n = ndimage.label(mask)
        if n > 1:
            sizes = ndimage.sum_labels(mask, components, index=np.arange(1, n + 1))
            out[p][components != (int(np.argmax(sizes)) + 1)] = 0
    return out


def _segment_at(
    frames: np.ndarray,
    predict: Predictor,
    centre: tuple[float, float],
    spacing_rc: tuple[float, float],
    phases: list[int],
    reference_channel: bool,
    confidence: bool = True,
) -> tuple[np.ndarray, float]:
    geometry = _TileGeometry(centre, spacing_rc, frames.shape[2:])
    n_slices = frames.shape[1]
    tiles = geometry.cut(frames[phases].reshape(-1, *frames.shape[2:]))
    references = np.tile(geometry.cut(frames[0]), (len(phases), 1, 1)) if reference_channel else None
    logits = _predict_tiles(predict, tiles, references)
    labels = geometry.paste(logits).reshape(len(phases), n_slices, *frames.shape[2:])
    return labels, _confidence(logits) if confidence else 0.0


def _lv_check(labels: np.ndarray, centre: tuple[float, float], spacing_rc: tuple[float, float]) -> tuple[bool, tuple[float, float]]:
    """Does the LV cavity appear in enough slices near the centre? Also the heart's centroid (row, col)."""
    lv = labels == 3
    slices_with_lv = int(lv.any(axis=(0, 2, 3)).sum())
    heart = labels > 0
    if not heart.any():
        return False, centre
    rows, cols = np.nonzero(heart.any(axis=(0, 1)))
    centroid = (float(rows.mean()), float(cols.mean()))
    if not lv.any():
        return False, centroid
    lr, lc = np.nonzero(lv.any(axis=(0, 1)))
    offset = np.hypot((lr.mean() - centre[0]) * spacing_rc[0], (lc.mean() - centre[1]) * spacing_rc[1])
    return slices_with_lv >= MIN_LV_SLICES and offset <= MAX_CENTRE_OFFSET_MM, centroid


def segment_cine(
    frames: np.ndarray, spacing_rc: tuple[float, float], predict: Predictor, reference_channel: bool = False
) -> CineSegmentation:
    """Find the heart and label every phase and slice of ``frames`` (phases, slices, rows, cols); with
    ``reference_channel`` the model also gets each slice in the first phase."""
    candidates = candidate_centres(frames, spacing_rc)
    if not candidates:
        raise HeartNotFound("no heart was found: nothing in the field of view changes over the cardiac cycle (is this a cine?)")
    # The tile is centred on the heart as the probe finds it: probing both phases of a two-phase (ED/ES) cine
    # keeps that centre, and so the labels, independent of the order the phases come in.
    probe_phases = sorted({0, min(frames.shape[0] - 1, max(1, frames.shape[0] // 3))})
    for tried, centre in enumerate(candidates, start=1):
        probe, _ = _segment_at(frames, predict, centre, spacing_rc, probe_phases, reference_channel, confidence=False)
        ok, centroid = _lv_check(probe, centre, spacing_rc)
        if not ok:
            logger.info("heart candidate rejected by the model", extra={"candidate": tried, "centre_rc": centre})
            continue
        labels, confidence = _segment_at(frames, predict, centroid, spacing_rc, list(range(frames.shape[0])), reference_channel)
        labels = keep_heart(labels)
        return CineSegmentation(labels, centroid, confidence, tried)
    where = ", ".join(f"({r:.0f}, {c:.0f})" for r, c in candidates)
    raise HeartNotFound(
        f"no heart was found: the {len(candidates)} moving region(s) of the cine (row, column {where}) hold no left ventricle "
        "the segmentation model recognises; check that the series is a short-axis cine through the ventricles"
    )
