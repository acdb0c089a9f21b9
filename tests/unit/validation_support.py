"""Tiny reference datasets in the workbench's layouts, built inside the tests (synthetic, exact truth).

* :func:`make_slice_dataset`: ``png-slices`` (the ``ct-lung-slices`` layout): 16-bit PNG
  slices with an offset, binary masks and a ``cases.csv`` with a QC column.
* :func:`make_series_dataset`: ``dicom-series`` (the ``ct-lung`` layout): one small chest
  phantom per case as DICOM slices, a label volume as NIfTI (or MetaImage) and a
  ``cases.csv`` with reference volumes and LAA-950.
* :func:`make_radiograph_dataset`: ``png-radiographs`` (the ``cxr-jsrt`` layout).
* :func:`write_metaimage`: a MetaImage writer (LPS), to test the reader.
"""

from __future__ import annotations

import csv
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from tests.factories import make_ct_series

SLICE_OFFSET = 4096


def write_png16(path: Path, values: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(values, dtype=np.uint16)).save(path)


def write_mask_png(path: Path, mask: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(mask, dtype=bool)).save(path)


def synthetic_slice(seed: int, shape: tuple[int, int] = (200, 200)) -> tuple[np.ndarray, np.ndarray]:
    """An axial chest-like slice on an uncalibrated HU-like scale (air about -810, as in ct-lung-slices) and its lung mask."""
    rng = np.random.default_rng(seed)
    rows, cols = shape
    yy, xx = np.mgrid[0:rows, 0:cols].astype(float)
    cy, cx = rows / 2 + rng.uniform(-4, 4), cols / 2 + rng.uniform(-4, 4)
    body = ((yy - cy) / (rows * 0.40)) ** 2 + ((xx - cx) / (cols * 0.46)) ** 2 <= 1
    ry, rx = rows * rng.uniform(0.22, 0.27), cols * rng.uniform(0.13, 0.16)
    right = ((yy - cy) / ry) ** 2 + ((xx - (cx - cols * 0.21)) / rx) ** 2 <= 1
    left = ((yy - cy) / ry) ** 2 + ((xx - (cx + cols * 0.21)) / rx) ** 2 <= 1
    image = np.full(shape, -810.0) + rng.normal(0, 20, shape)
    image[body] = 40.0 + rng.normal(0, 15, int(body.sum()))
    lungs = right | left
    image[lungs] = -680.0 + rng.normal(0, 30, int(lungs.sum()))
    return np.rint(image), lungs


