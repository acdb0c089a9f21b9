"""JSRT nodule annotations for the nodule detector, on top of ``training/chest_xray/data.py``.

Cases, folds (5-fold, stratified by has_nodule, seeded permutation) and the preprocessed
256 x 256 images come from ``data.py`` (the segmentation model's conventions, imported, not
copied).  Nodule centres are the metadata.csv ``nodule_x``/``nodule_y`` on the stored 512 grid
(approximate centres, a few mm), the diameter ``nodule_size_mm``.
"""

from __future__ import annotations

import csv
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CHEST = Path(__file__).resolve().parents[1]
if str(CHEST) not in sys.path:
    sys.path.insert(0, str(CHEST))

import data  # noqa: E402  (training/chest_xray/data.py)

from radpilot.analyses.chest_xray.preprocess import MODEL_SIZE  # noqa: E402

STORED_SIZE = 512
STORED_SPACING_MM = 0.7
HIT_MARGIN_MM = 5.0  # hit: centre distance <= nodule radius + 5 mm


@dataclass(frozen=True)
class Nodule:
    case_id: str
    row: float  # stored 512 grid
    col: float
    diameter_mm: float
    subtlety: int
    malignancy: str

    def model_grid(self, size: int = MODEL_SIZE, stored: int = STORED_SIZE) -> tuple[float, float]:
        """(row, col) on the size x size model grid (half-pixel centres)."""
        f = stored / size
        return (self.row + 0.5) / f - 0.5, (self.col + 0.5) / f - 0.5

    def diameter_model_px(self, size: int = MODEL_SIZE, stored: int = STORED_SIZE, spacing: float = STORED_SPACING_MM) -> float:
        return self.diameter_mm / (spacing * stored / size)


def read_nodules(root: Path | None = None) -> dict[str, Nodule]:
    """case_id -> Nodule for the dev cases with a nodule (JSRT: at most one per film)."""
    root = root or data.dataset_dir()
    out = {}
    with open(root / "metadata.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            if row["split"] != "dev" or row["has_nodule"] != "1":
                continue
            out[row["case_id"]] = Nodule(
                row["case_id"],
                float(row["nodule_y"]),
                float(row["nodule_x"]),
                float(row["nodule_size_mm"]),
                int(row["subtlety"]),
                row["malignancy"],
            )
    return out


def folds() -> dict[str, int]:
    return data.assign_folds(data.read_cases())


def split(fold: int) -> tuple[list[str], list[str]]:
    """(training ids, held-out ids) of ``fold``; fold -1: all dev cases for training, none held out."""
    assignment = folds()
    if fold == -1:
        return sorted(assignment), []
    return (sorted(c for c, f in assignment.items() if f != fold), sorted(c for c, f in assignment.items() if f == fold))


def lung_masks_reference(case_ids: list[str]) -> dict[str, np.ndarray]:
    """SCR lung fields (right | left) on the stored 512 grid."""
    return {c: np.isin(data.load_labels(c), (1, 2)) for c in case_ids}
