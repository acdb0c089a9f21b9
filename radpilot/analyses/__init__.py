"""The analyses RadPilot knows: one folder each, found here and nowhere else.

An analysis is found when it is

* a package under ``radpilot/analyses/`` whose ``__init__.py`` exports ``ANALYSIS``
  (an instance of :class:`radpilot.contract.Analysis`), or
* an installed distribution's entry point in the group ``radpilot.analyses``, naming
  such a package (``demo = "my_package.demo"``) or the object itself
  (``demo = "my_package.demo:ANALYSIS"``): a site's own analysis, installed with pip.

Everything else about an analysis (inputs, outputs, codes, structures, display window,
default routing rule, acceptance criteria, models) it declares itself: see
:mod:`radpilot.contract`.  Adding one is one new folder; nothing else changes.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
from collections.abc import Iterable, Mapping
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType

from radpilot.contract import Analysis
from radpilot.modelhub.registry import DEFAULT_MODELS_DIR, ModelRegistry

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "radpilot.analyses"


class AnalysisDiscoveryError(TypeError):
    """A package or entry point that claims to be an analysis is not one; the message says which and why."""


def _analysis_of(obj: object, where: str) -> Analysis | None:
    analysis = getattr(obj, "ANALYSIS", None) if isinstance(obj, ModuleType) else obj
    if analysis is None:
        return None
    if not isinstance(analysis, Analysis):
        raise AnalysisDiscoveryError(f"{where} must be an instance of radpilot.contract.Analysis, got {type(analysis).__name__}")
    return analysis


def _builtin() -> Iterable[tuple[str, Analysis]]:
    for module_info in pkgutil.iter_modules(__path__):
        if module_info.ispkg:
            where = f"{__name__}.{module_info.name}"
            analysis = _analysis_of(importlib.import_module(where), f"{where}.ANALYSIS")
            if analysis is not None:
                yield where, analysis


def _installed() -> Iterable[tuple[str, Analysis]]:
    for point in entry_points(group=ENTRY_POINT_GROUP):
        distribution = point.dist.name if point.dist else "an unknown distribution"
        where = f"entry point {point.name!r} ({point.value}) of {distribution}"
        try:
            loaded = point.load()
        except Exception as exc:  # a broken plug-in is named in the error, not hidden behind an import traceback
            raise AnalysisDiscoveryError(f"{where} cannot be loaded: {exc}") from exc
        analysis = _analysis_of(loaded, where)
        if analysis is None:
            raise AnalysisDiscoveryError(f"{where} names a module without ANALYSIS")
        yield where, analysis


def discover_analyses() -> dict[str, Analysis]:
    """Every analysis (built in and installed), keyed by name.

    Raises
    ------
    AnalysisDiscoveryError
        When something that claims to be an analysis is not one, or two analyses share a name.
    """
    found: dict[str, Analysis] = {}
    origin: dict[str, str] = {}
    for where, analysis in (*_builtin(), *_installed()):
        if analysis.name in found:
            raise AnalysisDiscoveryError(f"two analyses are named {analysis.name!r}: {origin[analysis.name]} and {where}")
        found[analysis.name] = analysis
        origin[analysis.name] = where
    return found


def model_folders(analyses: Mapping[str, Analysis], models_dir: Path | None = None) -> list[Path]:
    """Where models are found: ``models_dir`` (default the repository's models/), then each analysis' own models/."""
    folders = [Path(models_dir) if models_dir else DEFAULT_MODELS_DIR]
    folders += [a.models_dir() for _, a in sorted(analyses.items()) if a.models_dir().is_dir()]
    return folders


def model_registry(
    analyses: Mapping[str, Analysis], models_dir: Path | None = None, *, providers: list[str] | None = None, intra_op_threads: int = 0
) -> ModelRegistry:
    """A model registry over :func:`model_folders`."""
    return ModelRegistry(model_folders(analyses, models_dir), providers=providers, intra_op_threads=intra_op_threads)
