"""Lung densitometry: volume, LAA-950, Perc15 and mean attenuation of a lung mask.

Definitions (no smoothing, no resampling, values as stored after the Modality LUT):

* volume (mL) = voxel count x voxel volume (mm³) / 1000
* LAA-950 (%) = 100 x (voxels below -950 HU) / (all voxels of the mask)
* Perc15 (HU) = 15th percentile of the attenuation in the mask (numpy's linear interpolation)
* mean (HU) = mean attenuation in the mask

LAA-950 and Perc15 depend strongly on the reconstruction kernel, the slice
thickness, the dose and the inspiration level.  A sharp (lung) kernel adds noise,
which pushes many voxels below -950 HU and inflates LAA-950.  Never compare them
across kernels (see :func:`kernel_note`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

LAA_THRESHOLD_HU = -950.0
PERC_LEVEL = 15.0


@dataclass(frozen=True)
class LungDensityStats:
    """Densitometry of one lung mask.

    Attributes
    ----------
    voxel_count
        Voxels in the mask.
    volume_ml
        Volume in mL.
    laa950_percent
        Percentage of voxels below -950 HU.
    perc15_hu
        15th percentile of the attenuation, in HU.
    mean_hu
        Mean attenuation, in HU.
    """

    voxel_count: int
    volume_ml: float
    laa950_percent: float
    perc15_hu: float
    mean_hu: float


def lung_density_stats(
    voxels: np.ndarray,
    mask: np.ndarray,
    ml_per_voxel: float,
    *,
    laa_threshold_hu: float = LAA_THRESHOLD_HU,
    percentile: float = PERC_LEVEL,
) -> LungDensityStats:
    """Volume and density indices of the voxels of ``voxels`` inside ``mask``.

    Parameters
    ----------
    voxels
        CT values in HU.
    mask
        Boolean mask of the same shape.
    ml_per_voxel
        Volume of one voxel in mL.
    laa_threshold_hu, percentile
        The LAA threshold (default -950 HU) and the percentile (default 15).

    Raises
    ------
    ValueError
        When the shapes differ, the mask is empty or ``ml_per_voxel`` is not positive.
    """
    if voxels.shape != mask.shape:
        raise ValueError(f"voxels {voxels.shape} and mask {mask.shape} differ in shape")
    if mask.dtype != bool:
        raise TypeError(f"mask must be boolean, got {mask.dtype}")
    if not (np.isfinite(ml_per_voxel) and ml_per_voxel > 0):
        raise ValueError(f"ml_per_voxel must be positive, got {ml_per_voxel!r}")
    values = voxels[mask]
    if values.size == 0:
        raise ValueError("the lung mask is empty")
    values64 = values.astype(np.float64)
    return LungDensityStats(
        voxel_count=int(values.size),
        volume_ml=float(values.size * ml_per_voxel),
        laa950_percent=float(100.0 * np.count_nonzero(values < laa_threshold_hu) / values.size),
        perc15_hu=float(np.percentile(values64, percentile)),
        mean_hu=float(values64.mean()),
    )


# Known kernel names by vendor.  A kernel is "sharp" when it is meant for lung or bone
# (high spatial frequency, high noise).
_SHARP_PATTERNS = (
    r"^L$|^Y[A-H]$|^D$|^E$",  # Philips: L lung, YA-YH lung/sharp, D/E sharp
    r"LUNG|BONE|EDGE|SHARP|DETAIL|HIGH",  # GE and generic names
    r"^B[LR]?[5-9]\d",  # Siemens B50-B80, Br59+, Bl57+
    r"^[BI][5-9]\d",  # Siemens I50+
    r"^FC(5[0-9]|8[0-9])$",  # Canon/Toshiba lung kernels
)
_SOFT_PATTERNS = (
    r"^[ABC]$",  # Philips A/B/C body
    r"STANDARD|SOFT|STND|BODY|SMOOTH",  # GE and generic names
    r"^B[RF]?[0-4]\d",  # Siemens B10-B46, Br32-Br44
    r"^[BIQ][0-4]\d",  # Siemens I/Q soft
    r"^FC(0[0-9]|1[0-9])$",  # Canon/Toshiba body kernels
)


def classify_kernel(kernel: str | None) -> str:
    """Classify a ConvolutionKernel value as ``"sharp"``, ``"soft"`` or ``"unknown"`` (heuristic, by name)."""
    if not kernel:
        return "unknown"
    name = str(kernel).split("\\")[0].strip().upper()
    if not name:
        return "unknown"
    if any(re.search(p, name) for p in _SHARP_PATTERNS):
        return "sharp"
    if any(re.search(p, name) for p in _SOFT_PATTERNS):
        return "soft"
    return "unknown"


def kernel_note(kernel: str | None) -> str:
    """Plain-language remark about the reconstruction kernel and LAA-950."""
    if not kernel:
        return (
            "Reconstruction kernel: not recorded in the series. LAA-950 and Perc15 depend strongly on the kernel "
            "(sharp kernels add noise and inflate LAA-950); do not compare them across series whose kernel is unknown."
        )
    kind = classify_kernel(kernel)
    if kind == "sharp":
        detail = (
            "this looks like a sharp (lung/bone) kernel, whose noise pushes voxels below -950 HU and inflates "
            "LAA-950 (and lowers Perc15); a soft-kernel reconstruction of the same scan gives much lower values"
        )
    elif kind == "soft":
        detail = "this looks like a soft (body) kernel, the usual choice for densitometry"
    else:
        detail = "its sharpness is not known to RadPilot"
    return (
        f"Reconstruction kernel: {kernel} ({detail}). LAA-950 and Perc15 depend on the kernel: "
        "compare them only between series reconstructed with the same kernel, slice thickness and protocol."
    )
