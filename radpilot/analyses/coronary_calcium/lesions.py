"""From a CT volume and its heart region to lesions, artery territories and scores."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from radpilot.analyses.coronary_calcium.region import ARTERIES, HeartRegion, artery_of
from radpilot.analyses.coronary_calcium.scoring import CalciumScores, SliceLesion, agatston_scale, score_lesions, slice_lesions

ARTERY_LABEL = {artery: number for number, artery in enumerate(ARTERIES, start=1)}  # LM 1, LAD 2, LCX 3, RCA 4
_TWENTY_SIX = np.ones((3, 3, 3), dtype=bool)


@dataclass(frozen=True)
class Lesion:
    """A 3-D lesion: slice lesions joined across slices (26-connected), assigned to one artery as a whole."""

    number: int
    artery: str
    centroid_zyx: tuple[float, float, float]
    scores: CalciumScores


@dataclass
class CalciumResult:
    """Scores in total and per artery, the lesions and their label volume (artery numbers, see ``ARTERY_LABEL``)."""

    total: CalciumScores
    per_artery: dict[str, CalciumScores]
    lesions: list[Lesion]
    labels: np.ndarray
    agatston_per_slice: np.ndarray
    slice_lesions: list[SliceLesion] = field(default_factory=list)

    @property
    def vessels_with_calcium(self) -> int:
        return sum(1 for scores in self.per_artery.values() if scores.n_slice_lesions > 0)


def _triplet(values: tuple[float, ...] | list[float]) -> tuple[float, float, float]:
    z, y, x = (float(v) for v in values)
    return z, y, x


def _core_centroid(core: np.ndarray, core_slices: np.ndarray) -> tuple[float, float, float]:
    """The centroid of the core (voxel indices), from per-slice areas and centroids (no 3-D coordinate arrays)."""
    areas = core.sum(axis=(1, 2)).astype(float)
    rows = core.sum(axis=2) @ np.arange(core.shape[1], dtype=float)
    cols = core.sum(axis=1) @ np.arange(core.shape[2], dtype=float)
    total = areas.sum()
    return float(areas @ np.arange(core.shape[0]) / total), float(rows.sum() / total), float(cols.sum() / total)


def measure_calcium(
    voxels: np.ndarray,
    spacing_zyx: tuple[float, float, float],
    affine_lps: np.ndarray,
    region: HeartRegion,
    mass_calibration_mg_per_cm3_per_hu: float | None = None,
) -> CalciumResult:
    """Find and score the calcium lesions inside ``region`` (see :mod:`.scoring` for the definitions)."""
    increment = spacing_zyx[0]
    pixel_area = spacing_zyx[1] * spacing_zyx[2]
    label_volume = np.zeros(voxels.shape, dtype=np.uint8)
    per_slice = np.zeros(voxels.shape[0])
    box = ndimage.find_objects(region.region.astype(np.uint8))
    if not box or box[0] is None:
        empty = score_lesions([], increment, mass_calibration_mg_per_cm3_per_hu)
        return CalciumResult(empty, dict.fromkeys(ARTERIES, empty), [], label_volume, per_slice)
    # Work inside the region's bounding box: the heart is a small part of a chest CT.
    bz, by, bx = box[0]
    offset = np.array([bz.start, by.start, bx.start], dtype=float)
    hu, inside, bone = voxels[box[0]], region.region[box[0]], region.bone[box[0]]
    accepted = np.zeros(hu.shape, dtype=bool)
    found: list[SliceLesion] = []
    anchors: list[tuple[int, int, int]] = []  # one pixel of each slice lesion (box coordinates), to find its 3-D group
    for k in range(hu.shape[0]):
        if not inside[k].any():
            continue
        labels, lesions = slice_lesions(hu[k], pixel_area, bz.start + k, region=inside[k], exclude=bone[k])
        if lesions:
            keep = np.zeros(int(labels.max()) + 1, dtype=bool)
            keep[[lesion.label for lesion in lesions]] = True
            accepted[k] = keep[labels]
            found.extend(lesions)
            for lesion in lesions:
                py, px = np.argwhere(labels == lesion.label)[0]
                anchors.append((k, int(py), int(px)))
    groups, n_groups = ndimage.label(accepted, structure=_TWENTY_SIX)
    core_slices = np.flatnonzero(region.core.any(axis=(1, 2)))
    if core_slices.size:
        centre_zyx = _core_centroid(region.core, core_slices)
        patient_z = [float((affine_lps @ np.array([0.0, 0.0, float(k), 1.0]))[2]) for k in core_slices]
        top = float(core_slices[int(np.argmax(patient_z))])
    else:
        centre_zyx = (voxels.shape[0] / 2, voxels.shape[1] / 2, voxels.shape[2] / 2)
        top = float(voxels.shape[0] - 1)
    centroids: list[tuple[float, float, float]] = []
    if n_groups:
        points = np.argwhere(groups)
        ids = groups[tuple(points.T)]
        counts = np.bincount(ids, minlength=n_groups + 1)[1:]
        sums = [np.bincount(ids, weights=points[:, axis], minlength=n_groups + 1)[1:] for axis in range(3)]
        centroids = [_triplet([sums[axis][i] / counts[i] + offset[axis] for axis in range(3)]) for i in range(n_groups)]
    artery_of_group = {number: artery_of(centroid, centre_zyx, top, affine_lps) for number, centroid in enumerate(centroids, start=1)}
    by_group: dict[int, list[SliceLesion]] = {n: [] for n in artery_of_group}
    for lesion, anchor in zip(found, anchors):
        by_group[int(groups[anchor])].append(lesion)
    artery_numbers = np.zeros(n_groups + 1, dtype=np.uint8)
    for number, artery in artery_of_group.items():
        artery_numbers[number] = ARTERY_LABEL[artery]
    label_volume[box[0]] = artery_numbers[groups]
    lesions3d = [
        Lesion(
            number, artery_of_group[number], centroids[number - 1], score_lesions(members, increment, mass_calibration_mg_per_cm3_per_hu)
        )
        for number, members in by_group.items()
    ]
    per_artery = {
        artery: score_lesions(
            [lesion for n, members in by_group.items() if artery_of_group[n] == artery for lesion in members],
            increment,
            mass_calibration_mg_per_cm3_per_hu,
        )
        for artery in ARTERIES
    }
    for lesion in found:
        per_slice[lesion.slice_index] += lesion.agatston_area_weight * agatston_scale(increment)
    total = score_lesions(found, increment, mass_calibration_mg_per_cm3_per_hu)
    return CalciumResult(total, per_artery, lesions3d, label_volume, per_slice, found)
