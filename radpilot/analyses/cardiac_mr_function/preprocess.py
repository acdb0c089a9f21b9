"""The one definition of the segmentation model's input and output, numpy only, shared by training and runtime.

The model (``cmr_sax_seg``) labels one short-axis slice: 0 background, 1 RV cavity, 2 LV
myocardium, 3 LV cavity (ACDC's labels). It sees a square tile of ``TILE`` x ``TILE`` pixels
of ``MODEL_PIXEL_MM`` mm centred on the heart, normalised per tile:

1. the slice is resampled in-plane to ``MODEL_PIXEL_MM`` (ACDC's spacing is unknown here; its
   scanners wrote about 1.37-1.68 mm, so its pixels are taken as ``MODEL_PIXEL_MM`` nominally and
   training draws scales 0.8-1.25 around that);
2. the tile is cut around the heart centre (outside the image: 0);
3. ``p1, p99 = percentile(tile, [1, 99])``, ``x = clip((tile - p1) / (p99 - p1), 0, 1)``.

ACDC's images were min-max normalised per volume and quantised to 8 bits; a DICOM cine carries
the scanner's arbitrary signal scale. Step 3 makes both the same: it depends only on the
ordering of values inside the tile, not on the global scale, so the production path
normalises a DICOM cine exactly as training normalised ACDC.
"""

from __future__ import annotations

import numpy as np

MODEL_PIXEL_MM = 1.5
TILE = 128  # runtime tile (192 mm at 1.5 mm): the whole heart with margin; the network is fully convolutional
TRAIN_TILE = 96  # training crops (144 mm): a third of the compute of 160, which is what fits 5-fold CV on 2 shared cores
LABELS = {1: "rv_cavity", 2: "lv_myocardium", 3: "lv_cavity"}


def normalise_tile(tile: np.ndarray) -> np.ndarray:
    """Per-tile p1/p99 normalisation to 0..1 (float32); all zeros when the tile is flat."""
    tile = np.asarray(tile, dtype=np.float32)
    p1, p99 = np.percentile(tile, [1.0, 99.0])
    if p99 <= p1:
        return np.zeros_like(tile, dtype=np.float32)
    return np.clip((tile - p1) / (p99 - p1), 0.0, 1.0).astype(np.float32)


def cut_tile(image: np.ndarray, centre_rc: tuple[float, float], size: int) -> np.ndarray:
    """The ``size`` x ``size`` window of a 2-D (or (..., H, W)) array centred on ``centre_rc``; outside the image: 0."""
    r0 = int(round(centre_rc[0])) - size // 2
    c0 = int(round(centre_rc[1])) - size // 2
    h, w = image.shape[-2:]
    out = np.zeros((*image.shape[:-2], size, size), dtype=image.dtype)
    rs, re = max(r0, 0), min(r0 + size, h)
    cs, ce = max(c0, 0), min(c0 + size, w)
    if rs < re and cs < ce:
        out[..., rs - r0 : re - r0, cs - c0 : ce - c0] = image[..., rs:re, cs:ce]
    return out


def paste_tile(tile: np.ndarray, centre_rc: tuple[float, float], shape: tuple[int, int]) -> np.ndarray:
    """Inverse of :func:`cut_tile`: ``tile`` placed into a zero array of ``shape`` (the part that fits)."""
    size = tile.shape[-1]
    r0 = int(round(centre_rc[0])) - size // 2
    c0 = int(round(centre_rc[1])) - size // 2
    h, w = shape
    out = np.zeros((*tile.shape[:-2], h, w), dtype=tile.dtype)
    rs, re = max(r0, 0), min(r0 + size, h)
    cs, ce = max(c0, 0), min(c0 + size, w)
    if rs < re and cs < ce:
        out[..., rs:re, cs:ce] = tile[..., rs - r0 : re - r0, cs - c0 : ce - c0]
    return out
