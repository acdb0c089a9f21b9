"""What authentication costs per request, measured side by side in one process.

The same QIDO-RS study search and WADO-RS series metadata requests, in alternating rounds, to

* ``open``: the DICOMweb router alone, without authentication (as before sign-in existed);
* ``bearer``: RadPilot's application with an API token (one digest lookup per request);
* ``cookie``: the application with a browser's session cookie (one joined lookup);
* ``researcher``: the application with a researcher's token (the answer is pseudonymized).

Medians in milliseconds and the ratios to ``open``. In process (FastAPI TestClient), so the
figures hold the application's own cost, not the network's.

Usage: .venv/bin/python benchmarks/auth_overhead.py [--rounds 5] [--requests 40]
Writes benchmarks/results/auth_overhead.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

from fastapi import FastAPI
from fastapi.testclient import TestClient

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from radpilot.archive import Archive  # noqa: E402
from radpilot.config import Settings  # noqa: E402
from radpilot.pacs.dicomweb import make_dicomweb_router  # noqa: E402
from radpilot.security.principal import Role  # noqa: E402
from radpilot.web.app import create_app  # noqa: E402
from tests.factories import make_ct_series, to_part10_bytes  # noqa: E402
from tests.fixtures.auth import auth_headers, bearer_token, make_user  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"


def timed(client: TestClient, url: str, headers: dict[str, str], count: int) -> list[float]:
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        response = client.get(url, headers=headers)
        samples.append((time.perf_counter() - started) * 1000)
        if response.status_code != 200:
            raise RuntimeError(f"{url}: {response.status_code} {response.text[:200]}")
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--studies", type=int, default=20)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="radpilot-auth-bench-"))
    settings = Settings(data_dir=work / "data", ohif_dir=work / "no-ohif")
    archive = Archive.from_settings(settings)
    study = series = ""
    for index in range(args.studies):
        datasets = make_ct_series(16, rows=64, columns=64, patient_id=f"P{index:04d}", patient_name=f"BENCH^{index}")
        for ds in datasets:
            archive.store_file_bytes(to_part10_bytes(ds))
        study, series = str(datasets[0].StudyInstanceUID), str(datasets[0].SeriesInstanceUID)
    bare = FastAPI()
    bare.include_router(make_dicomweb_router(archive), prefix="/dicomweb")
    full = create_app(settings, archive)
    name, password = make_user(archive.engine, Role.RADIOLOGIST)
    urls = {"qido_studies": "/dicomweb/studies?limit=100", "series_metadata": f"/dicomweb/studies/{study}/series/{series}/metadata"}
    with TestClient(bare) as open_client, TestClient(full) as app_client, TestClient(full) as cookie_client:
        form = cookie_client.get("/ui/login")
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)
        signed = cookie_client.post("/ui/login", data={"username": name, "password": password, "csrf_token": csrf}, follow_redirects=False)
        assert signed.status_code == 303, signed.text
        variants = {
            "open": (open_client, {}),
            "bearer": (app_client, auth_headers(bearer_token(archive.engine, Role.RADIOLOGIST))),
            "cookie": (cookie_client, {}),
            "researcher": (app_client, auth_headers(bearer_token(archive.engine, Role.RESEARCHER))),
        }
        samples: dict[str, dict[str, list[float]]] = {u: {v: [] for v in variants} for u in urls}
        for what, url in urls.items():
            for client, headers in variants.values():
                timed(client, url, {**headers, "Accept": "application/dicom+json"}, 3)  # warm-up
            for round_number in range(args.rounds):
                order = list(variants) if round_number % 2 == 0 else list(reversed(variants))
                for variant in order:
                    client, headers = variants[variant]
                    samples[what][variant] += timed(client, url, {**headers, "Accept": "application/dicom+json"}, args.requests)
    archive.close()
    medians = {what: {v: round(statistics.median(s), 3) for v, s in by.items()} for what, by in samples.items()}
    ratios = {what: {v: round(m / by["open"], 3) for v, m in by.items() if v != "open"} for what, by in medians.items()}
    for what in urls:
        print(f"{what}: " + ", ".join(f"{v} {m:.2f} ms" for v, m in medians[what].items()) + f"; ratios to open {ratios[what]}")
    summary = {
        "benchmark": "auth_overhead",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "studies": args.studies,
        "requests_per_variant": args.rounds * args.requests,
        "median_ms": medians,
        "ratio_to_open": ratios,
        "notes": "In-process FastAPI TestClient over SQLite; open = DICOMweb router without authentication.",
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "auth_overhead.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary["ratio_to_open"]))


if __name__ == "__main__":
    main()
