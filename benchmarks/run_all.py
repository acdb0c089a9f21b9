"""Run every benchmark in turn; each prints its figures and writes benchmarks/results/<name>.json."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = [
    "dicom_node.py",
    "ingest.py",
    "archive_store.py",
    "ohif_first_image.py",
    "auth_overhead.py",
    "engine_e2e.py",
    "lung_ct_accuracy.py",
    "chest_xray_speed.py",
    "chest_xray_accuracy.py",
    "coronary_calcium_speed.py",
    "chest_xray_quality_check.py",
    "fuzz_ingest.py",
    "time_to_sign.py",
]


def main() -> int:
    failed = []
    for name in BENCHMARKS:
        print(f"== {name}", flush=True)
        if subprocess.run([sys.executable, str(HERE / name)]).returncode != 0:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
