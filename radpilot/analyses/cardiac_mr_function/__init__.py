"""Cardiac MR function: LV/RV volumes, ejection fractions, LV mass and cardiac output from a short-axis cine.

:mod:`.preprocess` defines the model's input (shared with training), :mod:`.segment` finds the
heart and segments every phase, :mod:`.function` the volumes and function figures,
:mod:`.figures` the pictures, :mod:`.phantom` the beating-heart phantom and the cine DICOM writer,
:mod:`.analysis` the outputs and their codes.
"""

from radpilot.analyses.cardiac_mr_function.analysis import CardiacMrFunction

ANALYSIS = CardiacMrFunction()  # discovered by radpilot.analyses

__all__ = ["ANALYSIS", "CardiacMrFunction"]
