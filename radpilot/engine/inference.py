"""Sliding-window inference for inputs larger than a model's input (MONAI-style, numpy only)."""

from __future__ import annotations

from collections.abc import Callable
from itertools import product

import numpy as np


def _starts(size: int, window: int, step: int) -> list[int]:
    if size <= window:
        return [0]
    starts = list(range(0, size - window, step)) + [size - window]
    return sorted(set(starts))


def _gaussian_importance(window: tuple[int, ...], sigma_scale: float = 0.125) -> np.ndarray:
    grids = np.meshgrid(*[np.arange(w, dtype=np.float32) for w in window], indexing="ij")
    weight = np.ones(window, dtype=np.float32)
    for grid, w in zip(grids, window):
        sigma = max(w * sigma_scale, 1e-3)
        weight *= np.exp(-0.5 * ((grid - (w - 1) / 2.0) / sigma) ** 2)
    weight /= weight.max()
    return np.maximum(weight, 1e-3)


def sliding_window_inference(
    image: np.ndarray,
    roi_size: tuple[int, ...],
    predictor: Callable[[np.ndarray], np.ndarray],
    *,
    overlap: float = 0.25,
    mode: str = "gaussian",
    batch_size: int = 1,
) -> np.ndarray:
    """Run ``predictor`` over overlapping windows of ``image`` and blend the outputs.

    Parameters
    ----------
    image
        Array of shape (C, *spatial).
    roi_size
        Window size per spatial axis; smaller inputs are zero-padded up to it.
    predictor
        Maps a batch (B, C, *roi_size) to (B, K, *roi_size).
    overlap
        Fraction of overlap between neighbouring windows, in [0, 1).
    mode
        "gaussian" (weights favour window centres) or "constant".
    batch_size
        Windows per predictor call.

    Returns
    -------
    numpy.ndarray
        (K, *spatial) blended output, float32.
    """
    if image.ndim != len(roi_size) + 1:
        raise ValueError(f"image must be (C, *spatial) with {len(roi_size)} spatial axes, got shape {image.shape}")
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    if mode not in ("gaussian", "constant"):
        raise ValueError(f"mode must be 'gaussian' or 'constant', got {mode!r}")
    spatial = image.shape[1:]
    padded_shape = tuple(max(s, r) for s, r in zip(spatial, roi_size))
    pad = [(0, 0)] + [(0, p - s) for p, s in zip(padded_shape, spatial)]
    padded = np.pad(image, pad) if any(p[1] for p in pad) else image
    steps = [max(1, int(r * (1 - overlap))) for r in roi_size]
    origins = list(product(*[_starts(p, r, s) for p, r, s in zip(padded_shape, roi_size, steps)]))
    weight = _gaussian_importance(roi_size) if mode == "gaussian" else np.ones(roi_size, dtype=np.float32)
    output: np.ndarray | None = None
    norm = np.zeros(padded_shape, dtype=np.float32)
    for first in range(0, len(origins), batch_size):
        batch_origins = origins[first : first + batch_size]
        slices = [tuple(slice(o, o + r) for o, r in zip(origin, roi_size)) for origin in batch_origins]
        batch = np.stack([padded[(slice(None),) + s] for s in slices]).astype(np.float32)
        predicted = np.asarray(predictor(batch), dtype=np.float32)
        if predicted.shape[0] != len(batch_origins) or predicted.shape[2:] != tuple(roi_size):
            raise ValueError(f"predictor returned shape {predicted.shape}; expected (B, K, *{tuple(roi_size)})")
        if output is None:
            output = np.zeros((predicted.shape[1],) + padded_shape, dtype=np.float32)
        for window_output, s in zip(predicted, slices):
            output[(slice(None),) + s] += window_output * weight
            norm[s] += weight
    assert output is not None
    output /= norm
    return output[(slice(None),) + tuple(slice(0, s) for s in spatial)]
