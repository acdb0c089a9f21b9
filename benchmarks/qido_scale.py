"""QIDO-RS study searches on a synthetic PostgreSQL index of 10,000 studies and 1,000,000 instances.

The index is generated (rows only, no files) with COPY into a database migrated by the
archive itself: 3,000 patients, 10,000 studies dated 2016-2025 with unique accession
numbers, 1-4 series each of a few modalities, 100 instances per study. Then the common
study searches run through the same code as ``GET /dicomweb/studies`` (query parsing,
archive query, computed return keys, DICOM JSON), each with values drawn at random:

* ``PatientID=<one patient>``
* ``StudyDate=<one month>`` (a range)
* ``AccessionNumber=<one study>``
* ``ModalitiesInStudy=<modality>&limit=101`` (OHIF's study list asks 101 at a time)

Medians and p95 are printed and saved to benchmarks/results/qido_scale.json.

Usage: .venv/bin/python benchmarks/qido_scale.py [--studies 10000] [--instances 1000000] [--samples 200]
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
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import psycopg

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from radpilot.archive import Archive  # noqa: E402
from radpilot.archive.query import QueryLevel  # noqa: E402
from radpilot.pacs.dicomweb import qido as qido_rs  # noqa: E402
from tests.fixtures.postgres import start_postgres  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
MODALITY_SETS = (("CT",), ("CT", "SR"), ("MR",), ("CR",), ("DX",), ("US",), ("CT", "PT"), ("MG",), ("MR", "SEG"))
FIRST_DATE = date(2016, 1, 1)
DAYS = 3650
UID_ROOT = "2.25."


def uid() -> str:
    return UID_ROOT + str(uuid.uuid4().int)


def generate(url: str, studies: int, instances: int, seed: int = 20) -> dict[str, list[str]]:
    """Fill the (migrated, empty) archive index at ``url``; return the values queries draw from."""
    rng = random.Random(seed)
    patients = max(1, studies * 3 // 10)
    per_study = instances // studies
    now = datetime.now(UTC)
    drawn: dict[str, list[str]] = {"patient_ids": [f"SYN{p:07d}" for p in range(1, patients + 1)], "accessions": [], "dates": []}
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as connection, connection.cursor() as cursor:
        with cursor.copy("COPY patient (id, patient_id, patient_name, patient_birth_date, patient_sex) FROM STDIN") as copy:
            for p in range(1, patients + 1):
                birth = FIRST_DATE - timedelta(days=rng.randrange(20 * 365, 90 * 365))
                copy.write_row((p, f"SYN{p:07d}", f"SYNTH^PATIENT{p}", birth.strftime("%Y%m%d"), rng.choice("MF")))
        study_rows, series_rows, instance_counts = [], [], []
        series_id = 0
        for s in range(1, studies + 1):
            day = (FIRST_DATE + timedelta(days=rng.randrange(DAYS))).strftime("%Y%m%d")
            accession = f"ACC{s:08d}"
            drawn["accessions"].append(accession)
            drawn["dates"].append(day)
            study_rows.append(
                (
                    s,
                    uid(),
                    rng.randrange(1, patients + 1),
                    day,
                    f"{rng.randrange(7, 19):02d}{rng.randrange(60):02d}00",
                    accession,
                    str(s),
                    "SYNTHETIC",
                    "REF^DR",
                    now,
                    now,
                )
            )
            modalities = list(rng.choice(MODALITY_SETS))
            count = max(len(modalities), rng.randrange(1, 5))
            kinds = modalities + [modalities[0]] * (count - len(modalities))
            split = [per_study // count] * count
            split[0] += per_study - sum(split)
            for number, (modality, n) in enumerate(zip(kinds, split, strict=True), start=1):
                series_id += 1
                series_rows.append((series_id, uid(), s, modality, number, f"{modality} SERIES", "CHEST", day, "120000", now, now))
                instance_counts.append((series_id, n))
        with cursor.copy(
            "COPY study (id, study_instance_uid, patient_fk, study_date, study_time, accession_number, study_id, "
            "study_description, referring_physician_name, created_at, updated_at) FROM STDIN"
        ) as copy:
            for row in study_rows:
                copy.write_row(row)
        with cursor.copy(
            "COPY series (id, series_instance_uid, study_fk, modality, series_number, series_description, body_part_examined, "
            "series_date, series_time, created_at, updated_at) FROM STDIN"
        ) as copy:
            for row in series_rows:
                copy.write_row(row)
        instance_id = 0
        with cursor.copy(
            "COPY instance (id, sop_instance_uid, series_fk, sop_class_uid, instance_number, transfer_syntax_uid, rows, columns, "
            "number_of_frames, file_path, file_size, content_sha256, source_ae_title, derived, received_at) FROM STDIN"
        ) as copy:
            for series_fk, n in instance_counts:
                for number in range(1, n + 1):
                    instance_id += 1
                    copy.write_row(
                        (instance_id, uid(), series_fk, "1.2.840.10008.5.1.4.1.1.2", number, "1.2.840.10008.1.2.1", 512, 512, None,
                         f"synthetic/{instance_id}.dcm", 526000, "0" * 64, "SYNTH", False, now)
                    )  # fmt: skip
        for table, last in (("patient", patients), ("study", studies), ("series", series_id), ("instance", instance_id)):
            cursor.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), {last})")
        connection.commit()
        connection.autocommit = True
        cursor.execute("VACUUM ANALYZE")
    return drawn


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def measure(archive: Archive, queries: list[list[tuple[str, str]]]) -> dict[str, float]:
    samples, matches = [], []
    for items in queries:
        started = time.perf_counter()
        body = qido_rs.search(archive, QueryLevel.STUDY, {}, qido_rs.parse_qido_parameters(items), "http://bench/dicomweb")
        samples.append((time.perf_counter() - started) * 1000)
        matches.append(len(body))
    return {
        "median_ms": round(statistics.median(samples), 2),
        "p95_ms": round(percentile(samples, 0.95), 2),
        "max_ms": round(max(samples), 2),
        "n": len(samples),
        "median_matches": statistics.median(matches),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", type=int, default=10_000)
    parser.add_argument("--instances", type=int, default=1_000_000)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    server = None
    url = args.database_url
    if url is None:
        server = start_postgres()
        with psycopg.connect(server.url("postgres"), autocommit=True) as conn:
            conn.execute('CREATE DATABASE "qido_scale"')
        url = server.url("qido_scale")
    storage = Path(os.environ.get("TMPDIR", "/tmp")) / f"radpilot-qido-scale-{os.getpid()}"
    try:
        archive = Archive(storage, url, durability="none")  # migrates the empty database
        started = time.perf_counter()
        drawn = generate(url, args.studies, args.instances)
        generate_s = time.perf_counter() - started
        counts = archive.counts()
        print(f"generated {counts.studies} studies, {counts.series} series, {counts.instances} instances in {generate_s:.0f} s")
        rng = random.Random(7)
        months = sorted({d[:6] for d in drawn["dates"]})
        queries = {
            "PatientID": [[("PatientID", rng.choice(drawn["patient_ids"]))] for _ in range(args.samples)],
            "StudyDate_month_range": [[("StudyDate", f"{m}01-{m}31")] for m in (rng.choice(months) for _ in range(args.samples))],
            "AccessionNumber": [[("AccessionNumber", rng.choice(drawn["accessions"]))] for _ in range(args.samples)],
            "ModalitiesInStudy_limit_101": [
                [("ModalitiesInStudy", rng.choice(["CT", "MR", "DX", "US"])), ("limit", "101")] for _ in range(args.samples)
            ],
        }
        for items in queries.values():  # warm-up: the first query of each kind loads its index pages
            measure(archive, items[:5])
        results = {}
        for name, items in queries.items():
            results[name] = measure(archive, items)
            print(
                f"{name}: median {results[name]['median_ms']} ms, p95 {results[name]['p95_ms']} ms, {results[name]['median_matches']} matches"
            )
        archive.close()
    finally:
        if server is not None:
            server.stop()
    summary = {
        "benchmark": "qido_scale",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_average": os.getloadavg()},
        "database": "PostgreSQL (throw-away cluster, fsync off)" if server is not None else "given by --database-url",
        "index": {"studies": counts.studies, "series": counts.series, "instances": counts.instances, "generate_s": round(generate_s, 1)},
        "target_p95_ms": 100,
        "queries": results,
        "all_under_target": all(r["p95_ms"] < 100 for r in results.values()),
        "notes": "Study-level QIDO-RS through radpilot.pacs.dicomweb.qido.search (parsing, archive query, computed keys, "
        "DICOM JSON), without HTTP. Values drawn at random from the generated index.",
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "qido_scale.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
