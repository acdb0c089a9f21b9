"""Accuracy of the chest_xray analysis: cross-validated figures, and a check of the runtime path.

1. **Cross-validated (the independent figures on this data).**  ``training/chest_xray/results/
   cv_metrics.json`` holds, for each of the 199 JSRT developer cases, the prediction of the fold
   model that never saw the case (5-fold CV, ONNX model, the runtime's pre/post-processing):
   Dice of both lung fields and the heart against the SCR masks, and the CTR against the
   reference CTR of ``metadata.csv``.  From them: Dice and CTR error summaries (bootstrap 95 % CI
   of the mean over cases), Bland-Altman agreement of the CTR, and **cardiomegaly at CTR > 0.50**
   (the analysis' rule on a PA view) against the same rule on the reference CTR: sensitivity,
   specificity, accuracy and Cohen's kappa, each with a case-level bootstrap 95 % CI
   (:mod:`radpilot.validation.metrics`, 2000 resamples, seed 0).
2. **The shipped model through the whole runtime path** (NOT an independent figure): every dev
   film wrapped as a DX DICOM (MONOCHROME2, ImagerPixelSpacing 0.70 mm, ViewPosition PA) and run
   through ``volume_from_datasets`` and ``ChestXray`` (display conversion, segmentation, plausibility
   check, measurements).  The shipped model was trained on all 199 dev cases, so these numbers
   measure fit to the training data and check that the DICOM path reproduces the training-time
   evaluation; they say nothing about new patients.  They also show how many dev films the
   frontal-view plausibility check would refuse (it should be none).
3. The nodule detector's own cross-validated figures, copied from its manifest when installed.

The kept-back JSRT cases are not used here (the project checks them independently).  Research use
only (JSRT/SCR terms).  Usage: ``.venv/bin/python benchmarks/chest_xray_accuracy.py [--limit N]``.
Writes benchmarks/results/chest_xray_accuracy.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from radpilot.validation.metrics import (  # noqa: E402
    bland_altman,
    bootstrap_ci,
    cohen_kappa,
    confusion_counts,
    mean_absolute_error,
    sensitivity_specificity,
    summarize,
)

CV_METRICS = REPO / "training" / "chest_xray" / "results" / "cv_metrics.json"
THRESHOLD = 0.50
STRUCTURES = ("right_lung", "left_lung", "heart")


def _ci(result: Any) -> dict[str, float]:
    return {"estimate": round(result.estimate, 4), "ci95": [round(result.lower, 4), round(result.upper, 4)]}


def cardiomegaly_agreement(ctr_ai: np.ndarray, ctr_ref: np.ndarray, threshold: float = THRESHOLD) -> dict[str, Any]:
    """Cardiomegaly (CTR > threshold) by the AI vs by the reference CTR, with bootstrap CIs."""
    truth, predicted = ctr_ref > threshold, ctr_ai > threshold
    counts = confusion_counts(truth, predicted)
    both = (truth, predicted)
    return {
        "rule": f"cardiomegaly = CTR > {threshold:.2f}, AI CTR vs reference CTR (metadata.csv)",
        "cases": int(truth.size),
        "reference_positive": int(truth.sum()),
        "confusion": counts._asdict(),
        "sensitivity": _ci(bootstrap_ci(both, lambda t, p: sensitivity_specificity(t, p).sensitivity)),
        "specificity": _ci(bootstrap_ci(both, lambda t, p: sensitivity_specificity(t, p).specificity)),
        "accuracy": _ci(bootstrap_ci(both, lambda t, p: float(np.mean(t == p)))),
        "cohen_kappa": _ci(bootstrap_ci(both, lambda t, p: cohen_kappa(t.astype(int), p.astype(int)))),
        "near_threshold_cases": int(np.sum(np.abs(ctr_ref - threshold) <= 0.02)),
    }


def ctr_agreement(ctr_ai: np.ndarray, ctr_ref: np.ndarray) -> dict[str, Any]:
    ba = bland_altman(ctr_ai, ctr_ref)
    errors = np.abs(ctr_ai - ctr_ref)
    return {
        "mae": _ci(bootstrap_ci((ctr_ai, ctr_ref), mean_absolute_error)),
        "bias": round(float(ba.bias), 4),
        "limits_of_agreement": [round(float(ba.lower), 4), round(float(ba.upper), 4)],
        "pearson_r": round(float(np.corrcoef(ctr_ai, ctr_ref)[0, 1]), 4),
        "within_0.02": round(float(np.mean(errors <= 0.02)), 4),
        "max_abs_error": round(float(errors.max()), 4),
    }


def cross_validated() -> dict[str, Any]:
    content = json.loads(CV_METRICS.read_text())
    cases = content["per_case"]
    ctr_ai = np.array([c["ctr"] for c in cases], dtype=float)
    ctr_ref = np.array([c["ctr_ref"] for c in cases], dtype=float)
    return {
        "source": str(CV_METRICS.relative_to(REPO)),
        "description": content.get("description", ""),
        "cases": len(cases),
        "dice": {s: summarize([c[f"dice_{s}"] for c in cases]) for s in STRUCTURES},
        "ctr": ctr_agreement(ctr_ai, ctr_ref),
        "cardiomegaly": cardiomegaly_agreement(ctr_ai, ctr_ref),
    }


def runtime_path(limit: int | None) -> dict[str, Any]:
    """The shipped model through DICOM -> Volume -> ChestXray on every dev film (training data: not independent)."""
    from radpilot.analyses.chest_xray import ChestXray
    from radpilot.contract import NotApplicableError
    from radpilot.dicom.volume import volume_from_datasets
    from radpilot.modelhub.registry import ModelRegistry
    from radpilot.validation.metrics import dice
    from tests.helpers import shared_data_path
    from tests.unit.test_chest_xray_analysis import jsrt_case, radiograph_dataset

    root = shared_data_path() / "cxr-jsrt"
    with open(root / "metadata.csv", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["split"] == "dev"]
    if limit is not None:
        rows = rows[:limit]
    analysis = ChestXray(registry=ModelRegistry(providers=["CPUExecutionProvider"], intra_op_threads=1), detect_nodules=False)
    per_case, refused = [], []
    started = time.perf_counter()
    for row in rows:
        case = jsrt_case(row["case_id"])
        volume = volume_from_datasets([radiograph_dataset(case.pixels, imager_spacing_mm=case.spacing_mm)])
        try:
            analysis.check_input(volume)
            findings = analysis.run(volume)
        except NotApplicableError as exc:
            refused.append({"case_id": case.case_id, "reason": str(exc)})
            continue
        labels = findings.segmentation.labels[0]
        values = {(m.name.value, m.finding_site.value if m.finding_site else ""): m.value for m in findings.measurements}
        per_case.append(
            {
                "case_id": case.case_id,
                **{f"dice_{s}": round(dice(labels == v, case.labels == v), 5) for v, s in enumerate(STRUCTURES, start=1)},
                "ctr": values.get(("RP-CTR", "")),
                "ctr_ref": case.ctr,
                "heart_width_mm": values.get(("103355008", "80891009")),
                "heart_width_mm_ref": case.heart_width_mm,
                "thorax_width_mm": values.get(("103355008", "43799004")),
                "thorax_width_mm_ref": case.thorax_width_mm,
            }
        )
    elapsed = time.perf_counter() - started
    measured = [c for c in per_case if c["ctr"] is not None]
    ctr_ai = np.array([c["ctr"] for c in measured], dtype=float)
    ctr_ref = np.array([c["ctr_ref"] for c in measured], dtype=float)
    return {
        "warning": "NOT an independent accuracy figure: the shipped model was trained on all 199 dev cases; this checks "
        "the DICOM runtime path and the plausibility check on the training films",
        "cases": len(rows),
        "refused_as_not_frontal": refused,
        "ctr_not_reported": [c["case_id"] for c in per_case if c["ctr"] is None],
        "dice": {s: summarize([c[f"dice_{s}"] for c in per_case]) for s in STRUCTURES},
        "ctr": ctr_agreement(ctr_ai, ctr_ref),
        "heart_width_mae_mm": round(
            mean_absolute_error([c["heart_width_mm"] for c in measured], [c["heart_width_mm_ref"] for c in measured]), 2
        ),
        "thorax_width_mae_mm": round(
            mean_absolute_error([c["thorax_width_mm"] for c in measured], [c["thorax_width_mm_ref"] for c in measured]), 2
        ),
        "cardiomegaly": cardiomegaly_agreement(ctr_ai, ctr_ref),
        "seconds_per_case": round(elapsed / max(1, len(rows)), 4),
        "per_case": per_case,
    }


def nodule_detector() -> dict[str, Any] | None:
    path = REPO / "models" / "cxr_nodule_det" / "manifest.json"
    if not path.is_file():
        return None
    manifest = json.loads(path.read_text())
    return {
        "source": str(path.relative_to(REPO)),
        "version": manifest.get("version"),
        "operating_point": manifest.get("operating_point"),
        "metrics": manifest.get("metrics"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="only the first N dev films for the runtime-path check")
    args = parser.parse_args()
    cv = cross_validated()
    runtime = runtime_path(args.limit)
    report = {
        "benchmark": "chest_xray_accuracy",
        "data": "JSRT + SCR developer split (shared/data/cxr-jsrt), research use only; cite Shiraishi et al. AJR 2000 "
        "and van Ginneken et al. Med Image Anal 2006",
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()},
        "cross_validated": cv,
        "shipped_model_on_training_films": runtime,
        "nodule_detector": nodule_detector(),
    }
    out = REPO / "benchmarks" / "results" / "chest_xray_accuracy.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")

    def line(name: str, block: dict[str, Any]) -> str:
        dice_text = ", ".join(f"{s} {block['dice'][s]['mean']:.3f}" for s in STRUCTURES)
        c = block["cardiomegaly"]
        return (
            f"{name}: Dice {dice_text}; CTR MAE {block['ctr']['mae']['estimate']:.4f} {block['ctr']['mae']['ci95']}, "
            f"bias {block['ctr']['bias']:+.4f}; cardiomegaly (CTR > 0.50, {c['reference_positive']}/{c['cases']} positive) "
            f"sensitivity {c['sensitivity']['estimate']:.3f} {c['sensitivity']['ci95']}, "
            f"specificity {c['specificity']['estimate']:.3f} {c['specificity']['ci95']}, kappa {c['cohen_kappa']['estimate']:.3f}"
        )

    print(line("5-fold CV (independent of the training folds)", cv))
    print(line("shipped model on its own training films (NOT independent)", runtime))
    print(f"refused as not frontal: {len(runtime['refused_as_not_frontal'])}; CTR not reported: {len(runtime['ctr_not_reported'])}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
