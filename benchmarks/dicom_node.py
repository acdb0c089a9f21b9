"""Benchmark RadPilot's DICOM node against Orthanc, side by side in one run.

1. C-STORE ingest: dcmtk's storescu sends the same number of real CT instances
   (512x512, from ../shared/data/ct-lung, re-identified with fresh UIDs for
   every run so each run stores new instances) into RadPilot (`radpilot serve`,
   its own process, SQLite, fsync on) and into Orthanc (Debian package, with
   its DICOMweb plugin).  Runs alternate between the two; instances/s, MB/s and
   the ratio RadPilot/Orthanc are reported as medians.
2. DICOMweb latency on the same stored data: QIDO-RS study search and WADO-RS
   series metadata, repeated, median and p90 per peer. RadPilot's series metadata
   is measured twice: as served (kept at ingest in the index) and as it was served
   before metadata was kept, read from every file (the kept rows are deleted before
   each such request), so before and after are measured side by side in one run.

Every dcmtk peer and Orthanc run with TCP_NODELAY=1 (see ARCHITECTURE.md).
Usage: .venv/bin/python benchmarks/dicom_node.py [--instances 512] [--runs 3]
Writes benchmarks/results/dicom_node.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pydicom
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.fixtures.orthanc import start_orthanc  # noqa: E402
from tests.helpers import api_token, free_port, shared_data_path, subprocess_env  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"


def make_instances(source_files: list[Path], count: int, folder: Path, tag: str, *, implicit: bool = False) -> int:
    """Write ``count`` CT instances with new UIDs (one new study and series) as Explicit VR LE (or Implicit VR LE,
    the default transfer syntax many modalities send); return bytes."""
    folder.mkdir(parents=True)
    study, series = generate_uid(), generate_uid()
    total = 0
    for index in range(count):
        ds = pydicom.dcmread(source_files[index % len(source_files)])
        ds.decompress() if ds.file_meta.TransferSyntaxUID.is_compressed else None
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.PatientID, ds.PatientName, ds.InstanceNumber = f"BENCH-{tag}", f"BENCH^{tag}", index + 1
        path = folder / f"{index:05d}.dcm"
        ds.save_as(path, implicit_vr=implicit, little_endian=True, enforce_file_format=True)
        total += path.stat().st_size
    return total


def storescu(port: int, called_ae: str, folder: Path) -> float:
    started = time.perf_counter()
    process = subprocess.run(
        ["storescu", "-aet", "BENCH", "-aec", called_ae, "127.0.0.1", str(port), "+sd", "+r", str(folder)],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    elapsed = time.perf_counter() - started
    if process.returncode != 0:
        raise RuntimeError(f"storescu into {called_ae} failed: {process.stderr[-2000:]}")
    return elapsed


def start_radpilot(workdir: Path, durability: str, store_port: int | None = None) -> tuple[subprocess.Popen, int, int]:
    """`radpilot serve` with analysis off; ``store_port`` also opens the dcmtk store port (dicom_store_port) there."""
    dicom_port, http_port = free_port(), free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    extra = {"RADPILOT_DICOM_STORE_PORT": str(store_port)} if store_port is not None else {}
    env = subprocess_env(RADPILOT_ANALYSIS_ENABLED="false", RADPILOT_WORKERS="0", RADPILOT_DURABILITY=durability, **extra)
    process = subprocess.Popen(
        [
            str(REPO / ".venv" / "bin" / "radpilot"),
            "serve",
            "--data-dir",
            str(workdir),
            "--dicom-port",
            str(dicom_port),
            "--http-port",
            str(http_port),
        ],
        env=env,
        stdout=open(workdir / "radpilot.log", "wb"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{http_port}/api/health", timeout=1).status_code == 200:
                return process, dicom_port, http_port
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("radpilot serve did not start; see radpilot.log")


def latency(url: str, headers: dict[str, str], repeats: int) -> dict[str, float]:
    samples = []
    with httpx.Client(timeout=60) as client:
        client.get(url, headers=headers).raise_for_status()  # warm-up
        for _ in range(repeats):
            started = time.perf_counter()
            response = client.get(url, headers=headers)
            samples.append((time.perf_counter() - started) * 1000)
            response.raise_for_status()
    samples.sort()
    return {"median_ms": round(statistics.median(samples), 2), "p90_ms": round(samples[int(0.9 * (len(samples) - 1))], 2), "n": repeats}


def latency_from_files(url: str, headers: dict[str, str], repeats: int, database: Path) -> dict[str, float]:
    """Latency of ``url`` when no instance has its metadata kept: the rows are deleted before each request."""
    samples = []
    with httpx.Client(timeout=60) as client:
        for _ in range(repeats + 1):
            with sqlite3.connect(database) as connection:
                connection.execute("DELETE FROM instance_metadata")
            started = time.perf_counter()
            response = client.get(url, headers=headers)
            samples.append((time.perf_counter() - started) * 1000)
            response.raise_for_status()
    samples = sorted(samples[1:])  # the first is the warm-up
    return {"median_ms": round(statistics.median(samples), 2), "p90_ms": round(samples[int(0.9 * (len(samples) - 1))], 2), "n": repeats}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instances", type=int, default=512)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--latency-repeats", type=int, default=50)
    args = parser.parse_args()
    source = sorted((shared_data_path() / "ct-lung" / "LUNGCT-002" / "dicom").glob("*.dcm"))
    if not source:
        sys.exit(f"no CT files under {shared_data_path() / 'ct-lung'}; set RADPILOT_SHARED_DATA")

    work = Path(tempfile.mkdtemp(prefix="radpilot-bench-"))
    orthanc = start_orthanc(work / "orthanc")
    radpilot, rp_dicom, rp_http = start_radpilot(work / "radpilot-data", "file")
    radpilot_full, rp_full_dicom, _ = start_radpilot(work / "radpilot-full-data", "full")
    auth = api_token(work / "radpilot-data")
    ports = {
        "radpilot": (rp_dicom, "RADPILOT"),
        "radpilot_full_sync": (rp_full_dicom, "RADPILOT"),
        "orthanc": (orthanc.dicom_port, orthanc.ae_title),
    }
    runs: dict[str, list[dict]] = {peer: [] for peer in ports}
    try:
        for run in range(args.runs):
            order = list(ports) if run % 2 == 0 else list(reversed(ports))
            for peer in order:
                folder = work / f"set-{peer}-{run}"
                size = make_instances(source, args.instances, folder, f"{peer}{run}")
                port, ae = ports[peer]
                seconds = storescu(port, ae, folder)
                runs[peer].append(
                    {
                        "seconds": round(seconds, 3),
                        "instances_per_s": round(args.instances / seconds, 1),
                        "mb_per_s": round(size / 1e6 / seconds, 1),
                        "bytes": size,
                    }
                )
                print(
                    f"run {run} {peer:8s}: {args.instances} instances in {seconds:.2f} s "
                    f"({args.instances / seconds:.0f}/s, {size / 1e6 / seconds:.1f} MB/s)"
                )
                shutil.rmtree(folder)
        rp_count = httpx.get(f"http://127.0.0.1:{rp_http}/dicomweb/studies", headers=auth, timeout=30).json()
        study_uid = next(s["0020000D"]["Value"][0] for s in rp_count if s["00100020"]["Value"][0] == "BENCH-radpilot0")
        or_studies = httpx.get(f"{orthanc.dicomweb_url}/studies", params={"PatientID": "BENCH-orthanc0"}, timeout=30).json()
        or_study = or_studies[0]["0020000D"]["Value"][0]

        def series_of(base: str, study: str, headers: dict[str, str]) -> str:
            return httpx.get(f"{base}/studies/{study}/series", headers=headers, timeout=30).json()[0]["0020000E"]["Value"][0]

        rp_base, or_base = f"http://127.0.0.1:{rp_http}/dicomweb", orthanc.dicomweb_url
        rp_series, or_series = series_of(rp_base, study_uid, auth), series_of(or_base, or_study, {})
        json_accept = {"Accept": "application/dicom+json"}
        rp_accept = {**json_accept, **auth}
        metadata_repeats = max(5, args.latency_repeats // 5)
        rp_metadata_url = f"{rp_base}/studies/{study_uid}/series/{rp_series}/metadata"
        or_metadata_url = f"{or_base}/studies/{or_study}/series/{or_series}/metadata"
        rp_metadata = httpx.get(rp_metadata_url, headers=rp_accept, timeout=60).json()
        or_metadata = httpx.get(or_metadata_url, headers=json_accept, timeout=60).json()
        if len(rp_metadata) != args.instances or len(or_metadata) != args.instances:
            raise RuntimeError(f"series metadata has {len(rp_metadata)} (radpilot) / {len(or_metadata)} (orthanc) instances")
        dicomweb = {
            "qido_studies_by_patient_id": {
                "radpilot": latency(f"{rp_base}/studies?PatientID=BENCH-radpilot0", rp_accept, args.latency_repeats),
                "orthanc": latency(f"{or_base}/studies?PatientID=BENCH-orthanc0", json_accept, args.latency_repeats),
            },
            "wado_series_metadata": {
                "radpilot": latency(rp_metadata_url, rp_accept, metadata_repeats),
                "orthanc": latency(or_metadata_url, json_accept, metadata_repeats),
                "radpilot_read_from_files": latency_from_files(
                    rp_metadata_url, rp_accept, metadata_repeats, work / "radpilot-data" / "index.sqlite3"
                ),
            },
        }
        # The kept metadata again, after the rows the last measurement deleted were filled once more.
        dicomweb["wado_series_metadata"]["radpilot_again"] = latency(rp_metadata_url, rp_accept, metadata_repeats)
    finally:
        for process in (radpilot, radpilot_full):
            process.terminate()
            process.wait(timeout=30)
        orthanc.stop()
    medians = {peer: statistics.median(r["instances_per_s"] for r in values) for peer, values in runs.items()}
    summary = {
        "benchmark": "dicom_node",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "instances_per_run": args.instances,
        "ingest_runs": runs,
        "ingest_median_instances_per_s": medians,
        "ingest_median_mb_per_s": {peer: statistics.median(r["mb_per_s"] for r in values) for peer, values in runs.items()},
        "ingest_ratio_radpilot_over_orthanc": round(medians["radpilot"] / medians["orthanc"], 3),
        "ingest_ratio_radpilot_full_sync_over_orthanc": round(medians["radpilot_full_sync"] / medians["orthanc"], 3),
        "dicomweb_latency": dicomweb,
        "wado_series_metadata_ratio_radpilot_over_orthanc": round(
            dicomweb["wado_series_metadata"]["radpilot"]["median_ms"] / dicomweb["wado_series_metadata"]["orthanc"]["median_ms"], 3
        ),
        "wado_series_metadata_ratio_read_from_files_over_kept": round(
            dicomweb["wado_series_metadata"]["radpilot_read_from_files"]["median_ms"]
            / dicomweb["wado_series_metadata"]["radpilot"]["median_ms"],
            3,
        ),
        "notes": "radpilot: durability=file (default; the file is fdatasync'ed before it is renamed and acknowledged, "
        "index WAL synchronous=NORMAL, recovery re-indexes after an unclean stop). radpilot_full_sync: "
        "durability=full (file, folder and index synced before each acknowledgement: three syncs). "
        "Orthanc 1.10.1 with its defaults (SyncStorageArea true: one fsync per file). All with TCP_NODELAY=1. "
        "wado_series_metadata.radpilot: metadata kept at ingest (instance_metadata); radpilot_read_from_files: the kept rows "
        "deleted before each request, so every file is read as before metadata was kept (and the rows are written again).",
    }
    for name, peers in dicomweb.items():
        print(f"{name}: " + ", ".join(f"{peer} {values['median_ms']} ms" for peer, values in peers.items()) + " (median)")
    print(f"series metadata ratio radpilot/orthanc = {summary['wado_series_metadata_ratio_radpilot_over_orthanc']}")
    print(
        f"ingest ratio radpilot/orthanc = {summary['ingest_ratio_radpilot_over_orthanc']}, "
        f"full sync/orthanc = {summary['ingest_ratio_radpilot_full_sync_over_orthanc']}"
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "dicom_node.json").write_text(json.dumps(summary, indent=2))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
