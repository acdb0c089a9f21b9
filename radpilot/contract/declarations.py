"""What an analysis declares about itself, beyond its findings.

The engine, the encoders, the validation workbench and the web read these
declarations; none of them names an analysis.  Each type validates at
construction and says what it expected.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from radpilot.contract.findings import Code


@dataclass(frozen=True)
class InputRequirements:
    """The series an analysis accepts, in words and in the modalities it reads (its ``check_input`` decides)."""

    modalities: tuple[str, ...]
    summary: str
    #: The analysis reads the series as a cine: every slice position repeated over the phases of the
    #: cardiac cycle (the engine then builds a ``radpilot.dicom.cine.CineVolume`` instead of one volume).
    temporal: bool = False

    def __post_init__(self) -> None:
        if not self.modalities or not all(isinstance(m, str) and m for m in self.modalities):
            raise ValueError(f"InputRequirements.modalities must be non-empty modality codes, got {self.modalities!r}")
        if not self.summary:
            raise ValueError("InputRequirements.summary must say in words which series the analysis accepts")


@dataclass(frozen=True)
class OutputSpec:
    """A named, comparable output of an analysis, matched to its Measurement by concept and finding site.

    The workbench compares outputs with reference values by ``name``; production
    monitoring watches the distribution of ``key`` outputs for drift.
    """

    name: str
    label: str
    unit: str
    concept: str | None = None
    concept_meaning: str | None = None
    site: str | None = None
    site_meaning: str | None = None
    key: bool = False  # a key output: its distribution is monitored for drift
    relative: bool = False  # also report the error in percent of the reference

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise ValueError(f"OutputSpec.name must be an identifier (it names metrics), got {self.name!r}")
        if self.concept is None and self.concept_meaning is None:
            raise ValueError(f"output {self.name!r} needs the concept (code or meaning) of the measurement it reads")

    @classmethod
    def of(
        cls, name: str, label: str, unit: str, concept: Code, site: Code | None = None, *, key: bool = False, relative: bool = False
    ) -> OutputSpec:
        """The output read from the measurement ``concept`` at finding site ``site``."""
        return cls(
            name,
            label,
            unit,
            concept.value,
            concept.meaning,
            site.value if site else None,
            site.meaning if site else None,
            key=key,
            relative=relative,
        )

    def matches(self, concept: str, concept_meaning: str, site: str | None, site_meaning: str | None) -> bool:
        same_concept = concept == self.concept if concept else concept_meaning == self.concept_meaning
        same_site = (site == self.site) if site else (site_meaning == self.site_meaning)
        return same_concept and same_site


@dataclass(frozen=True)
class StructureSpec:
    """A structure the analysis segments, as reference datasets name it, matched by segment type (SNOMED CT).

    ``parts``: a structure made of others (e.g. both lungs = right + left); its
    reference is the union of the parts' references.  ``surface=False`` skips
    surface distances (a union's surface is its parts' surfaces, measured already).
    """

    name: str
    codes: tuple[str, ...]
    parts: tuple[str, ...] = ()
    surface: bool = True

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise ValueError(f"StructureSpec.name must be an identifier (it names metrics), got {self.name!r}")
        if not self.codes:
            raise ValueError(f"structure {self.name!r} needs the segment type codes (SNOMED CT) it is matched by")


@dataclass(frozen=True)
class Classification:
    """A binary question answered from a continuous output: reference positive when ref > threshold, scored by the prediction."""

    name: str
    label: str
    output: str
    reference_threshold: float
    operating_threshold: float


@dataclass(frozen=True)
class DetectionSpec:
    """Located findings the analysis reports (its PointFindings named ``concept``), scored as detections.

    Reference datasets name their reference points ``name``; a candidate hits a reference
    when its centre lies within the reference radius (diameter / 2) plus ``margin_mm``;
    each reference counts once, by its best-scoring hit (LUNA16); FROC and CPM follow.
    """

    name: str
    concept: str  # the code value of the PointFinding's name, e.g. SNOMED CT 27925004 "Nodule"
    margin_mm: float = 0.0

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise ValueError(f"DetectionSpec.name must be an identifier (it names metrics), got {self.name!r}")
        if not self.margin_mm >= 0:
            raise ValueError(f"detection {self.name!r}: margin_mm must be >= 0, got {self.margin_mm!r}")


@dataclass(frozen=True)
class FlagRule:
    """A worklist flag: raised when a declared output, or the count of a declared detection, passes a threshold.

    Exactly one of ``output`` (an :class:`OutputSpec` name) and ``detection`` (a
    :class:`DetectionSpec` name, counted over the findings' points) is read; the flag is
    raised when that value is above ``above`` or at least ``at_least`` (exactly one is
    set). ``critical`` flags float a study to the top of the worklist. Analyses declare
    them in their folder's ``flags.yaml`` so a site can change a threshold without code.
    """

    name: str
    label: str
    output: str | None = None
    detection: str | None = None
    above: float | None = None
    at_least: float | None = None
    critical: bool = False

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise ValueError(f"flag name must be an identifier, got {self.name!r}")
        if not self.label:
            raise ValueError(f"flag {self.name!r} needs a label (shown in the worklist)")
        if (self.output is None) == (self.detection is None):
            raise ValueError(f"flag {self.name!r} must read exactly one of 'output' and 'detection'")
        if (self.above is None) == (self.at_least is None):
            raise ValueError(f"flag {self.name!r} must set exactly one threshold: 'above' or 'at_least'")
        for attribute in ("above", "at_least"):
            value = getattr(self, attribute)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float) or not np.isfinite(value)):
                raise ValueError(f"flag {self.name!r}: {attribute} must be a finite number, got {value!r}")

    @property
    def threshold(self) -> float:
        return float(self.above if self.above is not None else self.at_least)  # type: ignore[arg-type]

    def raised_by(self, value: float) -> bool:
        """Whether ``value`` (the output's value or the detection count) raises this flag."""
        return value > self.above if self.above is not None else value >= self.threshold


@dataclass
class ModelPrediction:
    """What one model predicts for one reference image, through the analysis' own pre/post-processing."""

    masks: Mapping[str, np.ndarray]  # structure name -> bool mask on the image grid
    outputs: Mapping[str, float | None] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
