"""Shared pieces of RadPilot's DICOM encoders.

Everything the SEG, SR and key-image encoders have in common lives here:

* identification of the producing device and algorithm (:class:`DeviceIdentity`),
* deterministic UIDs derived from a seed string (:class:`UidFactory`), so that
  re-running the same job on the same input produces the same SOP Instance and
  Series Instance UIDs (idempotent storage and forwarding),
* mapping :class:`radpilot.contract.Code` to highdicom's
  :class:`highdicom.sr.CodedConcept`,
* validation and ordering of the source images,
* copying patient and study attributes from the source,
* Patient Orientation derived from Image Orientation (Patient),
* declaration of private coding schemes (Coding Scheme Identification Sequence),
* the segment colour palette shared by SEG (recommended display colour) and the
  burned-in outlines of key images.

Conformance notes (``dciodvfy -new``, dicom3tools 2022-06)
---------------------------------------------------------
* A SEG over a source without a patient frame of reference (a CR/DX radiograph)
  lacks Patient Orientation (General Image module, type 2C) unless it is copied
  from the source: :func:`patient_orientation` supplies it.
* dciodvfy checks every Coding Scheme Designator against its list of standard
  designators; a private one (``99...``) always draws a warning
  ``Unrecognized defined term``, also inside the Coding Scheme Identification
  Sequence.  The encoders therefore use standard codes for everything they add
  themselves (for example DCM 111012 "Certainty of Finding" for a detection
  score) and declare private schemes coming from an analysis in the Coding
  Scheme Identification Sequence, as PS3.16 Section 8 asks, accepting that
  warning.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from radpilot import __version__ as RADPILOT_VERSION
from radpilot.contract import Code

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_MANUFACTURER",
    "PRIVATE_CODING_SCHEME",
    "SEGMENT_COLORS_RGB",
    "POINT_COLOR_RGB",
    "DeviceIdentity",
    "UidFactory",
    "make_uid_seed",
    "to_coded_concept",
    "to_unit_concept",
    "prepare_source_datasets",
    "source_is_volumetric",
    "copy_patient_study",
    "patient_orientation",
    "patient_orientation_from_iop",
    "declare_private_coding_schemes",
    "set_content_datetime",
    "segment_number_map",
    "segment_color",
    "check_positive_int",
    "copy_body_part_and_laterality",
    "check_text",
    "content_label",
]

#: Manufacturer written into every object RadPilot creates.
DEFAULT_MANUFACTURER = "RadPilot"

#: RadPilot's private coding scheme designator (PS3.16 Section 8: private schemes start with "99").
PRIVATE_CODING_SCHEME = "99RADPILOT"

#: Coding scheme designators of PS3.16 Table 8-1 that encoders meet in practice (not exhaustive).
STANDARD_CODING_SCHEMES = frozenset(
    {
        "DCM",
        "SCT",
        "SRT",
        "SNM3",
        "LN",
        "UCUM",
        "RADLEX",
        "FMA",
        "NCIt",
        "NCIT",
        "UMLS",
        "MDC",
        "ACR",
        "BI",
        "ICD10",
        "I10",
        "I9C",
        "ICD10CM",
        "RFC5646",
        "ISO3166_1",
        "ISO639_1",
        "ISO639_2",
        "NEU",
        "UBERON",
        "MSH",
        "NDC",
        "RXNORM",
        "PUBCHEM_CID",
        "DCMUID",
        "HPC",
        "RADELEMENT",
        "SNM",
    }
)

#: Aliases analyses might use for standard schemes, mapped to the DICOM designator.
_SCHEME_ALIASES = {
    "SNOMED": "SCT",
    "SNOMEDCT": "SCT",
    "SNOMED-CT": "SCT",
    "SNOMED CT": "SCT",
    "LOINC": "LN",
    "RADLEX": "RADLEX",
    "RADLEX®": "RADLEX",
    "RID": "RADLEX",
}

#: Distinct outline colours (RGB), one per segment in order; never pure grey, so they stand out of a
#: windowed grey-scale image.  Yellow is kept for point findings.
SEGMENT_COLORS_RGB: tuple[tuple[int, int, int], ...] = (
    (255, 0, 0),
    (0, 255, 0),
    (0, 128, 255),
    (255, 0, 255),
    (0, 255, 255),
    (255, 128, 0),
    (128, 0, 255),
    (255, 0, 128),
    (128, 255, 0),
    (0, 255, 128),
)

#: Colour of point findings (circles) on key images.
POINT_COLOR_RGB: tuple[int, int, int] = (255, 255, 0)

_UID_PREFIX = "2.25."  # UUID-derived UIDs (PS3.5 B.2): no registered root needed
_CS_PATTERN = re.compile(r"[^A-Z0-9 _]")


def segment_color(index: int) -> tuple[int, int, int]:
    """RGB colour of the ``index``-th segment (0-based, in segment number order); cycles."""
    if not isinstance(index, int) or index < 0:
        raise ValueError(f"segment colour index must be a non-negative int, got {index!r}")
    return SEGMENT_COLORS_RGB[index % len(SEGMENT_COLORS_RGB)]


def check_text(value: object, name: str, max_length: int = 64) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise ValueError(f"{name} must not be empty")
    if len(value) > max_length:
        raise ValueError(f"{name} must be at most {max_length} characters (DICOM LO), got {len(value)}: {value!r}")
    if "\\" in value:
        raise ValueError(f"{name} must not contain a backslash (the DICOM value delimiter): {value!r}")
    return value


def check_positive_int(value: object, name: str) -> int:
    """``value`` as an int in 1 .. 2**31-1 (Series/Instance Number, IS); TypeError/ValueError otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if not 0 < int(value) < 2**31:
        raise ValueError(f"{name} must be a positive integer below 2**31, got {value}")
    return int(value)


