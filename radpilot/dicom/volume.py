"""A series as one geometric volume: voxel values, spacing, orientation and identity.

:class:`Volume` is what every analysis receives.  :func:`volume_from_datasets`
builds one from the instances of a series (single-frame slices, one
multi-frame enhanced image, or a single 2-D projection image) and refuses,
with a plain-language :class:`ValueError`, a set of instances that is not one
regular volume: several series, mixed orientations, mixed matrix sizes or
pixel spacings, missing or duplicate slices, sheared (gantry-tilted) stacks.

Conventions
-----------
* ``voxels`` is indexed ``(z, y, x)``: slice, row, column.  Values are modality
  values (Hounsfield units for CT) after the Modality LUT (RescaleSlope and
  RescaleIntercept, or a Modality LUT Sequence), stored as float32.
* ``direction`` is a 3x3 array whose rows are unit vectors in the patient
  coordinate system (DICOM LPS): row 0 is the direction of increasing column
  index ``x`` (the first triplet of ImageOrientationPatient), row 1 the
  direction of increasing row index ``y`` (the second triplet), row 2 the
  direction of increasing slice index ``z`` (the slice normal, slices being
  sorted by their position along it).
* ``origin`` is the ImagePositionPatient (x, y, z, LPS, mm) of the centre of
  voxel ``(0, 0, 0)``, so voxel ``(k, j, i)`` lies at
  ``origin + i*sx*direction[0] + j*sy*direction[1] + k*sz*direction[2]``
  with ``(sz, sy, sx) = spacing_zyx``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.uid import ExplicitVRBigEndian

from radpilot.dicom.grayscale import Lut, read_lut

logger = logging.getLogger(__name__)

#: Largest allowed difference between direction cosines of two slices.
ORIENTATION_TOLERANCE = 1e-4
#: Largest allowed deviation of one slice gap from the median gap, relative to it.
SPACING_RELATIVE_TOLERANCE = 0.05
#: Largest allowed deviation of one slice gap from the median gap, in mm (whichever is larger).
SPACING_ABSOLUTE_TOLERANCE_MM = 0.01
#: Attributes copied into :attr:`Volume.metadata` when present.
METADATA_KEYWORDS: tuple[str, ...] = (
    "PatientID",
    "PatientSex",
    "PatientAge",
    "StudyDate",
    "StudyDescription",
    "AccessionNumber",
    "SeriesNumber",
    "SeriesDescription",
    "BodyPartExamined",
    "Manufacturer",
    "ManufacturerModelName",
    "ConvolutionKernel",
    "SliceThickness",
    "KVP",
    "PatientPosition",
    "ContrastBolusAgent",
    "PhotometricInterpretation",
    "ImageType",
    # Projection radiographs (CR/DX): view, display and calibration of the single image.
    "ViewPosition",
    "PatientOrientation",
    "PixelSpacing",
    "ImagerPixelSpacing",
    "PixelSpacingCalibrationType",
    "EstimatedRadiographicMagnificationFactor",
    "PresentationLUTShape",
    "WindowCenter",
    "WindowWidth",
    "VOILUTFunction",
    "VOILUTSequence",
    "PixelIntensityRelationship",
    "PixelIntensityRelationshipSign",
)


def _as_float_triplet(value: Any, name: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in value)
    except TypeError as exc:
        raise TypeError(f"{name} must be a sequence of 3 numbers, got {type(value).__name__}") from exc
    except ValueError as exc:
        raise ValueError(f"{name} must hold numbers, got {value!r}") from exc
    if len(values) != 3:
        raise ValueError(f"{name} must have 3 values, got {len(values)}")
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"{name} must be finite, got {values}")
    return values  # type: ignore[return-value]


@dataclass(frozen=True, eq=False)
class Volume:
    """One series as a regular 3-D grid (a single 2-D image is a volume of one slice).

    Parameters
    ----------
    voxels
        Modality values (HU for CT) indexed ``(z, y, x)``; converted to a
        read-only float32 array.
    spacing_zyx
        Voxel spacing in mm: slice gap, row spacing, column spacing (all > 0).
    origin
        LPS position (x, y, z) in mm of the centre of voxel ``(0, 0, 0)``.
    direction
        3x3 array; rows are the unit vectors of increasing x (column), y (row)
        and z (slice) index in LPS.  Must be orthonormal.
    study_uid, series_uid, frame_of_reference_uid, sop_class_uid
        Identity of the source series (may be empty for synthetic volumes).
    sop_instance_uids
        The SOP Instance UID of each slice, in z order (one per slice; a
        multi-frame instance repeats its UID), or empty for synthetic volumes.
    modality
        DICOM Modality (``"CT"``, ``"MR"``, ...).
    metadata
        Selected header attributes (see :data:`METADATA_KEYWORDS`).
    """

    voxels: np.ndarray
    spacing_zyx: tuple[float, float, float]
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))
    study_uid: str = ""
    series_uid: str = ""
    frame_of_reference_uid: str = ""
    sop_instance_uids: tuple[str, ...] = ()
    sop_class_uid: str = ""
    modality: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.voxels, np.ndarray):
            raise TypeError(f"voxels must be a numpy array, got {type(self.voxels).__name__}")
        if self.voxels.ndim != 3:
            raise ValueError(f"voxels must be 3-D (z, y, x), got shape {self.voxels.shape}")
        if min(self.voxels.shape) < 1:
            raise ValueError(f"voxels must not be empty, got shape {self.voxels.shape}")
        if self.voxels.dtype.kind not in "uif":
            raise TypeError(f"voxels must be numeric, got dtype {self.voxels.dtype}")
        voxels = np.asarray(self.voxels, dtype=np.float32).view()
        voxels.flags.writeable = False
        object.__setattr__(self, "voxels", voxels)

        spacing = _as_float_triplet(self.spacing_zyx, "spacing_zyx")
        if min(spacing) <= 0:
            raise ValueError(f"spacing_zyx must be positive, got {spacing}")
        object.__setattr__(self, "spacing_zyx", spacing)
        object.__setattr__(self, "origin", _as_float_triplet(self.origin, "origin"))

        direction = np.array(self.direction, dtype=np.float64)
        if direction.shape != (3, 3):
            raise ValueError(f"direction must be a 3x3 array, got shape {direction.shape}")
        if not np.allclose(direction @ direction.T, np.eye(3), atol=1e-3):
            raise ValueError(f"direction must be orthonormal (unit, perpendicular rows), got {direction.tolist()}")
        direction.flags.writeable = False
        object.__setattr__(self, "direction", direction)

        for name in ("study_uid", "series_uid", "frame_of_reference_uid", "sop_class_uid", "modality"):
            if not isinstance(getattr(self, name), str):
                raise TypeError(f"{name} must be a string, got {type(getattr(self, name)).__name__}")
        uids = tuple(self.sop_instance_uids)
        if not all(isinstance(u, str) for u in uids):
            raise TypeError("sop_instance_uids must be strings")
        if uids and len(uids) != self.voxels.shape[0]:
            raise ValueError(f"sop_instance_uids has {len(uids)} entries but the volume has {self.voxels.shape[0]} slices")
        object.__setattr__(self, "sop_instance_uids", uids)
        if not isinstance(self.metadata, Mapping):
            raise TypeError(f"metadata must be a mapping, got {type(self.metadata).__name__}")
        object.__setattr__(self, "metadata", dict(self.metadata))

    # ------------------------------------------------------------------ geometry
    @property
    def shape(self) -> tuple[int, int, int]:
        """``(slices, rows, columns)``."""
        return tuple(int(n) for n in self.voxels.shape)  # type: ignore[return-value]

    @property
    def num_slices(self) -> int:
        """Number of slices."""
        return int(self.voxels.shape[0])

    @property
    def mm3_per_voxel(self) -> float:
        """Volume of one voxel in mm³."""
        sz, sy, sx = self.spacing_zyx
        return sz * sy * sx

    @property
    def ml_per_voxel(self) -> float:
        """Volume of one voxel in mL (cm³)."""
        return self.mm3_per_voxel / 1000.0

    @property
    def extent_mm(self) -> tuple[float, float, float]:
        """Coverage ``(z, y, x)`` in mm: number of voxels times spacing along each axis."""
        return tuple(n * s for n, s in zip(self.voxels.shape, self.spacing_zyx))  # type: ignore[return-value]

    @property
    def slice_normal(self) -> np.ndarray:
        """Unit vector (LPS) of increasing slice index."""
        return self.direction[2].copy()

    @property
    def affine_lps(self) -> np.ndarray:
        """4x4 matrix mapping homogeneous voxel indices ``(x, y, z, 1)`` to LPS mm."""
        sz, sy, sx = self.spacing_zyx
        affine = np.eye(4)
        affine[:3, 0] = self.direction[0] * sx
        affine[:3, 1] = self.direction[1] * sy
        affine[:3, 2] = self.direction[2] * sz
        affine[:3, 3] = self.origin
        return affine

    def index_to_patient(self, zyx: Sequence[float] | np.ndarray) -> np.ndarray:
        """LPS coordinates (mm) of voxel indices ``(z, y, x)``; accepts an ``(..., 3)`` array."""
        idx = np.asarray(zyx, dtype=np.float64)
        if idx.shape[-1] != 3:
            raise ValueError(f"indices must end in a (z, y, x) axis of length 3, got shape {idx.shape}")
        xyz = idx[..., ::-1] * np.array(self.spacing_zyx[::-1])
        return np.asarray(self.origin) + xyz @ self.direction

    def is_axial(self, tolerance_deg: float = 10.0) -> bool:
        """True when the slice normal lies within ``tolerance_deg`` of the patient's S-I axis."""
        cos_angle = abs(float(self.direction[2][2]))
        return cos_angle >= math.cos(math.radians(tolerance_deg))

    def slice_position(self, index: int) -> np.ndarray:
        """LPS position (mm) of the first voxel of slice ``index``."""
        return self.index_to_patient((index, 0, 0))

    def __repr__(self) -> str:
        return f"Volume(shape={self.shape}, spacing_zyx={self.spacing_zyx}, modality={self.modality!r}, series_uid={self.series_uid!r})"


