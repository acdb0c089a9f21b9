"""Write the coronary calcium phantom validation set in the workbench's ``dicom-series`` layout.

Each case is a digital thorax phantom (radpilot/analyses/coronary_calcium/phantom.py) as a CT
series, with its calcium inserts as a NIfTI label mask (1 = calcium) and a ``cases.csv`` holding
the exact truth: total and per-artery Agatston (3 mm equivalent), volume score, CAC-DRS category
and the number of vessels with calcium.  The 16 cases cross slice increment (3 mm, 1.5 mm),
noise (10, 20 HU) and insert sets chosen so that every CAC-DRS category occurs (A0 with no
insert, A1, A2, A3); every case has the bone and aortic decoys.

Register and validate it (the folder must stay where it was registered: its hash is pinned)::

    .venv/bin/python scripts/make_calcium_phantoms.py --out /tmp/ct-calcium-phantom
    radpilot datasets add /tmp/ct-calcium-phantom --name ct-calcium-phantom --layout dicom-series \\
        --analysis coronary_calcium --reference-kind phantom --development-use coronary_calcium \\
        --reference "digital phantom, exact truth from the rasterised inserts" --licence "generated, no restriction" \\
        --option cases_file=cases.csv --option case_id_column=case_id --option 'series_dir="{case}/dicom"' \\
        --option 'mask_file="{case}/calcium_mask.nii.gz"' --option 'mask_labels={1: coronary_calcium}' \\
        --option 'reference_values={agatston_total: agatston_total, volume_score_mm3: volume_score_mm3, agatston_lm: agatston_lm, \\
                  agatston_lad: agatston_lad, agatston_lcx: agatston_lcx, agatston_rca: agatston_rca, \\
                  cac_drs_category: cac_drs_category, vessels_with_calcium: vessels_with_calcium}' \\
        --option 'attributes={increment_mm: increment_mm, noise_hu: noise_hu}'
    radpilot validate coronary_calcium --dataset ct-calcium-phantom
    radpilot models check coronary_calcium
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from radpilot.analyses.coronary_calcium.phantom import write_validation_set  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder to write (outside the repository)")
    parser.add_argument("--rows", type=int, default=320, help="rows = columns of each slice")
    parser.add_argument("--pixel-mm", type=float, default=0.9)
    args = parser.parse_args()
    for record in write_validation_set(args.out, rows=args.rows, pixel_mm=args.pixel_mm):
        print(record["case_id"], "Agatston", record["agatston_total"], "CAC-DRS", record["cac_drs_category"], flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
