"""Reference volumes on an image's voxel grid, and image volumes built from volume files."""

from __future__ import annotations

from typing import Any

import numpy as np

from radpilot.dicom.volume import Volume
from radpilot.validation.datasets.errors import DatasetError
from radpilot.validation.datasets.readers import LabelImage


def labels_on_volume_grid(image: LabelImage, volume: Any, *, tolerance: float = 0.02) -> np.ndarray:
    """The label array re-indexed as ``(z, y, x)`` on ``volume``'s voxel grid.

    Only axis permutations and flips are allowed (no interpolation): the mask must
    lie on exactly the same voxel grid as the image, as a reference annotation of
    that image does. Anything else raises :class:`DatasetError` with the offset found.
    """
    volume_affine = np.asarray(volume.affine_lps, dtype=np.float64)  # (x, y, z, 1) -> LPS
    mapping = np.linalg.inv(volume_affine) @ image.affine_lps  # (i, j, k, 1) -> (x, y, z, 1)
    rot = mapping[:3, :3]
    perm = np.round(rot)
    if (
        not np.allclose(rot, perm, atol=tolerance)
        or not np.allclose(np.abs(perm).sum(axis=0), 1)
        or not np.allclose(np.abs(perm).sum(axis=1), 1)
    ):
        where = f" ({image.path})" if image.path else ""
        raise DatasetError(
            f"reference volume{where} is not on the image's voxel grid (its axes map to {np.round(rot, 3).tolist()} "
            "in image voxels); masks must share the image grid (permuted or flipped axes are accepted)"
        )
    # For each target axis (x, y, z): the source axis and its sign.
    arr = image.array
    source_for_target = [int(np.flatnonzero(perm[t])[0]) for t in range(3)]
    signs = [int(perm[t, source_for_target[t]]) for t in range(3)]
    target_shape_xyz = tuple(volume.shape[::-1])
    arr_xyz = np.transpose(arr, source_for_target)
    offset = mapping[:3, 3]
    for t in range(3):
        if signs[t] < 0:
            arr_xyz = np.flip(arr_xyz, axis=t)
            offset[t] = offset[t] - (arr_xyz.shape[t] - 1)
    if arr_xyz.shape != target_shape_xyz or not np.allclose(offset, 0.0, atol=max(tolerance, 0.05)):
        where = f" {image.path}" if image.path else ""
        raise DatasetError(
            f"reference volume{where} has shape {arr_xyz.shape[::-1]} (z, y, x) and offset "
            f"{np.round(offset[::-1], 3).tolist()} voxels from the image of shape {volume.shape}; "
            "it must cover exactly the image grid"
        )
    return np.ascontiguousarray(np.transpose(arr_xyz, (2, 1, 0)))


def volume_from_label_image(image: LabelImage, *, modality: str = "CT", metadata: dict[str, Any] | None = None) -> Any:
    """A :class:`~radpilot.dicom.volume.Volume` from a NIfTI/MetaImage image (values as stored, e.g. HU)."""
    affine = image.affine_lps
    spacing_ijk = image.spacing_ijk
    direction = np.vstack([affine[:3, a] / spacing_ijk[a] for a in range(3)])
    voxels = np.transpose(image.array, (2, 1, 0))
    return Volume(
        voxels=voxels.astype(np.float32),
        spacing_zyx=(spacing_ijk[2], spacing_ijk[1], spacing_ijk[0]),
        origin=tuple(float(v) for v in affine[:3, 3]),  # type: ignore[arg-type]
        direction=direction,
        modality=modality,
        metadata=dict(metadata or {}),
    )
