"""Export the all-data short-axis model to ONNX and write its manifest (metrics from results/cv_metrics.json).

nice -n 5 /work/main/.venv/bin/python training/cardiac_mr/cmr_export.py [--checkpoint runs/final/last.pt] [--out DIR]
    [--version 1.1.0 --file cmr_sax_seg_v1.onnx]

Each model version goes into its own folder (``--out``), so earlier versions stay loadable.
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

import cmr_data  # noqa: E402
from cmr_onnx import OPSET, load, onnx_bytes, session  # noqa: E402

from radpilot.analyses.cardiac_mr_function.preprocess import MODEL_PIXEL_MM, TILE, TRAIN_TILE  # noqa: E402

REPO = HERE.parents[1]
DEFAULT_OUT = REPO / "radpilot" / "analyses" / "cardiac_mr_function" / "models" / "cmr_sax_seg"
NAME, VERSION, FILE = "cmr_sax_seg", "1.1.0", "cmr_sax_seg_v1.onnx"  # the defaults reproduce 1.1.0

TARGETS = [
    {"metric": "dice_lv_mean", ">=": 0.95},
    {"metric": "dice_rv_mean", ">=": 0.90},
    {"metric": "dice_myo_mean", ">=": 0.88},
    {"metric": "lv_ef_mae", "<=": 4.0},
    {"metric": "rv_ef_mae", "<=": 6.0},
    {"metric": "lv_ef_max_abs_error", "<=": 10.0},
]


def _total_epochs(config: dict) -> int:
    """Epochs over every leg of training: a model resumed from a checkpoint carries its first leg's config."""
    previous = config.get("resumed_from")
    return int(config.get("epochs") or 0) + (_total_epochs(previous["config"]) if previous else 0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--checkpoint", type=Path, default=HERE / "runs" / "final" / "last.pt")
    parser.add_argument("--metrics", type=Path, default=HERE / "results" / "cv_metrics.json")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--version", default=VERSION)
    parser.add_argument("--file", default=FILE, help="the ONNX file's name in --out")
    args = parser.parse_args(argv)
    model, config = load(args.checkpoint)
    content = onnx_bytes(model)
    # onnxruntime must agree with torch on a realistic input (a normalised random tile).
    in_channels = int(config.get("in_channels", 1))
    x = np.random.default_rng(0).random((2, in_channels, TILE, TILE), dtype=np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    got = session(content).run(None, {"image": x})[0]
    if not np.allclose(got, expected, atol=1e-3):
        raise SystemExit(f"onnxruntime differs from torch by {np.abs(got - expected).max()}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / args.file).write_bytes(content)
    summary = json.loads(args.metrics.read_text())["summary"] if args.metrics.is_file() else {}
    import onnxruntime  # noqa: PLC0415

    patients = cmr_data.read_patients()
    folds = cmr_data.assign_folds(patients)
    criteria = []
    for target in TARGETS:
        op = ">=" if ">=" in target else "<="
        value = summary.get(target["metric"])
        met = None if value is None else (value >= target[op] if op == ">=" else value <= target[op])
        criteria.append({**target, "value": value, "met": met})
    manifest = {
        "name": NAME,
        "version": args.version,
        "file": args.file,
        "sha256": hashlib.sha256(content).hexdigest(),
        "format": {
            "type": "onnx",
            "opset": OPSET,
            "onnxruntime_version": onnxruntime.__version__,
            "torch_version": str(torch.__version__),
            "parameters": config.get("parameters"),
        },
        "task": "semantic segmentation of the RV cavity, LV myocardium and LV cavity on one short-axis cine MR slice (any phase)"
        + (", given the same slice at end-diastole" if in_channels == 2 else ""),
        "input": {
            "name": "image",
            "shape": ["N", in_channels, "H", "W"],
            "dtype": "float32",
            "channels": ["the slice in the phase segmented"]
            + (
                ["the same slice in the cine's first phase (ECG trigger at the R wave: end-diastole; ACDC's ED frame in training)"]
                if in_channels == 2
                else []
            ),
            "preprocessing": (
                "radpilot.analyses.cardiac_mr_function.preprocess + segment (numpy/scipy): the slice resampled in-plane to "
                f"{MODEL_PIXEL_MM} mm (linear), a {TILE} x {TILE} tile cut around the heart centre found from the cine's motion "
                "(outside the image 0), then per tile and channel p1, p99 = percentile(tile, [1, 99]) and clip((tile - p1) / (p99 - p1), 0, 1)"
            ),
            "pixel_spacing": f"{MODEL_PIXEL_MM} mm nominal: ACDC's spacing is unknown in the training copy (its scanners wrote about 1.37-1.68 mm); training drew scales 0.8-1.25",
            "view": "short-axis cine MR (bSSFP), RV on the image left of the LV as in a standard short-axis display; rotations up to 30 degrees seen in training",
        },
        "output": {
            "name": "logits",
            "shape": ["N", 4, "H", "W"],
            "dtype": "float32",
            "postprocessing": "argmax over the 4 classes after linear resampling back to the source grid; per phase only the largest 3-D connected heart component is kept",
        },
        "labels": [
            {"value": 0, "name": "background"},
            {"value": 1, "name": "rv_cavity"},
            {"value": 2, "name": "lv_myocardium"},
            {"value": 3, "name": "lv_cavity", "note": "papillary muscles and trabeculae included in the cavity (ACDC convention)"},
        ],
        "training_data": {
            "name": "ACDC (Automated Cardiac Diagnosis Challenge, MICCAI 2017) dev part",
            "source": "shared/data/cmr-acdc: 80 patients x ED and ES, expert labels, intensities min-max normalised, cropped around the heart",
            "citation": ["Bernard O, Lalande A, Zotti C, Cervenansky F et al. IEEE Trans Med Imaging 37(11):2514-2525, 2018"],
            "terms": "research use only, with citation; community mirrors label ACDC CC BY-NC-SA 4.0 (non-commercial, share-alike)",
            "patients": len(patients),
            "split": "5-fold cross-validation by patient stratified by ACDC group (DCM, HCM, MINF, NOR, RV; seeded permutation per group dealt round-robin); the shipped model is trained on all 80 dev patients with the same recipe",
            "seed": cmr_data.SPLIT_SEED,
            "folds": folds,
        },
        "training": {
            "script": "training/cardiac_mr/run_cv.sh (cmr_train.py --fold -1 for this model)",
            "architecture": f"2-D U-Net, BatchNorm, ReLU, channels {config.get('channels')}, max-pool down, transposed-conv up",
            "epochs": config.get("epochs"),
            "samples_per_epoch": config.get("samples_per_epoch"),
            "batch_size": config.get("batch_size"),
            "tile": TRAIN_TILE,
            "optimizer": f"AdamW lr {config.get('lr')} weight decay {config.get('weight_decay')}",
            "schedule": config.get("schedule"),
            "loss": config.get("loss"),
            "ce_class_weights": config.get("ce_class_weights"),
            "class_weight_correction": "log(w_k) subtracted from the output bias of class k (cmr_onnx.undo_class_weights): the unweighted decision rule",
            "augmentation": config.get("augmentation"),
            "seed": config.get("seed"),
            "threads": config.get("threads"),
            "hardware": "2 shared CPU cores",
            **(
                {
                    "second_leg_of": {
                        k: config["resumed_from"]["config"].get(k) for k in ("epochs", "lr", "seed", "ce_class_weights", "resumed_from")
                    },
                    "total_epochs": _total_epochs(config),
                }
                if "resumed_from" in config
                else {}
            ),
        },
        "metrics": {
            "evaluation": (
                f"cross-validation fold(s) {summary.get('folds_evaluated')} of 5 ({summary.get('patients')} held-out patients, ED and ES) "
                "through the runtime path (training/cardiac_mr/cmr_evaluate.py: motion localisation, tiles, ONNX, largest component), "
                "each fold model trained with this model's recipe on the other folds"
                + ("" if len(summary.get("folds_evaluated") or []) == cmr_data.N_FOLDS else "; folds not listed were not trained")
            ),
            **summary,
        },
        "acceptance_criteria": criteria,
        "intended_use": (
            "research use only: LV/RV segmentation and function on adult short-axis cine MR as reading support; not a medical device, "
            "not for diagnosis or commercial use (ACDC terms); trained on one centre's 1.5/3 T scanners (Dijon), 80 patients, "
            "performance on other centres, vendors and children is unknown until checked on kept-back data"
        ),
    }
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {args.out / args.file} ({len(content) / 1e6:.2f} MB) and manifest.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