# ---------------------------------------------------------------------------------------- UIDs
def make_uid_seed(analysis: str, version: str, source_sop_instance_uids: Iterable[str]) -> str:
    """A stable seed string for one analysis run on one input.

    Parameters
    ----------
    analysis
        Analysis name.
    version
        Analysis version.
    source_sop_instance_uids
        SOP Instance UIDs of the input images (order does not matter).

    Returns
    -------
    str
        Hex SHA-256 digest of the three, suitable as ``uid_seed``.
    """
    uids = sorted(str(u) for u in source_sop_instance_uids)
    if not uids:
        raise ValueError("make_uid_seed needs at least one source SOP Instance UID")
    digest = hashlib.sha256()
    for part in (str(analysis), str(version), *uids):
        digest.update(part.encode("utf-8"))
        digest.update(b"\x00")
    return digest.hexdigest()


class UidFactory:
    """Deterministic UIDs derived from one seed string.

    The same seed and the same ``parts`` always give the same UID (a ``2.25.``
    UID computed from a SHA-512 hash by :func:`pydicom.uid.generate_uid`), so a
    re-run of the same job produces the same objects.

    Parameters
    ----------
    seed
        Seed string, e.g. from :func:`make_uid_seed`.
    """

    def __init__(self, seed: str) -> None:
        if not isinstance(seed, str):
            raise TypeError(f"uid_seed must be a string, got {type(seed).__name__}")
        if not seed:
            raise ValueError("uid_seed must not be empty")
        self.seed = seed

    def uid(self, *parts: str | int) -> str:
        """UID for the given purpose (e.g. ``uid("seg", "series")``)."""
        return str(generate_uid(prefix=_UID_PREFIX, entropy_srcs=[self.seed, *map(str, parts)]))

    def series(self, kind: str) -> str:
        """Series Instance UID of the object kind (``"seg"``, ``"sr"``, ``"key-image"``)."""
        return self.uid(kind, "series")

    def instance(self, kind: str, instance_number: int = 1) -> str:
        """SOP Instance UID of the object kind."""
        return self.uid(kind, "instance", instance_number)


