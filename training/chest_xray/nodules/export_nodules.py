"""Export a trained nodule checkpoint to ONNX and write ``models/cxr_nodule_det/manifest.json``.

    nice -n 19 .venv-train/bin/python training/chest_xray/nodules/export_nodules.py \
        --checkpoint training/chest_xray/runs/nodules/final/last.pt \
        --cv-metrics training/chest_xray/results/nodule_cv_metrics.json --out models/cxr_nodule_det

ONNX: opset 17, input "image" (N, 1, 256, 256) float32 (dynamic batch), outputs "heatmap" and
"diameter" (N, 1, 128, 128) float32; onnxruntime is checked against torch (max absolute
difference < 1e-4) before anything is written.  The operating point (score threshold) and the
candidate-extraction parameters are taken from the cross-validation metrics file.
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
sys.path.insert(1, str(HERE.parent))

import data  # noqa: E402
import nodule_data  # noqa: E402
from nodule_model import Ensemble, MirrorAverage, MultiScale, build_model  # noqa: E402
from onnx_io import OPSET, load_checkpoint, onnx_bytes, onnx_session  # noqa: E402  (training/chest_xray/onnx_io.py)

from radpilot.analyses.chest_xray.preprocess import MODEL_SIZE  # noqa: E402

MODEL_NAME = "cxr_nodule_det"
VERSION = "2.0.0"  # 1.0.0 (models/cxr_nodule_det, no mirroring) stays loadable
ONNX_FILE = "cxr_nodule_det_v2.onnx"
TOLERANCE = 1e-4
OUT_SIZE = MODEL_SIZE // 2

LABELS = [
    {
        "value": 1,
        "name": "nodule",
        "code": {"value": "27925004", "scheme": "SCT", "meaning": "Nodule"},
        "note": "JSRT solitary lung nodule (benign or malignant, 5-60 mm); the model outputs candidate centres, not masks",
    }
]


def load_checkpoints(paths: list[Path], tta_scales: tuple[float, ...] = (), tta_mirror: bool = False) -> tuple[torch.nn.Module, dict]:
    """One checkpoint: its model; several: their Ensemble (mean heatmap and diameter); config of the first + seeds;
    ``tta_mirror``: wrapped in MirrorAverage (mean with the left-right mirror); ``tta_scales``: then in MultiScale
    (extra test-time scales, pixel-wise maximum)."""
    loaded = [load_checkpoint(p, build_model) for p in paths]
    model, config = loaded[0]
    config = dict(config)
    if len(loaded) > 1:
        config["ensemble_seeds"] = [c.get("seed") for _, c in loaded]
        config["parameters"] = sum(c.get("parameters", 0) for _, c in loaded)
        model = Ensemble([m for m, _ in loaded])
    if tta_mirror:
        config["tta_mirror"] = True
        model = MirrorAverage(model)
    if tta_scales:
        config["tta_scales"] = list(tta_scales)
        model = MultiScale(model, tta_scales)
    return model.eval(), config


def export_onnx(model: torch.nn.Module, path: Path | None = None) -> bytes:
    """ONNX bytes of ``model`` (eval), verified with onnxruntime; written to ``path`` when given."""
    model = model.eval()
    content = onnx_bytes(model, ["heatmap", "diameter"])
    x = torch.rand(3, 1, MODEL_SIZE, MODEL_SIZE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = [t.numpy() for t in model(x)]
    got = onnx_session(content).run(["heatmap", "diameter"], {"image": x.numpy()})
    for name, g, e in zip(("heatmap", "diameter"), got, expected):
        if g.shape != (3, 1, OUT_SIZE, OUT_SIZE):
            raise RuntimeError(f"ONNX {name} shape {g.shape}, expected (3, 1, {OUT_SIZE}, {OUT_SIZE})")
        rel = np.abs(g - e) / max(1.0, float(np.abs(e).max()))
        # diameter: a multi-scale graph picks it from the scale with the larger heatmap, and a near-tie may flip
        # between torch and onnxruntime; allow that at a few pixels only
        bad = float(np.mean(rel >= TOLERANCE)) if name == "diameter" else float(rel.max() >= TOLERANCE)
        if bad > (1e-3 if name == "diameter" else 0.0):
            raise RuntimeError(
                f"onnxruntime {name} differs from torch by up to {rel.max():.2e} "
                f"(limit {TOLERANCE:.0e}; fraction of pixels over it {bad:.2e})"
            )
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return content


def build_manifest(content: bytes, config: dict, cv: dict) -> dict:
    import onnxruntime

    main = cv["model"]
    op = main["operating_point"]
    folds = nodule_data.folds()
    metrics = {
        "evaluation": cv["description"],
        "hit_criterion": cv["hit_criterion"],
        "froc_sensitivity": {str(k): v for k, v in main["froc"].items()},
        "cpm": main["cpm"],
        "by_subtlety_at_operating_point": main["by_subtlety"],
        "per_fold_sensitivity_at_1fp": main["per_fold_sensitivity_at_1fp"],
        "diameter_error_mm_detected": main.get("diameter_error_mm"),
        "baseline": {name: {"cpm": b["cpm"], "sensitivity_at_1fp": b["froc"]["1.0"]} for name, b in cv["baselines"].items()},
        "epochs_per_fold": cv.get("epochs"),
        "inference_seconds_one_core": cv.get("inference_seconds_one_core"),
    }
    criteria = [
        {"metric": "sensitivity_at_1fp", ">=": 0.50},
        {"metric": "cpm", ">=": 0.40},
    ]
    values = {"sensitivity_at_1fp": main["froc"]["1.0"]["estimate"], "cpm": main["cpm"]["estimate"]}
    for criterion in criteria:
        value = values[criterion["metric"]]
        criterion["value"] = value
        criterion["met"] = bool(value >= criterion[">="])
    post = cv["postprocessing_parameters"]
    return {
        "name": MODEL_NAME,
        "version": VERSION,
        "file": ONNX_FILE,
        "sha256": hashlib.sha256(content).hexdigest(),
        "format": {
            "type": "onnx",
            "opset": OPSET,
            "onnxruntime_version": onnxruntime.__version__,
            "torch_version": str(torch.__version__),
            "parameters": config.get("parameters"),
        },
        "task": "lung nodule candidate detection (centre, diameter, score) on a posteroanterior chest radiograph",
        "input": {
            "name": "image",
            "shape": ["N", 1, MODEL_SIZE, MODEL_SIZE],
            "dtype": "float32",
            "preprocessing": "radpilot.analyses.chest_xray.preprocess.preprocess (numpy only), identical to "
            "cxr_lung_heart_seg: the 2-D radiograph in the display convention (MONOCHROME2: bone bright, "
            "lungs dark), PA view, not flipped; area resampling to 256 x 256; p1, p99 = "
            "numpy.percentile(x, [1, 99]); x = clip((x - p1) / (p99 - p1), 0, 1) float32.",
            "pixel_spacing": "the whole film is resampled to 256 x 256: trained on JSRT films of 358 mm (1.4 mm per model "
            "pixel); diameters in mm use the source image's own spacing",
            "view": "PA chest radiograph, adult; patient's right on the image left",
        },
        "output": [
            {
                "name": "heatmap",
                "shape": ["N", 1, OUT_SIZE, OUT_SIZE],
                "dtype": "float32",
                "meaning": "nodule-centre probability at stride 2 of the 256 model grid (sigmoid applied)",
            },
            {
                "name": "diameter",
                "shape": ["N", 1, OUT_SIZE, OUT_SIZE],
                "dtype": "float32",
                "meaning": "nodule diameter in pixels of the 256 model grid (exp applied); read at a heatmap peak",
            },
        ],
        "postprocessing": "radpilot.analyses.chest_xray.nodules.candidates_from_outputs: local maxima of the heatmap "
        "(5 x 5) with score >= min_score, centre = score-weighted centroid of the 3 x 3 neighbourhood "
        "mapped to the input grid (half-pixel centres), greedy suppression of weaker peaks closer than "
        "nms_mm, candidates farther than mask_margin_mm from the lung mask (cxr_lung_heart_seg right | "
        "left lung) dropped, at most max_candidates; then score >= operating_point.score_threshold.",
        "postprocessing_parameters": post,
        "labels": LABELS,
        "operating_point": op,
        "intended_use": "research use only: nodule candidate marks on adult PA chest radiographs for research and "
        "evaluation; not a medical device, not for diagnosis or screening; about one false positive per "
        f"image and {1 - op['sensitivity']:.0%} of the JSRT nodules missed at the operating point (cross-validated); "
        "trained on one film-digitised Japanese data set (JSRT) whose terms allow research use only",
        "training_data": {
            "name": "JSRT (nodule centres and sizes) + SCR lung fields",
            "source": "shared/data/cxr-jsrt developer split (199 of 247 JSRT cases: 124 nodule, 75 non-nodule); "
            "rebuilt from a third-party copy (see that folder's README); nodule centres approximate (a few mm)",
            "citation": [
                "Shiraishi J et al. AJR 174(1):71-74, 2000 (JSRT)",
                "van Ginneken B, Stegmann MB, Loog M. Med Image Anal 10(1):19-40, 2006 (SCR)",
            ],
            "terms": "research use only; JSRT/SCR forbid redistribution and commercial use; the weights are derived "
            "from the data and carry the same terms",
            "cases": len(folds),
            "nodules": len(nodule_data.read_nodules()),
            "split": "5-fold cross-validation stratified by has_nodule (the cxr_lung_heart_seg folds); the shipped model "
            "is trained on all dev cases with the same recipe",
            "seed": data.SPLIT_SEED,
            "folds": folds,
        },
        "training": {
            **{
                k: config[k]
                for k in (
                    "channels",
                    "stem",
                    "crop",
                    "pos_repeats",
                    "neg_crops_per_case",
                    "batch_size",
                    "lr",
                    "weight_decay",
                    "epochs",
                    "seed",
                    "loss",
                    "flips",
                    "threads",
                )
            },
            **{k: config[k] for k in ("ensemble_seeds", "tta_mirror", "tta_scales") if k in config},
        },
        "metrics": metrics,
        "acceptance_criteria": criteria,
        "limits": [
            "JSRT only (film-digitised, one nodule per positive film, 5-60 mm); digital detectors, AP films, children "
            "and other populations are untested",
            "the operating point was chosen on cross-validated fold models; the shipped all-data model's scores may be "
            "calibrated slightly differently",
            "nodules behind the heart or below the diaphragm dome lie outside the SCR lung fields and are reachable only "
            "within mask_margin_mm of the lung mask",
        ],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--checkpoint",
        type=Path,
        nargs="+",
        default=[HERE.parent / "runs" / "nodules" / "final" / "last.pt"],
        help="one checkpoint, or several (exported as one ensemble graph)",
    )
    parser.add_argument("--cv-metrics", type=Path, default=HERE.parent / "results" / "nodule_cv_metrics.json")
    parser.add_argument("--out", type=Path, default=HERE.parents[2] / "models" / f"{MODEL_NAME}_v2")
    parser.add_argument("--tta-scales", type=float, nargs="*", default=[], help="extra test-time scales (in the graph)")
    parser.add_argument("--tta-mirror", action="store_true", help="average with the left-right mirror (in the graph)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model, config = load_checkpoints(args.checkpoint, tuple(args.tta_scales), args.tta_mirror)
    content = export_onnx(model, args.out / ONNX_FILE)
    if args.cv_metrics.is_file():
        manifest = build_manifest(content, config, json.loads(args.cv_metrics.read_text()))
        (args.out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        print(f"wrote {args.out / ONNX_FILE} ({len(content) / 1e6:.2f} MB) and manifest.json")
    else:
        print(f"wrote {args.out / ONNX_FILE} ({len(content) / 1e6:.2f} MB); no {args.cv_metrics}: no manifest")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
