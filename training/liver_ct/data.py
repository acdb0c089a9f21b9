"""Reads ``liver-ct-btcv`` ($RADPILOT_SHARED_DATA or <repo>/../shared/data) into model-grid arrays, and the folds.

Each case becomes ``x`` float16 (z, 3, H, W) from :func:`radpilot.analyses.liver_ct.preprocess.model_input`
(the runtime function) and ``y`` uint8 (z, H, W) labels on the same model grid (per-class bilinear
resampling of the one-hot labels, then argmax), plus the native label volume for evaluation.
"""

from __future__ import annotations

import csv
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import nibabel
import numpy as np

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from radpilot.analyses.liver_ct.preprocess import NUM_CLASSES, model_grid_shape, model_input, resize_inplane  # noqa: E402

N_FOLDS = 5


def data_root() -> Path:
    base = os.environ.get("RADPILOT_SHARED_DATA")
    root = Path(base) if base else REPO.parent / "shared" / "data"
    return root / "liver-ct-btcv"


@dataclass
class Case:
    case_id: str
    u8: np.ndarray  # (z, rows, cols) uint8 as stored
    labels: np.ndarray  # (z, rows, cols) uint8 native grid
    spacing_zrc: tuple[float, float, float]
    x: np.ndarray  # (z, 3, H, W) float16 model input
    y: np.ndarray  # (z, H, W) uint8 model-grid labels
    model_rc: tuple[int, int]


def case_ids(root: Path | None = None) -> list[str]:
    root = root or data_root()
    with (root / "cases.csv").open() as f:
        return [row["case_id"] for row in csv.DictReader(f)]


def load_case(case_id: str, root: Path | None = None) -> Case:
    root = root or data_root()
    img = nibabel.load(root / "images" / f"{case_id}.nii.gz")
    lab = nibabel.load(root / "labels" / f"{case_id}.nii.gz")
    sx, sy, sz = (float(v) for v in img.header.get_zooms()[:3])
    # NIfTI axes (i, j, k) run to the patient's left, posterior, superior: (z, rows, cols) = transpose(2, 1, 0)
    u8 = np.ascontiguousarray(np.asarray(img.dataobj, dtype=np.uint8).transpose(2, 1, 0))
    labels = np.ascontiguousarray(np.asarray(lab.dataobj, dtype=np.uint8).transpose(2, 1, 0))
    spacing = (sz, sy, sx)
    x = model_input(u8, spacing)
    model_rc = model_grid_shape(u8.shape[1:], (sy, sx))
    onehot = np.stack([(labels == c).astype(np.float32) for c in range(NUM_CLASSES)], axis=1)
    y_small = np.argmax(resize_inplane(onehot, model_rc), axis=1).astype(np.uint8)
    y = np.zeros(x.shape[:1] + x.shape[2:], dtype=np.uint8)
    y[:, : model_rc[0], : model_rc[1]] = y_small
    return Case(case_id, u8, labels, spacing, x.astype(np.float16), y, model_rc)


def folds(ids: list[str], n_folds: int = N_FOLDS) -> list[list[str]]:
    """Patient-wise folds: case i (in BTCV id order) goes to fold i mod n_folds."""
    return [[cid for i, cid in enumerate(ids) if i % n_folds == f] for f in range(n_folds)]
