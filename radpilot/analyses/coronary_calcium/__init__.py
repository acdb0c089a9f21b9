"""Coronary artery calcium scoring: Agatston, volume and mass scores, per-artery scores and CAC-DRS.

:mod:`.scoring` holds the definitions and arithmetic, :mod:`.region` the classical heart
region and exclusions, :mod:`.lesions` the lesions and territories, :mod:`.phantom` the
digital phantom it is validated on, :mod:`.analysis` the outputs and their codes.
"""

from radpilot.analyses.coronary_calcium.analysis import CoronaryCalcium
from radpilot.analyses.coronary_calcium.scoring import cac_drs_category, cac_drs_label, density_weight

ANALYSIS = CoronaryCalcium()  # discovered by radpilot.analyses

__all__ = ["ANALYSIS", "CoronaryCalcium", "cac_drs_category", "cac_drs_label", "density_weight"]
