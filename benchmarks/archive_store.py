"""Time to store one instance in the archive, in-process: the metadata fast path against the pydicom path, side by side.

``Archive.store_file_bytes`` is what every C-STORE and STOW-RS instance costs before it is
acknowledged: parsing and checking, building the WADO-RS metadata, writing and syncing the
file, and indexing it. This benchmark stores the same real CT slices (../shared/data/ct-lung,
written as explicit VR little endian, as a scanner sends them) into fresh archives, with
radpilot.dicom.fast_metadata answering (the shipped path) and with it turned off (the pydicom
path every instance took before), alternating between the two run by run. It prints and saves
the medians per instance (wall and CPU) and their ratio, and the machine's load.
``--transfer-syntax implicit`` writes the slices with implicit VR little endian instead, the
default transfer syntax many modalities send.

Usage: .venv/bin/python benchmarks/archive_store.py [--instances 256] [--runs 4] [--durability file] [--transfer-syntax explicit]
Writes benchmarks/results/archive_store.json (archive_store_implicit.json for implicit VR).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from dicom_node import make_instances  # noqa: E402

from radpilot.archive import Archive, StoreOutcome  # noqa: E402
from radpilot.dicom import part10  # noqa: E402
from tests.factories import as_implicit_vr  # noqa: E402
from tests.helpers import shared_data_path  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"


def store_all(files: list[bytes], folder: Path, durability: str, fast_path: bool) -> dict[str, float]:
    """Store every file into a fresh archive; the mean wall and CPU milliseconds per instance."""
    archive = Archive(folder / "dicom", f"sqlite:///{folder / 'index.sqlite3'}", durability=durability)
    off = mock.patch.object(part10, "read_plain_instance", lambda *args: None)
    try:
        if not fast_path:
            off.start()
        wall, cpu = time.perf_counter(), time.process_time()
        for data in files:
            result = archive.store_file_bytes(data, source_ae_title="BENCH")
            if result.outcome is not StoreOutcome.STORED:
                raise RuntimeError(f"not stored: {result.message}")
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    finally:
        if not fast_path:
            off.stop()
        archive.close()
    return {"wall_ms": 1000 * wall / len(files), "cpu_ms": 1000 * cpu / len(files)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instances", type=int, default=256)
    parser.add_argument("--runs", type=int, default=4, help="runs per path, alternating")
    parser.add_argument("--durability", default="file", choices=("full", "file", "none"))
    parser.add_argument("--transfer-syntax", default="explicit", choices=("explicit", "implicit"), help="VR encoding of the CT slices")
    args = parser.parse_args()
    source = sorted((shared_data_path() / "ct-lung" / "LUNGCT-002" / "dicom").glob("*.dcm"))
    if not source:
        sys.exit(f"no CT files under {shared_data_path() / 'ct-lung'}; set RADPILOT_SHARED_DATA")
    work = Path(tempfile.mkdtemp(prefix="radpilot-archive-bench-"))
    make_instances(source, args.instances, work / "instances", "ARCHIVE")
    files = [path.read_bytes() for path in sorted((work / "instances").glob("*.dcm"))]
    if args.transfer_syntax == "implicit":
        files = [as_implicit_vr(data) for data in files]
    load_before = os.getloadavg()
    runs: dict[str, list[dict[str, float]]] = {"fast_path": [], "pydicom_path": []}
    try:
        for run in range(args.runs):
            order = ("fast_path", "pydicom_path") if run % 2 == 0 else ("pydicom_path", "fast_path")
            for name in order:
                folder = work / f"{name}-{run}"
                runs[name].append(store_all(files, folder, args.durability, fast_path=name == "fast_path"))
                print(f"run {run} {name:12s}: {runs[name][-1]['wall_ms']:.2f} ms wall, {runs[name][-1]['cpu_ms']:.2f} ms CPU per instance")
                shutil.rmtree(folder)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    medians = {
        name: {key: round(statistics.median(r[key] for r in values), 2) for key in ("wall_ms", "cpu_ms")} for name, values in runs.items()
    }
    summary = {
        "benchmark": "archive_store",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "instances": args.instances,
        "durability": args.durability,
        "transfer_syntax": args.transfer_syntax,
        "runs": runs,
        "median_ms_per_instance": medians,
        "pydicom_over_fast_wall": round(medians["pydicom_path"]["wall_ms"] / medians["fast_path"]["wall_ms"], 2),
        "pydicom_over_fast_cpu": round(medians["pydicom_path"]["cpu_ms"] / medians["fast_path"]["cpu_ms"], 2),
    }
    print(
        f"median per instance: fast path {medians['fast_path']['wall_ms']} ms wall / {medians['fast_path']['cpu_ms']} ms CPU, "
        f"pydicom path {medians['pydicom_path']['wall_ms']} / {medians['pydicom_path']['cpu_ms']} "
        f"(x{summary['pydicom_over_fast_wall']} wall, x{summary['pydicom_over_fast_cpu']} CPU)"
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "archive_store.json" if args.transfer_syntax == "explicit" else "archive_store_implicit.json"
    (RESULTS / name).write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
