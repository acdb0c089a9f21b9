"""The analyses RadPilot knows: every package under radpilot/analyses that exports ``ANALYSIS``.

Adding an analysis is one new folder whose ``__init__.py`` sets
``ANALYSIS = MyAnalysis()``; nothing else changes.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil

import radpilot.analyses
from radpilot.analyses.base import Analysis

logger = logging.getLogger(__name__)


def discover_analyses() -> dict[str, Analysis]:
    """Import each analysis package and collect its ``ANALYSIS`` object, keyed by name."""
    found: dict[str, Analysis] = {}
    for module_info in pkgutil.iter_modules(radpilot.analyses.__path__):
        if not module_info.ispkg:
            continue
        module = importlib.import_module(f"radpilot.analyses.{module_info.name}")
        analysis = getattr(module, "ANALYSIS", None)
        if analysis is None:
            continue
        if not isinstance(analysis, Analysis):
            raise TypeError(f"radpilot.analyses.{module_info.name}.ANALYSIS must be an Analysis instance, got {type(analysis)}")
        if analysis.name in found:
            raise ValueError(f"two analyses are named {analysis.name!r}")
        found[analysis.name] = analysis
    return found
