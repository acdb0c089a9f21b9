"""Write ACDC cases (shared/data/cmr-acdc) as DICOM MR short-axis cine series, to test the production path.

ACDC here holds two phases per patient (ED, ES), uint8 intensities, no spacing. Each patient
becomes one MR Image Storage series of ``slices x 2`` single-frame instances (phase 1 = ED at
trigger time 0 ms, phase 2 = ES at 350 ms, CardiacNumberOfImages 2) with NOMINAL geometry:
1.5 mm pixels (the model's nominal pixel size; ACDC's scanners wrote about 1.37-1.68 mm), 10 mm
slice spacing, a short-axis orientation (radpilot/analyses/cardiac_mr_function/phantom.py),
intensities x 4 as unsigned 16-bit. The reference labels go beside the series as
``labels_ED.npy`` / ``labels_ES.npy`` ((slices, rows, columns), the DICOM grid) with ``case.json``
(group, reference EF). Volumes in mL from such a series are nominal, not the patient's; EF is
spacing-free. Never commit the output: ACDC's terms apply (research use, no redistribution).

    .venv/bin/python scripts/acdc_to_dicom.py --out /tmp/acdc-dicom patient001 patient061
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from radpilot.analyses.cardiac_mr_function.phantom import cine_datasets  # noqa: E402

PIXEL_MM, SLICE_SPACING_MM, SLICE_THICKNESS_MM = 1.5, 10.0, 8.0
ES_TRIGGER_MS = 350.0


def acdc_root() -> Path:
    shared = os.environ.get("RADPILOT_SHARED_DATA")
    return (Path(shared) if shared else REPO.parent / "shared" / "data") / "cmr-acdc"


def load_case(root: Path, patient: str, phase: str) -> tuple[np.ndarray, np.ndarray]:
    """(image, labels) as (slices, rows, columns): NIfTI [i, j, k] -> [k, j, i] (the README's h5 layout)."""
    import nibabel  # noqa: PLC0415 - reading the reference NIfTI only

    image = np.asarray(nibabel.load(root / "images" / f"{patient}_{phase}.nii.gz").dataobj).transpose(2, 1, 0)
    labels = np.asarray(nibabel.load(root / "labels" / f"{patient}_{phase}.nii.gz").dataobj).transpose(2, 1, 0)
    return np.ascontiguousarray(image), np.ascontiguousarray(labels, dtype=np.uint8)


def write_patient(root: Path, patient: str, out: Path) -> Path:
    (ed, ed_lab), (es, es_lab) = (load_case(root, patient, p) for p in ("ED", "ES"))
    frames = np.stack([ed, es]).astype(np.float32) * 4.0
    datasets = cine_datasets(
        frames,
        pixel_mm=PIXEL_MM,
        slice_spacing_mm=SLICE_SPACING_MM,
        slice_thickness_mm=SLICE_THICKNESS_MM,
        trigger_times_ms=(0.0, ES_TRIGGER_MS),
        patient_id=f"ACDC-{patient}",
        series_description="SA CINE (ACDC ED+ES, nominal geometry)",
    )
    folder = out / patient
    (folder / "dicom").mkdir(parents=True, exist_ok=True)
    for n, ds in enumerate(datasets):
        ds.save_as(folder / "dicom" / f"MR{n:04d}.dcm", enforce_file_format=True)
    np.save(folder / "labels_ED.npy", ed_lab)
    np.save(folder / "labels_ES.npy", es_lab)
    with open(root / "cases.csv", newline="") as handle:
        row = next(r for r in csv.DictReader(handle) if r["case_id"] == f"{patient}_ED")
    info = {"patient": patient, "group": row["group"], "lv_ef": float(row["lv_ef"]), "rv_ef": float(row["rv_ef"]), "split": row["split"]}
    (folder / "case.json").write_text(json.dumps(info) + "\n")
    return folder


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder to write (outside the repository)")
    parser.add_argument("patients", nargs="+")
    args = parser.parse_args()
    for patient in args.patients:
        print(write_patient(acdc_root(), patient, args.out), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
