"""The contrast phase of an abdominal CT: from the header and from the measured aortic attenuation.

Header: ``ContrastBolusAgent`` (present and not a "none" word: contrast given) and words in
``SeriesDescription`` (e.g. "non-contrast", "w/o", "native" / "portal", "venous", "arterial", "C+").

Measurement: the aorta is found classically on the slices through the middle of the liver.  The
vertebral body is the bone (>= 250 HU) component nearest the body's left-right centre in its posterior
half; the aorta lies in front of it and to the patient's left.  In a box from the vertebral body's
anterior edge to 45 mm in front of it, and from 15 mm right to 45 mm left of the vertebral centre,
the highest mean over a ~10 mm disc (bone excluded) is the aortic attenuation of that slice; the median
over the slices is reported.

Thresholds (document and source): unenhanced whole blood measures about 40-60 HU (New PF, Aronow S.
Radiology 1976;121:635-640; higher with a high haematocrit), so an aorta <= 80 HU is read as
non-contrast (margin for noise and haematocrit).  In portal-venous phase the aorta typically measures
about 120-200 HU and in the late arterial phase over 250 HU (abdominal CT protocol conventions, e.g.
Bae KT. Radiology 2010;256:32-61, intravascular contrast enhancement); an aorta >= 120 HU is read as
contrast-enhanced.  Between 80 and 120 HU the phase is indeterminate.  An enhanced aorta >= 250 HU with
a liver under 80 HU is called arterial, otherwise portal-venous.  These thresholds were not validated
here on a phase-labelled cohort.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage as ndi

NON_CONTRAST_MAX_HU = 80.0
ENHANCED_MIN_HU = 120.0
ARTERIAL_AORTA_MIN_HU = 250.0
ARTERIAL_LIVER_MAX_HU = 80.0
BONE_HU = 250.0
AORTA_DISC_MM = 10.0

NON_CONTRAST = "non-contrast"
PORTAL_VENOUS = "portal-venous"
ARTERIAL = "arterial"
ENHANCED = "contrast-enhanced"
UNDETERMINED = "undetermined"

_NONE_WORDS = re.compile(r"^\s*(none|no|nil|n/?a|0)\s*$", re.IGNORECASE)
_NON_CONTRAST_WORDS = re.compile(r"(non[- ]?con|\bw/?o\b|without|unenh|native|nativ|plain|sans|\bnc\b|pre[- ]?contrast)", re.IGNORECASE)
_CONTRAST_WORDS = re.compile(
    r"(portal|venous|\bpv\b|arterial|\bart\b|c\+|\+c\b|with contrast|\bw/ ?c|enhanced|delayed|\biv\b)", re.IGNORECASE
)


@dataclass(frozen=True)
class PhaseReading:
    """What the header says (``contrast``: True/False/None) and why."""

    contrast: bool | None
    reason: str


def header_phase(metadata: Mapping[str, Any]) -> PhaseReading:
    agent = str(metadata.get("ContrastBolusAgent", "") or "").strip()
    description = str(metadata.get("SeriesDescription", "") or "").strip()
    if agent and not _NONE_WORDS.match(agent):
        return PhaseReading(True, f"ContrastBolusAgent {agent!r}")
    if description and _NON_CONTRAST_WORDS.search(description):
        return PhaseReading(False, f"SeriesDescription {description!r}")
    if description and _CONTRAST_WORDS.search(description):
        return PhaseReading(True, f"SeriesDescription {description!r}")
    if agent:
        return PhaseReading(False, f"ContrastBolusAgent {agent!r}")
    return PhaseReading(None, "no ContrastBolusAgent and no phase word in SeriesDescription")


def _disc(radius_px: tuple[float, float]) -> np.ndarray:
    ry, rx = max(radius_px[0], 1.0), max(radius_px[1], 1.0)
    y, x = np.ogrid[-int(ry) : int(ry) + 1, -int(rx) : int(rx) + 1]
    return ((y / ry) ** 2 + (x / rx) ** 2) <= 1.0


def aorta_hu_slice(hu: np.ndarray, spacing_rc: tuple[float, float]) -> float | None:
    """The aortic attenuation on one axial slice in the standard orientation (rows to posterior, columns to the
    patient's left), or None when no vertebral body is found."""
    sr, sc = spacing_rc
    body_labels, n = ndi.label(hu > -300)
    if n == 0:
        return None
    body = body_labels == (np.argmax(np.bincount(body_labels.ravel())[1:]) + 1)
    rows = np.flatnonzero(body.any(axis=1))
    cols = np.flatnonzero(body.any(axis=0))
    centre_c = 0.5 * (cols[0] + cols[-1])
    mid_r = 0.5 * (rows[0] + rows[-1])
    bone_labels, nb = ndi.label((hu >= BONE_HU) & body)
    if nb == 0:
        return None
    best, best_dist = 0, np.inf
    voxels = np.bincount(bone_labels.ravel(), minlength=nb + 1)
    for index, (cy, cx) in enumerate(ndi.center_of_mass(np.ones_like(bone_labels), bone_labels, range(1, nb + 1)), start=1):
        size = int(voxels[index]) * sr * sc
        if cy < mid_r or size < 200.0:  # posterior half, at least 2 cm^2
            continue
        dist = abs(cx - centre_c) * sc
        if dist < best_dist and dist < 40.0:
            best, best_dist = index, dist
    if best == 0:
        return None
    spine = bone_labels == best
    sy, sx = ndi.center_of_mass(spine)
    band = spine[:, max(0, int(sx - 10 / sc)) : int(sx + 10 / sc) + 1]
    anterior = int(np.flatnonzero(band.any(axis=1))[0])
    r0, r1 = max(0, int(anterior - 45 / sr)), anterior
    c0, c1 = max(0, int(sx - 15 / sc)), min(hu.shape[1], int(sx + 45 / sc) + 1)
    if r1 - r0 < 3 or c1 - c0 < 3:
        return None
    disc = _disc((AORTA_DISC_MM / 2 / sr, AORTA_DISC_MM / 2 / sc)).astype(np.float32)
    disc /= disc.sum()
    # the disc means are needed only in the search box: convolve a crop of it plus the disc's reach (the image
    # edge, where the crop meets it, is extended as before), not the whole slice
    pr, pc = disc.shape[0] // 2 + 1, disc.shape[1] // 2 + 1
    R0, R1, C0, C1 = max(0, r0 - pr), min(hu.shape[0], r1 + pr), max(0, c0 - pc), min(hu.shape[1], c1 + pc)
    crop = hu[R0:R1, C0:C1]
    soft = np.where(crop >= 600.0, np.nan, np.clip(crop, -200.0, 600.0)).astype(np.float32)
    mean = ndi.convolve(np.nan_to_num(soft, nan=0.0), disc, mode="nearest")
    bone_near = ndi.convolve(np.isnan(soft).astype(np.float32), disc, mode="nearest") > 0
    roi = mean[r0 - R0 : r1 - R0, c0 - C0 : c1 - C0]
    valid = ~bone_near[r0 - R0 : r1 - R0, c0 - C0 : c1 - C0] & body[r0:r1, c0:c1]
    if not valid.any():
        return None
    return float(roi[valid].max())


def aorta_hu(hu_volume: np.ndarray, spacing_zrc: tuple[float, float, float], liver: np.ndarray) -> float | None:
    """Median aortic attenuation over the slices through the middle half of the liver (None if not found)."""
    slices = np.flatnonzero(liver.any(axis=(1, 2)))
    if slices.size == 0:
        return None
    lo, hi = np.percentile(slices, [25, 75])
    chosen = [int(k) for k in slices if lo <= k <= hi][::2][:15]
    values = [v for k in chosen if (v := aorta_hu_slice(hu_volume[k], (spacing_zrc[1], spacing_zrc[2]))) is not None]
    return float(np.median(values)) if values else None


@dataclass(frozen=True)
class Phase:
    phase: str  # one of the constants above
    non_contrast: bool  # True only when the fat grade may be given
    aorta_hu: float | None
    explanation: str


def decide_phase(header: PhaseReading, aorta: float | None, liver_hu: float | None) -> Phase:
    """Combine header and measurement; a fat grade needs both (or the measurement alone) to say non-contrast."""
    if aorta is None:
        measured = "aorta not found"
        by_measure: bool | None = None
    elif aorta <= NON_CONTRAST_MAX_HU:
        measured, by_measure = f"aorta {aorta:.0f} HU (<= {NON_CONTRAST_MAX_HU:.0f} HU: unenhanced blood)", False
    elif aorta >= ENHANCED_MIN_HU:
        measured, by_measure = f"aorta {aorta:.0f} HU (>= {ENHANCED_MIN_HU:.0f} HU: enhanced)", True
    else:
        measured, by_measure = f"aorta {aorta:.0f} HU (between {NON_CONTRAST_MAX_HU:.0f} and {ENHANCED_MIN_HU:.0f} HU)", None
    explanation = f"header: {header.reason}; measured: {measured}"
    if by_measure is True or (by_measure is None and header.contrast is True):
        if aorta is not None and aorta >= ARTERIAL_AORTA_MIN_HU and liver_hu is not None and liver_hu < ARTERIAL_LIVER_MAX_HU:
            phase = ARTERIAL
        elif by_measure is True:
            phase = PORTAL_VENOUS
        else:
            phase = ENHANCED
        if header.contrast is False:
            explanation += " (the header says non-contrast, the measurement says enhanced: the measurement wins)"
        return Phase(phase, False, aorta, explanation)
    if by_measure is False:
        if header.contrast is True:
            # oral contrast only, or a mislabelled series: no fat grade while the two disagree
            explanation += " (the header names contrast but the aorta is unenhanced)"
        return Phase(NON_CONTRAST, header.contrast is not True, aorta, explanation)
    if header.contrast is False and aorta is None:
        return Phase(NON_CONTRAST, True, aorta, explanation + " (phase from the header alone)")
    return Phase(UNDETERMINED, False, aorta, explanation)
