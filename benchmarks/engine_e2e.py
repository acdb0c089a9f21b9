"""Benchmark the AI engine on a real chest CT (64 x 512 x 512, ../shared/data/ct-lung/LUNGCT-002).

1. Analysis alone: series -> Volume -> lung_ct_quant -> SEG + SR + key image, in a
   fresh process per repeat (CPU), with the process's peak resident memory.
2. End to end: Orthanc C-STOREs the study to `radpilot serve` (its own process,
   one embedded worker, quiet period Q); we time from the moment the last
   instance was acknowledged to the moment the SEG, SR and key image are stored
   back in Orthanc, and report that time minus Q (the engine's own latency).

Usage: .venv/bin/python benchmarks/engine_e2e.py [--repeats 3] [--quiet 2]
Writes benchmarks/results/engine_e2e.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.fixtures.orthanc import start_orthanc  # noqa: E402
from tests.helpers import api_token, free_port, shared_data_path, subprocess_env  # noqa: E402

RESULT_CLASSES = {"1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.88.34", "1.2.840.10008.5.1.4.1.1.7"}

ANALYSIS_ONLY = r"""
import json, resource, sys, time
from pathlib import Path
import pydicom
from radpilot.dicom.volume import volume_from_datasets
from radpilot.analyses import discover_analyses
from radpilot.engine.pipeline import encode_results
files = sorted(Path(sys.argv[1]).glob("*.dcm"))
t0 = time.perf_counter()
datasets = [pydicom.dcmread(f) for f in files]
volume = volume_from_datasets(datasets)
t1 = time.perf_counter()
analysis = discover_analyses()["lung_ct_quant"]
findings = analysis.run(volume)
t2 = time.perf_counter()
objects = encode_results(analysis, findings, volume, datasets, uid_seed="bench")
t3 = time.perf_counter()
print(json.dumps({"load_s": t1 - t0, "analysis_s": t2 - t1, "encode_s": t3 - t2, "total_s": t3 - t0,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def analysis_only(folder: Path, repeats: int) -> dict:
    runs = []
    for _ in range(repeats):
        out = subprocess.run(
            [sys.executable, "-c", ANALYSIS_ONLY, str(folder)],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return {key: round(statistics.median(r[key] for r in runs), 3) for key in runs[0]} | {"repeats": repeats}


def wait_for_results(orthanc, study_uid: str, timeout_s: float = 600) -> float:  # noqa: ANN001
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        matches = orthanc.lookup(study_uid)
        if matches:
            instances = orthanc.rest_get(f"/studies/{matches[0]['ID']}/instances?expand")
            classes = {
                i["MainDicomTags"].get("SOPClassUID") or orthanc.rest_get(f"/instances/{i['ID']}/simplified-tags")["SOPClassUID"]
                for i in instances
            }
            if RESULT_CLASSES <= classes:
                return time.perf_counter()
        time.sleep(0.2)
    raise RuntimeError("results did not arrive in Orthanc")


def end_to_end(folder: Path, quiet_s: float, work: Path) -> dict:
    import pydicom

    orthanc = start_orthanc(work / "orthanc")
    for path in sorted(folder.glob("*.dcm")):
        orthanc.upload(path)
    study_uid = str(pydicom.dcmread(next(folder.glob("*.dcm")), stop_before_pixels=True).StudyInstanceUID)
    dicom_port, http_port = free_port(), free_port()
    nodes = json.dumps([{"name": "orthanc", "ae_title": orthanc.ae_title, "host": "127.0.0.1", "port": orthanc.dicom_port}])
    rules = work / "rules.yaml"
    rules.write_text(
        "rules:\n  - name: chest-ct\n    match:\n      Modality: CT\n    analyses: [lung_ct_quant]\n    destinations: [orthanc]\n"
    )
    env = subprocess_env(RADPILOT_NODES=nodes, RADPILOT_QUIET_PERIOD_S=str(quiet_s), RADPILOT_WORKERS="1", RADPILOT_RULES_FILE=str(rules))
    server = subprocess.Popen(
        [
            str(REPO / ".venv/bin/radpilot"),
            "serve",
            "--data-dir",
            str(work / "rp"),
            "--dicom-port",
            str(dicom_port),
            "--http-port",
            str(http_port),
        ],
        env=env,
        stdout=open(work / "radpilot.log", "wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{http_port}/api/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("radpilot serve did not start")
            time.sleep(0.2)
        time.sleep(3)  # let the worker process finish importing
        orthanc.add_modality("radpilot", "RADPILOT", "127.0.0.1", dicom_port)
        started = time.perf_counter()
        orthanc.store_to("radpilot", orthanc.resource_id(study_uid))
        received = time.perf_counter()
        arrived = wait_for_results(orthanc, study_uid)
        jobs = httpx.get(f"http://127.0.0.1:{http_port}/api/jobs", headers=api_token(work / "rp"), timeout=10).json()
    finally:
        server.terminate()
        server.wait(timeout=60)
        orthanc.stop()
    return {
        "send_64_instances_s": round(received - started, 3),
        "last_instance_to_results_in_orthanc_s": round(arrived - received, 3),
        "minus_quiet_period_s": round(arrived - received - quiet_s, 3),
        "quiet_period_s": quiet_s,
        "job_duration_s": jobs[0]["duration_s"] if jobs else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quiet", type=float, default=2.0)
    args = parser.parse_args()
    folder = shared_data_path() / "ct-lung" / "LUNGCT-002" / "dicom"
    if not folder.is_dir():
        sys.exit(f"{folder} is missing; set RADPILOT_SHARED_DATA")
    work = Path(tempfile.mkdtemp(prefix="radpilot-engine-bench-"))
    summary = {
        "benchmark": "engine_e2e",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "device": "CPU"},
        "input": "LUNGCT-002: 64 x 512 x 512 CT, deflate transfer syntax",
        "analysis_only": analysis_only(folder, args.repeats),
        "end_to_end": [end_to_end(folder, args.quiet, work / f"run{i}") for i in range(args.repeats)],
    }
    e2e = [r["minus_quiet_period_s"] for r in summary["end_to_end"]]
    summary["end_to_end_median_minus_quiet_s"] = round(statistics.median(e2e), 3)
    print(json.dumps(summary, indent=2))
    out = REPO / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "engine_e2e.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
