"""The contract of an analysis: one folder that declares everything about itself.

An analysis is a pure, deterministic function of its input series: no database,
no network, no global state.  Its class declares its name, version, the series it
accepts, its outputs (names, units, codes), the structures it segments (SNOMED CT),
the display window of its key images, the models it needs and, optionally, the
entry points the validation workbench uses on reference data.  Its folder holds:

``routing.yaml``
    The default routing rule(s) that send series to it (format: :mod:`radpilot.engine.routing`);
    used when the site gives no rules file of its own.  They may name only this analysis.
``acceptance.yaml``
    Its acceptance criteria (format: :mod:`radpilot.validation.gate`); an analysis
    without one, built on models, inherits its first model's criteria.
``flags.yaml``
    Optional: the worklist flags it raises (:class:`~radpilot.contract.declarations.FlagRule`,
    format: :mod:`radpilot.engine.flags`), with their thresholds.
``models/``
    Optional: model folders (``manifest.json`` + ONNX) it ships itself, found by the
    model registry beside the repository's ``models/``.

Encoding into DICOM, storage, forwarding and display are the engine's job, so a new
analysis is one new folder and nothing else changes.
"""

from __future__ import annotations

import abc
import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from radpilot.contract.declarations import (
    Classification,
    DetectionSpec,
    InputRequirements,
    ModelPrediction,
    OutputSpec,
    StructureSpec,
)
from radpilot.contract.findings import Findings

if TYPE_CHECKING:  # the contract sits below the DICOM layer; Volume is only named in signatures
    from radpilot.dicom.volume import Volume

ROUTING_FILE = "routing.yaml"
ACCEPTANCE_FILE = "acceptance.yaml"
MODELS_FOLDER = "models"
FLAGS_FILE = "flags.yaml"


