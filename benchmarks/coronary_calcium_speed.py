"""Speed and peak memory of the coronary_calcium analysis on one CPU core.

For a digital thorax phantom CT (radpilot/analyses/coronary_calcium/phantom.py) of 60 slices of
512 x 512 at 3 mm (the issue's target: under 5 s on one core) and of 120 slices at 1.5 mm, each in
a fresh process pinned to one core with one BLAS/OpenMP thread, it measures (median and p90 of
repeated runs after one warm-up):

* ``analysis``: ``check_input`` + ``run`` on the Volume (heart region, lesions, scores, findings);
* ``read_volume``: the DICOM datasets (in memory) into a Volume;
* ``encode_seg_sr_key_image``: the pipeline's encoders on the findings;

and the process's peak resident set size (``ru_maxrss``) after the runs and right after the
imports and the phantom series were built, so the difference is what reading and analysing add.
The ratio of the 3 mm median to the 5 s target is recorded side by side.  The phantom's
Agatston score against its exact truth is recorded too, so a fast wrong answer shows.

The machine's cores are shared with other work, so times vary between runs; the JSON records the
machine. Usage: ``.venv/bin/python benchmarks/coronary_calcium_speed.py [--repeats N]``.
Writes benchmarks/results/coronary_calcium_speed.json.
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

TARGET_S = 5.0
CASES = [
    {"name": "60 slices 512 x 512, 3 mm, 0.7 mm pixels (target case)", "n_slices": 60, "increment_mm": 3.0},
    {"name": "120 slices 512 x 512, 1.5 mm, 0.7 mm pixels", "n_slices": 120, "increment_mm": 1.5},
]
ONE_THREAD = {name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}


def child(n_slices: int, increment_mm: float, repeats: int) -> dict[str, Any]:
    """In a fresh process pinned to one core: build the phantom series, time reading, analysis and encoding."""
    import resource

    import numpy as np

    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    from radpilot.analyses.coronary_calcium import ANALYSIS
    from radpilot.analyses.coronary_calcium.phantom import make_phantom, phantom_datasets
    from radpilot.dicom.volume import volume_from_datasets
    from radpilot.engine.pipeline import encode_results

    phantom = make_phantom(n_slices=n_slices, rows=512, columns=512, pixel_mm=0.7, increment_mm=increment_mm, noise_hu=15.0)
    datasets = phantom_datasets(phantom)
    truth = phantom.truth()["agatston_total"]
    del phantom
    rss_before_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    times: dict[str, list[float]] = {"read_volume": [], "analysis": [], "encode_seg_sr_key_image": []}
    agatston = float("nan")
    for attempt in range(repeats + 1):  # the first run warms up and is not counted
        started = time.perf_counter()
        volume = volume_from_datasets(datasets)
        t_read = time.perf_counter() - started
        started = time.perf_counter()
        ANALYSIS.check_input(volume)
        findings = ANALYSIS.run(volume)
        t_analysis = time.perf_counter() - started
        started = time.perf_counter()
        encode_results(ANALYSIS, findings, volume, datasets, uid_seed=f"bench-{attempt}")
        t_encode = time.perf_counter() - started
        agatston = next(m.value for m in findings.measurements if m.name.value == "450360000" and m.finding_site.value == "41801008")
        if attempt:
            times["read_volume"].append(t_read)
            times["analysis"].append(t_analysis)
            times["encode_seg_sr_key_image"].append(t_encode)
    return {
        "seconds": {
            key: {"median": round(float(np.median(v)), 4), "p90": round(float(np.percentile(v, 90)), 4), "runs": len(v)}
            for key, v in times.items()
        },
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1),
        "rss_after_imports_and_series_built_mb": round(rss_before_mb, 1),
        "agatston": agatston,
        "agatston_truth": round(truth, 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--child", nargs=2, metavar=("N_SLICES", "INCREMENT_MM"))
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(int(args.child[0]), float(args.child[1]), args.repeats)))
        return 0
    results = []
    for case in CASES:
        out = subprocess.run(
            [sys.executable, __file__, "--repeats", str(args.repeats), "--child", str(case["n_slices"]), str(case["increment_mm"])],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, **ONE_THREAD},
        )
        results.append({**case, **json.loads(out.stdout.strip().splitlines()[-1])})
    target = results[0]["seconds"]["analysis"]["median"]
    report = {
        "benchmark": "coronary_calcium_speed",
        "target": f"analysis of a 60-slice 3 mm CT under {TARGET_S:g} s on one core",
        "target_case_median_s": target,
        "target_ratio": round(target / TARGET_S, 3),
        "met": target < TARGET_S,
        "cases": results,
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()},
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    text = json.dumps(report, indent=2)
    print(text)
    out_dir = REPO / "benchmarks" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "coronary_calcium_speed.json").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
