"""Accuracy of the lung_ct_quant segmentation on the shared real CT data.

1. ``ct-lung-slices``: the 2-D core (:func:`segment_lungs_slice`, adaptive
   thresholds, because the values are not calibrated HU) against the MANUAL lung
   masks.  The two masks that mask_qc flags as defective (they leak into the air
   outside the body) are reported separately and left out of the statistics.
   The parameters were chosen on these same dev slices; the project's hold-out
   part checks them independently.
2. ``ct-lung``: the full 3-D analysis (:class:`LungCTQuant`) on the two real
   DICOM series against the AUTOMATIC reference masks (not expert: they measure
   agreement with another threshold method, not accuracy).  It reports Dice per
   lung, volumes and LAA-950 next to ``cases.csv``, the run time and the kernel note.

Usage: .venv/bin/python benchmarks/lung_ct_accuracy.py [--limit N]
Writes benchmarks/results/lung_ct_accuracy.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from radpilot.analyses.lung_ct import LungCTQuant, segment_lungs_slice  # noqa: E402
from radpilot.analyses.lung_ct.segmentation import DEFAULT_PARAMS  # noqa: E402
from radpilot.dicom.volume import volume_from_files  # noqa: E402
from tests.helpers import shared_data_path  # noqa: E402

PNG_OFFSET = 4096


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice coefficient of two boolean masks (1.0 when both are empty)."""
    total = int(np.count_nonzero(a)) + int(np.count_nonzero(b))
    return 1.0 if total == 0 else 2.0 * int(np.count_nonzero(a & b)) / total


def read_slice_case(root: Path, row: dict[str, str]) -> tuple[np.ndarray, np.ndarray]:
    """Image (source units) and manual mask of one ct-lung-slices row (see its README)."""
    from PIL import Image

    offset = int(row.get("png_offset") or PNG_OFFSET)
    image = np.array(Image.open(root / row["image_file"])).astype(np.int32) - offset
    mask = np.array(Image.open(root / row["mask_file"])).astype(bool)
    return image.astype(np.float32), mask


def read_reference_mask(path: Path) -> np.ndarray:
    """A ct-lung NIfTI mask as a (z, y, x) uint8 array on the DICOM grid (array index (i, j, k) = column, row, slice)."""
    import nibabel

    return np.asarray(nibabel.load(str(path)).dataobj).transpose(2, 1, 0).astype(np.uint8)