# ------------------------------------------------------------------------------- identity
@dataclass(frozen=True)
class DeviceIdentity:
    """The software device that creates an object: manufacturer, algorithm name and version.

    Parameters
    ----------
    algorithm_name
        Name of the analysis (ManufacturerModelName, algorithm name); at most 64 characters.
    algorithm_version
        Version of the analysis; at most 64 characters.
    manufacturer
        Manufacturer of the device (default ``"RadPilot"``).
    device_serial_number
        DeviceSerialNumber written into the General Equipment module.
    """

    algorithm_name: str
    algorithm_version: str
    manufacturer: str = DEFAULT_MANUFACTURER
    device_serial_number: str = "1"

    @classmethod
    def for_findings(
        cls,
        findings: Any,
        algorithm_name: str | None,
        algorithm_version: str | None,
        manufacturer: str,
        device_serial_number: str,
    ) -> DeviceIdentity:
        """The identity given by the caller, defaulting to the analysis name and version of ``findings``."""
        return cls(
            algorithm_name=algorithm_name or findings.analysis,
            algorithm_version=algorithm_version or findings.version,
            manufacturer=manufacturer,
            device_serial_number=device_serial_number,
        )

    def __post_init__(self) -> None:
        check_text(self.algorithm_name, "algorithm_name")
        check_text(self.algorithm_version, "algorithm_version")
        check_text(self.manufacturer, "manufacturer")
        check_text(self.device_serial_number, "device_serial_number")

    @property
    def software_versions(self) -> list[str]:
        """SoftwareVersions: RadPilot's version and the algorithm's."""
        return [f"RadPilot {RADPILOT_VERSION}"[:64], f"{self.algorithm_name} {self.algorithm_version}"[:64]]

    @property
    def device_uid(self) -> str:
        """Device Observer UID: stable for one manufacturer, algorithm name and version."""
        return str(
            generate_uid(
                prefix=_UID_PREFIX,
                entropy_srcs=["radpilot-device", self.manufacturer, self.algorithm_name, self.algorithm_version],
            )
        )

    def algorithm_identification_sequence(self, name: str | None = None) -> hd.AlgorithmIdentificationSequence:
        """Segment Algorithm Identification (family DCM 123110 "Artificial Intelligence")."""
        return hd.AlgorithmIdentificationSequence(
            name=check_text(name or self.algorithm_name, "algorithm name"),
            family=codes.cid7162.ArtificialIntelligence,
            version=self.algorithm_version,
            source=self.manufacturer,
        )

    def sr_algorithm_identification(self) -> hd.sr.AlgorithmIdentification:
        """TID 4019 Algorithm Identification for SR measurement groups and measurements."""
        return hd.sr.AlgorithmIdentification(name=self.algorithm_name, version=self.algorithm_version)

    def observer_context(self) -> hd.sr.ObserverContext:
        """TID 1002 Observer Context of a device observer (the analysis)."""
        return hd.sr.ObserverContext(
            observer_type=codes.cid270.Device,
            observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
                uid=self.device_uid,
                name=self.algorithm_name,
                manufacturer_name=self.manufacturer,
                model_name=f"{self.algorithm_name} {self.algorithm_version}"[:64],
                serial_number=self.device_serial_number,
            ),
        )

    def apply(self, ds: Dataset) -> None:
        """Write the General Equipment attributes into ``ds``."""
        ds.Manufacturer = self.manufacturer
        ds.ManufacturerModelName = self.algorithm_name
        ds.SoftwareVersions = self.software_versions
        ds.DeviceSerialNumber = self.device_serial_number


# ------------------------------------------------------------------------------ coding
def _scheme(scheme: str) -> str:
    return _SCHEME_ALIASES.get(scheme.strip().upper(), scheme.strip())


def to_coded_concept(code: Code, *, what: str = "code") -> hd.sr.CodedConcept:
    """Map a RadPilot :class:`~radpilot.contract.Code` to :class:`highdicom.sr.CodedConcept`.

    Scheme aliases (``SNOMED`` -> ``SCT``, ``LOINC`` -> ``LN``) are normalised.

    Parameters
    ----------
    code
        The concept.
    what
        What the code stands for, used in error messages.

    Raises
    ------
    TypeError
        When ``code`` is not a :class:`Code`.
    ValueError
        When its meaning is longer than 64 characters (Code Meaning is LO).
    """
    if isinstance(code, hd.sr.CodedConcept):
        return code
    if not isinstance(code, Code):
        raise TypeError(f"{what} must be a radpilot Code, got {type(code).__name__}")
    if len(code.meaning) > 64:
        raise ValueError(f"{what} meaning must be at most 64 characters, got {len(code.meaning)}: {code.meaning!r}")
    scheme = _scheme(code.scheme)
    if len(scheme) > 16:
        raise ValueError(f"{what} coding scheme designator must be at most 16 characters, got {scheme!r}")
    return hd.sr.CodedConcept(value=code.value, scheme_designator=scheme, meaning=code.meaning)


