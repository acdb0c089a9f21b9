"""Export a trained checkpoint to ONNX, check onnxruntime against torch, write ``models/liver_spleen_ct_seg/``.

``python training/liver_ct/export.py [--version 0.2.0] [--checkpoint ...] [--results ...] [--out ...]``
Each version gets its own folder under models/ (0.1.0: ``liver_spleen_ct_seg/``, 0.2.0: ``liver_spleen_ct_seg_v2/``),
so earlier versions stay loadable. The manifest takes its metrics from the version's CV and IRCAD result files
when they exist.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from model import build_model, count_parameters  # noqa: E402

from radpilot.analyses.liver_ct.preprocess import MODEL_SPACING_MM, NEIGHBOUR_OFFSET_MM, WINDOW_HU  # noqa: E402

NAME = "liver_spleen_ct_seg"
VERSION = "0.2.0"
OPSET = 17


def load(path: Path) -> tuple[torch.nn.Module, dict]:
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    model = build_model(checkpoint["config"])
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval(), checkpoint["config"]


def onnx_bytes(model: torch.nn.Module) -> bytes:
    import onnx  # noqa: PLC0415 - export-time only

    buffer = io.BytesIO()
    torch.onnx.export(
        model,
        (torch.zeros(1, 3, 128, 128),),
        buffer,
        dynamo=False,
        opset_version=OPSET,
        input_names=["image"],
        output_names=["logits"],
        dynamic_axes={"image": {0: "N", 2: "H", 3: "W"}, "logits": {0: "N", 2: "H", 3: "W"}},
        do_constant_folding=True,
    )
    content = buffer.getvalue()
    onnx.checker.check_model(onnx.load_from_string(content))
    return content


def check_runtime(model: torch.nn.Module, content: bytes) -> float:
    import onnxruntime  # noqa: PLC0415 - export-time only

    session = onnxruntime.InferenceSession(content, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((2, 3, 192, 160), dtype=np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    out = session.run(None, {"image": x})[0]
    return float(np.abs(out - ref).max())


def read_metrics(cv: Path, ircad: Path) -> dict:
    metrics: dict = {}
    if cv.is_file():
        metrics["cross_validation"] = json.loads(cv.read_text()).get("summary", {})
    if ircad.is_file():
        metrics["ircad_production_path"] = json.loads(ircad.read_text())
    return metrics


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--version", default=VERSION, help="the model version; each version has its own folder, earlier ones stay loadable")
    ap.add_argument("--checkpoint", type=Path, default=None, help="default: runs/final/last.pt (0.1.0), runs/v<minor>/final/last.pt")
    ap.add_argument("--results", type=Path, default=None, help="CV and IRCAD results; default: results/ (0.1.0), results/v<minor>/")
    ap.add_argument(
        "--out", type=Path, default=None, help="default: models/liver_spleen_ct_seg (0.1.0), models/liver_spleen_ct_seg_v<minor>/"
    )
    ap.add_argument(
        "--metrics-only",
        action="store_true",
        help="refresh only the metrics of the committed manifest (the model and its sha256 stay): for CV folds run after the export",
    )
    args = ap.parse_args()
    version = args.version
    minor = version.split(".")[1]
    first = version == "0.1.0"  # the first version's files kept the names they were committed with
    checkpoint = args.checkpoint or HERE / ("runs/final/last.pt" if first else f"runs/v{minor}/final/last.pt")
    results = args.results or HERE / ("results" if first else f"results/v{minor}")
    out = args.out or REPO / "models" / (NAME if first else f"{NAME}_v{minor}")
    cv, ircad = results / "cv_metrics.json", results / "ircad.json"
    if args.metrics_only:
        manifest_path = out / "manifest.json"
        manifest = json.loads(manifest_path.read_text())
        manifest["metrics"] = read_metrics(cv, ircad)
        manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
        print(f"refreshed the metrics of {manifest_path}")
        return
    model, config = load(checkpoint)
    content = onnx_bytes(model)
    diff = check_runtime(model, content)
    if diff > 1e-3:
        raise SystemExit(f"onnxruntime differs from torch by {diff}")
    out.mkdir(parents=True, exist_ok=True)
    file = f"{NAME}_v{minor}.onnx"
    (out / file).write_bytes(content)
    import onnxruntime  # noqa: PLC0415 - export-time only

    metrics = read_metrics(cv, ircad)
    manifest = {
        "name": NAME,
        "version": version,
        "file": file,
        "sha256": hashlib.sha256(content).hexdigest(),
        "format": {
            "type": "onnx",
            "opset": OPSET,
            "onnxruntime_version": onnxruntime.__version__,
            "torch_version": torch.__version__,
            "parameters": count_parameters(model),
            "onnxruntime_vs_torch_max_abs_diff": diff,
        },
        "task": "semantic segmentation of liver and spleen on axial abdominal CT, slice by slice with neighbouring slices as channels",
        "input": {
            "name": "image",
            "shape": ["N", 3, "H", "W"],
            "dtype": "float32",
            "preprocessing": (
                "radpilot.analyses.liver_ct.preprocess.model_input(hu_to_u8(hu), spacing): axial slices in the standard "
                "orientation (rows to the patient's posterior, columns to the patient's left); "
                f"1) HU clipped to {list(WINDOW_HU)} and scaled to 0..255, rounded (the BTCV training data's 8-bit rule); "
                f"2) in-plane bilinear resampling (half-pixel centres, no anti-aliasing) to {MODEL_SPACING_MM} mm pixels; "
                "3) values u8/255; 4) zero padding at the bottom/right to multiples of 16; "
                f"5) channels = the slice about {NEIGHBOUR_OFFSET_MM} mm below (nearest whole slice, at least 1), the slice, the slice about "
                f"{NEIGHBOUR_OFFSET_MM} mm above; edge slices repeat"
            ),
            "pixel_spacing": f"{MODEL_SPACING_MM} mm in-plane (any source spacing is resampled to it)",
        },
        "output": {
            "name": "logits",
            "shape": ["N", 3, "H", "W"],
            "dtype": "float32",
            "postprocessing": (
                "radpilot.analyses.liver_ct.preprocess.labels_from_logits: crop the padding, bilinear resampling of the logits "
                "to the source grid, argmax, largest 26-connected 3-D component of liver and of spleen"
            ),
        },
        "labels": [
            {"value": 0, "name": "background"},
            {"value": 1, "name": "liver", "code": {"value": "10200004", "scheme": "SCT", "meaning": "Liver"}},
            {"value": 2, "name": "spleen", "code": {"value": "78961009", "scheme": "SCT", "meaning": "Spleen"}},
        ],
        "training_data": {
            "dataset": "liver-ct-btcv (BTCV / Synapse 'Multi-Atlas Labeling Beyond the Cranial Vault', SSL-ALPNet 8-bit preprocessing)",
            "cases": config.get("train_cases", []),
            "split": (
                "developer part of 24 patients (every fifth BTCV patient is kept back by the project); the shipped model is "
                "trained on all 24; cross-validation: 5 patient-wise folds, case i (BTCV id order) in fold i mod 5"
            ),
            "recipe": {
                k: config[k]
                for k in (
                    "channels",
                    "crop",
                    "batch",
                    "lr",
                    "steps",
                    "seed",
                    "threads",
                    "loss",
                    "optimizer",
                    "resumed",
                    "initialised_from",
                    "train_seconds",
                )
                if k in config
            },
            "terms": "BTCV: Synapse challenge data terms, research use (Landman et al. 2015, doi:10.7303/syn3193805); "
            "preprocessing Ouyang et al., ECCV 2020. Research use only; do not redistribute.",
        },
        "metrics": metrics,
        "acceptance_criteria": [],
        "intended_use": (
            "Research use only. Liver and spleen segmentation on adult axial abdominal CT in HU (non-contrast or "
            "portal-venous, slices up to 5 mm) inside RadPilot's liver_ct analysis. Not a medical device; not for diagnosis. "
            "Trained on 24 portal-venous BTCV scans cropped to the liver and spleen: unusual anatomy, arterial-phase or "
            "non-contrast scans, children and large lesions are not represented."
        ),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    size_mb = len(content) / 1e6
    print(f"wrote {out / file} ({size_mb:.2f} MB, max |ort - torch| {diff:.2e})")


if __name__ == "__main__":
    main()
