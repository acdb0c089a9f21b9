"""The production-path check on the 3D-IRCADb patient: HU DICOM -> LiverCT.run (window, 2 mm, ONNX model, source
grid) against the manual liver and tumour masks.  Writes ``results/ircad.json``.

``python training/liver_ct/evaluate_ircad.py`` (reads $RADPILOT_SHARED_DATA or <repo>/../shared/data).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

import nibabel
import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from radpilot.analyses.liver_ct.analysis import LiverCT  # noqa: E402
from radpilot.analyses.liver_ct.preprocess import LIVER, SPLEEN  # noqa: E402
from radpilot.contract import Findings  # noqa: E402
from radpilot.dicom.volume import Volume, volume_from_files  # noqa: E402


def run_case(root: Path) -> tuple[Volume, Findings, float]:
    """The IRCAD series read from DICOM and analysed: (volume, findings, seconds of LiverCT.run)."""
    volume = volume_from_files(sorted((root / "IRCADB1-17" / "dicom").glob("*.dcm")))
    t0 = time.perf_counter()
    findings = LiverCT().run(volume)
    return volume, findings, time.perf_counter() - t0


def evaluate(root: Path, done: tuple[Volume, Findings, float] | None = None) -> dict:
    case = root / "IRCADB1-17"
    with (root / "cases.csv").open() as f:
        row = next(csv.DictReader(f))
    volume, findings, seconds = done or run_case(root)
    analysis = LiverCT()
    assert findings.segmentation is not None
    labels = findings.segmentation.labels

    def mask(name: str) -> np.ndarray:
        return np.asarray(nibabel.load(case / name).dataobj).transpose(2, 1, 0) > 0

    ref = mask("liver_mask.nii.gz")
    tumours = [mask("livertumor1_mask.nii.gz"), mask("livertumor2_mask.nii.gz")]
    pred = labels == LIVER
    values = {m.description: m.value for m in findings.measurements}
    ref_outputs = analysis.reference_outputs(volume, {"liver": ref})
    liver_ml = values["Liver volume"]
    hits = []
    for t in tumours:
        hit = [p for p in findings.points if t[tuple(int(round(c)) for c in p.center_zyx)]]
        hits.append(bool(hit))
    return {
        "case": row["case_id"],
        "seconds_run": round(seconds, 1),
        "liver_dice": round(float(2 * (pred & ref).sum() / (pred.sum() + ref.sum())), 4),
        "liver_volume_ml": liver_ml,
        "liver_volume_ml_reference": float(row["liver_ml"]),
        "liver_volume_error_percent": round(100 * (liver_ml - float(row["liver_ml"])) / float(row["liver_ml"]), 2),
        "liver_mean_hu": values["Mean liver parenchymal attenuation"],
        "liver_mean_hu_reference_parenchyma": float(row["parenchyma_hu_mean"]),
        "liver_mean_hu_same_rule_in_manual_mask": round(ref_outputs.get("liver_mean_hu", float("nan")), 1),
        "spleen_volume_ml": float((labels == SPLEEN).sum() * volume.ml_per_voxel),
        "contrast_phase": next(q.value.meaning for q in findings.qualitative if q.name.value == "CTPHASE"),
        "lesion_candidates": len(findings.points),
        "tumours_hit_by_a_candidate": hits,
        "notes": findings.notes,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description="the production-path check of the newest liver_spleen_ct_seg in models/")
    ap.add_argument("--results", type=Path, default=HERE / "results", help="the model version's results folder (results/v2 for 0.2.0)")
    results = ap.parse_args().results
    base = os.environ.get("RADPILOT_SHARED_DATA")
    root = (Path(base) if base else REPO.parent / "shared" / "data") / "liver-ct-ircad"
    result = evaluate(root)
    out = results / "ircad.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "notes"}, indent=2))


if __name__ == "__main__":
    main()
