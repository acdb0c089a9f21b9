"""Model registry: manifests validated, changed files refused, sessions cached."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402

from radpilot.modelhub.registry import (  # noqa: E402
    ManifestError,
    ModelIntegrityError,
    ModelRegistry,
    file_sha256,
)


def write_scaling_model(path: Path, factor: float = 2.0) -> None:
    """A real ONNX graph: y = x * factor."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 1, None, None])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1, None, None])
    const = helper.make_tensor("factor", TensorProto.FLOAT, [], [factor])
    graph = helper.make_graph([helper.make_node("Mul", ["x", "factor"], ["y"])], "scale", [x], [y], [const])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "models" / "scaler"
    folder.mkdir(parents=True)
    write_scaling_model(folder / "scaler.onnx")
    manifest = {
        "name": "scaler",
        "version": "1.0.0",
        "file": "scaler.onnx",
        "sha256": file_sha256(folder / "scaler.onnx"),
        "input": {"shape": [1, 1, 8, 8]},
        "labels": [],
        "intended_use": "tests only",
        "training_data": {"name": "none"},
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return tmp_path / "models"


def test_verified_model_runs_and_session_is_cached(models_dir: Path) -> None:
    registry = ModelRegistry(models_dir, providers=["CPUExecutionProvider"])
    session = registry.session("scaler")
    out = session.run(None, {"x": np.ones((1, 1, 4, 4), np.float32)})[0]
    assert np.allclose(out, 2.0)
    assert registry.session("scaler") is session


def test_model_file_with_a_changed_byte_is_refused(models_dir: Path) -> None:
    path = models_dir / "scaler" / "scaler.onnx"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError, match="was changed or is corrupt"):
        ModelRegistry(models_dir).session("scaler")


def test_missing_model_file_is_refused(models_dir: Path) -> None:
    (models_dir / "scaler" / "scaler.onnx").unlink()
    with pytest.raises(ModelIntegrityError, match="is missing"):
        ModelRegistry(models_dir).session("scaler")


def test_unknown_model_lists_available(models_dir: Path) -> None:
    with pytest.raises(KeyError, match="available: scaler 1.0.0"):
        ModelRegistry(models_dir).manifest("nodule_detector")


@pytest.mark.parametrize("broken, message", [({"sha256": "abc"}, "64 hexadecimal"), ({"labels": None, "drop": "labels"}, "labels")])
def test_bad_manifest_is_rejected(models_dir: Path, broken: dict, message: str) -> None:
    path = models_dir / "scaler" / "manifest.json"
    content = json.loads(path.read_text())
    if "drop" in broken:
        content.pop(broken["drop"])
    else:
        content.update(broken)
    path.write_text(json.dumps(content))
    with pytest.raises(ManifestError, match=message):
        ModelRegistry(models_dir).manifests()
