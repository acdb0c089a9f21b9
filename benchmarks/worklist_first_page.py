"""The worklist's first page with 10,000 studies in the archive, on SQLite and on PostgreSQL, side by side.

A synthetic index is generated (rows only, no files) into a database migrated by the archive
itself: 3,000 patients, 10,000 studies dated 2016-2025 (5 % STAT, 10 % HIGH), 1-3 series each,
1-2 analysis jobs per study in every state, a flag on a fifth of the finished jobs (critical on a
quarter of those), and a reading row (claimed or read) for 30 % of the studies. Then the pages
are served through the real web application (FastAPI, TestClient, so the HTTP request, the query,
the template and the response are all counted) and timed:

* ``first_page_html``: ``GET /ui/`` (triage order: STAT and critical first, 50 rows);
* ``first_page_json``: ``GET /api/worklist``;
* ``search``: ``GET /ui/?text=<a patient's name>``;
* ``filter_modality_unread``: ``GET /ui/?modality=CT&reading=unread``.

Medians and p95 are printed and saved to benchmarks/results/worklist_first_page.json; the target
is the first page in under 300 ms.

Usage: .venv/bin/python benchmarks/worklist_first_page.py [--studies 10000] [--samples 40]
       [--database-url postgresql://...]   (an empty database; without it a throw-away cluster is started)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine, insert, text

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from radpilot.archive import Archive  # noqa: E402
from radpilot.archive.models import Patient, Series, Study  # noqa: E402
from radpilot.engine.jobs_models import AiFlag, Job  # noqa: E402
from radpilot.worklist.models import StudyReading  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
TARGET_MS = 300.0
FIRST_DATE = date(2016, 1, 1)
MODALITY_SETS = (("CT",), ("CT", "SR"), ("MR",), ("CR",), ("DX",), ("US",), ("CT", "PT"))
ANALYSES = ("lung_ct_quant", "chest_xray", "coronary_calcium")
JOB_STATES = ("done",) * 6 + ("failed", "queued", "running", "cancelled")
FLAGS = (("emphysema", "Emphysema (LAA-950 > 6 %)", False), ("nodule_candidates", "Nodule candidates", True))


def uid() -> str:
    return "2.25." + str(uuid.uuid4().int)


def generate(engine: Engine, studies: int, seed: int = 16) -> dict[str, list[str]]:
    """Fill the (migrated, empty) index behind ``engine`` with a worklist of ``studies`` studies; return search values."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    patients = max(1, studies * 3 // 10)
    patient_rows = [
        {"id": p, "patient_id": f"SYN{p:07d}", "patient_name": f"SYNTH^PATIENT{p}", "patient_birth_date": "19600101", "patient_sex": "F"}
        for p in range(1, patients + 1)
    ]
    study_rows, series_rows, job_rows, flag_rows, reading_rows = [], [], [], [], []
    for s in range(1, studies + 1):
        study_uid = uid()
        roll = rng.random()
        study_rows.append(
            {
                "id": s,
                "study_instance_uid": study_uid,
                "patient_fk": rng.randrange(1, patients + 1),
                "study_date": (FIRST_DATE + timedelta(days=rng.randrange(3650))).strftime("%Y%m%d"),
                "study_time": f"{rng.randrange(7, 19):02d}{rng.randrange(60):02d}00",
                "accession_number": f"ACC{s:08d}",
                "study_id": str(s),
                "study_description": "SYNTHETIC",
                "referring_physician_name": "REF^DR",
                "priority": "STAT" if roll < 0.05 else "HIGH" if roll < 0.15 else "ROUTINE" if roll < 0.6 else "",
                "created_at": now,
                "updated_at": now,
            }
        )
        modalities = list(rng.choice(MODALITY_SETS))
        series_uids = []
        for number, modality in enumerate(modalities + modalities[:1] * rng.randrange(0, 2), start=1):
            series_uids.append(uid())
            series_rows.append(
                {
                    "series_instance_uid": series_uids[-1],
                    "study_fk": s,
                    "modality": modality,
                    "series_number": number,
                    "series_description": f"{modality} SERIES",
                    "body_part_examined": "CHEST",
                    "series_date": "",
                    "series_time": "",
                    "created_at": now,
                    "updated_at": now,
                }
            )
        for analysis in rng.sample(ANALYSES, rng.randrange(1, 3)):
            state = rng.choice(JOB_STATES)
            job_rows.append(
                {
                    "id": len(job_rows) + 1,
                    "idempotency_key": uuid.uuid4().hex + uuid.uuid4().hex,
                    "analysis": analysis,
                    "analysis_version": "1.0.0",
                    "study_instance_uid": study_uid,
                    "series_instance_uid": series_uids[0],
                    "input_sop_uids": [],
                    "rule": "synthetic",
                    "destinations": [],
                    "priority": 5,
                    "state": state,
                    "attempts": 1,
                    "max_attempts": 3,
                    "next_attempt_at": now,
                    "timeout_s": 600.0,
                    "created_at": now,
                    "started_at": now if state != "queued" else None,
                    "finished_at": now if state in ("done", "failed", "cancelled") else None,
                    "error": "synthetic failure" if state == "failed" else None,
                    "error_kind": "permanent" if state == "failed" else None,
                }
            )
            if state == "done" and rng.random() < 0.2:
                name, label, critical = FLAGS[1] if rng.random() < 0.25 else FLAGS[0]
                flag_rows.append(
                    {
                        "job_id": len(job_rows),
                        "study_instance_uid": study_uid,
                        "analysis": analysis,
                        "name": name,
                        "label": label,
                        "critical": critical,
                        "value": 1.0,
                        "threshold": 0.5,
                        "created_at": now,
                    }
                )
        if rng.random() < 0.3:
            read = rng.random() < 0.5
            reading_rows.append(
                {
                    "study_instance_uid": study_uid,
                    "status": "read" if read else "in_progress",
                    "claimed_by": None if read else f"rad{rng.randrange(5)}",
                    "read_by": f"rad{rng.randrange(5)}" if read else None,
                    "updated_at": now,
                }
            )
    with engine.begin() as connection:
        for model, rows in ((Patient, patient_rows), (Study, study_rows), (Series, series_rows), (Job, job_rows), (AiFlag, flag_rows)):
            for start in range(0, len(rows), 5000):
                connection.execute(insert(model), rows[start : start + 5000])
        if reading_rows:
            connection.execute(insert(StudyReading), reading_rows)
        if engine.dialect.name == "postgresql":
            for table, last in (("patient", patients), ("study", studies), ("job", len(job_rows))):
                connection.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), {last})"))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("ANALYZE"))
    return {"names": [r["patient_name"] for r in patient_rows]}


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def measure(client, requests: list[str]) -> dict[str, float]:  # noqa: ANN001 - a TestClient
    samples = []
    for path in requests:
        started = time.perf_counter()
        response = client.get(path)
        samples.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, (path, response.status_code, response.text[:300])
    return {"median_ms": round(statistics.median(samples), 1), "p95_ms": round(percentile(samples, 0.95), 1), "n": len(samples)}


