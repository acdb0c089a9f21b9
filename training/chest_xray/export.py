"""Export a trained checkpoint to ONNX and write the model's manifest.

    .venv-train/bin/python training/chest_xray/export.py \
        --checkpoint training/chest_xray/runs/final/last.pt \
        --cv-metrics training/chest_xray/results/cv_metrics.json \
        --out models/cxr_lung_heart_seg

ONNX: opset 17, input "image" (N, 1, 256, 256) float32 with a dynamic batch, output
"logits" (N, 4, 256, 256) float32; the onnxruntime output is checked against torch
(max absolute difference < 1e-4) before anything is written.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import data  # noqa: E402
from augment import AugmentConfig  # noqa: E402
from model import build_model  # noqa: E402
from onnx_io import OPSET, load_checkpoint, onnx_bytes, onnx_session  # noqa: E402

MODEL_NAME = "cxr_lung_heart_seg"
VERSION = "1.0.0"
ONNX_FILE = "cxr_lung_heart_seg_v1.onnx"
TOLERANCE = 1e-4

LABELS = [
    {
        "value": 1,
        "name": "right_lung",
        "code": {"value": "3341006", "scheme": "SCT", "meaning": "Right lung"},
        "note": "patient's right lung: on the IMAGE LEFT of a PA radiograph; SCR lung field (excludes lung behind the heart and below the diaphragm dome)",
    },
    {
        "value": 2,
        "name": "left_lung",
        "code": {"value": "44029006", "scheme": "SCT", "meaning": "Left lung"},
        "note": "patient's left lung: on the IMAGE RIGHT; SCR lung field",
    },
    {
        "value": 3,
        "name": "heart",
        "code": {"value": "80891009", "scheme": "SCT", "meaning": "Heart"},
        "note": "SCR heart: where radiation passed through the heart",
    },
]

PREPROCESSING = (
    "radpilot.analyses.chest_xray.preprocess.preprocess (numpy only): the 2-D radiograph in the display convention "
    "(MONOCHROME2: bone/heart bright, lungs dark; invert MONOCHROME1 first), PA view, not flipped; "
    "1) area resampling to 256 x 256 (each output pixel = mean of the input area it covers, partial pixels weighted "
    "by overlap; 512 x 512 input: mean of each 2 x 2 block); "
    "2) p1, p99 = numpy.percentile(x, [1, 99]) (linear interpolation) on the resampled image, "
    "x = clip((x - p1) / (p99 - p1), 0, 1), float32 (all zeros when p99 <= p1); "
    "3) shape (N, 1, 256, 256)."
)
POSTPROCESSING = (
    "radpilot.analyses.chest_xray.preprocess.labels_from_logits: logits resampled bilinearly "
    "(half-pixel centres, edges clamped, = torch interpolate align_corners=False) to the original image grid, "
    "argmax over the 4 classes, then only the largest 8-connected component of each structure is kept."
)


def export_onnx(model: torch.nn.Module, path: Path) -> bytes:
    """Export ``model`` (eval mode) to ONNX bytes, verify them with onnxruntime, write ``path``."""
    model = model.eval().to(memory_format=torch.contiguous_format)
    content = onnx_bytes(model, ["logits"])

    generator = torch.Generator().manual_seed(0)
    x = torch.rand(3, 1, 256, 256, generator=generator)
    with torch.no_grad():
        expected = model(x).numpy()
    got = onnx_session(content).run(["logits"], {"image": x.numpy()})[0]
    if got.shape != (3, 4, 256, 256):
        raise RuntimeError(f"ONNX output shape {got.shape}, expected (3, 4, 256, 256)")
    diff = float(np.abs(got - expected).max())
    if diff >= TOLERANCE:
        raise RuntimeError(f"onnxruntime differs from torch by {diff:.2e} (limit {TOLERANCE:.0e})")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return content


def acceptance_criteria() -> list[dict]:
    return [
        {"metric": "dice_right_lung_mean", ">=": 0.95},
        {"metric": "dice_left_lung_mean", ">=": 0.95},
        {"metric": "dice_heart_mean", ">=": 0.90},
        {"metric": "ctr_mae", "<=": 0.02},
    ]


def build_manifest(content: bytes, config: dict, cv_metrics: dict | None) -> dict:
    import onnxruntime

    cases = data.read_cases()
    folds = data.assign_folds(cases, seed=config.get("split_seed", data.SPLIT_SEED))
    metrics: dict = {
        "evaluation": "5-fold cross-validation on the 199 JSRT dev cases; each case predicted by the fold "
        "model that did not see it, same recipe as the shipped all-data model; Dice on the stored 512 x 512 grid"
    }
    if cv_metrics:
        summary = cv_metrics["model"]
        for structure in data.STRUCTURES:
            stats = summary["dice"][structure]
            metrics[f"dice_{structure}_mean"] = stats["mean"]
            metrics[f"dice_{structure}_ci95"] = stats["ci95"]
        metrics["ctr_mae"] = summary["ctr"]["mae"]
        metrics["ctr_bias"] = summary["ctr"]["bias"]
        metrics["ctr_mae_ci95"] = summary["ctr"]["mae_ci95"]
        metrics["per_fold"] = summary["per_fold"]
        metrics["baseline"] = {
            name: {s: v["dice"][s]["mean"] for s in data.STRUCTURES} | {"ctr_mae": v["ctr"]["mae"]}
            for name, v in cv_metrics.get("baselines", {}).items()
        }
        metrics["epochs_per_fold"] = cv_metrics.get("epochs")
        if "inference_seconds_one_core" in cv_metrics:
            metrics["inference_seconds_one_core"] = cv_metrics["inference_seconds_one_core"]
        criteria = acceptance_criteria()
        for criterion in criteria:
            value = metrics.get(criterion["metric"])
            if value is not None:
                criterion["value"] = value
                criterion["met"] = bool(value >= criterion[">="]) if ">=" in criterion else bool(value <= criterion["<="])
    else:
        criteria = acceptance_criteria()
    return {
        "name": MODEL_NAME,
        "version": VERSION,
        "file": ONNX_FILE,
        "sha256": hashlib.sha256(content).hexdigest(),
        "format": {
            "type": "onnx",
            "opset": OPSET,
            "onnxruntime_version": onnxruntime.__version__,
            "torch_version": config.get("torch"),
            "parameters": config.get("parameters"),
        },
        "task": "semantic segmentation of right lung, left lung and heart on a posteroanterior chest radiograph",
        "input": {
            "name": "image",
            "shape": ["N", 1, 256, 256],
            "dtype": "float32",
            "preprocessing": PREPROCESSING,
            "pixel_spacing": "the model sees the whole film resampled to 256 x 256 whatever its size: trained on JSRT "
            "films of 358 mm (512 px x 0.70 mm, so 1.4 mm per model pixel); no physical spacing is used, "
            "measurements in mm must use the source image's own spacing",
            "view": "PA chest radiograph, adult; patient's right on the image left",
        },
        "output": {"name": "logits", "shape": ["N", 4, 256, 256], "dtype": "float32", "postprocessing": POSTPROCESSING},
        "labels": [{"value": 0, "name": "background"}] + LABELS,
        "training_data": {
            "name": "JSRT + SCR",
            "source": "shared/data/cxr-jsrt developer split (199 of 247 JSRT cases: 124 nodule, 75 non-nodule), "
            "JSRT images with SCR first-observer masks; rebuilt from a third-party copy (see that folder's README)",
            "citation": [
                "Shiraishi J et al. AJR 174(1):71-74, 2000 (JSRT)",
                "van Ginneken B, Stegmann MB, Loog M. Med Image Anal 10(1):19-40, 2006 (SCR)",
            ],
            "terms": "research use only; JSRT/SCR forbid redistribution and commercial use",
            "cases": len(cases),
            "split": f"{data.N_FOLDS}-fold cross-validation stratified by has_nodule (seeded permutation per stratum, "
            "dealt round-robin); the shipped model is trained on all cases with the same recipe",
            "seed": config.get("split_seed", data.SPLIT_SEED),
            "folds": folds,
        },
        "training": {
            "script": "training/chest_xray/train.py --fold -1",
            "architecture": f"2-D U-Net, BatchNorm, ReLU, channels {config.get('channels')}, max-pool down, transposed-conv up",
            "epochs": config.get("epochs"),
            "batch_size": config.get("batch_size"),
            "optimizer": f"AdamW lr {config.get('lr')} weight decay {config.get('weight_decay')}",
            "schedule": config.get("schedule"),
            "loss": config.get("loss"),
            "augmentation": config.get("augmentation", AugmentConfig().describe()),
            "seed": config.get("seed"),
            "threads": config.get("threads"),
            "hardware": "2 CPU cores",
        },
        "metrics": metrics,
        "acceptance_criteria": criteria,
        "intended_use": "research use only: segmentation of the lung fields and heart and cardiothoracic ratio on adult "
        "PA chest radiographs as reading support; not a medical device, not for diagnosis or "
        "commercial use (JSRT/SCR terms); trained on one Japanese film-digitiser data set of 199 cases, "
        "performance on other populations, digital detectors, AP or portable films is unknown",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=HERE / "runs" / "final" / "last.pt")
    parser.add_argument("--cv-metrics", type=Path, default=HERE / "results" / "cv_metrics.json")
    parser.add_argument("--out", type=Path, default=HERE.parents[1] / "models" / MODEL_NAME)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    model, config = load_checkpoint(args.checkpoint, build_model)
    content = export_onnx(model, args.out / ONNX_FILE)
    cv_metrics = json.loads(args.cv_metrics.read_text()) if args.cv_metrics.is_file() else None
    if cv_metrics is None:
        print(f"warning: no {args.cv_metrics}; the manifest has no cross-validated metrics", file=sys.stderr)
    manifest = build_manifest(content, config, cv_metrics)
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(
        f"wrote {args.out / ONNX_FILE} ({len(content) / 1e6:.2f} MB, sha256 {manifest['sha256'][:16]}...) and {args.out / 'manifest.json'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
