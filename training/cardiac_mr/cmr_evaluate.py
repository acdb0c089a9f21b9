"""Cross-validated evaluation of the short-axis model through the runtime path -> results/cv_metrics.json.

    nice -n 5 /work/main/.venv/bin/python training/cardiac_mr/cmr_evaluate.py [--runs training/cardiac_mr/runs/cv]

Each dev patient is predicted by the fold model that never saw it (its last epoch), exported to
ONNX and run with onnxruntime through ``radpilot.analyses.cardiac_mr_function.segment.segment_cine``:
the heart is found from the motion between the two phases ACDC provides (ED, ES), the tile is cut,
normalised, segmented and pasted back, and the largest heart component kept, exactly as at
runtime. Pixels are taken as the nominal 1.5 mm (ACDC's spacing is unknown here). Dice is 3-D per
patient and phase on the stored grid; EF from voxel counts (spacing cancels), against
``cases.csv``'s reference EF. 95 % CIs: bootstrap over patients (2000 resamples).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import cmr_data  # noqa: E402
from cmr_onnx import load, onnx_bytes, session  # noqa: E402

from radpilot.analyses.cardiac_mr_function.preprocess import MODEL_PIXEL_MM  # noqa: E402
from radpilot.analyses.cardiac_mr_function.segment import HeartNotFound, segment_cine  # noqa: E402

STRUCTURES = {1: "rv", 2: "myo", 3: "lv"}


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    total = pred.sum() + ref.sum()
    return float(2 * np.logical_and(pred, ref).sum() / total) if total else 1.0


def bootstrap_ci(values: np.ndarray, rng: np.random.Generator, n: int = 2000) -> list[float]:
    values = np.asarray(values, dtype=np.float64)
    means = values[rng.integers(0, len(values), (n, len(values)))].mean(1)
    return [round(float(np.percentile(means, 2.5)), 4), round(float(np.percentile(means, 97.5)), 4)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, default=HERE / "runs" / "cv")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "cv_metrics.json")
    args = parser.parse_args(argv)
    patients = cmr_data.read_patients()
    folds = cmr_data.assign_folds(patients)
    by_id = {p.patient_id: p for p in patients}
    rows = []
    seconds = []
    for fold in range(cmr_data.N_FOLDS):
        checkpoint = args.runs / f"fold{fold}" / "last.pt"
        if not checkpoint.is_file():
            print(f"fold {fold}: no {checkpoint}, skipped", flush=True)
            continue
        model, config = load(checkpoint)
        sess = session(onnx_bytes(model))
        name = sess.get_inputs()[0].name
        reference_channel = sess.get_inputs()[0].shape[1] == 2

        def predict(x: np.ndarray, sess=sess, name=name) -> np.ndarray:  # noqa: ANN001 - bound per fold
            return sess.run(None, {name: x})[0]

        for pid in sorted(p for p, f in folds.items() if f == fold):
            (ed_img, ed_lab), (es_img, es_lab) = (cmr_data.load_case(pid, ph) for ph in ("ED", "ES"))
            frames = np.stack([ed_img, es_img]).astype(np.float32)
            started = time.perf_counter()
            try:
                seg = segment_cine(frames, (MODEL_PIXEL_MM, MODEL_PIXEL_MM), predict, reference_channel)
                labels = seg.labels
                found = True
            except HeartNotFound:
                labels, found = np.zeros((2, *ed_lab.shape), dtype=np.uint8), False
            seconds.append(time.perf_counter() - started)
            row: dict = {"patient": pid, "group": by_id[pid].group, "fold": fold, "heart_found": found, "epochs": config["epochs"]}
            for p, (phase, ref) in enumerate((("ed", ed_lab), ("es", es_lab))):
                for v, s in STRUCTURES.items():
                    row[f"dice_{s}_{phase}"] = round(dice(labels[p] == v, ref == v), 4)
            lv_pred = [(labels[p] == 3).sum() for p in (0, 1)]
            rv_pred = [(labels[p] == 1).sum() for p in (0, 1)]
            row["lv_ef_pred"] = round(100 * (lv_pred[0] - lv_pred[1]) / max(lv_pred[0], 1), 2)
            row["rv_ef_pred"] = round(100 * (rv_pred[0] - rv_pred[1]) / max(rv_pred[0], 1), 2)
            row["lv_ef_ref"] = round(100 * by_id[pid].lv_ef, 2)
            row["rv_ef_ref"] = round(100 * by_id[pid].rv_ef, 2)
            rows.append(row)
            print(" ".join(f"{k}={v}" for k, v in row.items()), flush=True)
    rng = np.random.default_rng(0)
    summary: dict = {"patients": len(rows), "folds_evaluated": sorted({r["fold"] for r in rows})}
    for s in STRUCTURES.values():
        for phase in ("ed", "es"):
            values = np.array([r[f"dice_{s}_{phase}"] for r in rows])
            summary[f"dice_{s}_{phase}_mean"] = round(float(values.mean()), 4)
            summary[f"dice_{s}_{phase}_ci95"] = bootstrap_ci(values, rng)
        both = np.array([r[f"dice_{s}_{ph}"] for r in rows for ph in ("ed", "es")])
        summary[f"dice_{s}_mean"] = round(float(both.mean()), 4)
        # CI over patients: each patient's mean of its ED and ES Dice
        summary[f"dice_{s}_ci95"] = bootstrap_ci(np.array([(r[f"dice_{s}_ed"] + r[f"dice_{s}_es"]) / 2 for r in rows]), rng)
    for side in ("lv", "rv"):
        err = np.array([r[f"{side}_ef_pred"] - r[f"{side}_ef_ref"] for r in rows])
        summary[f"{side}_ef_mae"] = round(float(np.abs(err).mean()), 3)
        summary[f"{side}_ef_mae_ci95"] = bootstrap_ci(np.abs(err), rng)
        summary[f"{side}_ef_bias"] = round(float(err.mean()), 3)
        summary[f"{side}_ef_max_abs_error"] = round(float(np.abs(err).max()), 3)
        summary[f"{side}_ef_r"] = round(
            float(np.corrcoef([r[f"{side}_ef_pred"] for r in rows], [r[f"{side}_ef_ref"] for r in rows])[0, 1]), 4
        )
    summary["lv_ef_cases_off_by_more_than_10"] = int(sum(abs(r["lv_ef_pred"] - r["lv_ef_ref"]) > 10 for r in rows))
    summary["heart_not_found"] = int(sum(not r["heart_found"] for r in rows))
    summary["segment_seconds_per_patient_median"] = round(float(np.median(seconds)), 3) if seconds else None
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"summary": summary, "cases": rows}, indent=1) + "\n")
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
