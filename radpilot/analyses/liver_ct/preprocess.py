"""The one definition of the liver/spleen model's pre- and post-processing (numpy and scipy only).

Training (``training/liver_ct``) and the runtime analysis both call these functions, so the model
sees in production exactly what it learned from.  The training set (``liver-ct-btcv``) holds CT
already turned into 8-bit: HU clipped to the abdominal window [-125, 275], scaled to 0..255
(``u8 = (hu + 125) * 255 / 400``), resampled in-plane to a coarser grid.  The runtime path repeats
that on HU DICOM (:func:`hu_to_u8`), then both resample in-plane to one fixed model spacing
(:data:`MODEL_SPACING_MM`, linear, half-pixel centres) and stack each slice with its neighbours
about :data:`NEIGHBOUR_OFFSET_MM` above and below as channels (2.5-D input).  The model's logits
go back to the source grid bilinearly (:func:`logits_to_grid`) before the argmax, and only the
largest 3-D connected component of each organ is kept (:func:`largest_component`).

Array convention: volumes are (z, row, col) = (slice, DICOM row, DICOM column), with rows running
towards the patient's posterior and columns towards the patient's left (a standard axial DICOM
slice as stored, and ``btcv[:, :, k].T`` for the training NIfTI files).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

#: The HU window of the training data (SSL-ALPNet preprocessing of BTCV, LIR/HIR in its notebook).
WINDOW_HU = (-125.0, 275.0)
#: In-plane pixel size the model runs at (training and runtime), mm.
MODEL_SPACING_MM = 2.0
#: The neighbouring slices given as extra channels lie this far above and below (nearest slice), mm.
NEIGHBOUR_OFFSET_MM = 3.0
#: Model input height and width must be multiples of this (four 2x poolings).
SIZE_MULTIPLE = 16
#: Labels of the model's classes.
BACKGROUND, LIVER, SPLEEN = 0, 1, 2
NUM_CLASSES = 3
#: Images resampled together (memory and cache, not results).
LABEL_CHUNK = 4


def hu_to_u8(hu: np.ndarray) -> np.ndarray:
    """HU -> the training data's 8-bit scale: clip to [-125, 275], scale to 0..255, round (uint8)."""
    lo, hi = WINDOW_HU
    # in place on one float32 copy: the same arithmetic as clip, subtract, scale, round on new arrays, a third of the time
    scaled = np.array(hu, dtype=np.float32, copy=True)
    np.clip(scaled, lo, hi, out=scaled)
    scaled -= np.float32(lo)
    scaled *= np.float32(255.0 / (hi - lo))
    np.rint(scaled, out=scaled)
    return scaled.astype(np.uint8)


def u8_to_hu(u8: np.ndarray) -> np.ndarray:
    """The inverse of :func:`hu_to_u8` (values at 0 / 255 are saturated: <= -125 / >= 275 HU)."""
    lo, hi = WINDOW_HU
    return np.asarray(u8, dtype=np.float32) * np.float32((hi - lo) / 255.0) + np.float32(lo)


def model_grid_shape(shape_rc: tuple[int, int], spacing_rc: tuple[float, float]) -> tuple[int, int]:
    """Rows and columns of an in-plane grid of ``shape_rc`` pixels of ``spacing_rc`` mm at :data:`MODEL_SPACING_MM`."""
    return (
        max(1, int(round(shape_rc[0] * spacing_rc[0] / MODEL_SPACING_MM))),
        max(1, int(round(shape_rc[1] * spacing_rc[1] / MODEL_SPACING_MM))),
    )


