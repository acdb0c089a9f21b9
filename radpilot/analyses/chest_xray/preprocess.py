"""Pre- and post-processing of the chest radiograph lung/heart segmentation model.

One definition, shared by training (``training/chest_xray``) and the runtime, in
numpy and scipy only (no torch), so the ONNX model sees at inference exactly the
input it was trained on.

Preprocessing (``preprocess``), the model ``cxr_lung_heart_seg`` input:

1. The image is a 2-D array of stored values in the ordinary radiograph display
   convention (MONOCHROME2: bone, heart and diaphragm bright, lungs dark; invert a
   MONOCHROME1 image first).  A posteroanterior view, patient's right on the image
   left, not flipped.
2. Area resampling to 256 x 256 (``area_resize``): every output pixel is the mean of
   the input area it covers, partial pixels weighted by their overlap (separable,
   exact; for 512 x 512 input the mean of each 2 x 2 block).  A non-square image is
   resampled to the square grid without padding (the model was trained on square
   JSRT films only).
3. Robust intensity normalisation per image on the resampled image:
   ``p1, p99 = numpy.percentile(x, [1, 99])`` (linear interpolation, numpy's
   default), ``x = clip((x - p1) / (p99 - p1), 0, 1)`` as float32; an image with
   ``p99 <= p1`` becomes all zeros.
4. Shape (N, 1, 256, 256) float32, input name ``image``.

Postprocessing (``labels_from_logits``): logits (4, 256, 256) are resampled
bilinearly (half-pixel centres, edge clamped: ``torch.nn.functional.interpolate``
with ``align_corners=False``) to the original grid, the label is the argmax
(0 background, 1 right lung, 2 left lung, 3 heart), and only the largest
8-connected component of each structure is kept (the rest becomes background).

The cardiothoracic ratio (``cardiothoracic_ratio``) follows the JSRT reference
definition: heart width = rightmost - leftmost heart column + 1 over all rows;
thoracic width = lateral-most column of the left-lung mask (image right) -
lateral-most column of the right-lung mask (image left) + 1 over all rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

MODEL_SIZE = 256
LABELS = {0: "background", 1: "right_lung", 2: "left_lung", 3: "heart"}
PERCENTILES = (1.0, 99.0)


def _area_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights: output pixel i averages input span [i*s, (i+1)*s), s = n_in / n_out."""
    scale = n_in / n_out
    starts = np.arange(n_out) * scale
    ends = starts + scale
    edges = np.arange(n_in + 1, dtype=np.float64)
    lo = np.maximum(starts[:, None], edges[None, :-1])
    hi = np.minimum(ends[:, None], edges[None, 1:])
    weights = np.clip(hi - lo, 0.0, None) / scale
    return weights


def area_resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Area-average a 2-D image to ``size`` = (rows, columns); float64 result."""
    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 2:
        raise ValueError(f"expected a 2-D image, got shape {image.shape}")
    rows, cols = size
    if image.shape == (rows, cols):
        return image.copy()
    if image.shape[0] % rows == 0 and image.shape[1] % cols == 0:
        fr, fc = image.shape[0] // rows, image.shape[1] // cols
        return image.reshape(rows, fr, cols, fc).mean(axis=(1, 3))
    return _area_matrix(image.shape[0], rows) @ image @ _area_matrix(image.shape[1], cols).T


def normalise(image: np.ndarray, percentiles: tuple[float, float] = PERCENTILES) -> np.ndarray:
    """Robust per-image scaling: p_low -> 0, p_high -> 1, clipped; float32."""
    image = np.asarray(image, dtype=np.float64)
    low, high = np.percentile(image, percentiles)
    if not high > low:
        return np.zeros(image.shape, dtype=np.float32)
    return np.clip((image - low) / (high - low), 0.0, 1.0).astype(np.float32)


def preprocess(image: np.ndarray, size: int = MODEL_SIZE) -> np.ndarray:
    """A radiograph (2-D stored values) -> the model input of one image, shape (1, 1, size, size) float32."""
    return normalise(area_resize(image, (size, size)))[None, None]


def _linear_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) linear interpolation weights, half-pixel centres, edges clamped (align_corners=False)."""
    scale = n_in / n_out
    src = np.maximum((np.arange(n_out) + 0.5) * scale - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(int), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    frac = src - i0
    weights = np.zeros((n_out, n_in), dtype=np.float64)
    rows = np.arange(n_out)
    np.add.at(weights, (rows, i0), 1.0 - frac)
    np.add.at(weights, (rows, i1), frac)
    return weights


def resize_logits(logits: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resampling of (C, h, w) logits to (C, *shape) (torch ``align_corners=False`` semantics)."""
    logits = np.asarray(logits, dtype=np.float32)
    if logits.shape[1:] == tuple(shape):
        return logits
    wr = _linear_matrix(logits.shape[1], shape[0]).astype(np.float32)
    wc = _linear_matrix(logits.shape[2], shape[1]).astype(np.float32)
    return np.einsum("ri,cij,sj->crs", wr, logits, wc, optimize=True)


def largest_components(labels: np.ndarray, n_labels: int = 3) -> np.ndarray:
    """Keep only the largest 8-connected component of each label 1..n_labels."""
    out = np.zeros_like(labels)
    structure = np.ones((3, 3), dtype=bool)
    for value in range(1, n_labels + 1):
        mask = labels == value
        if not mask.any():
            continue
        components, count = ndimage.label(mask, structure=structure)
        if count > 1:
            sizes = np.bincount(components.ravel())
            sizes[0] = 0
            mask = components == int(np.argmax(sizes))
        out[mask] = value
    return out


def labels_from_logits(logits: np.ndarray, shape: tuple[int, int], keep_largest: bool = True) -> np.ndarray:
    """(4, h, w) logits of one image -> uint8 label map on the original grid ``shape``."""
    labels = np.argmax(resize_logits(logits, shape), axis=0).astype(np.uint8)
    return largest_components(labels) if keep_largest else labels


@dataclass(frozen=True)
class CardiothoracicRatio:
    heart_width_px: int
    thorax_width_px: int

    @property
    def ratio(self) -> float:
        return self.heart_width_px / self.thorax_width_px


def cardiothoracic_ratio(labels: np.ndarray) -> CardiothoracicRatio | None:
    """CTR from a label map (1 right lung on the image left, 2 left lung, 3 heart); None when a structure is absent."""
    right = np.flatnonzero((labels == 1).any(axis=0))
    left = np.flatnonzero((labels == 2).any(axis=0))
    heart = np.flatnonzero((labels == 3).any(axis=0))
    if not (right.size and left.size and heart.size):
        return None
    thorax = int(left.max() - right.min() + 1)
    if thorax <= 0:
        return None
    return CardiothoracicRatio(heart_width_px=int(heart.max() - heart.min() + 1), thorax_width_px=thorax)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two boolean masks (1.0 when both are empty)."""
    a = np.asarray(a, dtype=bool)
    b = np.asarray(b, dtype=bool)
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total
