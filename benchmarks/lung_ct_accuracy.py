"""Accuracy of the lung_ct_quant segmentation on the shared real CT data - a thin wrapper of the validation workbench.

Every figure comes from :func:`radpilot.validation.runner.run_validation` (the same
code, datasets manifests, hash checks and metrics as ``radpilot validate``); this
script only reshapes the results into its historical JSON and printout.

1. ``ct-lung-slices``: the 2-D core (:func:`segment_lungs_slice`, adaptive
   thresholds, because the values are not calibrated HU) against the MANUAL lung
   masks.  The two masks that mask_qc flags as defective (they leak into the air
   outside the body) are reported separately and left out of the statistics.
   The parameters were chosen on these same dev slices; the project's hold-out
   part checks them independently.
2. ``ct-lung``: the full 3-D analysis (:class:`LungCTQuant`, production path) on the
   two real DICOM series against the AUTOMATIC reference masks (not expert: they
   measure agreement with another threshold method, not accuracy).  It reports Dice
   per lung, volumes and LAA-950 next to ``cases.csv``, the time per case and the kernel note.

Usage: .venv/bin/python benchmarks/lung_ct_accuracy.py [--limit N]
Writes benchmarks/results/lung_ct_accuracy.json.  For the HTML report and the stored,
gate-checked run use ``radpilot validate lung_ct_quant --dataset ct-lung-slices`` (and ``ct-lung``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from radpilot.analyses.lung_ct import LungCTQuant  # noqa: E402
from radpilot.analyses.lung_ct.segmentation import DEFAULT_PARAMS  # noqa: E402
from radpilot.validation.datasets import DatasetRegistry  # noqa: E402
from radpilot.validation.runner import ValidationOutcome, run_validation  # noqa: E402
from radpilot.validation.subject import resolve_subject  # noqa: E402
from tests.helpers import shared_data_path  # noqa: E402


def _validate(dataset_root: Path, limit: int | None = None) -> ValidationOutcome:
    """The workbench run of lung_ct_quant on the dataset in ``dataset_root`` (its shipped manifest, hash verified)."""
    registry = DatasetRegistry(None, shared_root=Path(dataset_root).parent)
    manifest = registry.get(Path(dataset_root).name)
    return run_validation(resolve_subject("lung_ct_quant"), manifest, registry, limit=limit, worst=0)


def evaluate_slices(root: Path, limit: int | None = None) -> dict[str, Any]:
    """The workbench run on ct-lung-slices, reshaped: per-case table and summary (``limit``: first N slices)."""
    outcome = _validate(root, limit)
    cases, excluded = [], []
    for case in outcome.cases:
        m = case.metrics
        row = {
            "slice_id": case.case_id,
            "dice": round(m["dice_lungs"], 4),
            "area_ref_px": int(m["area_reference_px_lungs"]),
            "area_ours_px": int(m["area_predicted_px_lungs"]),
            "area_error_percent": round(m["area_error_percent_lungs"], 2) if "area_error_percent_lungs" in m else None,
            "hd95_px": round(m["hd95_lungs_px"], 3),
            "area_stratum": int(case.attributes.get("area_stratum", 0) or 0),
            "mask_qc": "ok" if case.excluded is None else case.excluded,
        }
        (cases if case.included else excluded).append(row)
    per = outcome.result["summary"]["per_metric"]
    dice, area = per["dice_lungs"], per["area_error_percent_lungs"]
    abs_area = per["abs_area_error_percent_lungs"]
    seconds = sum(c.seconds for c in outcome.cases)
    summary = {
        "n": dice["n"],
        "mean_dice": round(dice["mean"], 4),
        "mean_dice_ci95": [round(dice["mean_ci"]["lower"], 4), round(dice["mean_ci"]["upper"], 4)],
        "median_dice": round(dice["median"], 4),
        "min_dice": round(dice["min"], 4),
        "max_dice": round(dice["max"], 4),
        "n_below_0_95": sum(c["dice"] < 0.95 for c in cases),
        "mean_area_error_percent": round(area["mean"], 2),
        "mean_abs_area_error_percent": round(abs_area["mean"], 2),
        "max_abs_area_error_percent": round(abs_area["max"], 2),
        "mean_hd95_px": round(per["hd95_lungs_px"]["mean"], 3),
        "seconds_total": round(seconds, 2),
        "seconds_per_slice": round(seconds / max(1, len(outcome.cases)), 4),
    }
    return {
        "dataset": "ct-lung-slices (manual masks, dev part; values HU-like, not calibrated)",
        "dataset_content_hash": outcome.result["dataset"]["content_hash"],
        "method": outcome.result["subject"]["code_path"],
        "excluded_from_statistics": excluded,
        "summary": summary,
        "cases": cases,
    }


def evaluate_series(root: Path) -> dict[str, Any]:
    """The workbench run on ct-lung (production path), reshaped per case next to cases.csv."""
    outcome = _validate(root)
    results = []
    for case in outcome.cases:
        if case.status != "ok":
            raise RuntimeError(f"{case.case_id}: {case.error}")
        m, v = case.metrics, case.values
        results.append(
            {
                "case_id": case.case_id,
                "kernel": case.attributes.get("kernel"),
                "shape_zyx": case.attributes.get("shape_zyx"),
                "spacing_zyx_mm": case.attributes.get("spacing_zyx_mm"),
                "dice_right": round(m["dice_right_lung"], 4),
                "dice_left": round(m["dice_left_lung"], 4),
                "dice_both": round(m["dice_both_lungs"], 4),
                "hd95_right_mm": round(m["hd95_right_lung_mm"], 2),
                "hd95_left_mm": round(m["hd95_left_lung_mm"], 2),
                "volume_ml": {
                    "right": v["right_lung_volume_ml"]["predicted"],
                    "left": v["left_lung_volume_ml"]["predicted"],
                    "total": v["total_lung_volume_ml"]["predicted"],
                    "reference_mask_total": round(v["total_lung_volume_ml"]["reference_mask"], 1),
                    "cases_csv_right": v["right_lung_volume_ml"]["reference"],
                    "cases_csv_left": v["left_lung_volume_ml"]["reference"],
                    "cases_csv_total": v["total_lung_volume_ml"]["reference"],
                    "total_difference_percent": round(m["total_lung_volume_ml_error_percent"], 2),
                },
                "laa950_percent": {
                    "right": v["right_laa950_percent"]["predicted"],
                    "left": v["left_laa950_percent"]["predicted"],
                    "total": v["laa950_percent"]["predicted"],
                    "cases_csv": v["laa950_percent"]["reference"],
                    "reference_mask_recomputed": round(v["laa950_percent"]["reference_mask"], 2),
                    "difference_points": round(m["laa950_percent_error"], 2),
                },
                "perc15_hu": v["perc15_hu"]["predicted"],
                "mean_hu": v["mean_lung_hu"]["predicted"],
                "kernel_note_present": any("Reconstruction kernel" in n and "LAA-950" in n for n in case.notes),
                "notes": case.notes,
                "case_seconds_wall": round(case.seconds, 2),
                "case_seconds_cpu": round(case.cpu_seconds, 2),
            }
        )
    return {
        "dataset": "ct-lung (2 real DICOM series, one patient, lung kernel L and soft kernel B; AUTOMATIC reference masks, not expert)",
        "dataset_content_hash": outcome.result["dataset"]["content_hash"],
        "method": outcome.result["subject"]["code_path"],
        "cases": results,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N slices of ct-lung-slices (a partial run)")
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results" / "lung_ct_accuracy.json")
    args = parser.parse_args(argv)

    data = shared_data_path()
    if not data.is_dir():
        print(f"shared data folder {data} is absent (set RADPILOT_SHARED_DATA)", file=sys.stderr)
        return 2
    slices = evaluate_slices(data / "ct-lung-slices", args.limit)
    series = evaluate_series(data / "ct-lung")
    report = {
        "benchmark": "lung_ct_accuracy",
        "analysis": f"{LungCTQuant.name} {LungCTQuant.version}",
        "parameters": DEFAULT_PARAMS.__dict__,
        "environment": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "scipy": __import__("scipy").__version__,
            "machine": platform.machine(),
            "cpu_count": os.cpu_count(),
            "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        },
        "slices_2d": slices,
        "series_3d": series,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2))

    s = slices["summary"]
    print(f"ct-lung-slices (manual masks), {s['n']} non-defective slices:")
    print(
        f"  Dice mean {s['mean_dice']:.4f}  median {s['median_dice']:.4f}  min {s['min_dice']:.4f}  "
        f"max {s['max_dice']:.4f}  below 0.95: {s['n_below_0_95']}"
    )
    print(
        f"  lung area error: mean {s['mean_area_error_percent']:+.2f} %  mean |err| {s['mean_abs_area_error_percent']:.2f} %  "
        f"max |err| {s['max_abs_area_error_percent']:.2f} %   ({s['seconds_per_slice'] * 1000:.0f} ms/slice)"
    )
    worst = sorted(slices["cases"], key=lambda c: c["dice"])[:5]
    print("  worst: " + ", ".join(f"{c['slice_id']} {c['dice']:.3f}" for c in worst))
    for c in slices["excluded_from_statistics"]:
        print(f"  excluded ({c['mask_qc']}): {c['slice_id']} Dice {c['dice']:.3f}")
    print("ct-lung (automatic reference masks, not expert):")
    for c in series["cases"]:
        v, laa = c["volume_ml"], c["laa950_percent"]
        print(
            f"  {c['case_id']} kernel {c['kernel']}: Dice right {c['dice_right']:.4f} left {c['dice_left']:.4f} "
            f"both {c['dice_both']:.4f}; volume R {v['right']:.1f} L {v['left']:.1f} total {v['total']:.1f} mL "
            f"(cases.csv {v['cases_csv_total']:.1f}, {v['total_difference_percent']:+.2f} %); "
            f"LAA-950 {laa['total']:.2f} % (cases.csv {laa['cases_csv']:.2f} %, {laa['difference_points']:+.2f} points); "
            f"Perc15 {c['perc15_hu']:.0f} HU; kernel note {'yes' if c['kernel_note_present'] else 'NO'}; "
            f"{c['case_seconds_wall']:.2f} s wall, {c['case_seconds_cpu']:.2f} s CPU (read + analysis + metrics)"
        )
    print(f"saved {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