def make_slice_dataset(root: Path, n: int = 6, *, defective: int | None = None) -> Path:
    """``root`` in the png-slices layout with ``n`` slices; case ``defective`` gets a mask_qc flag."""
    rows = []
    for i in range(n):
        image, mask = synthetic_slice(i)
        case = f"ID_{i:04d}_Z_{10 + i:04d}"
        write_png16(root / "images" / f"{case}.png", image + SLICE_OFFSET)
        write_mask_png(root / "masks" / f"{case}.png", mask)
        rows.append(
            {
                "slice_id": case,
                "split": "dev",
                "image_file": f"images/{case}.png",
                "mask_file": f"masks/{case}.png",
                "png_offset": SLICE_OFFSET,
                "mask_qc": "FLAG_defect" if i == defective else "ok",
                "area_stratum": 1 + i % 3,
            }
        )
    rows.append(
        {
            "slice_id": "ID_9999_Z_0001",
            "split": "holdout",
            "image_file": "images/missing.png",
            "mask_file": "masks/missing.png",
            "png_offset": SLICE_OFFSET,
            "mask_qc": "ok",
            "area_stratum": 1,
        }
    )
    with open(root / "cases.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root


SLICE_MANIFEST_OPTIONS = {
    "cases_file": "cases.csv",
    "case_id_column": "slice_id",
    "image_column": "image_file",
    "mask_column": "mask_file",
    "value_offset": SLICE_OFFSET,
    "value_offset_column": "png_offset",
    "pixel_spacing_mm": None,
    "structure": "lungs",
    "split": {"column": "split", "allowed": ["dev"]},
    "exclude_from_statistics": {"column": "mask_qc", "allowed": ["ok"], "reason": "defective reference mask"},
    "attributes": {"area_stratum": "area_stratum"},
}


# ----------------------------------------------------------------------------------------- 3-D phantom
PHANTOM_SHAPE = (30, 112, 112)  # z, y, x
PHANTOM_SPACING = (6.0, 3.0, 3.0)  # 180 mm coverage, 336 mm field of view


def phantom_hu(seed: int = 0, *, emphysema: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """HU volume (z, y, x) and labels (1 right lung = low x, 2 left lung); patient x grows with the column index."""
    nz, ny, nx = PHANTOM_SHAPE
    sz, sy, sx = PHANTOM_SPACING
    z = (np.arange(nz) - (nz - 1) / 2) * sz
    y = (np.arange(ny) - (ny - 1) / 2) * sy
    x = (np.arange(nx) - (nx - 1) / 2) * sx
    zz, yy, xx = np.meshgrid(z, y, x, indexing="ij")
    body = (xx / 150.0) ** 2 + (yy / 110.0) ** 2 <= 1.0
    right = ((xx + 70.0) / 50.0) ** 2 + (yy / 70.0) ** 2 + (zz / 80.0) ** 2 <= 1.0
    left = ((xx - 70.0) / 50.0) ** 2 + (yy / 70.0) ** 2 + (zz / 80.0) ** 2 <= 1.0
    hu = np.full(PHANTOM_SHAPE, -1000.0)
    hu[body] = 40.0
    hu[right | left] = -850.0
    if emphysema:
        hu[((xx - 70.0) ** 2 + (yy - 10.0) ** 2 + (zz - 10.0) ** 2) <= 25.0**2] = -980.0
    hu += np.random.default_rng(seed).normal(0.0, 10.0, PHANTOM_SHAPE)
    labels = np.zeros(PHANTOM_SHAPE, dtype=np.uint8)
    labels[right] = 1
    labels[left] = 2
    return hu, labels


def write_phantom_dicom(folder: Path, hu: np.ndarray, *, kernel: str = "B", seed: int = 0) -> list[Path]:
    """The phantom as CT slices (RescaleIntercept -1024), z = slice index * spacing, origin (0, 0, 0)."""
    nz, ny, nx = hu.shape
    sz, sy, sx = PHANTOM_SPACING
    series = make_ct_series(nz, rows=ny, columns=nx, patient_id=f"PH{seed}")
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, ds in enumerate(series):
        ds.ImagePositionPatient = [0.0, 0.0, k * sz]
        ds.PixelSpacing = [sy, sx]
        ds.SliceThickness = sz
        ds.ConvolutionKernel = kernel
        ds.PixelData = np.clip(np.rint(hu[k] + 1024), -32768, 32767).astype(np.int16).tobytes()
        path = folder / f"CT{k + 1:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def lps_affine_ijk() -> np.ndarray:
    """(i, j, k, 1) -> LPS of the phantom grid (i = column, j = row, k = slice)."""
    sz, sy, sx = PHANTOM_SPACING
    return np.diag([sx, sy, sz, 1.0])


def write_nifti_labels(path: Path, labels_zyx: np.ndarray, *, flip_k: bool = False) -> None:
    """Labels as NIfTI (index (i, j, k) = column, row, slice; RAS affine), optionally stored with k reversed."""
    import nibabel

    array = np.asarray(labels_zyx).transpose(2, 1, 0)
    affine_lps = lps_affine_ijk()
    if flip_k:
        array = array[:, :, ::-1]
        affine_lps = affine_lps.copy()
        affine_lps[:3, 3] = affine_lps[:3, 3] + affine_lps[:3, 2] * (labels_zyx.shape[0] - 1)
        affine_lps[:3, 2] = -affine_lps[:3, 2]
    affine_ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine_lps
    image = nibabel.Nifti1Image(np.ascontiguousarray(array.astype(np.uint8)), affine_ras)
    image.set_qform(affine_ras, code=1)
    image.set_sform(affine_ras, code=1)
    nibabel.save(image, str(path))


def write_metaimage(path: Path, array_ijk: np.ndarray, affine_lps: np.ndarray, *, compressed: bool = True) -> None:
    """A .mha (local data) with ITK conventions: Offset, TransformMatrix rows = axis directions, x fastest."""
    spacing = [float(np.linalg.norm(affine_lps[:3, a])) for a in range(3)]
    directions = [affine_lps[:3, a] / spacing[a] for a in range(3)]
    data = np.ascontiguousarray(np.asarray(array_ijk, dtype=np.uint8).transpose(2, 1, 0)).tobytes()
    if compressed:
        data = zlib.compress(data)
    header = [
        "ObjectType = Image",
        "NDims = 3",
        "BinaryData = True",
        "BinaryDataByteOrderMSB = False",
        f"CompressedData = {'True' if compressed else 'False'}",
        "TransformMatrix = " + " ".join(f"{v:g}" for d in directions for v in d),
        "Offset = " + " ".join(f"{v:g}" for v in affine_lps[:3, 3]),
        "ElementSpacing = " + " ".join(f"{v:g}" for v in spacing),
        "DimSize = " + " ".join(str(n) for n in array_ijk.shape),
        "ElementType = MET_UCHAR",
        "ElementDataFile = LOCAL",
    ]
    path.write_bytes(("\n".join(header) + "\n").encode() + data)


def make_series_dataset(root: Path, n: int = 1, *, mask_format: str = "nifti") -> Path:
    """``root`` in the dicom-series layout: ``n`` phantom cases, masks as NIfTI or MetaImage, cases.csv with references."""
    rows = []
    ml = float(np.prod(PHANTOM_SPACING)) / 1000.0
    for i in range(n):
        case = f"PH-{i + 1:03d}"
        hu, labels = phantom_hu(seed=i)
        write_phantom_dicom(root / case / "dicom", hu, kernel="B" if i % 2 == 0 else "L", seed=i)
        if mask_format == "nifti":
            write_nifti_labels(root / case / "lung_mask.nii.gz", labels, flip_k=bool(i % 2))
        else:
            write_metaimage(root / case / "lung_mask.mha", labels.transpose(2, 1, 0), lps_affine_ijk())
        lung = labels > 0
        rows.append(
            {
                "case_id": case,
                "kernel": "B" if i % 2 == 0 else "L",
                "right_lung_ml": round(float((labels == 1).sum()) * ml, 1),
                "left_lung_ml": round(float((labels == 2).sum()) * ml, 1),
                "total_lung_ml": round(float(lung.sum()) * ml, 1),
                "laa950_percent": round(100.0 * float((hu[lung] < -950).sum()) / float(lung.sum()), 2),
            }
        )
    with open(root / "cases.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root


SERIES_MANIFEST_OPTIONS = {
    "cases_file": "cases.csv",
    "case_id_column": "case_id",
    "series_dir": "{case}/dicom",
    "mask_file": "{case}/lung_mask.nii.gz",
    "mask_labels": {1: "right_lung", 2: "left_lung"},
    "reference_values": {
        "right_lung_volume_ml": "right_lung_ml",
        "left_lung_volume_ml": "left_lung_ml",
        "total_lung_volume_ml": "total_lung_ml",
        "laa950_percent": "laa950_percent",
    },
    "attributes": {"kernel": "kernel"},
}


# ----------------------------------------------------------------------------------------- radiographs
def make_radiograph_dataset(root: Path, n: int = 3) -> Path:
    """``root`` in the png-radiographs layout: blobs for right lung, left lung and heart, CTR in metadata.csv."""
    rows = []
    for i in range(n):
        case = f"CXR{i:03d}"
        yy, xx = np.mgrid[0:128, 0:128].astype(float)
        right = ((yy - 60) / 35) ** 2 + ((xx - 38) / 18) ** 2 <= 1
        left = ((yy - 60) / 35) ** 2 + ((xx - 90) / 18) ** 2 <= 1
        heart = (((yy - 85) / 14) ** 2 + ((xx - 66) / (16 + i)) ** 2 <= 1) & ~right & ~left
        image = np.full((128, 128), 3000.0)
        image[right | left] = 800.0
        image[heart] = 2500.0
        write_png16(root / "images" / f"{case}.png", image)
        for name, mask in (("right_lung", right), ("left_lung", left), ("heart", heart)):
            write_mask_png(root / "masks" / name / f"{case}.png", mask)
        cols_h = np.flatnonzero(heart.any(axis=0))
        thorax = np.flatnonzero(left.any(axis=0)).max() - np.flatnonzero(right.any(axis=0)).min() + 1
        rows.append(
            {
                "case_id": case,
                "split": "dev",
                "image_file": f"images/{case}.png",
                "pixel_spacing_mm": "1.400",
                "ctr": round((cols_h.max() - cols_h.min() + 1) / thorax, 4),
            }
        )
    with open(root / "metadata.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root


RADIOGRAPH_MANIFEST_OPTIONS = {
    "cases_file": "metadata.csv",
    "case_id_column": "case_id",
    "image_column": "image_file",
    "structures": ["right_lung", "left_lung", "heart"],
    "pixel_spacing_column": "pixel_spacing_mm",
    "split": {"column": "split", "allowed": ["dev"]},
    "reference_values": {"ctr": "ctr"},
}


def manifest_dict(name: str, layout: str, root: Path, options: dict, *, analysis: str | None = "lung_ct_quant", **extra) -> dict:
    """A manifest mapping for a test dataset (content hash left out: pin it with the registry)."""
    content = {
        "name": name,
        "version": "t1",
        "title": f"test set {name}",
        "layout": layout,
        "root": str(root),
        "analysis": analysis,
        "reference": {"kind": "phantom", "description": "synthetic, exact truth"},
        "licence": "test data",
        "terms": "tests only",
        "citation": ["none"],
        "limitations": ["synthetic"],
        "options": options,
    }
    content.update(extra)
    return content
