"""Cines written one series per slice position, routed and analysed as one series.

Some scanners store a short-axis cine acquired one breath-hold per slice as one series per slice
position, each holding every phase of its slice. Routing one series at a time would see 25
images of one slice and match nothing; these series are found here and routed together: facts
of the first series with the images of all of them, and one job on all their instances.

A group is MR series of one study, each single-frame with all its images at one slice position and
a cardiac phase (TriggerTime or CardiacNumberOfImages), that share the frame of reference, the
orientation, the matrix, the pixel spacing and the number of images, and no two of which share a
position. Anything less regular is left to be routed series by series (and the analysis refuses it
with its reason).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pydicom

from radpilot.archive import Archive

logger = logging.getLogger(__name__)

MAX_PHASES = 400  # more images than any cine has at one position: not a candidate (and not worth reading)
ORIENTATION_DECIMALS = 3
POSITION_DECIMALS = 1  # mm along the slice normal


@dataclass(frozen=True)
class CineSliceGroup:
    """Series that together hold one cine, one slice position each, ordered by series number."""

    series_uids: tuple[str, ...]
    instance_count: int

    @property
    def filed_under(self) -> str:
        """The series a job on the group is filed under: the first by series number."""
        return self.series_uids[0]


@dataclass(frozen=True)
class _SliceSeries:
    series_uid: str
    series_number: int
    key: tuple[object, ...]
    position: float
    instance_count: int


def _one_slice_series(archive: Archive, series_uid: str) -> _SliceSeries | None:
    """The series as one slice position of a cine, or None when it is not one."""
    summary = archive.series_summary(series_uid)
    if summary.derived or not 2 <= summary.instance_count <= MAX_PHASES or summary.frame_count != summary.instance_count:
        return None
    first = pydicom.dcmread(archive.path_of(summary.first_instance), stop_before_pixels=True)
    if str(first.get("Modality", "")) != "MR" or ("TriggerTime" not in first and "CardiacNumberOfImages" not in first):
        return None
    instances = archive.instances_of(summary.study_instance_uid, series_uid)
    # the first and last images first: a series of many slice positions is told apart by two reads
    order = [0, len(instances) - 1, *range(1, len(instances) - 1)]
    try:
        orientation = np.round([float(v) for v in first.ImageOrientationPatient], ORIENTATION_DECIMALS)
        normal = np.cross(orientation[:3], orientation[3:])
        positions: set[float] = set()
        for index in order:
            header = pydicom.dcmread(archive.path_of(instances[index]), stop_before_pixels=True, specific_tags=["ImagePositionPatient"])
            positions.add(round(float(np.array([float(v) for v in header.ImagePositionPatient]) @ normal), POSITION_DECIMALS))
            if len(positions) > 1:
                return None
        key = (
            str(first.FrameOfReferenceUID),
            tuple(orientation.tolist()),
            int(first.Rows),
            int(first.Columns),
            tuple(round(float(v), 4) for v in first.PixelSpacing),
            summary.instance_count,
        )
    except (AttributeError, TypeError, ValueError, IndexError):
        return None  # no geometry: routed on its own, and refused by the analysis with the reason
    number = first.get("SeriesNumber")
    return _SliceSeries(series_uid, int(number) if number not in (None, "") else 0, key, positions.pop(), summary.instance_count)


def cine_slice_groups(archive: Archive, series_uids: Sequence[str]) -> list[CineSliceGroup]:
    """The groups of at least two series among ``series_uids`` that are one cine written one series per slice position."""
    by_key: dict[tuple[object, ...], list[_SliceSeries]] = {}
    for uid in series_uids:
        candidate = _one_slice_series(archive, uid)
        if candidate is not None:
            by_key.setdefault(candidate.key, []).append(candidate)
    groups = []
    for members in by_key.values():
        if len(members) < 2:
            continue
        positions = [m.position for m in members]
        if len(set(positions)) != len(positions):
            logger.info(
                "slice series share a position (a repeated stack?): routed one by one",
                extra={"series": [m.series_uid for m in members]},
            )
            continue
        members.sort(key=lambda m: (m.series_number, m.series_uid))
        groups.append(CineSliceGroup(tuple(m.series_uid for m in members), sum(m.instance_count for m in members)))
    return groups
