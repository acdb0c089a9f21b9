"""ACDC (``shared/data/cmr-acdc``) for the short-axis segmentation model: cases, folds, arrays, training tiles.

Arrays are (slices, rows, columns) per case: the NIfTI array [i, j, k] transposed to [k, j, i]
(rows = j, columns = i), which is the README's h5 layout, RV on the image left of the LV,
slice 0 at the base. Only the dev split is here; the hold-out patients are not read.

Folds: 5 folds by patient, stratified by ACDC's diagnostic group (16 dev patients per group):
within each group a ``numpy.random.default_rng(SPLIT_SEED)`` permutation dealt round-robin,
so every fold has 3-4 patients of every group and both phases of a patient share a fold.
"""

from __future__ import annotations

import csv
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from radpilot.analyses.cardiac_mr_function.preprocess import cut_tile, normalise_tile  # noqa: E402

N_FOLDS = 5
SPLIT_SEED = 20240601
GROUPS = ("DCM", "HCM", "MINF", "NOR", "RV")


def data_root() -> Path:
    shared = os.environ.get("RADPILOT_SHARED_DATA")
    base = Path(shared) if shared else REPO.parent / "shared" / "data"
    return base / "cmr-acdc"


@dataclass(frozen=True)
class Patient:
    patient_id: str
    group: str
    lv_ef: float
    rv_ef: float


def read_patients(root: Path | None = None) -> list[Patient]:
    root = root or data_root()
    out: dict[str, Patient] = {}
    with open(root / "cases.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            if row["split"] != "dev":
                continue
            out[row["patient_id"]] = Patient(row["patient_id"], row["group"], float(row["lv_ef"] or "nan"), float(row["rv_ef"] or "nan"))
    return [out[k] for k in sorted(out)]


def assign_folds(patients: list[Patient], seed: int = SPLIT_SEED) -> dict[str, int]:
    rng = np.random.default_rng(seed)
    folds: dict[str, int] = {}
    for group in GROUPS:
        members = sorted(p.patient_id for p in patients if p.group == group)
        for rank, index in enumerate(rng.permutation(len(members))):
            folds[members[index]] = rank % N_FOLDS
    return folds


def load_case(patient_id: str, phase: str, root: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(image uint8, labels uint8), each (slices, rows, columns)."""
    import nibabel  # noqa: PLC0415 - training-only dependency

    root = root or data_root()
    image = np.asarray(nibabel.load(root / "images" / f"{patient_id}_{phase}.nii.gz").dataobj).transpose(2, 1, 0)
    labels = np.asarray(nibabel.load(root / "labels" / f"{patient_id}_{phase}.nii.gz").dataobj).transpose(2, 1, 0)
    return np.ascontiguousarray(image, dtype=np.uint8), np.ascontiguousarray(labels, dtype=np.uint8)


@dataclass
class Slices:
    """Every slice of some cases, each with its patient's heart centre (label centroid over ED+ES)."""

    images: list[np.ndarray]
    labels: list[np.ndarray]
    centres: np.ndarray  # (n, 2) row, column
    references: list[np.ndarray]  # the same slice at end-diastole (the cine's first phase at runtime)


def load_slices(patient_ids: list[str], root: Path | None = None) -> Slices:
    images, labels, centres, references = [], [], [], []
    for pid in patient_ids:
        cases = [load_case(pid, phase, root) for phase in ("ED", "ES")]
        union = (cases[0][1] > 0) | (cases[1][1] > 0)
        rows, cols = np.nonzero(union.any(0))
        centre = (float(rows.mean()), float(cols.mean())) if rows.size else (union.shape[1] / 2, union.shape[2] / 2)
        for image, label in cases:
            for k in range(image.shape[0]):
                images.append(image[k])
                labels.append(label[k])
                centres.append(centre)
                references.append(cases[0][0][k])
    return Slices(images, labels, np.asarray(centres, dtype=np.float64), references)


def training_tiles(
    data: Slices, index: np.ndarray, size: int, jitter: float, rng: np.random.Generator, reference_channel: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Tiles of ``size`` around each chosen slice's heart centre moved by up to ``jitter`` pixels, normalised
    as at runtime: (n, C, size, size) float32 and (n, size, size) int64. C is 1, or 2 with ``reference_channel``:
    the same window of the slice at end-diastole, each channel normalised on its own."""
    x = np.zeros((len(index), 2 if reference_channel else 1, size, size), dtype=np.float32)
    y = np.zeros((len(index), size, size), dtype=np.int64)
    for n, i in enumerate(index):
        moved = data.centres[i] + rng.uniform(-jitter, jitter, 2)
        centre = (moved[0], moved[1])
        x[n, 0] = normalise_tile(cut_tile(data.images[i].astype(np.float32), centre, size))
        if reference_channel:
            x[n, 1] = normalise_tile(cut_tile(data.references[i].astype(np.float32), centre, size))
        y[n] = cut_tile(data.labels[i], centre, size)
    return x, y
