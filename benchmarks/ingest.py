"""C-STORE ingest of RadPilot against Orthanc and dcmtk's storescp, side by side in one run (issue 20, point 1).

Three scenarios, each sent by dcmtk's storescu (TCP_NODELAY=1) with fresh UIDs every run:

* ``ct_1``: real 512x512 CT instances (../shared/data/ct-lung) over one association;
* ``ct_4``: the same number split over 4 associations sent at the same time (4 storescu processes);
* ``dx``: 3000x2500 16-bit DX instances (synthetic pixels: ingest does not look at them) over one association.

Peers:

* ``radpilot``: `radpilot serve` (SQLite index, durability=file: the file is fdatasync'ed before it is
  acknowledged, analysis off), its main DIMSE port (pynetdicom);
* ``radpilot_store``: a second `radpilot serve`, the same settings, sent to its store port
  (``dicom_store_port``: C-STORE received on dcmtk's network layer, the same archive path);
* ``orthanc``: Orthanc (Debian package) with its defaults (SyncStorageArea on: one fsync per file);
* ``storescp``: dcmtk's storescp with --fork, writing files without index or fsync: the practical ceiling.

For each scenario the peers run in an order that alternates between runs; the medians of instances/s and
the ratios RadPilot/Orthanc and RadPilot/storescp are printed and saved with the machine's load average.
Each run also records the CPU time the receiving process (with its children) spent per instance, read from
/proc: on a machine with few cores, ingest with parallel senders is bound by CPU rather than by the disk.

Usage: .venv/bin/python benchmarks/ingest.py [--instances 512] [--dx-instances 24] [--runs 3] [--transfer-syntax implicit]
Writes benchmarks/results/ingest.json (ingest_implicit.json with ``--transfer-syntax implicit``: the CT files are
written as Implicit VR Little Endian and storescu sends them as stored).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from pydicom.uid import DigitalXRayImageStorageForPresentation, generate_uid

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from dicom_node import make_instances, start_radpilot, storescu  # noqa: E402

from tests.factories import make_ct_dataset, to_part10_bytes  # noqa: E402
from tests.fixtures.orthanc import start_orthanc  # noqa: E402
from tests.helpers import free_port, shared_data_path, subprocess_env  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
PARALLEL_ASSOCIATIONS = 4
DX_ROWS, DX_COLUMNS = 2500, 3000


def make_dx_instances(count: int, folder: Path, tag: str) -> int:
    """``count`` 3000x2500 16-bit DX instances of one new study, Explicit VR Little Endian; return their bytes."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(len(tag))
    study, series = generate_uid(), generate_uid()
    total = 0
    for index in range(count):
        ds = make_ct_dataset(modality="DX", rows=DX_ROWS, columns=DX_COLUMNS)
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = DigitalXRayImageStorageForPresentation
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.PatientID, ds.InstanceNumber = f"BENCH-{tag}", index + 1
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 14, 13, 0
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.PixelData = rng.integers(0, 2**14, size=(DX_ROWS, DX_COLUMNS), dtype=np.uint16).tobytes()
        path = folder / f"{index:05d}.dcm"
        path.write_bytes(to_part10_bytes(ds))
        total += path.stat().st_size
    return total


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its descendants, alive or exited (children's times from /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        children = " ".join(path.read_text() for path in Path(f"/proc/{pid}/task").glob("*/children")).split()
    except OSError:
        return 0.0  # the process ended meanwhile: its time is in its parent's
    own = sum(int(value) for value in fields[11:15]) / ticks  # utime, stime, cutime, cstime
    return own + sum(tree_cpu_seconds(int(child)) for child in children)


def split_into(folder: Path, parts: int) -> list[Path]:
    """Move the files of ``folder`` round-robin into ``parts`` sub-folders (one per association)."""
    targets = [folder / f"part{i}" for i in range(parts)]
    for target in targets:
        target.mkdir()
    for index, path in enumerate(sorted(folder.glob("*.dcm"))):
        path.rename(targets[index % parts] / path.name)
    return targets


def send_parallel(port: int, called_ae: str, folders: list[Path]) -> float:
    started = time.perf_counter()
    processes = [
        subprocess.Popen(
            ["storescu", "-aet", "BENCH", "-aec", called_ae, "127.0.0.1", str(port), "+sd", "+r", str(folder)],
            env=subprocess_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for folder in folders
    ]
    failures = []
    for process in processes:
        _, stderr = process.communicate(timeout=900)
        if process.returncode != 0:
            failures.append(stderr.decode(errors="replace")[-1000:])
    elapsed = time.perf_counter() - started
    if failures:
        raise RuntimeError(f"storescu into {called_ae} failed: {failures[0]}")
    return elapsed


def start_storescp(folder: Path) -> tuple[subprocess.Popen, int]:
    folder.mkdir(parents=True)
    port = free_port()
    process = subprocess.Popen(
        ["storescp", "--fork", "-od", str(folder), str(port)], env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    time.sleep(1.0)
    if process.poll() is not None:
        raise RuntimeError("storescp did not start")
    return process, port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instances", type=int, default=512, help="CT instances per run (ct_1 and ct_4)")
    parser.add_argument("--dx-instances", type=int, default=24, help="DX instances per run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--scenarios", default="ct_1,ct_4,dx")
    parser.add_argument("--transfer-syntax", choices=("explicit", "implicit"), default="explicit", help="of the CT files sent")
    args = parser.parse_args()
    implicit = args.transfer_syntax == "implicit"
    source = sorted((shared_data_path() / "ct-lung" / "LUNGCT-002" / "dicom").glob("*.dcm"))
    if not source:
        sys.exit(f"no CT files under {shared_data_path() / 'ct-lung'}; set RADPILOT_SHARED_DATA")
    scenarios = [s for s in args.scenarios.split(",") if s]

    work = Path(tempfile.mkdtemp(prefix="radpilot-ingest-bench-"))
    orthanc = start_orthanc(work / "orthanc")
    radpilot, rp_port, _ = start_radpilot(work / "radpilot-data", "file")
    store_port = free_port()
    radpilot_store, _, _ = start_radpilot(work / "radpilot-store-data", "file", store_port=store_port)
    storescp, scp_port = start_storescp(work / "storescp-data")
    peers = {
        "radpilot": (rp_port, "RADPILOT"),
        "radpilot_store": (store_port, "RADPILOT"),
        "orthanc": (orthanc.dicom_port, orthanc.ae_title),
        "storescp": (scp_port, "STORESCP"),
    }
    assert orthanc.process is not None
    pids = {"radpilot": radpilot.pid, "radpilot_store": radpilot_store.pid, "orthanc": orthanc.process.pid, "storescp": storescp.pid}
    runs: dict[str, dict[str, list[dict]]] = {scenario: {peer: [] for peer in peers} for scenario in scenarios}
    load_before = os.getloadavg()
    try:
        for run in range(args.runs):
            for scenario in scenarios:
                order = list(peers) if (run + scenarios.index(scenario)) % 2 == 0 else list(reversed(peers))
                for peer in order:
                    folder = work / f"{scenario}-{peer}-{run}"
                    if scenario == "dx":
                        count, size = args.dx_instances, make_dx_instances(args.dx_instances, folder, f"dx{peer}{run}")
                    else:
                        count, size = (
                            args.instances,
                            make_instances(source, args.instances, folder, f"{scenario}{peer}{run}", implicit=implicit),
                        )
                    port, ae = peers[peer]
                    cpu_before = tree_cpu_seconds(pids[peer])
                    if scenario == "ct_4":
                        seconds = send_parallel(port, ae, split_into(folder, PARALLEL_ASSOCIATIONS))
                    else:
                        seconds = storescu(port, ae, folder)
                    time.sleep(0.5)  # storescp --fork reaps its children on its next turn
                    cpu_ms = (tree_cpu_seconds(pids[peer]) - cpu_before) * 1000 / count
                    runs[scenario][peer].append(
                        {
                            "seconds": round(seconds, 3),
                            "instances_per_s": round(count / seconds, 1),
                            "mb_per_s": round(size / 1e6 / seconds, 1),
                            "receiver_cpu_ms_per_instance": round(cpu_ms, 2),
                        }
                    )
                    print(
                        f"run {run} {scenario:5s} {peer:9s}: {count} instances in {seconds:.2f} s ({count / seconds:.1f}/s), "
                        f"receiver CPU {cpu_ms:.2f} ms/instance"
                    )
                    shutil.rmtree(folder)
            shutil.rmtree(work / "storescp-data", ignore_errors=True)
            (work / "storescp-data").mkdir()
    finally:
        for node in (radpilot, radpilot_store):
            node.terminate()
            node.wait(timeout=30)
        storescp.terminate()
        storescp.wait(timeout=30)
        orthanc.stop()
    medians = {
        scenario: {peer: statistics.median(r["instances_per_s"] for r in values) for peer, values in by_peer.items()}
        for scenario, by_peer in runs.items()
    }
    cpu_medians = {
        scenario: {peer: statistics.median(r["receiver_cpu_ms_per_instance"] for r in values) for peer, values in by_peer.items()}
        for scenario, by_peer in runs.items()
    }
    ratios = {
        scenario: {
            "radpilot_over_orthanc": round(m["radpilot"] / m["orthanc"], 3),
            "radpilot_over_storescp": round(m["radpilot"] / m["storescp"], 3),
            "radpilot_store_over_orthanc": round(m["radpilot_store"] / m["orthanc"], 3),
            "radpilot_store_over_storescp": round(m["radpilot_store"] / m["storescp"], 3),
            "orthanc_over_storescp": round(m["orthanc"] / m["storescp"], 3),
        }
        for scenario, m in medians.items()
    }
    summary = {
        "benchmark": "ingest",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "instances": {"ct": args.instances, "dx": args.dx_instances},
        "ct_transfer_syntax": args.transfer_syntax,
        "runs": runs,
        "median_instances_per_s": medians,
        "ratios": ratios,
        "median_receiver_cpu_ms_per_instance": cpu_medians,
        "targets": {
            "radpilot_over_orthanc": ">= 1.0",
            "radpilot_over_storescp": ">= 0.6",
            "radpilot_store_over_orthanc": ">= 1.0",
            "radpilot_store_over_storescp": ">= 0.6",
        },
        "notes": "radpilot: durability=file, SQLite index, acknowledged after fdatasync and index; orthanc: defaults "
        "(SyncStorageArea on); storescp --fork: no index, no fsync. All with TCP_NODELAY=1.",
    }
    for scenario in scenarios:
        print(
            f"{scenario}: "
            + ", ".join(f"{peer} {value:.1f}/s" for peer, value in medians[scenario].items())
            + f" | radpilot/orthanc {ratios[scenario]['radpilot_over_orthanc']}, radpilot/storescp {ratios[scenario]['radpilot_over_storescp']}"
            + f" | store port/orthanc {ratios[scenario]['radpilot_store_over_orthanc']},"
            + f" store port/storescp {ratios[scenario]['radpilot_store_over_storescp']}"
            + " | receiver CPU ms/instance "
            + ", ".join(f"{peer} {value:.2f}" for peer, value in cpu_medians[scenario].items())
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "ingest.json" if args.transfer_syntax == "explicit" else f"ingest_{args.transfer_syntax}.json"
    (RESULTS / name).write_text(json.dumps(summary, indent=2))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