def to_unit_concept(unit: Code, *, what: str = "unit") -> hd.sr.CodedConcept:
    """Map a UCUM unit :class:`Code` to a CodedConcept; any other scheme is refused."""
    if not isinstance(unit, Code):
        raise TypeError(f"{what} must be a radpilot Code, got {type(unit).__name__}")
    if unit.scheme.strip().upper() != "UCUM":
        raise ValueError(f"{what} must be a UCUM unit (scheme 'UCUM'), got scheme {unit.scheme!r} ({unit.value!r})")
    return hd.sr.CodedConcept(value=unit.value, scheme_designator="UCUM", meaning=unit.meaning[:64])


def _collect_schemes(ds: Dataset, found: set[str]) -> None:
    for elem in ds:
        if elem.keyword == "CodingSchemeDesignator" and elem.value:
            found.add(str(elem.value))
        elif elem.VR == "SQ" and elem.keyword != "CodingSchemeIdentificationSequence":
            for item in elem.value:
                _collect_schemes(item, found)


def declare_private_coding_schemes(ds: Dataset) -> list[str]:
    """Declare every non-standard coding scheme used in ``ds`` in its Coding Scheme Identification Sequence.

    Returns
    -------
    list[str]
        The private designators that were declared (sorted).
    """
    found: set[str] = set()
    _collect_schemes(ds, found)
    private = sorted(s for s in found if s not in STANDARD_CODING_SCHEMES)
    if not private:
        return []
    items = list(ds.get("CodingSchemeIdentificationSequence", []))
    declared = {str(item.get("CodingSchemeDesignator", "")) for item in items}
    for designator in private:
        if designator in declared:
            continue
        item = Dataset()
        item.CodingSchemeDesignator = designator
        if designator == PRIVATE_CODING_SCHEME:
            item.CodingSchemeName = "RadPilot private codes"
            item.CodingSchemeResponsibleOrganization = DEFAULT_MANUFACTURER
        else:
            item.CodingSchemeName = f"Private coding scheme {designator}"[:64]
        items.append(item)
    ds.CodingSchemeIdentificationSequence = items
    logger.info("declared private coding schemes %s", private)
    return private


# -------------------------------------------------------------------------- source images
_REQUIRED_SOURCE_KEYWORDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "Rows", "Columns")


def _normal_position(ds: Dataset) -> float | None:
    position = ds.get("ImagePositionPatient")
    orientation = ds.get("ImageOrientationPatient")
    if position is None or orientation is None or len(position) != 3 or len(orientation) != 6:
        return None
    row = np.array([float(v) for v in orientation[:3]])
    col = np.array([float(v) for v in orientation[3:]])
    return float(np.array([float(v) for v in position]) @ np.cross(row, col))


def _check_series(items: list[Dataset]) -> None:
    """One series, or one series per slice position in one frame of reference (a cine written a series per slice)."""
    if len({str(ds.StudyInstanceUID) for ds in items}) > 1:
        raise ValueError("source_datasets mix different StudyInstanceUID values; expected one study")
    series = {str(ds.SeriesInstanceUID) for ds in items}
    if len(series) == 1:
        return
    positions_of_series: dict[str, set[float]] = {}
    for ds in items:
        position = _normal_position(ds)
        if position is None or "FrameOfReferenceUID" not in ds:
            raise ValueError(f"source_datasets mix {len(series)} different SeriesInstanceUID values; expected one series")
        positions_of_series.setdefault(str(ds.SeriesInstanceUID), set()).add(round(position, 1))
    frames_of_reference = {str(ds.FrameOfReferenceUID) for ds in items}
    positions = [p for ps in positions_of_series.values() for p in ps]
    if len(frames_of_reference) > 1 or len(positions) != len(series) or len(set(positions)) != len(positions):
        raise ValueError(
            f"source_datasets mix {len(series)} different SeriesInstanceUID values; expected one series "
            "or one series per slice position in one frame of reference"
        )