def run_one(label: str, url: str, studies: int, samples: int) -> dict[str, object]:
    from fastapi.testclient import TestClient

    from radpilot.config import Settings
    from radpilot.web.app import create_app

    work = Path(tempfile.mkdtemp(prefix=f"radpilot-worklist-bench-{label}-"))
    archive = Archive(work / "dicom", url, durability="none")  # migrates the empty database
    started = time.perf_counter()
    drawn = generate(archive.engine, studies)
    generate_s = time.perf_counter() - started
    rng = random.Random(3)
    requests = {
        "first_page_html": ["/ui/"] * samples,
        "first_page_json": ["/api/worklist"] * samples,
        "search": [f"/ui/?text={rng.choice(drawn['names']).split('^')[1].lower()}" for _ in range(samples)],
        "filter_modality_unread": ["/ui/?modality=CT&reading=unread"] * samples,
    }
    results: dict[str, object] = {"database": label, "studies": archive.counts().studies, "generate_s": round(generate_s, 1)}
    from radpilot.security.principal import Role
    from tests.fixtures.auth import authenticate

    with TestClient(create_app(Settings(data_dir=work / "data", ohif_dir=work / "no-ohif"), archive)) as client:
        authenticate(client, archive.engine, Role.RADIOLOGIST)  # a Bearer token: the authentication middleware is timed too
        for paths in requests.values():
            measure(client, paths[:3])  # warm-up: templates compiled, index pages cached
        for name, paths in requests.items():
            results[name] = measure(client, paths)
            print(f"{label} {name}: median {results[name]['median_ms']} ms, p95 {results[name]['p95_ms']} ms")  # type: ignore[index]
    archive.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", type=int, default=10_000)
    parser.add_argument("--samples", type=int, default=40)
    parser.add_argument("--database-url", default=None, help="an empty PostgreSQL database (default: a throw-away cluster)")
    args = parser.parse_args()
    sqlite_dir = Path(tempfile.mkdtemp(prefix="radpilot-worklist-bench-sqlite-"))
    runs = [run_one("sqlite", f"sqlite:///{sqlite_dir / 'index.sqlite3'}", args.studies, args.samples)]
    server = None
    url = args.database_url
    if url is None:
        import psycopg

        from tests.fixtures.postgres import start_postgres

        server = start_postgres()
        with psycopg.connect(server.url("postgres"), autocommit=True) as conn:
            conn.execute('CREATE DATABASE "worklist_bench"')
        url = server.url("worklist_bench")
    try:
        runs.append(run_one("postgresql", url, args.studies, args.samples))
    finally:
        if server is not None:
            server.stop()
    summary = {
        "benchmark": "worklist_first_page",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_average": os.getloadavg()},
        "target_ms": TARGET_MS,
        "runs": runs,
        "target_met": all(run["first_page_html"]["p95_ms"] < TARGET_MS for run in runs),  # type: ignore[index]
        "postgresql_to_sqlite_first_page_ratio": round(
            runs[1]["first_page_html"]["median_ms"] / runs[0]["first_page_html"]["median_ms"], 2
        ),  # type: ignore[index]
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "worklist_first_page.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
