"""JSRT + SCR data for the chest radiograph lung/heart segmentation model.

Reads the developer set in ``<shared data>/cxr-jsrt`` (``$RADPILOT_SHARED_DATA`` or
``<repo>/../shared/data``) where it lies; nothing is copied into the repository.
Labels: 0 background, 1 right lung (patient's right = image LEFT), 2 left lung,
3 heart (SCR lung and heart masks do not overlap).

Cross-validation folds: 5 folds stratified by ``has_nodule``; inside each stratum
(case ids sorted) a permutation from ``numpy.random.default_rng(seed)`` is dealt out
round-robin to folds 0..4.
"""

from __future__ import annotations

import csv
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from radpilot.analyses.chest_xray.preprocess import MODEL_SIZE, area_resize, preprocess  # noqa: E402

DATASET = "cxr-jsrt"
STRUCTURES = ("right_lung", "left_lung", "heart")  # label values 1, 2, 3
N_FOLDS = 5
SPLIT_SEED = 20240601


def shared_data_dir() -> Path:
    configured = os.environ.get("RADPILOT_SHARED_DATA")
    return Path(configured) if configured else REPO.parent / "shared" / "data"


def dataset_dir() -> Path:
    return shared_data_dir() / DATASET


@dataclass(frozen=True)
class Case:
    case_id: str
    has_nodule: int
    ctr: float
    heart_width_mm: float
    thorax_width_mm: float
    pixel_spacing_mm: float


def read_cases(root: Path | None = None) -> list[Case]:
    root = root or dataset_dir()
    cases = []
    with open(root / "metadata.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            if row["split"] != "dev":
                continue
            cases.append(
                Case(
                    case_id=row["case_id"],
                    has_nodule=int(row["has_nodule"]),
                    ctr=float(row["ctr"]),
                    heart_width_mm=float(row["heart_width_mm"]),
                    thorax_width_mm=float(row["thorax_width_mm"]),
                    pixel_spacing_mm=float(row["pixel_spacing_mm"]),
                )
            )
    return sorted(cases, key=lambda c: c.case_id)


def assign_folds(cases: list[Case], n_folds: int = N_FOLDS, seed: int = SPLIT_SEED) -> dict[str, int]:
    """case_id -> fold, stratified by has_nodule, from a seeded permutation."""
    rng = np.random.default_rng(seed)
    folds: dict[str, int] = {}
    for stratum in (0, 1):
        ids = sorted(c.case_id for c in cases if c.has_nodule == stratum)
        for position, index in enumerate(rng.permutation(len(ids))):
            folds[ids[index]] = position % n_folds
    return dict(sorted(folds.items()))


def load_image(case_id: str, root: Path | None = None) -> np.ndarray:
    """Stored 16-bit values (0..4080), 512 x 512."""
    root = root or dataset_dir()
    return np.array(Image.open(root / "images" / f"{case_id}.png"))


def load_labels(case_id: str, root: Path | None = None) -> np.ndarray:
    """uint8 label map on the stored 512 grid: 1 right lung, 2 left lung, 3 heart."""
    root = root or dataset_dir()
    labels = None
    for value, structure in enumerate(STRUCTURES, start=1):
        mask = np.array(Image.open(root / "masks" / structure / f"{case_id}.png")).astype(bool)
        if labels is None:
            labels = np.zeros(mask.shape, dtype=np.uint8)
        labels[mask & (labels == 0)] = value
    return labels


def labels_to_size(labels: np.ndarray, size: int = MODEL_SIZE) -> np.ndarray:
    """Training target at the model grid: per-class area fraction, then the argmax (ties -> lower label)."""
    fractions = np.stack([area_resize((labels == v).astype(np.float64), (size, size)) for v in range(4)])
    return np.argmax(fractions, axis=0).astype(np.uint8)


@dataclass
class Arrays:
    case_ids: list[str]
    images: np.ndarray  # (N, 1, 256, 256) float32, preprocessed
    labels: np.ndarray  # (N, 256, 256) uint8


def load_arrays(case_ids: list[str], root: Path | None = None) -> Arrays:
    images = np.concatenate([preprocess(load_image(c, root)) for c in case_ids]).astype(np.float32)
    labels = np.stack([labels_to_size(load_labels(c, root)) for c in case_ids])
    return Arrays(list(case_ids), images, labels)


def load_arrays_cached(case_ids: list[str], cache: Path | None = None) -> Arrays:
    """All dev cases preprocessed once into an ignored cache file (``training/chest_xray/runs/cache.npz``)."""
    cache = cache or Path(__file__).resolve().parent / "runs" / "cache.npz"
    everything = None
    if cache.is_file():
        stored = np.load(cache)
        everything = Arrays(list(stored["case_ids"]), stored["images"], stored["labels"])
    if everything is None or not set(case_ids) <= set(everything.case_ids):
        everything = load_arrays([c.case_id for c in read_cases()])
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp.npz")  # two training queues may both write it on a first run
        np.savez(tmp, case_ids=np.array(everything.case_ids), images=everything.images, labels=everything.labels)
        tmp.replace(cache)
    index = {c: i for i, c in enumerate(everything.case_ids)}
    rows = [index[c] for c in case_ids]
    return Arrays(list(case_ids), everything.images[rows], everything.labels[rows])
