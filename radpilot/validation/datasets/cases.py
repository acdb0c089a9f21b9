"""One case of a reference dataset: where its files are, and its image and reference once read."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from radpilot.validation.datasets.readers import LabelImage


@dataclass(frozen=True)
class CaseRef:
    """One case of a dataset, before its files are read."""

    case_id: str
    files: dict[str, str]
    reference_values: dict[str, float] = field(default_factory=dict)
    attributes: dict[str, str] = field(default_factory=dict)
    excluded: str | None = None  # evaluated and shown, but left out of the statistics, because ...
    reference_points: dict[str, list[ReferencePoint]] = field(default_factory=dict)  # detection name -> points


@dataclass(frozen=True)
class ReferencePoint:
    """A located reference finding (e.g. a nodule) on a 2-D image: centre (row, column) in pixels, diameter in mm."""

    row: float
    column: float
    diameter_mm: float


@dataclass(frozen=True)
class PhaseReference:
    """The reference labels of one phase of a cine: its name (it names the metrics), its index in the cine, (z, y, x) labels."""

    name: str
    phase: int
    labels: np.ndarray


@dataclass
class CaseData:
    """A case's image and reference, read from disk.

    ``kind`` says which of the image fields is set: ``image2d`` (a 2-D array of
    stored values, offsets removed), ``dicom`` (the series' pydicom datasets, for
    the production reader) or ``volume`` (a Volume built from a NIfTI/MetaImage; a
    CineVolume for a cine, whose references are then per phase in ``reference_phases``,
    already on the volume's grid).
    """

    ref: CaseRef
    kind: Literal["image2d", "dicom", "volume"]
    image: np.ndarray | None = None
    pixel_spacing_mm: tuple[float, float] | None = None
    datasets: list[Any] | None = None
    volume: Any | None = None
    reference_masks: dict[str, np.ndarray] = field(default_factory=dict)
    reference_labels: LabelImage | None = None
    structure_labels: dict[str, int] = field(default_factory=dict)
    reference_phases: tuple[PhaseReference, ...] = ()
