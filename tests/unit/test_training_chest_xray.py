"""Chest radiograph lung/heart segmentation: the committed ONNX model, its manifest, the shared
numpy pre/post-processing, and (only where torch is installed) the training scripts.

The ONNX and preprocessing tests need only numpy, scipy and onnxruntime (the runtime venv).
The training tests skip unless torch is importable (``.venv-train``; CI has no torch).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from radpilot.analyses.chest_xray.preprocess import (
    area_resize,
    cardiothoracic_ratio,
    dice,
    labels_from_logits,
    largest_components,
    normalise,
    preprocess,
    resize_logits,
)
from radpilot.modelhub.registry import ModelRegistry
from tests.helpers import REPO_ROOT, load_script

MODELS = REPO_ROOT / "models"
MODEL_DIR = MODELS / "cxr_lung_heart_seg"
TRAINING = REPO_ROOT / "training" / "chest_xray"
SNOMED = {1: "3341006", 2: "44029006", 3: "80891009"}


@pytest.fixture(scope="module")
def manifest() -> dict:
    return json.loads((MODEL_DIR / "manifest.json").read_text())


@pytest.fixture(scope="module")
def session(manifest: dict):
    onnxruntime = pytest.importorskip("onnxruntime")
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    return onnxruntime.InferenceSession(str(MODEL_DIR / manifest["file"]), sess_options=options, providers=["CPUExecutionProvider"])


# --- the committed model and its manifest -----------------------------------------------------


def test_model_file_matches_manifest_sha256(manifest: dict) -> None:
    path = MODEL_DIR / manifest["file"]
    assert path.is_file()
    assert path.stat().st_size < 20 * 1024 * 1024
    assert hashlib.sha256(path.read_bytes()).hexdigest() == manifest["sha256"]


def test_manifest_is_complete_and_coded(manifest: dict) -> None:
    assert manifest["name"] == "cxr_lung_heart_seg"
    assert manifest["version"] == "1.0.0"
    assert manifest["input"]["shape"] == ["N", 1, 256, 256]
    assert "percentile" in manifest["input"]["preprocessing"]
    coded = {label["value"]: label for label in manifest["labels"] if label["value"] != 0}
    assert {v: label["code"]["value"] for v, label in coded.items()} == SNOMED
    assert all(label["code"]["scheme"] == "SCT" for label in coded.values())
    assert coded[1]["name"] == "right_lung" and coded[2]["name"] == "left_lung" and coded[3]["name"] == "heart"
    training = manifest["training_data"]
    assert "research use only" in training["terms"] and "redistribution" in training["terms"]
    assert manifest["intended_use"].startswith("research use only")
    assert training["cases"] == 199 and len(training["folds"]) == 199
    assert sorted(set(training["folds"].values())) == [0, 1, 2, 3, 4]
    assert {c["metric"] for c in manifest["acceptance_criteria"]} >= {"dice_right_lung_mean", "dice_heart_mean"}
    assert "dice_right_lung_mean" in manifest["metrics"], "cross-validated metrics missing from the manifest"
    assert "onnxruntime_version" in manifest["format"]


def test_registry_loads_and_verifies_the_model() -> None:
    registry = ModelRegistry(MODELS, providers=["CPUExecutionProvider"], intra_op_threads=1)
    manifest = registry.manifest("cxr_lung_heart_seg")
    registry.verify(manifest)
    assert manifest.version == "1.0.0"


def test_model_runs_on_a_synthetic_input_with_dynamic_batch(session) -> None:
    rng = np.random.default_rng(0)
    one = rng.random((1, 1, 256, 256), dtype=np.float32)
    (logits,) = session.run(["logits"], {"image": one})
    assert logits.shape == (1, 4, 256, 256) and logits.dtype == np.float32
    assert np.isfinite(logits).all()
    (batch,) = session.run(["logits"], {"image": np.concatenate([one, one[:, :, ::-1].copy()])})
    assert batch.shape == (2, 4, 256, 256)
    np.testing.assert_allclose(batch[0], logits[0], atol=1e-4)


def test_real_radiograph_lungs_and_heart(session, jsrt_dir: Path) -> None:
    """A smoke test of the runtime path on one real film (a training case of the shipped model:
    it checks wiring, orientation and preprocessing, not accuracy; that is cross-validated)."""
    from PIL import Image

    case = "JPCNN002"
    image = np.array(Image.open(jsrt_dir / "images" / f"{case}.png"))
    (logits,) = session.run(["logits"], {"image": preprocess(image)})
    labels = labels_from_logits(logits[0], image.shape)
    assert labels.shape == (512, 512)
    masks = {
        name: np.array(Image.open(jsrt_dir / "masks" / name / f"{case}.png")).astype(bool) for name in ("right_lung", "left_lung", "heart")
    }
    assert dice(labels == 1, masks["right_lung"]) > 0.9
    assert dice(labels == 2, masks["left_lung"]) > 0.9
    assert dice(labels == 3, masks["heart"]) > 0.8
    # the patient's right lung is on the image left
    assert np.argwhere(labels == 1)[:, 1].mean() < np.argwhere(labels == 2)[:, 1].mean()
    ctr = cardiothoracic_ratio(labels)
    assert ctr is not None and 0.3 < ctr.ratio < 0.7


# --- shared numpy pre/post-processing ----------------------------------------------------------


def test_area_resize_is_block_mean_and_preserves_mean() -> None:
    rng = np.random.default_rng(1)
    image = rng.integers(0, 4081, (512, 512)).astype(np.uint16)
    small = area_resize(image, (256, 256))
    np.testing.assert_allclose(small[3, 5], image[6:8, 10:12].mean())
    odd = rng.random((300, 500))
    resized = area_resize(odd, (256, 256))
    assert resized.shape == (256, 256)
    assert resized.mean() == pytest.approx(odd.mean(), rel=1e-9)


def test_normalise_maps_percentiles_to_unit_range() -> None:
    image = np.arange(10000, dtype=np.float64).reshape(100, 100)
    out = normalise(image)
    assert out.dtype == np.float32 and out.min() == 0.0 and out.max() == 1.0
    p1, p99 = np.percentile(image, [1, 99])
    assert out[50, 50] == pytest.approx((image[50, 50] - p1) / (p99 - p1), abs=1e-6)
    assert not normalise(np.full((8, 8), 7.0)).any()
    x = preprocess(np.zeros((512, 512)))
    assert x.shape == (1, 1, 256, 256) and x.dtype == np.float32


def test_resize_logits_is_bilinear_half_pixel() -> None:
    logits = np.zeros((1, 2, 2), dtype=np.float32)
    logits[0, :, 1] = 1.0
    up = resize_logits(logits, (4, 4))[0]
    # half-pixel centres, edges clamped: columns 0.25, 0.75, 1.25 -> 0, 0.25, 0.75, 1
    np.testing.assert_allclose(up[0], [0.0, 0.25, 0.75, 1.0], atol=1e-6)
    constant = np.full((4, 256, 256), 3.0, dtype=np.float32)
    np.testing.assert_allclose(resize_logits(constant, (512, 512)), 3.0, atol=1e-5)


def test_largest_component_and_ctr_definition() -> None:
    labels = np.zeros((100, 100), dtype=np.uint8)
    labels[20:80, 10:40] = 1  # right lung, image left
    labels[20:80, 60:92] = 2  # left lung, image right
    labels[50:90, 35:70] = 3  # heart
    labels[5, 95] = 1  # a stray island
    cleaned = largest_components(labels)
    assert cleaned[5, 95] == 0 and (cleaned == 1).sum() == (labels == 1).sum() - 1
    ctr = cardiothoracic_ratio(cleaned)
    assert ctr.heart_width_px == 35 and ctr.thorax_width_px == 82
    assert ctr.ratio == pytest.approx(35 / 82)
    assert cardiothoracic_ratio(np.zeros((10, 10), dtype=np.uint8)) is None


# --- training scripts (only with torch) ---------------------------------------------------------


def _load(name: str):  # noqa: ANN202
    return load_script(TRAINING / f"{name}.py", f"cxr_training_{name}")


def test_unet_size_and_shape() -> None:
    torch = pytest.importorskip("torch")
    model_module = _load("model")
    model = model_module.build_model({"channels": [8, 16, 32, 64, 128], "input_pool": 2}).eval()
    assert 400_000 < model_module.count_parameters(model) < 2_500_000
    with torch.no_grad():
        assert model(torch.zeros(2, 1, 256, 256)).shape == (2, 4, 256, 256)


def test_augmentation_keeps_labels_and_never_flips() -> None:
    torch = pytest.importorskip("torch")
    augment = _load("augment")
    images = torch.zeros(4, 1, 64, 64)
    labels = torch.zeros(4, 64, 64, dtype=torch.long)
    labels[:, 20:40, 5:25] = 1  # right lung on the image left
    labels[:, 20:40, 39:59] = 2
    images[:, :, :, :32] = 0.2
    out_a, lab_a = augment.augment_batch(images, labels, torch.Generator().manual_seed(3))
    out_b, lab_b = augment.augment_batch(images, labels, torch.Generator().manual_seed(3))
    assert torch.equal(out_a, out_b) and torch.equal(lab_a, lab_b)
    assert out_a.shape == images.shape and lab_a.shape == labels.shape
    assert set(lab_a.unique().tolist()) <= {0, 1, 2}
    for i in range(4):
        right = torch.nonzero(lab_a[i] == 1)[:, 1].float().mean()
        left = torch.nonzero(lab_a[i] == 2)[:, 1].float().mean()
        assert right < left


def test_quick_training_and_export(tmp_path: Path, jsrt_dir: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    env_python = sys.executable
    out = tmp_path / "run"
    subprocess.run(
        [env_python, str(TRAINING / "train.py"), "--fold", "0", "--quick", "--threads", "1", "--out", str(out)],
        check=True,
        timeout=240,
        env={**os.environ, "RADPILOT_SHARED_DATA": str(jsrt_dir.parent)},
    )
    assert (out / "last.pt").is_file() and (out / "log.jsonl").read_text().count("\n") == 1
    models = tmp_path / "models"
    subprocess.run(
        [
            env_python,
            str(TRAINING / "export.py"),
            "--checkpoint",
            str(out / "last.pt"),
            "--threads",
            "1",
            "--cv-metrics",
            str(tmp_path / "none.json"),
            "--out",
            str(models),
        ],
        check=True,
        timeout=240,
        env={**os.environ, "RADPILOT_SHARED_DATA": str(jsrt_dir.parent)},
    )
    manifest = json.loads((models / "manifest.json").read_text())
    assert hashlib.sha256((models / manifest["file"]).read_bytes()).hexdigest() == manifest["sha256"]


def test_quick_training_is_repeatable_for_a_seed(tmp_path: Path, jsrt_dir: Path) -> None:
    """The same seed and thread count give bit-identical weights (what makes the committed models
    reproducible); another seed gives other weights (so the comparison is not vacuous)."""
    torch = pytest.importorskip("torch")
    env = {**os.environ, "RADPILOT_SHARED_DATA": str(jsrt_dir.parent)}

    def train(seed: int, name: str) -> dict:
        out = tmp_path / name
        subprocess.run(
            [
                sys.executable,
                str(TRAINING / "train.py"),
                "--fold",
                "0",
                "--quick",
                "--threads",
                "1",
                "--seed",
                str(seed),
                "--out",
                str(out),
            ],
            check=True,
            timeout=240,
            env=env,
        )
        return torch.load(out / "last.pt", map_location="cpu", weights_only=True)["state_dict"]

    first, again, other = train(0, "first"), train(0, "again"), train(1, "other")
    assert list(first) == list(again)
    assert all(torch.equal(first[k], again[k]) for k in first), [k for k in first if not torch.equal(first[k], again[k])]
    assert not all(torch.equal(first[k], other[k]) for k in first)
