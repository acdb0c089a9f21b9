"""Scale-out throughput on this machine: ingest with 1 and 2 front ends, analysis with 1 and 2 workers.

The same processes as tests/integration/test_scale_out_topology.py (``radpilot serve``
front ends and ``radpilot worker`` Celery workers on one PostgreSQL database, one Redis
and one storage folder), without faults. Each configuration runs on a fresh database:

* ingest: 4 store SCU processes send STUDIES x SLICES calcium phantom CT instances, split
  evenly over the front ends; instances/s from the first association to the last
  acknowledgement (the quiet period is an hour, so nothing is routed: only ingest runs);
* analysis: the same studies are stored, then routed to coronary_calcium; jobs/s from the
  first job queued to the last job done, with 1 and with 2 workers (one process each).

Two cores cannot show what two machines would: the ratios say how much of the work was
parallel here, not what a second server would add. Results are printed and saved to
benchmarks/results/scale_out.json.

Usage: .venv/bin/python benchmarks/scale_out.py [--studies 8] [--slices 50]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import psycopg  # noqa: E402

from radpilot.engine.job_store import JobStore  # noqa: E402
from radpilot.engine.jobs import JobState  # noqa: E402
from tests.fixtures.postgres import start_postgres  # noqa: E402
from tests.fixtures.redis import start_redis  # noqa: E402
from tests.integration.topology import Cluster, FrontEnd, Sender, Worker, write_studies  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "scale_out.json"
SENDERS = 4


def fresh_database(server) -> str:  # noqa: ANN001 - tests.fixtures.postgres.PostgresServer
    name = f"radpilot_scale_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server.url("postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return server.url(name)


def wait(predicate, timeout_s: float, what: str) -> None:  # noqa: ANN001 - a zero-argument callable
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise TimeoutError(f"timed out after {timeout_s} s waiting for {what}")


def ingest_run(root: Path, database_url: str, broker_url: str, studies: list[list[Path]], front_ends: int) -> dict:
    cluster = Cluster(root, database_url, broker_url, ("PACS", "127.0.0.1", 1), quiet_period_s=3600)
    nodes = [FrontEnd(cluster, f"front{i}") for i in range(front_ends)]
    senders = []
    try:
        for node in nodes:
            node.start_and_wait()
        senders = [
            Sender(cluster, f"sender{i}", nodes[i % front_ends], [p for study in studies[i::SENDERS] for p in study])
            for i in range(SENDERS)
        ]
        started = time.perf_counter()
        for sender in senders:
            sender.start()
        codes = [sender.wait(3600) for sender in senders]
        elapsed = time.perf_counter() - started
        acknowledged = sum(len(sender.acknowledged_uids()) for sender in senders)
        if any(codes) or acknowledged != sum(len(s) for s in studies):
            raise RuntimeError(f"senders exited {codes} with {acknowledged} acknowledged")
        return {
            "front_ends": front_ends,
            "instances": acknowledged,
            "seconds": round(elapsed, 2),
            "instances_per_s": round(acknowledged / elapsed, 1),
        }
    finally:
        for process in (*senders, *nodes):
            process.stop()


def analysis_run(root: Path, database_url: str, broker_url: str, studies: list[list[Path]], workers: int) -> dict:
    cluster = Cluster(root, database_url, broker_url, ("PACS", "127.0.0.1", 1), quiet_period_s=2.0)
    front = FrontEnd(cluster, "front")
    pool = [Worker(cluster, f"w{i}") for i in range(workers)]
    senders = []
    store = JobStore.from_url(database_url)
    try:
        front.start_and_wait()
        senders = [Sender(cluster, f"sender{i}", front, [p for study in studies[i::SENDERS] for p in study]) for i in range(SENDERS)]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.wait(3600)
        wait(lambda: len(store.list(limit=1000)) == len(studies), 600, "every study's job to be queued")
        for worker in pool:
            worker.start()
        jobs = store.list(limit=1000)
        wait(lambda: all(j.state == JobState.DONE for j in store.list(limit=1000)), 3600, "every job to finish")
        jobs = store.list(limit=1000)
        first_start = min(j.started_at for j in jobs if j.started_at)
        last_finish = max(j.finished_at for j in jobs if j.finished_at)
        elapsed = (last_finish - first_start).total_seconds()
        return {"workers": workers, "jobs": len(jobs), "seconds": round(elapsed, 2), "jobs_per_s": round(len(jobs) / elapsed, 3)}
    finally:
        for process in (*senders, *pool, front):
            process.stop()
        store.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=8)
    parser.add_argument("--slices", type=int, default=50)
    args = parser.parse_args()
    os.environ.setdefault("TCP_NODELAY", "1")
    postgres, redis = start_postgres(), start_redis()
    results: dict = {
        "benchmark": "scale_out",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "studies": args.studies,
        "slices_per_study": args.slices,
        "ingest": [],
        "analysis": [],
    }
    try:
        with tempfile.TemporaryDirectory(prefix="radpilot-scale-") as tmp:
            root = Path(tmp)
            studies = write_studies(root / "studies", args.studies, args.slices)
            for count in (1, 2):
                redis.client().flushall()
                run = ingest_run(root / f"ingest{count}", fresh_database(postgres), redis.url(), studies, count)
                print(f"ingest, {count} front end(s): {run['instances_per_s']} instances/s ({run['seconds']} s)")
                results["ingest"].append(run)
            for count in (1, 2):
                redis.client().flushall()
                run = analysis_run(root / f"analysis{count}", fresh_database(postgres), redis.url(), studies, count)
                print(f"analysis, {count} worker(s): {run['jobs_per_s']} jobs/s ({run['seconds']} s)")
                results["analysis"].append(run)
    finally:
        redis.stop()
        postgres.stop()
    results["ratios"] = {
        "ingest_2_over_1_front_end": round(results["ingest"][1]["instances_per_s"] / results["ingest"][0]["instances_per_s"], 2),
        "analysis_2_over_1_worker": round(results["analysis"][1]["jobs_per_s"] / results["analysis"][0]["jobs_per_s"], 2),
    }
    print(json.dumps(results["ratios"]))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"saved {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