def _axis_weights(n_out: int, n_in: int) -> np.ndarray:
    """(n_out, n_in) linear-interpolation matrix, half-pixel centres, edges clamped (two non-zeros per row)."""
    coords = np.clip((np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5, 0.0, n_in - 1.0)
    lo = np.floor(coords).astype(np.intp)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = coords - lo
    weights = np.zeros((n_out, n_in), dtype=np.float64)
    np.add.at(weights, (np.arange(n_out), lo), 1.0 - frac)
    np.add.at(weights, (np.arange(n_out), hi), frac)
    return weights.astype(np.float32)


def _taps(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The (at most) two non-zero entries of each row of a linear-interpolation matrix: first and last column
    index and their weights (the second weight 0 where a row has one entry)."""
    nonzero = weights != 0
    first = np.argmax(nonzero, axis=1)
    last = weights.shape[1] - 1 - np.argmax(nonzero[:, ::-1], axis=1)
    rows = np.arange(weights.shape[0])
    w_first = weights[rows, first]
    w_last = np.where(last != first, weights[rows, last], np.float32(0.0)).astype(np.float32)
    return first, last, w_first, w_last


def _interpolate_last_axes(arr: np.ndarray, w_rows: np.ndarray, w_cols: np.ndarray) -> np.ndarray:
    """``w_rows @ arr @ w_cols.T`` for interpolation matrices (two non-zeros per row), by gathering the two
    neighbours instead of multiplying by the zeros: columns first, then rows, as the matrix product."""
    c_lo, c_hi, wc_lo, wc_hi = _taps(w_cols)
    r_lo, r_hi, wr_lo, wr_hi = _taps(w_rows)
    cols = arr[..., c_lo] * wc_lo + arr[..., c_hi] * wc_hi
    return cols[..., r_lo, :] * wr_lo[:, None] + cols[..., r_hi, :] * wr_hi[:, None]


def resize_inplane(stack: np.ndarray, out_rc: tuple[int, int]) -> np.ndarray:
    """Bilinear in-plane resampling of a (..., rows, cols) array to ``out_rc`` (half-pixel centres, edges clamped;
    the same as torch ``interpolate(mode='bilinear', align_corners=False)`` without anti-aliasing).  Separable:
    the two neighbours of each output pixel are gathered, columns then rows, a few images at a time (the matrix
    products ``w_rows @ x @ w_cols.T`` give the same values up to float rounding, at several times the cost)."""
    arr = np.asarray(stack, dtype=np.float32)
    rows, cols = arr.shape[-2:]
    w_rows = _axis_weights(out_rc[0], rows)
    w_cols = _axis_weights(out_rc[1], cols)
    flat = arr.reshape(-1, rows, cols)
    out = np.empty((flat.shape[0], out_rc[0], out_rc[1]), dtype=np.float32)
    for k in range(0, flat.shape[0], LABEL_CHUNK):
        out[k : k + LABEL_CHUNK] = _interpolate_last_axes(flat[k : k + LABEL_CHUNK], w_rows, w_cols)
    return out.reshape(*arr.shape[:-2], out_rc[0], out_rc[1])


def neighbour_offset(slice_spacing_mm: float) -> int:
    """Slices between the centre slice and each neighbour channel (at least 1)."""
    return max(1, int(round(NEIGHBOUR_OFFSET_MM / max(float(slice_spacing_mm), 1e-3))))


def model_input(u8_volume: np.ndarray, spacing_zrc: tuple[float, float, float]) -> np.ndarray:
    """(z, rows, cols) uint8 volume -> float32 (z, 3, H, W) at :data:`MODEL_SPACING_MM`, values u8/255, padded with 0
    (air) at the bottom/right to multiples of :data:`SIZE_MULTIPLE`.  Channel order: the slice ``offset`` below
    (lower index), the slice itself, the slice ``offset`` above; edge slices repeat."""
    vol = np.asarray(u8_volume)
    if vol.ndim != 3:
        raise ValueError(f"expected a (z, rows, cols) volume, got shape {vol.shape}")
    out_rc = model_grid_shape(vol.shape[1:], (spacing_zrc[1], spacing_zrc[2]))
    resampled = resize_inplane(vol.astype(np.float32) / np.float32(255.0), out_rc)
    h = -(-out_rc[0] // SIZE_MULTIPLE) * SIZE_MULTIPLE
    w = -(-out_rc[1] // SIZE_MULTIPLE) * SIZE_MULTIPLE
    padded = np.zeros((vol.shape[0], h, w), dtype=np.float32)
    padded[:, : out_rc[0], : out_rc[1]] = resampled
    off = neighbour_offset(spacing_zrc[0])
    idx = np.arange(vol.shape[0])
    below = np.clip(idx - off, 0, vol.shape[0] - 1)
    above = np.clip(idx + off, 0, vol.shape[0] - 1)
    return np.stack([padded[below], padded, padded[above]], axis=1)


def logits_to_grid(logits: np.ndarray, model_rc: tuple[int, int], out_rc: tuple[int, int]) -> np.ndarray:
    """(z, C, H, W) model logits (padded) -> (z, C, rows, cols) on the source grid: crop the padding, resample bilinearly."""
    cropped = np.asarray(logits, dtype=np.float32)[..., : model_rc[0], : model_rc[1]]
    return resize_inplane(cropped, out_rc)


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 26-connected component of a boolean 3-D mask (empty stays empty)."""
    out = np.zeros(mask.shape, dtype=bool)
    found = ndi.find_objects(mask.astype(np.uint8))
    if not found or found[0] is None:
        return out
    # labelled inside the mask's bounding box only: the same components, numbered in the same scan order
    box = found[0]
    labels, n = ndi.label(mask[box], structure=np.ones((3, 3, 3), dtype=bool))
    if n <= 1:
        out[box] = labels > 0
        return out
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    out[box] = labels == int(np.argmax(sizes))
    return out


def labels_from_logits(logits: np.ndarray, model_rc: tuple[int, int], out_rc: tuple[int, int]) -> np.ndarray:
    """(z, 3, H, W) logits -> uint8 (z, rows, cols) labels on the source grid; largest 3-D component per organ.

    Bilinear resampling is linear, so the argmax of the resampled logits equals the decision on the resampled
    differences (liver - background, spleen - background); they are resampled only inside the box (plus a
    margin of 2 model pixels) where the model grid has any organ, since outside it both differences stay
    negative."""
    cropped = np.asarray(logits, dtype=np.float32)[..., : model_rc[0], : model_rc[1]]
    out = np.zeros((cropped.shape[0], out_rc[0], out_rc[1]), dtype=np.uint8)
    coarse = np.argmax(cropped, axis=1)
    found = np.argwhere(coarse > 0)
    if found.size == 0:
        return out
    (z0, r0, c0), (z1, r1, c1) = found.min(axis=0), found.max(axis=0) + 1
    r0, c0 = max(0, r0 - 2), max(0, c0 - 2)
    r1, c1 = min(model_rc[0], r1 + 2), min(model_rc[1], c1 + 2)
    w_rows = _axis_weights(out_rc[0], model_rc[0])
    w_cols = _axis_weights(out_rc[1], model_rc[1])
    # output pixels whose interpolation touches only the box
    rows_out = np.flatnonzero(w_rows[:, r0:r1].sum(axis=1) > 0.999)
    cols_out = np.flatnonzero(w_cols[:, c0:c1].sum(axis=1) > 0.999)
    wr = w_rows[rows_out[0] : rows_out[-1] + 1, r0:r1]
    wc = w_cols[cols_out[0] : cols_out[-1] + 1, c0:c1]
    sub = cropped[z0:z1, :, r0:r1, c0:c1]
    labels = np.empty((z1 - z0, len(wr), len(wc)), dtype=np.uint8)
    for k in range(0, z1 - z0, LABEL_CHUNK):  # a few slices at a time: the upsampled logits stay in cache
        chunk = sub[k : k + LABEL_CHUNK]
        diffs = chunk[:, 1:] - chunk[:, :1]  # (z, 2, h, w): liver - background, spleen - background
        up = _interpolate_last_axes(diffs, wr, wc)
        liver_d, spleen_d = up[:, 0], up[:, 1]
        # argmax over (background 0, liver_d, spleen_d), ties to the lower label
        labels[k : k + LABEL_CHUNK] = np.where(np.maximum(liver_d, spleen_d) > 0, np.where(spleen_d > liver_d, SPLEEN, LIVER), BACKGROUND)
    # outside this box every label is background, so the components are found inside it alone
    box = (slice(z0, z1), slice(rows_out[0], rows_out[-1] + 1), slice(cols_out[0], cols_out[-1] + 1))
    kept = np.zeros_like(labels)
    for label in (LIVER, SPLEEN):
        kept[largest_component(labels == label)] = label
    out[box] = kept
    return out
