"""From a CT volume and its heart region to lesions, artery territories and scores."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from radpilot.analyses.coronary_calcium.region import ARTERIES, HeartRegion, artery_of
from radpilot.analyses.coronary_calcium.scoring import CalciumScores, SliceLesion, score_lesions, slice_lesions

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
    accepted = np.zeros(voxels.shape, dtype=bool)
    found: list[SliceLesion] = []
    anchors: list[tuple[int, int, int]] = []  # one pixel of each slice lesion, to find its 3-D group
    for z in range(voxels.shape[0]):
        if not region.region[z].any():
            continue
        labels, lesions = slice_lesions(voxels[z], pixel_area, z, region=region.region[z], exclude=region.bone[z])
        if lesions:
            accepted[z] = np.isin(labels, [lesion.label for lesion in lesions])
            found.extend(lesions)
            for lesion in lesions:
                py, px = np.argwhere(labels == lesion.label)[0]
                anchors.append((z, int(py), int(px)))
    groups, n_groups = ndimage.label(accepted, structure=_TWENTY_SIX)
    core_slices = np.flatnonzero(region.core.any(axis=(1, 2)))
    centre = ndimage.center_of_mass(region.core) if core_slices.size else (voxels.shape[0] / 2, voxels.shape[1] / 2, voxels.shape[2] / 2)
    if core_slices.size:
        patient_z = [float((affine_lps @ np.array([0.0, 0.0, float(k), 1.0]))[2]) for k in core_slices]
        top = float(core_slices[int(np.argmax(patient_z))])
    else:
        top = float(voxels.shape[0] - 1)
    centre_zyx = _triplet(centre)
    centroids = [_triplet(c) for c in ndimage.center_of_mass(accepted, groups, np.arange(1, n_groups + 1))] if n_groups else []
    artery_of_group = {number: artery_of(centroid, centre_zyx, top, affine_lps) for number, centroid in enumerate(centroids, start=1)}
    by_group: dict[int, list[SliceLesion]] = {n: [] for n in artery_of_group}
    for lesion, anchor in zip(found, anchors):
        by_group[int(groups[anchor])].append(lesion)
    label_volume = np.zeros(voxels.shape, dtype=np.uint8)
    for number, artery in artery_of_group.items():
        label_volume[groups == number] = ARTERY_LABEL[artery]
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
    per_slice = np.zeros(voxels.shape[0])
    for lesion in found:
        per_slice[lesion.slice_index] += lesion.agatston_area_weight * increment / 3.0
    total = score_lesions(found, increment, mass_calibration_mg_per_cm3_per_hu)
    return CalciumResult(total, per_artery, lesions3d, label_volume, per_slice, found)