# ---------------------------------------------------------------------- builders
@dataclass(frozen=True)
class _Frame:
    """One 2-D frame with its geometry, before stacking."""

    pixels: np.ndarray  # (rows, cols), modality values, float32
    position: np.ndarray | None  # ImagePositionPatient
    orientation: np.ndarray | None  # 6 direction cosines
    pixel_spacing: tuple[float, float] | None  # (row spacing, column spacing)
    slice_thickness: float | None
    sop_instance_uid: str
    source: str  # for messages


def _str(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    return "" if value is None else str(value).strip()


def _floats(value: Any, n: int, name: str, where: str) -> np.ndarray:
    try:
        arr = np.array([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: {name} is not a list of numbers: {value!r}") from exc
    if arr.shape != (n,) or not np.all(np.isfinite(arr)):
        raise ValueError(f"{where}: {name} must hold {n} finite numbers, got {value!r}")
    return arr


def _pixel_array(ds: Dataset, where: str) -> np.ndarray:
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise ValueError(f"{where}: the instance has no pixel data")
    try:
        return ds.pixel_array
    except (NotImplementedError, RuntimeError, ImportError) as exc:
        ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "unknown")
        raise ValueError(
            f"{where}: cannot decode the pixel data (transfer syntax {ts}): {exc}; "
            "compressed images may need an extra decoder such as pylibjpeg"
        ) from exc


def _modality_values(pixels: np.ndarray, slope: float, intercept: float) -> np.ndarray:
    out = pixels.astype(np.float32, copy=True)
    if slope != 1.0:
        out *= np.float32(slope)
    if intercept != 0.0:
        out += np.float32(intercept)
    return out


def _rescale(ds: Dataset, where: str) -> tuple[float, float]:
    slope = ds.get("RescaleSlope", 1.0)
    intercept = ds.get("RescaleIntercept", 0.0)
    try:
        slope_f = float(slope if slope not in (None, "") else 1.0)
        intercept_f = float(intercept if intercept not in (None, "") else 0.0)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: RescaleSlope/RescaleIntercept are not numbers") from exc
    if not (math.isfinite(slope_f) and math.isfinite(intercept_f)) or slope_f == 0.0:
        raise ValueError(f"{where}: RescaleSlope {slope_f} / RescaleIntercept {intercept_f} are not usable")
    return slope_f, intercept_f


def _check_monochrome(ds: Dataset, where: str) -> None:
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if samples != 1:
        raise ValueError(
            f"{where}: colour images ({samples} samples per pixel, {_str(ds, 'PhotometricInterpretation')}) "
            "cannot form a volume of modality values"
        )


def _frames_from_single(ds: Dataset, where: str) -> list[_Frame]:
    _check_monochrome(ds, where)
    pixels = _pixel_array(ds, where)
    if pixels.ndim != 2:
        raise ValueError(f"{where}: expected one 2-D frame, got pixel array of shape {pixels.shape}")
    modality_lut = _modality_lut(ds, where)
    if modality_lut is None:
        slope, intercept = _rescale(ds, where)
        values = _modality_values(pixels, slope, intercept)
    else:
        values = modality_lut.apply(pixels).astype(np.float32)
    position = ds.get("ImagePositionPatient")
    orientation = ds.get("ImageOrientationPatient")
    spacing = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing")
    thickness = ds.get("SliceThickness")
    return [
        _Frame(
            pixels=values,
            position=None if position is None else _floats(position, 3, "ImagePositionPatient", where),
            orientation=None if orientation is None else _floats(orientation, 6, "ImageOrientationPatient", where),
            pixel_spacing=None if not spacing else tuple(_floats(spacing, 2, "PixelSpacing", where)),  # type: ignore[arg-type]
            slice_thickness=float(thickness) if thickness not in (None, "") else None,
            sop_instance_uid=_str(ds, "SOPInstanceUID"),
            source=where,
        )
    ]


def _functional_item(frame_item: Dataset | None, shared: Dataset | None, sequence: str) -> Dataset | None:
    for group in (frame_item, shared):
        if group is not None and sequence in group and len(group[sequence].value) > 0:
            return group[sequence].value[0]
    return None


def _frames_from_multiframe(ds: Dataset, where: str) -> list[_Frame]:
    """Split an enhanced (functional-group) multi-frame instance into frames."""
    _check_monochrome(ds, where)
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    shared_seq = ds.get("SharedFunctionalGroupsSequence")
    shared = shared_seq[0] if shared_seq else None
    if per_frame is None or len(per_frame) != n_frames:
        raise ValueError(
            f"{where}: multi-frame instance with {n_frames} frames lacks a matching "
            "PerFrameFunctionalGroupsSequence, so its frames cannot be placed in space"
        )
    pixels = _pixel_array(ds, where)
    if pixels.ndim == 2:
        pixels = pixels[np.newaxis]
    if pixels.shape[0] != n_frames:
        raise ValueError(f"{where}: NumberOfFrames is {n_frames} but the pixel data holds {pixels.shape[0]} frames")
    frames: list[_Frame] = []
    for i in range(n_frames):
        item = per_frame[i]
        fwhere = f"{where} frame {i + 1}"
        pos_item = _functional_item(item, shared, "PlanePositionSequence")
        ori_item = _functional_item(item, shared, "PlaneOrientationSequence")
        meas_item = _functional_item(item, shared, "PixelMeasuresSequence")
        if pos_item is None or ori_item is None or meas_item is None:
            raise ValueError(f"{fwhere}: plane position, plane orientation or pixel measures are missing")
        trans_item = _functional_item(item, shared, "PixelValueTransformationSequence")
        slope, intercept = _rescale(trans_item if trans_item is not None else ds, fwhere)
        thickness = meas_item.get("SliceThickness")
        frames.append(
            _Frame(
                pixels=_modality_values(pixels[i], slope, intercept),
                position=_floats(pos_item.ImagePositionPatient, 3, "ImagePositionPatient", fwhere),
                orientation=_floats(ori_item.ImageOrientationPatient, 6, "ImageOrientationPatient", fwhere),
                pixel_spacing=tuple(_floats(meas_item.PixelSpacing, 2, "PixelSpacing", fwhere)),  # type: ignore[arg-type]
                slice_thickness=float(thickness) if thickness not in (None, "") else None,
                sop_instance_uid=_str(ds, "SOPInstanceUID"),
                source=fwhere,
            )
        )
    return frames


def _metadata(ds: Dataset) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    for keyword in METADATA_KEYWORDS:
        value = ds.get(keyword)
        if value is None or value == "":
            continue
        if keyword == "VOILUTSequence":
            lut = _voi_lut(ds)
            if lut is not None:
                meta[keyword] = lut
            continue
        if keyword == "ConvolutionKernel":
            meta[keyword] = "\\".join(str(v) for v in value) if isinstance(value, MultiValue) else str(value)
        elif keyword == "SliceThickness" or keyword == "KVP":
            try:
                meta[keyword] = float(value)
            except (TypeError, ValueError):
                continue
        elif keyword == "SeriesNumber":
            try:
                meta[keyword] = int(value)
            except (TypeError, ValueError):
                continue
        elif isinstance(value, MultiValue):
            meta[keyword] = [str(v) for v in value]
        else:
            meta[keyword] = str(value)
    # Enhanced CT keeps the kernel in the CT Reconstruction functional group.
    if "ConvolutionKernel" not in meta:
        shared_seq = ds.get("SharedFunctionalGroupsSequence")
        if shared_seq:
            recon = _functional_item(None, shared_seq[0], "CTReconstructionSequence")
            if recon is not None and recon.get("ConvolutionKernel"):
                kernel = recon.ConvolutionKernel
                meta["ConvolutionKernel"] = "\\".join(str(v) for v in kernel) if isinstance(kernel, MultiValue) else str(kernel)
    return meta


def _little_endian(ds: Dataset) -> bool:
    """Byte order of OW LUT Data: the order the file was read in, else its transfer syntax (little endian unless Big Endian)."""
    encoding = getattr(ds, "original_encoding", (None, None))
    if encoding[1] is not None:
        return bool(encoding[1])
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    return syntax != ExplicitVRBigEndian


def _modality_lut(ds: Dataset, where: str) -> Lut | None:
    """The Modality LUT Sequence's first table (C.11.1), which replaces Rescale Slope/Intercept; None when absent."""
    sequence = ds.get("ModalityLUTSequence")
    if not sequence:
        return None
    if ds.get("RescaleSlope") not in (None, "") or ds.get("RescaleIntercept") not in (None, ""):
        # C.11.1: one or the other, never both; the table is the more specific description of the two.
        logger.warning("%s: both a Modality LUT Sequence and Rescale Slope/Intercept; the Modality LUT is used", where)
    signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
    try:
        return read_lut(sequence[0], signed_input=signed, little_endian=_little_endian(ds), what=f"{where}: Modality LUT Sequence")
    except (AttributeError, TypeError) as exc:
        raise ValueError(f"{where}: the Modality LUT Sequence cannot be read: {exc}") from exc


def _voi_lut(ds: Dataset) -> dict[str, Any] | None:
    """The first VOI LUT of ``ds`` as ``{"first_mapped": int, "bits": int, "data": int64 array}``, or None (with a warning)."""
    # The VOI LUT's input is the Modality LUT's output; its first value mapped is read as signed when the stored values are.
    signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
    try:
        lut = read_lut(ds.VOILUTSequence[0], signed_input=signed, little_endian=_little_endian(ds), what="VOI LUT Sequence")
    except (AttributeError, IndexError, KeyError, TypeError, ValueError) as exc:
        logger.warning("VOI LUT Sequence ignored: %s", exc)
        return None
    return lut.as_metadata()


def _unit(v: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(v))
    if norm < 1e-6:
        raise ValueError("ImageOrientationPatient has a zero-length direction cosine")
    return v / norm


def _stack_frames(frames: list[_Frame]) -> tuple[np.ndarray, tuple[float, float, float], np.ndarray, np.ndarray, list[_Frame]]:
    """Sort frames along the slice normal and check that they form a regular grid."""
    first = frames[0]
    shape = first.pixels.shape
    for f in frames[1:]:
        if f.pixels.shape != shape:
            raise ValueError(
                f"slices have different matrix sizes: {first.source} is {shape[0]}x{shape[1]}, "
                f"{f.source} is {f.pixels.shape[0]}x{f.pixels.shape[1]}"
            )
    if any(f.orientation is None for f in frames) or any(f.position is None for f in frames):
        missing = next(f.source for f in frames if f.orientation is None or f.position is None)
        raise ValueError(
            f"{missing}: ImagePositionPatient/ImageOrientationPatient are missing, so the slices cannot be stacked into a volume"
        )
    if any(f.pixel_spacing is None for f in frames):
        missing = next(f.source for f in frames if f.pixel_spacing is None)
        raise ValueError(f"{missing}: PixelSpacing is missing, so the volume has no geometry")
    ref_orientation = first.orientation
    for f in frames[1:]:
        if np.max(np.abs(f.orientation - ref_orientation)) > ORIENTATION_TOLERANCE:  # type: ignore[operator]
            raise ValueError(
                f"slices have different orientations: {first.source} {ref_orientation.tolist()} "  # type: ignore[union-attr]
                f"vs {f.source} {f.orientation.tolist()}"  # type: ignore[union-attr]
            )
    ref_spacing = np.array(first.pixel_spacing)
    for f in frames[1:]:
        if np.max(np.abs(np.array(f.pixel_spacing) - ref_spacing)) > 1e-4 * max(1.0, float(ref_spacing.max())):
            raise ValueError(f"slices have different pixel spacings: {first.source} {tuple(ref_spacing)} vs {f.source} {f.pixel_spacing}")
    if ref_spacing.min() <= 0:
        raise ValueError(f"{first.source}: PixelSpacing must be positive, got {tuple(ref_spacing)}")

    row_dir = _unit(ref_orientation[:3])  # type: ignore[index]
    col_dir = _unit(ref_orientation[3:])  # type: ignore[index]
    if abs(float(row_dir @ col_dir)) > 1e-3:
        raise ValueError(f"{first.source}: ImageOrientationPatient row and column directions are not perpendicular")
    col_dir = _unit(col_dir - (row_dir @ col_dir) * row_dir)
    normal = np.cross(row_dir, col_dir)

    positions = np.array([f.position for f in frames])
    along = positions @ normal
    order = np.argsort(along, kind="stable")
    frames = [frames[i] for i in order]
    positions = positions[order]
    along = along[order]
    row_spacing, col_spacing = float(ref_spacing[0]), float(ref_spacing[1])

    if len(frames) == 1:
        thickness = frames[0].slice_thickness
        slice_gap = float(thickness) if thickness and thickness > 0 else 1.0
    else:
        gaps = np.diff(along)
        duplicates = np.nonzero(gaps < SPACING_ABSOLUTE_TOLERANCE_MM)[0]
        if duplicates.size:
            where = ", ".join(f"{along[i]:.2f} mm" for i in duplicates[:5])
            raise ValueError(
                f"duplicate slice positions at {where} (along the slice normal): "
                "the instances are not one volume (repeated acquisition or several stacks?)"
            )
        slice_gap = float(np.median(gaps))
        tolerance = max(SPACING_ABSOLUTE_TOLERANCE_MM, SPACING_RELATIVE_TOLERANCE * slice_gap)
        bad = np.nonzero(np.abs(gaps - slice_gap) > tolerance)[0]
        if bad.size:
            where = ", ".join(f"{along[i]:.2f}..{along[i + 1]:.2f} mm ({gaps[i]:.2f} mm)" for i in bad[:5])
            more = f" and {bad.size - 5} more" if bad.size > 5 else ""
            raise ValueError(
                f"slice spacing is not uniform: gaps at {where}{more}, expected {slice_gap:.2f} mm; "
                "slices are missing or the series mixes stacks"
            )
        # In-plane offsets must not drift (a sheared stack, e.g. gantry tilt, is not a regular grid).
        inplane = np.stack([positions @ row_dir, positions @ col_dir], axis=1)
        drift = np.abs(inplane - inplane[0]).max(axis=0)
        if drift[0] > 0.5 * col_spacing or drift[1] > 0.5 * row_spacing:
            raise ValueError(
                f"slices are not stacked along their normal (in-plane drift of {drift.max():.2f} mm, "
                "e.g. gantry tilt); resample the series before analysis"
            )
    voxels = np.stack([f.pixels for f in frames]).astype(np.float32, copy=False)
    direction = np.stack([row_dir, col_dir, normal])
    return voxels, (slice_gap, row_spacing, col_spacing), positions[0], direction, frames


def _single_image_volume(ds: Dataset, frame: _Frame) -> tuple[np.ndarray, tuple[float, float, float], np.ndarray, np.ndarray]:
    """Geometry of a lone 2-D image (CR/DX/SC...) that may have no patient position."""
    spacing = frame.pixel_spacing or (1.0, 1.0)
    if frame.orientation is not None:
        row_dir = _unit(frame.orientation[:3])
        col_dir = _unit(frame.orientation[3:])
        col_dir = _unit(col_dir - (row_dir @ col_dir) * row_dir)
        direction = np.stack([row_dir, col_dir, np.cross(row_dir, col_dir)])
    else:
        direction = np.eye(3)
    origin = frame.position if frame.position is not None else np.zeros(3)
    thickness = frame.slice_thickness
    gap = float(thickness) if thickness and thickness > 0 else 1.0
    return frame.pixels[np.newaxis], (gap, float(spacing[0]), float(spacing[1])), origin, direction


def volume_from_datasets(datasets: Iterable[Dataset]) -> Volume:
    """Build a :class:`Volume` from the instances of one series.

    Parameters
    ----------
    datasets
        pydicom datasets with pixel data: single-frame slices of one series (any
        order), one enhanced multi-frame instance, or one 2-D image.

    Returns
    -------
    Volume
        Slices sorted by position along the slice normal, modality values
        (RescaleSlope/RescaleIntercept applied) as float32.

    Raises
    ------
    ValueError
        When the instances are not one regular volume; the message names the
        problem (several series, mixed orientation or size, missing slices...).
    TypeError
        When an item is not a pydicom Dataset.
    """
    items = list(datasets)
    if not items:
        raise ValueError("no instances given: a volume needs at least one image")
    for i, ds in enumerate(items):
        if not isinstance(ds, Dataset):
            raise TypeError(f"item {i} is a {type(ds).__name__}, not a pydicom Dataset")

    def where(ds: Dataset, i: int) -> str:
        return f"instance {_str(ds, 'SOPInstanceUID') or i}"

    series = {_str(ds, "SeriesInstanceUID") for ds in items}
    if len(series) > 1:
        raise ValueError(f"instances belong to {len(series)} different series; a volume is built from one series")
    sop_uids = [_str(ds, "SOPInstanceUID") for ds in items]
    repeated = {u for u in sop_uids if u and sop_uids.count(u) > 1}
    if repeated:
        raise ValueError(f"the same instance is given more than once: {sorted(repeated)[:3]}")
    modalities = {_str(ds, "Modality") for ds in items}
    if len(modalities) > 1:
        raise ValueError(f"instances have different modalities {sorted(modalities)}")

    frames: list[_Frame] = []
    for i, ds in enumerate(items):
        n_frames = int(ds.get("NumberOfFrames", 1) or 1)
        if n_frames > 1 or "PerFrameFunctionalGroupsSequence" in ds:
            frames.extend(_frames_from_multiframe(ds, where(ds, i)))
        else:
            frames.extend(_frames_from_single(ds, where(ds, i)))

    first = items[0]
    if len(frames) == 1 and (frames[0].position is None or frames[0].orientation is None):
        voxels, spacing, origin, direction = _single_image_volume(first, frames[0])
        ordered = frames
    else:
        voxels, spacing, origin, direction, ordered = _stack_frames(frames)

    volume = Volume(
        voxels=voxels,
        spacing_zyx=spacing,
        origin=tuple(float(v) for v in origin),  # type: ignore[arg-type]
        direction=direction,
        study_uid=_str(first, "StudyInstanceUID"),
        series_uid=_str(first, "SeriesInstanceUID"),
        frame_of_reference_uid=_str(first, "FrameOfReferenceUID"),
        sop_instance_uids=tuple(f.sop_instance_uid for f in ordered),
        sop_class_uid=_str(first, "SOPClassUID"),
        modality=_str(first, "Modality"),
        metadata=_metadata(first),
    )
    logger.debug(
        "built volume",
        extra={"series_uid": volume.series_uid, "shape": volume.shape, "spacing_zyx": volume.spacing_zyx},
    )
    return volume


def volume_from_files(paths: str | PathLike[str] | Iterable[str | PathLike[str]]) -> Volume:
    """Read DICOM files (or every file in one folder) and build a :class:`Volume`.

    Parameters
    ----------
    paths
        A folder, one file, or an iterable of files of one series.

    Raises
    ------
    ValueError
        When a file is not DICOM or the files are not one regular volume.
    """
    if isinstance(paths, (str, PathLike)):
        root = Path(paths)
        files = sorted(p for p in root.iterdir() if p.is_file()) if root.is_dir() else [root]
    else:
        files = [Path(p) for p in paths]
    if not files:
        raise ValueError("no files given: a volume needs at least one image")
    datasets = []
    for path in files:
        try:
            datasets.append(pydicom.dcmread(path))
        except InvalidDicomError as exc:
            raise ValueError(f"{path} is not a DICOM file: {exc}") from exc
        except OSError as exc:
            raise ValueError(f"{path} cannot be read: {exc}") from exc
    return volume_from_datasets(datasets)
