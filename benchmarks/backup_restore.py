"""Backup and restore: time and throughput for N instances, beside a plain copy of the same data folder.

An archive of N synthetic CT instances (512x512 int16, about 0.5 MB each, stored through the
archive as C-STORE would) is backed up (copy, and hard links), verified and restored, in
alternating rounds with ``shutil.copytree`` of the whole data folder as the floor: what any copy
of these bytes costs on this disk (without and with a sync to disk, which a backup must do). Medians per operation, instances/s, MB/s and the ratio to the
plain copy.

Usage: .venv/bin/python benchmarks/backup_restore.py [--instances 1000] [--rounds 3]
Writes benchmarks/results/backup_restore.json.
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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from radpilot.archive import Archive  # noqa: E402
from radpilot.archive.backup import create_backup, restore_backup, verify_backup  # noqa: E402
from radpilot.config import Settings  # noqa: E402
from tests.factories import make_ct_series, to_part10_bytes  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"


def build_archive(data_dir: Path, instances: int) -> int:
    settings = Settings(data_dir=data_dir, durability="none")
    archive = Archive.from_settings(settings)
    total = 0
    per_series = 100
    for start in range(0, instances, per_series):
        for ds in make_ct_series(min(per_series, instances - start), rows=512, columns=512):
            data = to_part10_bytes(ds)
            total += len(data)
            assert archive.store_file_bytes(data).outcome.accepted
    archive.close()
    return total


def timed(action) -> float:  # noqa: ANN001 - a callable
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--instances", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="radpilot-bench-backup-"))
    try:
        data_dir = work / "data"
        started = time.perf_counter()
        total_bytes = build_archive(data_dir, args.instances)
        print(
            f"archive of {args.instances} instances, {total_bytes / 1e6:.0f} MB built in {time.perf_counter() - started:.1f} s", flush=True
        )
        settings = Settings(data_dir=data_dir)
        times: dict[str, list[float]] = {
            "plain_copytree": [],
            "plain_copytree_sync": [],
            "backup_copy": [],
            "backup_link": [],
            "verify": [],
            "restore": [],
        }
        for round_number in range(args.rounds):
            out = work / f"round{round_number}"
            times["plain_copytree"].append(timed(lambda out=out: shutil.copytree(data_dir, out / "plain")))
            times["plain_copytree_sync"].append(timed(lambda out=out: (shutil.copytree(data_dir, out / "plain_synced"), os.sync())))
            times["backup_copy"].append(timed(lambda out=out: create_backup(settings, out / "backup")))
            times["backup_link"].append(timed(lambda out=out: create_backup(settings, out / "linked", link=True)))
            times["verify"].append(timed(lambda out=out: verify_backup(out / "backup")))

            def restore(out: Path = out) -> None:
                _, engine = restore_backup(out / "backup", out / "restored")
                engine.dispose()

            times["restore"].append(timed(restore))
            shutil.rmtree(out)
            print(f"round {round_number + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()), flush=True)
        floor = statistics.median(times["plain_copytree"])
        synced_floor = statistics.median(times["plain_copytree_sync"])
        summary = {}
        for name, values in times.items():
            median = statistics.median(values)
            summary[name] = {
                "median_s": round(median, 3),
                "instances_per_s": round(args.instances / median, 1),
                "mb_per_s": round(total_bytes / 1e6 / median, 1),
                "ratio_to_plain_copy": round(median / floor, 2),
                "ratio_to_plain_copy_synced": round(median / synced_floor, 2),
                "runs_s": [round(v, 3) for v in values],
            }
            print(
                f"{name:20s} median {median:7.2f} s  {args.instances / median:8.1f} instances/s  "
                f"{total_bytes / 1e6 / median:7.1f} MB/s  x{median / floor:.2f} of a plain copy, x{median / synced_floor:.2f} of a synced one"
            )
        result = {
            "benchmark": "backup_restore",
            "instances": args.instances,
            "bytes": total_bytes,
            "rounds": args.rounds,
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load_average": os.getloadavg()},
            "results": summary,
        }
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "backup_restore.json").write_text(json.dumps(result, indent=2))
        print(f"wrote {RESULTS / 'backup_restore.json'}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