def evaluate_slices(root: Path, limit: int | None = None) -> dict[str, Any]:
    """Run the 2-D core on the ct-lung-slices set; per-case table and summary."""
    with open(root / "cases.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    good = [r for r in rows if r["mask_qc"] == "ok"]
    flagged = [r for r in rows if r["mask_qc"] != "ok"]
    if limit is not None:
        good = good[:limit]
    cases = []
    excluded = []
    started = time.perf_counter()
    for row, target in [(r, cases) for r in good] + [(r, excluded) for r in flagged]:
        image, truth = read_slice_case(root, row)
        predicted = segment_lungs_slice(image)
        area_ref = int(truth.sum())
        area_ours = int(predicted.sum())
        target.append(
            {
                "slice_id": row["slice_id"],
                "dice": round(dice(predicted, truth), 4),
                "area_ref_px": area_ref,
                "area_ours_px": area_ours,
                "area_error_percent": round(100.0 * (area_ours - area_ref) / area_ref, 2) if area_ref else None,
                "area_stratum": int(row["area_stratum"]),
                "mask_qc": row["mask_qc"],
            }
        )
    elapsed = time.perf_counter() - started
    dices = [c["dice"] for c in cases]
    errors = [c["area_error_percent"] for c in cases]
    summary = {
        "n": len(cases),
        "mean_dice": round(statistics.fmean(dices), 4),
        "median_dice": round(statistics.median(dices), 4),
        "min_dice": round(min(dices), 4),
        "max_dice": round(max(dices), 4),
        "n_below_0_95": sum(d < 0.95 for d in dices),
        "mean_area_error_percent": round(statistics.fmean(errors), 2),
        "mean_abs_area_error_percent": round(statistics.fmean(abs(e) for e in errors), 2),
        "max_abs_area_error_percent": round(max(abs(e) for e in errors), 2),
        "seconds_total": round(elapsed, 2),
        "seconds_per_slice": round(elapsed / max(1, len(cases) + len(excluded)), 4),
    }
    return {
        "dataset": "ct-lung-slices (manual masks, dev part; values HU-like, not calibrated)",
        "method": "segment_lungs_slice, adaptive thresholds, pixel spacing unknown (0.7 mm assumed for size rules)",
        "excluded_from_statistics": excluded,
        "summary": summary,
        "cases": cases,
    }


def evaluate_series(root: Path) -> dict[str, Any]:
    """Run the full analysis on each ct-lung case and compare with the automatic reference masks and cases.csv."""
    with open(root / "cases.csv", newline="") as handle:
        reference = {r["case_id"]: r for r in csv.DictReader(handle)}
    analysis = LungCTQuant()
    results = []
    for case_id, row in sorted(reference.items()):
        folder = root / case_id
        volume = volume_from_files(sorted((folder / "dicom").glob("*.dcm")))
        ref = read_reference_mask(folder / "lung_mask.nii.gz")
        if ref.shape != volume.shape:
            raise ValueError(f"{case_id}: mask shape {ref.shape} differs from the volume {volume.shape}")
        wall0, cpu0 = time.perf_counter(), time.process_time()
        findings = analysis.run(volume)
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        labels = findings.segmentation.labels
        values = {(m.finding_site.meaning, m.name.value): m.value for m in findings.measurements}
        ml = volume.ml_per_voxel
        ref_lung = ref > 0
        ref_laa_own_reading = 100.0 * float(np.count_nonzero(volume.voxels[ref_lung] < -950)) / int(ref_lung.sum())
        ours_total = values[("Both lungs", "118565006")]
        ours_laa = values[("Both lungs", "LAA950")]
        results.append(
            {
                "case_id": case_id,
                "kernel": volume.metadata.get("ConvolutionKernel"),
                "shape_zyx": list(volume.shape),
                "spacing_zyx_mm": [round(s, 6) for s in volume.spacing_zyx],
                "dice_right": round(dice(labels == 1, ref == 1), 4),
                "dice_left": round(dice(labels == 2, ref == 2), 4),
                "dice_both": round(dice(labels > 0, ref_lung), 4),
                "volume_ml": {
                    "right": values[("Right lung", "118565006")],
                    "left": values[("Left lung", "118565006")],
                    "total": ours_total,
                    "reference_mask_total": round(int(ref_lung.sum()) * ml, 1),
                    "cases_csv_right": float(row["right_lung_ml"]),
                    "cases_csv_left": float(row["left_lung_ml"]),
                    "cases_csv_total": float(row["total_lung_ml"]),
                    "total_difference_percent": round(100.0 * (ours_total - float(row["total_lung_ml"])) / float(row["total_lung_ml"]), 2),
                },
                "laa950_percent": {
                    "right": values[("Right lung", "LAA950")],
                    "left": values[("Left lung", "LAA950")],
                    "total": ours_laa,
                    "cases_csv": float(row["laa950_percent"]),
                    "reference_mask_recomputed": round(ref_laa_own_reading, 2),
                    "difference_points": round(ours_laa - float(row["laa950_percent"]), 2),
                },
                "perc15_hu": values[("Both lungs", "PERC15")],
                "mean_hu": values[("Both lungs", "112031")],
                "kernel_note_present": any("Reconstruction kernel" in n and "LAA-950" in n for n in findings.notes),
                "notes": findings.notes,
                "key_slices": findings.key_slices,
                "run_seconds_wall": round(wall, 2),
                "run_seconds_cpu": round(cpu, 2),
            }
        )
    return {
        "dataset": "ct-lung (2 real DICOM series, one patient, lung kernel L and soft kernel B; AUTOMATIC reference masks, not expert)",
        "method": "LungCTQuant.run (full 3-D analysis)",
        "cases": results,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N non-defective slices")
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
            f"{c['run_seconds_wall']:.2f} s wall, {c['run_seconds_cpu']:.2f} s CPU"
        )
    print(f"saved {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
