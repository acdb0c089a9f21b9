"""A cine series as slices x phases: the input of analyses that declare a temporal input.

:func:`cine_from_datasets` reads the instances of one series that repeats every slice
position over the cardiac cycle (single-frame images, as most scanners write a short-axis
cine, or enhanced multi-frame images) and builds a :class:`CineVolume`:

* slice positions come from ImagePositionPatient projected on the normal of
  ImageOrientationPatient; every frame must share orientation, matrix and pixel spacing;
* within a position, phases are ordered by TriggerTime (enhanced images: the Cardiac
  Synchronization Sequence's Nominal Cardiac Trigger Delay Time), InstanceNumber breaking
  ties and standing in where no trigger time is written;
* every position must hold the same number of phases, equal to CardiacNumberOfImages when
  the header states it, and positions must be evenly spaced along the normal.

Anything else is refused with a :class:`ValueError` that names the problem (missing phases,
inconsistent geometry), so the analysis is not run on a partial or mixed cine.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from radpilot.dicom.volume import (
    ORIENTATION_TOLERANCE,
    SPACING_ABSOLUTE_TOLERANCE_MM,
    SPACING_RELATIVE_TOLERANCE,
    Volume,
    _Frame,
    _frames_from_multiframe,
    _frames_from_single,
    _functional_item,
    _metadata,
    _str,
    _unit,
)

logger = logging.getLogger(__name__)

#: Frames closer than this along the slice normal are one slice position (mm).
POSITION_TOLERANCE_MM = 0.1
#: Header attributes a cardiac analysis needs, beyond :data:`radpilot.dicom.volume.METADATA_KEYWORDS`.
CARDIAC_KEYWORDS = ("HeartRate", "PatientSize", "PatientWeight", "CardiacNumberOfImages", "MagneticFieldStrength", "RepetitionTime")


@dataclass(frozen=True, eq=False)
class CineVolume(Volume):
    """A :class:`Volume` of the first phase, plus every phase of every slice.

    ``frames`` is ``(phases, slices, rows, columns)`` float32 (modality values); slice ``z`` of
    every phase lies where slice ``z`` of ``voxels`` lies. ``frame_sop_instance_uids[p][z]`` is
    the instance of phase ``p`` at slice ``z`` (a multi-frame instance repeats its UID), and
    ``trigger_times_ms[p]`` the median trigger time of phase ``p`` over the slices (None where
    the series writes none).
    """

    frames: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0, 0), dtype=np.float32))
    frame_sop_instance_uids: tuple[tuple[str, ...], ...] = ()
    trigger_times_ms: tuple[float | None, ...] = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        frames = np.asarray(self.frames, dtype=np.float32)
        if frames.ndim != 4 or frames.shape[1:] != self.voxels.shape:
            raise ValueError(f"frames must be (phases, {self.voxels.shape}), got shape {frames.shape}")
        frames = frames.view()
        frames.flags.writeable = False
        object.__setattr__(self, "frames", frames)
        if self.frame_sop_instance_uids and (
            len(self.frame_sop_instance_uids) != frames.shape[0] or any(len(row) != frames.shape[1] for row in self.frame_sop_instance_uids)
        ):
            raise ValueError("frame_sop_instance_uids must hold one UID per phase and slice")
        if self.trigger_times_ms and len(self.trigger_times_ms) != frames.shape[0]:
            raise ValueError("trigger_times_ms must hold one value per phase")

    @property
    def num_phases(self) -> int:
        return int(self.frames.shape[0])

    def phase_volume(self, phase: int) -> Volume:
        """Phase ``phase`` as a plain :class:`Volume` (its own instances)."""
        return Volume(
            voxels=self.frames[phase],
            spacing_zyx=self.spacing_zyx,
            origin=self.origin,
            direction=self.direction,
            study_uid=self.study_uid,
            series_uid=self.series_uid,
            frame_of_reference_uid=self.frame_of_reference_uid,
            sop_instance_uids=self.frame_sop_instance_uids[phase] if self.frame_sop_instance_uids else (),
            sop_class_uid=self.sop_class_uid,
            modality=self.modality,
            metadata=self.metadata,
        )

    def __repr__(self) -> str:
        return f"CineVolume(phases={self.num_phases}, shape={self.shape}, spacing_zyx={self.spacing_zyx}, series_uid={self.series_uid!r})"


@dataclass(frozen=True)
class _CineFrame:
    frame: _Frame
    trigger_ms: float | None
    instance_number: int
    order: int  # position in the input, the last tie-breaker
    series_uid: str = ""
    frame_of_reference_uid: str = ""


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _trigger_times_multiframe(ds: Dataset, n_frames: int) -> list[float | None]:
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    shared_seq = ds.get("SharedFunctionalGroupsSequence")
    shared = shared_seq[0] if shared_seq else None
    out: list[float | None] = []
    for i in range(n_frames):
        item = per_frame[i] if i < len(per_frame) else None
        sync = _functional_item(item, shared, "CardiacSynchronizationSequence")
        out.append(_number(sync.get("NominalCardiacTriggerDelayTime")) if sync is not None else None)
    return out


def _cine_frames(items: list[Dataset]) -> list[_CineFrame]:
    out: list[_CineFrame] = []
    for i, ds in enumerate(items):
        where = f"instance {_str(ds, 'SOPInstanceUID') or i}"
        uids = (_str(ds, "SeriesInstanceUID"), _str(ds, "FrameOfReferenceUID"))
        instance_number = int(_number(ds.get("InstanceNumber")) or 0)
        n_frames = int(ds.get("NumberOfFrames", 1) or 1)
        if n_frames > 1 or "PerFrameFunctionalGroupsSequence" in ds:
            frames = _frames_from_multiframe(ds, where)
            triggers = _trigger_times_multiframe(ds, len(frames))
            out.extend(_CineFrame(f, t, instance_number, len(out) + k, *uids) for k, (f, t) in enumerate(zip(frames, triggers)))
        else:
            (frame,) = _frames_from_single(ds, where)
            out.append(_CineFrame(frame, _number(ds.get("TriggerTime")), instance_number, len(out), *uids))
    return out


def _check_same_grid(frames: list[_CineFrame]) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    first = frames[0].frame
    for f in frames:
        if f.frame.position is None or f.frame.orientation is None or f.frame.pixel_spacing is None:
            raise ValueError(
                f"inconsistent geometry: {f.frame.source} lacks ImagePositionPatient, ImageOrientationPatient or PixelSpacing, "
                "so the slices of the cine cannot be placed"
            )
        if f.frame.pixels.shape != first.pixels.shape:
            raise ValueError(
                f"inconsistent geometry: {first.source} is {first.pixels.shape[0]}x{first.pixels.shape[1]} but "
                f"{f.frame.source} is {f.frame.pixels.shape[0]}x{f.frame.pixels.shape[1]}"
            )
        if np.max(np.abs(f.frame.orientation - first.orientation)) > ORIENTATION_TOLERANCE * 100:  # type: ignore[operator]
            raise ValueError(
                f"inconsistent geometry: {f.frame.source} is oriented {np.round(f.frame.orientation, 4).tolist()} but "  # type: ignore[arg-type]
                f"{first.source} {np.round(first.orientation, 4).tolist()}: the cine mixes planes"  # type: ignore[arg-type]
            )
        if np.max(np.abs(np.subtract(f.frame.pixel_spacing, first.pixel_spacing))) > 1e-3:
            raise ValueError(
                f"inconsistent geometry: pixel spacing {f.frame.pixel_spacing} of {f.frame.source} differs from {first.pixel_spacing}"
            )
    row_dir = _unit(first.orientation[:3])  # type: ignore[index]
    col_dir = _unit(first.orientation[3:])  # type: ignore[index]
    if abs(float(row_dir @ col_dir)) > 1e-3:
        raise ValueError(f"inconsistent geometry: {first.source}: ImageOrientationPatient row and column directions are not perpendicular")
    col_dir = _unit(col_dir - (row_dir @ col_dir) * row_dir)
    if min(first.pixel_spacing) <= 0:  # type: ignore[arg-type]
        raise ValueError(f"inconsistent geometry: PixelSpacing must be positive, got {first.pixel_spacing}")
    return row_dir, col_dir, first.pixel_spacing  # type: ignore[return-value]


def _check_one_series_per_position(frames: list[_CineFrame], groups: list[list[int]]) -> None:
    """A cine may come as one series per slice position (one breath-hold each), but not as series that mix positions."""
    frame_of_reference = {f.frame_of_reference_uid for f in frames}
    if len(frame_of_reference) > 1:
        raise ValueError(
            f"the {len({f.series_uid for f in frames})} series of this cine have {len(frame_of_reference)} frames of reference; "
            "their slices cannot be put into one stack"
        )
    series_of_position = [{frames[i].series_uid for i in g} for g in groups]
    mixed = [sorted(s) for s in series_of_position if len(s) > 1]
    positions_of_series: dict[str, int] = {}
    for found in series_of_position:
        for uid in found:
            positions_of_series[uid] = positions_of_series.get(uid, 0) + 1
    if mixed or any(n > 1 for n in positions_of_series.values()):
        raise ValueError(
            f"instances belong to {len(positions_of_series)} different series that are not one slice position each; "
            "a cine is read from one series or from one series per slice position"
        )


def cine_from_datasets(datasets: Iterable[Dataset]) -> CineVolume:
    """Build a :class:`CineVolume` from the instances of one cine series, or of one series per slice position.

    Raises
    ------
    ValueError
        When the instances are not one regular slices x phases cine; the message names the problem.
    TypeError
        When an item is not a pydicom Dataset.
    """
    items = list(datasets)
    if not items:
        raise ValueError("no instances given: a cine needs images")
    for i, ds in enumerate(items):
        if not isinstance(ds, Dataset):
            raise TypeError(f"item {i} is a {type(ds).__name__}, not a pydicom Dataset")
    if len({_str(ds, "StudyInstanceUID") for ds in items}) > 1:
        raise ValueError("instances belong to different studies; a cine is read from one study")
    uids = [_str(ds, "SOPInstanceUID") for ds in items]
    if len(set(uids)) != len(uids):
        raise ValueError("the same instance is given more than once")

    frames = _cine_frames(items)
    row_dir, col_dir, pixel_spacing = _check_same_grid(frames)
    normal = np.cross(row_dir, col_dir)
    along = np.array([float(f.frame.position @ normal) for f in frames])  # type: ignore[operator]
    order = np.argsort(along, kind="stable")
    groups: list[list[int]] = []
    for index in order:
        if groups and abs(along[index] - along[groups[-1][0]]) <= POSITION_TOLERANCE_MM:
            groups[-1].append(int(index))
        else:
            groups.append([int(index)])
    if len({f.series_uid for f in frames}) > 1:
        _check_one_series_per_position(frames, groups)
    counts = [len(g) for g in groups]
    n_phases = max(counts)
    if min(counts) != n_phases:
        short = [f"{along[g[0]]:.1f} mm ({len(g)})" for g in groups if len(g) != n_phases]
        raise ValueError(
            f"missing phases: slice positions hold different numbers of phases ({', '.join(short[:5])} against {n_phases} "
            "elsewhere); every slice must cover the whole cardiac cycle"
        )
    stated = {int(v) for v in (_number(ds.get("CardiacNumberOfImages")) for ds in items) if v}
    if len(stated) == 1 and (expected := stated.pop()) != n_phases:
        raise ValueError(f"missing phases: CardiacNumberOfImages is {expected} but each slice position holds {n_phases} image(s)")

    def phase_key(i: int) -> tuple[float, int, int]:
        f = frames[i]
        return (f.trigger_ms if f.trigger_ms is not None else math.inf, f.instance_number, f.order)

    grid = [sorted(g, key=phase_key) for g in groups]  # grid[z][p] -> frame index
    positions = np.array([frames[g[0]].frame.position for g in grid])
    if len(grid) > 1:
        gaps = np.diff(np.array([along[g[0]] for g in grid]))
        gap = float(np.median(gaps))
        bad = np.abs(gaps - gap) > max(SPACING_ABSOLUTE_TOLERANCE_MM, SPACING_RELATIVE_TOLERANCE * gap)
        if bad.any():
            raise ValueError(
                f"inconsistent geometry: slice positions are not evenly spaced (gaps {np.round(gaps, 2).tolist()} mm); "
                "a slice is missing or the series mixes stacks"
            )
        inplane = np.stack([positions @ row_dir, positions @ col_dir], axis=1)
        drift = np.abs(inplane - inplane[0]).max(axis=0)
        if drift[0] > 0.5 * pixel_spacing[1] or drift[1] > 0.5 * pixel_spacing[0]:
            raise ValueError(f"inconsistent geometry: slices are not stacked along their normal (in-plane drift {drift.max():.1f} mm)")
    else:
        thickness = frames[grid[0][0]].frame.slice_thickness
        gap = float(thickness) if thickness and thickness > 0 else 1.0
    for z, g in enumerate(grid):
        for f in (frames[i] for i in g):
            if np.abs(f.frame.position - positions[z]).max() > 0.5 * min(pixel_spacing):  # type: ignore[operator]
                raise ValueError(f"inconsistent geometry: the phases at slice {z} do not share one position ({f.frame.source})")

    stack = np.stack([np.stack([frames[grid[z][p]].frame.pixels for z in range(len(grid))]) for p in range(n_phases)]).astype(np.float32)
    frame_uids = tuple(tuple(frames[grid[z][p]].frame.sop_instance_uid for z in range(len(grid))) for p in range(n_phases))
    triggers: list[float | None] = []
    for p in range(n_phases):
        values = [frames[grid[z][p]].trigger_ms for z in range(len(grid))]
        known = [v for v in values if v is not None]
        triggers.append(float(np.median(known)) if known else None)
    first = items[0]
    metadata = _metadata(first)
    for keyword in CARDIAC_KEYWORDS:
        value = _number(first.get(keyword))
        if value is not None and value > 0:
            metadata[keyword] = value
    cine = CineVolume(
        voxels=stack[0],
        spacing_zyx=(gap, float(pixel_spacing[0]), float(pixel_spacing[1])),
        origin=tuple(float(v) for v in positions[0]),  # type: ignore[arg-type]
        direction=np.stack([row_dir, col_dir, normal]),
        study_uid=_str(first, "StudyInstanceUID"),
        series_uid=frames[grid[0][0]].series_uid,  # with one series per slice position: the first slice's
        frame_of_reference_uid=_str(first, "FrameOfReferenceUID"),
        sop_instance_uids=frame_uids[0],
        sop_class_uid=_str(first, "SOPClassUID"),
        modality=_str(first, "Modality"),
        metadata=metadata,
        frames=stack,
        frame_sop_instance_uids=frame_uids,
        trigger_times_ms=tuple(triggers),
    )
    logger.debug("built cine", extra={"series_uid": cine.series_uid, "phases": n_phases, "slices": len(grid)})
    return cine