class Analysis(abc.ABC):
    """Base class of every analysis; subclasses set the class attributes and implement ``check_input`` and ``run``."""

    name: ClassVar[str]
    version: ClassVar[str]
    description: ClassVar[str] = ""
    inputs: ClassVar[InputRequirements | None] = None
    required_models: ClassVar[tuple[str, ...]] = ()
    timeout_s: ClassVar[float] = 600.0
    #: Outputs compared with reference values and monitored in production.
    outputs: ClassVar[tuple[OutputSpec, ...]] = ()
    #: Structures of its segmentation, by the names reference datasets use.
    structures: ClassVar[tuple[StructureSpec, ...]] = ()
    #: Binary questions the workbench scores from an output (e.g. cardiomegaly from the CTR).
    classifications: ClassVar[tuple[Classification, ...]] = ()
    #: Located findings scored as detections (FROC, CPM) against a dataset's reference points.
    detections: ClassVar[tuple[DetectionSpec, ...]] = ()
    #: Key image display window (center, width) per modality; a modality not listed gets a percentile stretch.
    display_windows: ClassVar[Mapping[str, tuple[float, float]]] = {}
    #: How the 2-D entry point relates to the production path (shown in validation reports).
    slice_entry_description: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if inspect.isabstract(cls):
            return
        for attribute in ("name", "version"):
            if not isinstance(getattr(cls, attribute, None), str) or not getattr(cls, attribute):
                raise TypeError(f"analysis class {cls.__qualname__} must set {attribute} to a non-empty string")
        names = [o.name for o in cls.outputs] + [s.name for s in cls.structures]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise TypeError(f"analysis {cls.name}: output/structure names {duplicates} are declared twice")
        known = {s.name for s in cls.structures}
        for structure in cls.structures:
            unknown = [p for p in structure.parts if p not in known]
            if unknown:
                raise TypeError(f"analysis {cls.name}: structure {structure.name!r} is made of undeclared parts {unknown}")
        outputs = {o.name for o in cls.outputs}
        for question in cls.classifications:
            if question.output not in outputs:
                raise TypeError(f"analysis {cls.name}: classification {question.name!r} reads undeclared output {question.output!r}")

    # ------------------------------------------------------------------ the analysis itself
    @abc.abstractmethod
    def check_input(self, volume: Volume) -> None:
        """Raise NotApplicableError (plain-language reason) when ``volume`` cannot be analysed."""

    @abc.abstractmethod
    def run(self, volume: Volume) -> Findings:
        """Analyse one volume; pure and deterministic.

        May raise NotApplicableError (plain-language reason) when only the analysis itself can tell that the
        volume does not apply, e.g. its model finds no liver in the field of view."""

    # ------------------------------------------------------------------ its folder
    @classmethod
    def folder(cls) -> Path:
        """The analysis' package folder (where its declarations files live)."""
        return Path(inspect.getfile(cls)).resolve().parent

    @classmethod
    def routing_file(cls) -> Path:
        return cls.folder() / ROUTING_FILE

    @classmethod
    def acceptance_file(cls) -> Path:
        return cls.folder() / ACCEPTANCE_FILE

    @classmethod
    def models_dir(cls) -> Path:
        return cls.folder() / MODELS_FOLDER

    @classmethod
    def flags_file(cls) -> Path:
        return cls.folder() / FLAGS_FILE

    # ------------------------------------------------------------------ declarations, read by the layers above
    def display_window(self, modality: str) -> tuple[float, float] | None:
        """The key image window (center, width) for ``modality``, or None for a percentile stretch."""
        return self.display_windows.get(modality.upper())

    def structure(self, name: str) -> StructureSpec | None:
        return next((s for s in self.structures if s.name == name), None)

    def output(self, name: str) -> OutputSpec | None:
        return next((o for o in self.outputs if o.name == name), None)

    def detection(self, name: str) -> DetectionSpec | None:
        return next((d for d in self.detections if d.name == name), None)

    def output_values(self, findings: Findings) -> dict[str, float]:
        """Its declared outputs (by name) among ``findings``' measurements; the first match of each wins."""
        values: dict[str, float] = {}
        for m in findings.measurements:
            site = m.finding_site
            for spec in self.outputs:
                if spec.name not in values and spec.matches(
                    m.name.value, m.name.meaning, site.value if site else None, site.meaning if site else None
                ):
                    values[spec.name] = float(m.value)
        return values

    def detection_counts(self, findings: Findings) -> dict[str, int]:
        """How many of ``findings``' located findings each declared detection has."""
        return {d.name: sum(1 for p in findings.points if p.name.value == d.concept) for d in self.detections}

    # ------------------------------------------------------------------ optional validation entry points
    def run_slice(self, image: np.ndarray, pixel_spacing_mm: tuple[float, float] | None) -> np.ndarray:
        """The analysis' 2-D core on one slice (a boolean mask of its primary structure).

        Offered only by analyses whose method works slice by slice; the workbench uses it
        on reference sets of single slices.  ``has_slice_entry`` says whether it is offered.
        """
        raise NotImplementedError(f"{self.name} has no 2-D entry point")

    def reference_outputs(self, volume: Volume, masks: Mapping[str, np.ndarray]) -> dict[str, float]:
        """The analysis' outputs measured inside the REFERENCE masks (structure name -> mask).

        Separates segmentation differences from quantification, and checks that reference
        masks and images were read in register.  Default: none.
        """
        return {}

    def predict_with_model(self, model: str, session: Any, image: np.ndarray) -> ModelPrediction:
        """One of its models alone on a 2-D reference image, with the analysis' own pre/post-processing.

        ``session`` is the verified ONNX Runtime session of ``model``.  Offered by analyses
        whose models the workbench validates on their own (``has_model_entry``).
        """
        raise NotImplementedError(f"{self.name} offers no model-only evaluation")

    @property
    def has_slice_entry(self) -> bool:
        return type(self).run_slice is not Analysis.run_slice

    @property
    def has_model_entry(self) -> bool:
        return type(self).predict_with_model is not Analysis.predict_with_model