def prepare_source_datasets(source_datasets: Sequence[Dataset]) -> list[Dataset]:
    """Validate the source images of one series and return them in volume (z) order.

    A volume may also come as one series per slice position (a cine written one series per breath-hold),
    all in one frame of reference; the encoders then reference each image in its own series.

    Single-frame slices with Image Position/Orientation (Patient) are sorted by
    their position along the slice normal, the order of
    :func:`radpilot.dicom.volume.volume_from_datasets`; a single image (CR/DX)
    is returned as is.

    Raises
    ------
    TypeError
        When ``source_datasets`` is not a sequence of pydicom Datasets.
    ValueError
        When it is empty, lacks identifying attributes, mixes studies, series or
        matrix sizes, holds a multi-frame image, or repeats an instance.
    """
    if isinstance(source_datasets, Dataset) or not isinstance(source_datasets, Sequence):
        hint = (
            " (encode_segmentation and encode_measurement_report take (findings, source_datasets, ...), not the Volume)"
            if hasattr(source_datasets, "voxels")
            else ""
        )
        raise TypeError(
            f"source_datasets must be a list of pydicom Datasets (the source series), got {type(source_datasets).__name__}{hint}"
        )
    items = list(source_datasets)
    if not items:
        raise ValueError("source_datasets is empty: the encoders need the source images of the series")
    for i, ds in enumerate(items):
        if not isinstance(ds, Dataset):
            raise TypeError(f"source_datasets[{i}] is a {type(ds).__name__}, expected a pydicom Dataset")
        missing = [k for k in _REQUIRED_SOURCE_KEYWORDS if k not in ds]
        if missing:
            raise ValueError(f"source_datasets[{i}] lacks {', '.join(missing)}")
        if int(ds.get("NumberOfFrames", 1) or 1) > 1:
            raise ValueError(
                f"source_datasets[{i}] is a multi-frame image ({ds.NumberOfFrames} frames); "
                "the encoders expect single-frame slices or one 2-D image"
            )
    _check_series(items)
    sizes = {(int(ds.Rows), int(ds.Columns)) for ds in items}
    if len(sizes) > 1:
        raise ValueError(f"source_datasets have different matrix sizes {sorted(sizes)}; expected one size")
    uids = [str(ds.SOPInstanceUID) for ds in items]
    if len(set(uids)) != len(uids):
        raise ValueError("source_datasets repeat a SOP Instance UID")
    if len(items) > 1:
        positions = [_normal_position(ds) for ds in items]
        if all(p is not None for p in positions):
            order = sorted(range(len(items)), key=lambda i: positions[i])  # type: ignore[arg-type,return-value]
            if order != list(range(len(items))):
                logger.debug("source datasets reordered along the slice normal")
            items = [items[i] for i in order]
    return items


def source_is_volumetric(sources: Sequence[Dataset]) -> bool:
    """True when the sources carry patient geometry (frame of reference, position and orientation)."""
    first = sources[0]
    return all(k in first for k in ("FrameOfReferenceUID", "ImagePositionPatient", "ImageOrientationPatient"))


#: Patient and study attributes every RadPilot object copies from its source (type 2: written empty if absent).
PATIENT_STUDY_KEYWORDS: tuple[str, ...] = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "ReferringPhysicianName",
    "StudyID",
)

#: Copied only when the source has them.
OPTIONAL_PATIENT_STUDY_KEYWORDS: tuple[str, ...] = (
    "IssuerOfPatientID",
    "PatientAge",
    "StudyDescription",
    "OtherPatientIDsSequence",
)


def copy_patient_study(source: Dataset, target: Dataset) -> None:
    """Copy the Study Instance UID and the patient/study attributes of ``source`` into ``target``."""
    target.StudyInstanceUID = source.StudyInstanceUID
    for keyword in PATIENT_STUDY_KEYWORDS:
        value = source.get(keyword)
        setattr(target, keyword, value if value is not None else "")
    for keyword in OPTIONAL_PATIENT_STUDY_KEYWORDS:
        if keyword in source and source[keyword].value not in (None, ""):
            target[keyword] = source[keyword]


#: Body Part Examined values of unpaired body parts (General Series Laterality is then not required).
UNPAIRED_BODY_PARTS = frozenset(
    {
        "CHEST",
        "ABDOMEN",
        "PELVIS",
        "HEAD",
        "NECK",
        "HEART",
        "LIVER",
        "SPLEEN",
        "PANCREAS",
        "BRAIN",
        "CSPINE",
        "TSPINE",
        "LSPINE",
        "SSPINE",
        "SPINE",
        "WHOLEBODY",
        "CHESTABDOMEN",
        "ABDOMENPELVIS",
        "CHESTABDPELVIS",
        "HEADNECK",
        "THORAX",
        "MEDIASTINUM",
        "AORTA",
        "CORONARYARTERY",
        "STOMACH",
        "BLADDER",
        "PROSTATE",
        "UTERUS",
        "SKULL",
        "TRACHEA",
        "ESOPHAGUS",
        "SACRUM",
        "COCCYX",
    }
)


