"""Typed findings: what an analysis returns for one input series.

Pure data (numpy only), so every layer can read them: the encoders turn them into DICOM,
the engine stores their summary, the validation workbench compares them with references.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Code:
    """A coded concept (SNOMED CT 'SCT', RadLex 'RADLEX', LOINC 'LN', DICOM 'DCM', UCUM 'UCUM', or a private scheme)."""

    value: str
    scheme: str
    meaning: str

    def __post_init__(self) -> None:
        for name in ("value", "scheme", "meaning"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"Code.{name} must be a non-empty string, got {getattr(self, name)!r}")


@dataclass(frozen=True)
class Measurement:
    """A numeric result with its unit (UCUM) and concept codes."""

    name: Code
    value: float
    unit: Code
    finding_site: Code | None = None
    segment_number: int | None = None  # the segment of the analysis' segmentation it was measured on
    derivation: Code | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if not np.isfinite(self.value):
            raise ValueError(f"measurement {self.name.meaning!r} has a non-finite value {self.value!r}")


@dataclass(frozen=True)
class Segment:
    """One label of a segmentation, with what it is and where."""

    number: int
    label: str
    category: Code
    type: Code
    anatomic_region: Code | None = None
    algorithm_name: str = ""

    def __post_init__(self) -> None:
        if self.number < 1:
            raise ValueError(f"segment numbers start at 1, got {self.number}")


@dataclass
class Segmentation:
    """A label volume on the grid of the source volume (0 = background, n = segment n).

    ``source_uids``: the SOP Instance UIDs of the images its slices lie on, one per slice, when
    they are not the analysed volume's own slices (e.g. the end-systolic phase of a cine);
    ``label``: what it shows, for a segmentation beside others (e.g. "end-systole, phase 9").
    """

    labels: np.ndarray
    segments: list[Segment]
    source_uids: tuple[str, ...] | None = None
    label: str = ""

    def __post_init__(self) -> None:
        if self.source_uids is not None:
            self.source_uids = tuple(self.source_uids)
            if len(self.source_uids) != self.labels.shape[0] or not all(isinstance(u, str) and u for u in self.source_uids):
                raise ValueError(
                    f"source_uids must name one source image per label slice: {len(self.source_uids)} for {self.labels.shape[0]} slices"
                )
        if self.labels.dtype.kind not in "ui":
            raise TypeError(f"segmentation labels must be an integer array, got {self.labels.dtype}")
        numbers = {s.number for s in self.segments}
        present = set(np.unique(self.labels).tolist()) - {0}
        unknown = present - numbers
        if unknown:
            raise ValueError(f"label values {sorted(unknown)} have no segment description")


@dataclass(frozen=True)
class QualitativeFinding:
    """A categorical finding, e.g. 'cardiomegaly: present'."""

    name: Code
    value: Code
    description: str = ""


@dataclass(frozen=True)
class PointFinding:
    """A located finding (e.g. a nodule candidate) in voxel coordinates (z, y, x) of the source volume."""

    name: Code
    center_zyx: tuple[float, float, float]
    diameter_mm: float | None = None
    score: float | None = None
    description: str = ""


@dataclass(frozen=True)
class LineFinding:
    """A straight line between two points in voxel coordinates (z, y, x) of the source volume (e.g. a width).

    ``length_mm`` is the length the analysis measured (which may differ slightly from the
    Euclidean length of the drawn segment, e.g. a width counted in whole pixels).
    """

    name: Code
    start_zyx: tuple[float, float, float]
    end_zyx: tuple[float, float, float]
    length_mm: float | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, Code):
            raise TypeError(f"LineFinding.name must be a Code, got {type(self.name).__name__}")
        for attr in ("start_zyx", "end_zyx"):
            value = getattr(self, attr)
            try:
                coords = tuple(float(v) for v in value)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"line {self.name.meaning!r} {attr} must be three numbers (z, y, x), got {value!r}") from exc
            if len(coords) != 3 or not all(np.isfinite(coords)):
                raise ValueError(f"line {self.name.meaning!r} {attr} must be three finite numbers (z, y, x), got {value!r}")
            object.__setattr__(self, attr, coords)
        if self.length_mm is not None and not (np.isfinite(self.length_mm) and self.length_mm > 0):
            raise ValueError(f"line {self.name.meaning!r} length_mm must be a positive finite number, got {self.length_mm!r}")


@dataclass(frozen=True)
class Figure:
    """A picture the analysis draws itself (e.g. a volume-time curve, contours on several phases), as RGB pixels.

    The engine stores it as a Secondary Capture beside the key image, referencing ``source_uid``
    (an image of the analysed series it was drawn from or about).
    """

    title: str
    rgb: np.ndarray
    source_uid: str

    def __post_init__(self) -> None:
        if not self.title:
            raise ValueError("a figure needs a title")
        if not isinstance(self.rgb, np.ndarray) or self.rgb.dtype != np.uint8 or self.rgb.ndim != 3 or self.rgb.shape[2] != 3:
            raise ValueError(f"figure {self.title!r} must be (rows, columns, 3) uint8 RGB, got {getattr(self.rgb, 'shape', None)}")
        if min(self.rgb.shape[:2]) < 16:
            raise ValueError(f"figure {self.title!r} is too small: {self.rgb.shape[:2]}")
        if not self.source_uid:
            raise ValueError(f"figure {self.title!r} must reference a source image")


@dataclass
class Findings:
    """Everything an analysis returns for one input series."""

    analysis: str
    version: str
    measurements: list[Measurement] = field(default_factory=list)
    segmentation: Segmentation | None = None
    qualitative: list[QualitativeFinding] = field(default_factory=list)
    points: list[PointFinding] = field(default_factory=list)
    key_slices: list[int] = field(default_factory=list)  # slice indices worth a key image
    confidence: float | None = None
    notes: list[str] = field(default_factory=list)  # plain-language remarks (e.g. reconstruction kernel caveats)
    lines: list[LineFinding] = field(default_factory=list)  # e.g. the widths of a ratio, for drawing and the SR
    #: Further segmentations on other images of the series (e.g. end-systole beside end-diastole): one more SEG each.
    extra_segmentations: list[Segmentation] = field(default_factory=list)
    #: Pictures the analysis draws itself; each becomes a Secondary Capture in the key-image series.
    figures: list[Figure] = field(default_factory=list)


class NotApplicableError(ValueError):
    """The input is not something this analysis can analyse; the message says why, in plain words."""
