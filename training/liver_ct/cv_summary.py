"""Collect ``<results>/cv_folds/fold*.json`` (each fold's ``fold_metrics.json``, copied there by ``run_all.sh`` so that
the figures outlive the git-ignored run folders) into ``<results>/cv_metrics.json``: per-patient Dice and volumes, the
mean and a 95 % bootstrap CI over patients (10,000 resamples, seed 0), and which folds are missing."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def ci(values: list[float]) -> list[float]:
    rng = np.random.default_rng(0)
    arr = np.asarray(values)
    means = arr[rng.integers(0, len(arr), (10000, len(arr)))].mean(axis=1)
    return [round(float(np.percentile(means, 2.5)), 4), round(float(np.percentile(means, 97.5)), 4)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--results", type=Path, default=HERE / "results", help="the model version's results folder (results/v2 for 0.2.0)")
    results = ap.parse_args().results
    folds, cases = [], []
    for f in range(5):
        path = results / "cv_folds" / f"fold{f}.json"
        if path.is_file():
            data = json.loads(path.read_text())
            folds.append({"fold": f, "mean": data["mean"], "n": len(data["cases"])})
            cases += data["cases"]
    summary: dict = {"folds_done": [x["fold"] for x in folds], "patients": len(cases)}
    for organ in ("liver", "spleen"):
        dice = [c[f"{organ}_dice"] for c in cases]
        vol_err = [100 * (c[f"{organ}_ml_pred"] - c[f"{organ}_ml_ref"]) / c[f"{organ}_ml_ref"] for c in cases if c[f"{organ}_ml_ref"] > 0]
        if dice:
            summary[f"{organ}_dice_mean"] = round(float(np.mean(dice)), 4)
            summary[f"{organ}_dice_ci95"] = ci(dice)
            summary[f"{organ}_dice_min"] = round(float(np.min(dice)), 4)
            summary[f"{organ}_volume_error_percent_mean_abs"] = round(float(np.mean(np.abs(vol_err))), 2)
    out = results / "cv_metrics.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"summary": summary, "folds": folds, "cases": cases}, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