def copy_body_part_and_laterality(source: Dataset, target: Dataset) -> None:
    """Copy Body Part Examined and Laterality (General Series) from ``source``.

    Laterality is type 2C: required for a paired (or unnamed) body part.  When
    the source does not know it, it is written empty ("unknown"), which dciodvfy
    accepts with a warning; for an unpaired body part it is left out.
    """
    body_part = str(source.get("BodyPartExamined", "") or "").strip().upper()
    if body_part:
        target.BodyPartExamined = body_part
    laterality = str(source.get("Laterality", "") or "").strip()
    if laterality:
        target.Laterality = laterality
    elif body_part not in UNPAIRED_BODY_PARTS:
        target.Laterality = ""


def _axis_letters(vector: np.ndarray, threshold: float = 0.25) -> str:
    letters = []
    for axis in np.argsort(-np.abs(vector)):
        component = float(vector[axis])
        if abs(component) < threshold:
            continue
        letters.append(("L", "P", "H")[axis] if component > 0 else ("R", "A", "F")[axis])
    return "".join(letters)


def patient_orientation_from_iop(orientation: Sequence[float]) -> list[str]:
    """Patient Orientation (row direction, column direction) from Image Orientation (Patient).

    Each value lists the patient axes (L/R, P/A, H/F) the direction follows, most
    significant first, e.g. ``["L", "P"]`` for an axial slice.
    """
    values = np.array([float(v) for v in orientation], dtype=float)
    if values.shape != (6,) or not np.all(np.isfinite(values)):
        raise ValueError(f"ImageOrientationPatient must be 6 finite numbers, got {list(orientation)!r}")
    row, col = _axis_letters(values[:3]), _axis_letters(values[3:])
    if not row or not col:
        raise ValueError(f"ImageOrientationPatient has a zero direction: {list(orientation)!r}")
    return [row, col]


def patient_orientation(source: Dataset) -> list[str]:
    """Patient Orientation for an object derived from ``source``: copied, else derived, else empty (type 2)."""
    value = source.get("PatientOrientation")
    if value:
        return [str(v) for v in value] if not isinstance(value, str) else [value]
    if source.get("ImageOrientationPatient"):
        try:
            return patient_orientation_from_iop(source.ImageOrientationPatient)
        except ValueError:
            logger.warning("cannot derive Patient Orientation from %s", source.ImageOrientationPatient)
    return []


def set_content_datetime(ds: Dataset, when: _dt.datetime | None) -> None:
    """Set ContentDate/ContentTime (and SeriesDate/Time) to ``when`` (default: now)."""
    if when is not None and not isinstance(when, _dt.datetime):
        raise TypeError(f"content_datetime must be a datetime, got {type(when).__name__}")
    moment = when or _dt.datetime.now()
    ds.ContentDate = moment.strftime("%Y%m%d")
    ds.ContentTime = moment.strftime("%H%M%S")
    ds.SeriesDate = ds.ContentDate
    ds.SeriesTime = ds.ContentTime


def content_label(name: str) -> str:
    """A Content Label (CS, 16 chars, upper case) from a free-text name."""
    label = _CS_PATTERN.sub("_", name.upper())[:16].strip()
    return label or "RADPILOT"


def segment_number_map(segments: Sequence[object]) -> dict[int, int]:
    """Analysis segment number -> SEG segment number (1..N, contiguous, in ascending order).

    The Segmentation IOD numbers segments from 1 without gaps; an analysis may
    number them freely.  SEG and SR use this same mapping.
    """
    numbers = [int(s.number) for s in segments]
    if len(set(numbers)) != len(numbers):
        duplicates = sorted({n for n in numbers if numbers.count(n) > 1})
        raise ValueError(f"segment numbers must be unique, got duplicates {duplicates}")
    return {number: index + 1 for index, number in enumerate(sorted(numbers))}
