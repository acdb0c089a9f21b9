"""Time per study and peak memory of the liver_ct analysis on CPU (target: under 30 s for a 200-slice abdomen on 2 cores).

Cases: the real 3D-IRCADb series (119 slices of 512 x 512, 1.6 mm; read from the shared data folder) and a
200-slice version of it (linear interpolation along z to 0.95 mm, the issue's 200-slice case).  For each, in a
fresh process (2 intra-op threads for the model, the analysis' default), after one warm-up: median and p90 of
``check_input + run`` over ``--repeats`` runs, the liver volume found (so a fast wrong answer shows) and the
process's peak resident set size.  No accelerator is lent to this project's sessions, so no GPU figure.
The cores are shared with other work: the JSON records the load average next to the times.
Usage: ``.venv/bin/python benchmarks/liver_ct_speed.py [--repeats N]``; writes benchmarks/results/liver_ct_speed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

TARGET_S = 30.0


def child(n_slices: int, repeats: int) -> dict[str, Any]:
    import dataclasses
    import resource

    import numpy as np

    from radpilot.analyses.liver_ct.analysis import LiverCT
    from radpilot.dicom.volume import volume_from_files

    base = os.environ.get("RADPILOT_SHARED_DATA")
    root = (Path(base) if base else REPO.parent / "shared" / "data") / "liver-ct-ircad" / "IRCADB1-17" / "dicom"
    volume = volume_from_files(sorted(root.glob("*.dcm")))
    if n_slices != volume.num_slices:
        z_new = np.linspace(0, volume.num_slices - 1, n_slices)
        lo = np.floor(z_new).astype(int)
        hi = np.minimum(lo + 1, volume.num_slices - 1)
        w = (z_new - lo)[:, None, None].astype(np.float32)
        voxels = volume.voxels[lo] * (1 - w) + volume.voxels[hi] * w
        spacing = volume.spacing_zyx[0] * (volume.num_slices - 1) / (n_slices - 1)
        volume = dataclasses.replace(
            volume, voxels=voxels.astype(np.float32), spacing_zyx=(spacing, *volume.spacing_zyx[1:]), sop_instance_uids=()
        )
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    analysis = LiverCT()
    analysis.run(volume)  # warm-up: model load
    times = []
    liver_ml = float("nan")
    for _ in range(repeats):
        t0 = time.perf_counter()
        analysis.check_input(volume)
        findings = analysis.run(volume)
        times.append(time.perf_counter() - t0)
        liver_ml = next(m.value for m in findings.measurements if m.description == "Liver volume")
    return {
        "n_slices": n_slices,
        "seconds_median": float(np.median(times)),
        "seconds_p90": float(np.percentile(times, 90)),
        "runs": times,
        "liver_volume_ml": liver_ml,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_after_reading_mb": rss_before,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--child", type=int, default=0)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.repeats)))
        return
    results = []
    for n in (119, 200):
        load = os.getloadavg()
        out = subprocess.run(
            [sys.executable, __file__, "--child", str(n), "--repeats", str(args.repeats)], capture_output=True, text=True, check=True
        )
        result = json.loads(out.stdout.strip().splitlines()[-1])
        result["load_average_at_start"] = load
        results.append(result)
        print(json.dumps(result))
    report = {
        "benchmark": "liver_ct_speed",
        "target_s_200_slices": TARGET_S,
        "ratio_200_slices_to_target": results[-1]["seconds_median"] / TARGET_S,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "results": results,
    }
    path = REPO / "benchmarks" / "results" / "liver_ct_speed.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
