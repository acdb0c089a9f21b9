"""Chest radiograph nodule candidates (``cxr_nodule_det``): the committed ONNX model and manifest,
the numpy candidate extraction, ``detect_nodules`` (numpy + onnxruntime only), and - only where
torch is installed (``.venv-train``) - a quick training + export run.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from radpilot.analyses.chest_xray.nodules import (
    MODEL_NAME,
    NoduleCandidate,
    candidates_from_outputs,
    detect_nodules,
)
from radpilot.modelhub.registry import ModelRegistry
from tests.helpers import REPO_ROOT, load_script

MODEL_DIR = REPO_ROOT / "models" / f"{MODEL_NAME}_v2"  # the newest, which the analysis runs
MODEL_DIRS = (REPO_ROOT / "models" / MODEL_NAME, MODEL_DIR)  # 1.0.0 stays loadable
TRAINING = REPO_ROOT / "training" / "chest_xray" / "nodules"


@pytest.fixture(scope="module")
def manifest() -> dict:
    return json.loads((MODEL_DIR / "manifest.json").read_text())


@pytest.fixture(scope="module")
def registry() -> ModelRegistry:
    pytest.importorskip("onnxruntime")
    return ModelRegistry(intra_op_threads=1, providers=["CPUExecutionProvider"])


# --- the committed model and its manifest -----------------------------------------------------


@pytest.mark.parametrize("folder", MODEL_DIRS, ids=lambda p: p.name)
def test_each_model_file_matches_its_manifest_sha256(folder: Path) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    path = folder / manifest["file"]
    assert path.is_file()
    assert path.stat().st_size < 20 * 1024 * 1024
    assert hashlib.sha256(path.read_bytes()).hexdigest() == manifest["sha256"]


def test_the_newest_version_runs_and_the_earlier_one_stays_loadable(registry: ModelRegistry) -> None:
    versions = sorted(m.version for m in registry.manifests() if m.name == MODEL_NAME)
    assert versions == ["1.0.0", "2.0.0"]
    assert registry.manifest(MODEL_NAME).version == "2.0.0"
    for version in versions:
        session = registry.session(MODEL_NAME, version)  # verified against its manifest's sha256
        heat, diameter = session.run(None, {"image": np.zeros((1, 1, 256, 256), dtype=np.float32)})
        assert heat.shape == diameter.shape == (1, 1, 128, 128)


def test_the_newest_model_sees_a_film_and_its_mirror_alike(registry: ModelRegistry) -> None:
    """2.0.0 averages the film and its left-right mirror in its graph: a nodule is scored the same on either side."""
    session = registry.session(MODEL_NAME, "2.0.0")
    image = np.random.default_rng(0).random((1, 1, 256, 256), dtype=np.float32)
    heat, _ = session.run(None, {"image": image})
    heat_mirrored, _ = session.run(None, {"image": image[..., ::-1].copy()})
    np.testing.assert_allclose(heat_mirrored[..., ::-1], heat, atol=1e-5)


def test_manifest_is_complete(manifest: dict) -> None:
    assert manifest["name"] == MODEL_NAME
    assert manifest["input"]["shape"] == ["N", 1, 256, 256]
    assert manifest["labels"][0]["code"] == {"value": "27925004", "scheme": "SCT", "meaning": "Nodule"}
    assert manifest["intended_use"].startswith("research use only")
    assert "research use only" in manifest["training_data"]["terms"]
    op = manifest["operating_point"]
    assert 0.0 < op["score_threshold"] < 1.0 and op["expected_fp_per_image"] <= 1.0 and 0.0 <= op["sensitivity"] <= 1.0
    assert {c["metric"] for c in manifest["acceptance_criteria"]} >= {"sensitivity_at_1fp"}
    for rate in ("0.125", "0.25", "0.5", "1.0", "2.0", "4.0", "8.0"):
        entry = manifest["metrics"]["froc_sensitivity"][rate]
        assert entry["ci95"][0] <= entry["estimate"] <= entry["ci95"][1]


def test_registry_verifies_the_model(registry: ModelRegistry) -> None:
    session = registry.session(MODEL_NAME)
    names = [o.name for o in session.get_outputs()]
    assert names == ["heatmap", "diameter"]


# --- candidate extraction (numpy) -------------------------------------------------------------


def test_candidates_from_outputs_maps_peaks_to_the_input_grid() -> None:
    heat = np.zeros((128, 128), np.float32)
    heat[40, 100] = 0.9  # one strong peak
    heat[40, 101] = 0.5  # not a peak (inside the 5 x 5 window), pulls the centroid
    heat[100, 20] = 0.3
    diam = np.full((128, 128), 10.0, np.float32)  # 10 model px
    cands = candidates_from_outputs(heat, diam, (512, 512), (0.7, 0.7), None, min_score=0.1)
    assert [round(c.score, 2) for c in cands] == [0.9, 0.3]
    first = cands[0]
    # output pixel 40 at stride 4 of the 512 grid: centre (40 + 0.5) * 4 - 0.5, pulled towards the 0.5 neighbour
    assert first.row == pytest.approx(161.5)
    assert first.col == pytest.approx((100 + 0.5 / 1.4 + 0.5) * 4 - 0.5)
    assert first.diameter_mm == pytest.approx(10 * 1.4)
    mask = np.zeros((512, 512), bool)
    mask[380:420, 60:100] = True  # near the second candidate only
    kept = candidates_from_outputs(heat, diam, (512, 512), (0.7, 0.7), mask, min_score=0.1, mask_margin_mm=10.0)
    assert len(kept) == 1 and kept[0].score == pytest.approx(0.3)


def test_detect_nodules_on_a_synthetic_image(registry: ModelRegistry, manifest: dict) -> None:
    """Two bright blobs planted in a smooth non-square image: the only candidates at the operating point,
    mapped back to where they were planted."""
    rng = np.random.default_rng(0)
    rows, cols = 600, 500
    blobs, sigma = [(200, 150), (350, 350)], 12.0
    yy, xx = np.mgrid[0:rows, 0:cols]
    image = 2000 + 600 * np.exp(-(((xx - 250) / 200) ** 2)) + rng.normal(0, 30, (rows, cols))
    for r, c in blobs:
        image += 500 * np.exp(-((yy - r) ** 2 + (xx - c) ** 2) / (2 * sigma**2))
    lungs = (yy > 80) & (yy < 520) & (np.abs(xx - 250) > 40) & (np.abs(xx - 250) < 220)
    cands = detect_nodules(image, (0.7, 0.7), lungs, registry, score_threshold=0.0)
    assert isinstance(cands, list) and len(cands) > len(blobs)
    assert all(isinstance(c, NoduleCandidate) for c in cands)
    for c in cands:
        assert 0 <= c.row < rows and 0 <= c.col < cols and c.diameter_mm > 0 and 0 <= c.score <= 1
    assert [c.score for c in cands] == sorted((c.score for c in cands), reverse=True)
    default = detect_nodules(image, (0.7, 0.7), lungs, registry)
    threshold = manifest["operating_point"]["score_threshold"]
    assert default == [c for c in cands if c.score >= threshold]  # the manifest's operating point by default
    found = sorted((c.row, c.col) for c in default)
    assert len(found) == len(blobs), found
    for (row, col), (r, c) in zip(found, blobs):
        assert np.hypot(row - r, col - c) <= sigma, (found, blobs)


def test_obvious_nodule_is_found_at_the_operating_point(registry: ModelRegistry, jsrt_dir: Path) -> None:
    """Sanity check on an obvious (subtlety 5) training case: the shipped model saw all dev cases."""
    from PIL import Image

    with open(jsrt_dir / "metadata.csv", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["split"] == "dev" and r["subtlety"] == "5"]
    row = sorted(rows, key=lambda r: r["case_id"])[0]
    image = np.array(Image.open(jsrt_dir / row["image_file"]))
    lungs = np.zeros(image.shape, bool)
    for side in ("right_lung", "left_lung"):
        lungs |= np.array(Image.open(jsrt_dir / "masks" / side / f"{row['case_id']}.png")).astype(bool)
    spacing = float(row["pixel_spacing_mm"])
    cands = detect_nodules(image, (spacing, spacing), lungs, registry)
    ref = np.array([float(row["nodule_y"]), float(row["nodule_x"])])
    limit = float(row["nodule_size_mm"]) / 2 + 5.0
    distances = [float(np.hypot(*(np.array([c.row, c.col]) - ref))) * spacing for c in cands]
    assert distances and min(distances) <= limit, (row["case_id"], distances[:5], limit)


# --- training scripts (torch only) ------------------------------------------------------------


def test_quick_training_and_export(tmp_path: Path, jsrt_dir: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    env = {**os.environ, "RADPILOT_SHARED_DATA": str(jsrt_dir.parent), "PYTHONPATH": str(REPO_ROOT)}
    out = tmp_path / "run"
    subprocess.run(
        [sys.executable, str(TRAINING / "train_nodules.py"), "--fold", "0", "--quick", "--threads", "1", "--out", str(out)],
        check=True,
        env=env,
        cwd=REPO_ROOT,
        timeout=600,
    )
    assert (out / "last.pt").is_file()
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert len(log) == 1 and np.isfinite(log[0]["loss"])
    subprocess.run(
        [
            sys.executable,
            str(TRAINING / "export_nodules.py"),
            "--checkpoint",
            str(out / "last.pt"),
            "--cv-metrics",
            str(tmp_path / "absent.json"),
            "--out",
            str(tmp_path / "model"),
        ],
        check=True,
        env=env,
        cwd=REPO_ROOT,
        timeout=600,
    )
    assert (tmp_path / "model" / "cxr_nodule_det_v2.onnx").stat().st_size < 20 * 1024 * 1024


def _training_module(name: str):  # noqa: ANN202 - a training script's module, importable only with torch
    pytest.importorskip("torch")
    return load_script(TRAINING / f"{name}.py", f"cxr_nodules_{name}")


def test_a_mirrored_crop_carries_its_nodule_to_the_mirrored_place() -> None:
    torch = pytest.importorskip("torch")
    train_nodules = _training_module("train_nodules")
    size = 256
    # One bright disc at column 90 of a 256 grid; the crop is centred on the image.
    yy, xx = np.mgrid[:size, :size]
    image = ((yy - 128) ** 2 + (xx - 90) ** 2 < 36).astype(np.float32)[None, None]

    class Nodule:
        def model_grid(self) -> tuple[float, float]:
            return 128.0, 90.0

        def diameter_model_px(self) -> float:
            return 12.0

    cfg = {**train_nodules.DEFAULTS, "rotation_deg": 0.0, "scale": [1.0, 1.0], "crop": 128}

    def peak_columns(hflip: float) -> tuple[float, float]:
        x, heat, _, _ = train_nodules.crop_batch(
            torch.from_numpy(image),
            [("case", 128.0, 128.0)] * 2,
            {"case": 0},
            {"case": Nodule()},
            np.random.default_rng(0),
            torch.Generator().manual_seed(0),
            {**cfg, "hflip": hflip},
        )
        crop = x[0, 0].numpy()
        disc_column = float(np.nonzero(crop > (crop.min() + crop.max()) / 2)[1].mean())  # the disc's centre in the crop
        target_column = float(np.unravel_index(np.argmax(heat[0, 0].numpy()), heat.shape[2:])[1])  # the target's peak
        return disc_column, target_column

    plain_image, plain_target = peak_columns(0.0)
    mirrored_image, mirrored_target = peak_columns(1.0)
    assert plain_image < 64 < mirrored_image, "the disc left of the crop centre moves right of it when mirrored"
    assert abs(mirrored_image - (127 - plain_image)) <= 1
    for image_column, target_column in ((plain_image, plain_target), (mirrored_image, mirrored_target)):
        assert abs(target_column - (image_column - 0.5) / 2) <= 1, "the target is where the disc is (stride 2)"


def test_mirror_averaging_is_the_same_for_an_image_and_its_mirror() -> None:
    torch = pytest.importorskip("torch")
    nodule_model = _training_module("nodule_model")
    torch.manual_seed(0)
    model = nodule_model.MirrorAverage(nodule_model.build_model()).eval()
    x = torch.rand(1, 1, 256, 256)
    with torch.no_grad():
        heat, diameter = model(x)
        heat_m, diameter_m = model(torch.flip(x, dims=(3,)))
    assert heat.shape == (1, 1, 128, 128)
    assert torch.allclose(torch.flip(heat_m, dims=(3,)), heat, atol=1e-6)
    assert torch.allclose(torch.flip(diameter_m, dims=(3,)), diameter, atol=1e-5)
