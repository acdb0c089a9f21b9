"""Lung CT quantification: lung segmentation, lung volumes and emphysema indices (LAA-950, Perc15).

See :mod:`radpilot.analyses.lung_ct.segmentation` for the method and
:mod:`radpilot.analyses.lung_ct.analysis` for the outputs and their codes.
"""

from radpilot.analyses.lung_ct.analysis import LungCTQuant
from radpilot.analyses.lung_ct.quantification import (
    LungDensityStats,
    classify_kernel,
    kernel_note,
    lung_density_stats,
)
from radpilot.analyses.lung_ct.segmentation import (
    LEFT_LUNG_LABEL,
    RIGHT_LUNG_LABEL,
    LungSegmentation,
    SegmentationParams,
    Thresholds,
    estimate_thresholds,
    segment_lungs,
    segment_lungs_slice,
)

ANALYSIS = LungCTQuant()  # discovered by radpilot.analyses

__all__ = [
    "ANALYSIS",
    "LEFT_LUNG_LABEL",
    "RIGHT_LUNG_LABEL",
    "LungCTQuant",
    "LungDensityStats",
    "LungSegmentation",
    "SegmentationParams",
    "Thresholds",
    "classify_kernel",
    "estimate_thresholds",
    "kernel_note",
    "lung_density_stats",
    "segment_lungs",
    "segment_lungs_slice",
]
