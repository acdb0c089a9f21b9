"""Celery backend on a real redis-server: two ``radpilot worker`` nodes, one SIGKILLed mid-job.

Every job completes exactly once (one result set each, each runner finishing once),
a STAT job queued behind routine ones starts first, and retries, permanent failures
and time limits are recorded as the embedded backend records them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from radpilot.engine.jobs import ErrorKind, JobSpec, JobState, Priority, RetryPolicy
from radpilot.engine.queue_celery import CeleryJobQueue
from radpilot.engine.worker import WorkerConfig
from tests.helpers import REPO_ROOT, subprocess_env, wait_for
from tests.integration.job_runners import JOURNAL_ENV, SLEEP_ENV, read_journal
from tests.unit.jobs_support import instances

pytestmark = pytest.mark.integration

SLEEP_S = 0.8
LEASE_S = 2.0
VISIBILITY_TIMEOUT_S = 6.0
RETRY = RetryPolicy(base_s=0.5, factor=2, cap_s=2)
CLI = "from radpilot.cli import app; app(prog_name='radpilot')"


def node_logs(nodes: dict[str, Node]) -> Callable[[], str]:
    """The tail of each worker node's log, for a failed wait."""
    return lambda: "".join(f"\n--- {name} ---\n{node.log.read_text(errors='replace')[-3000:]}" for name, node in nodes.items())


class Node:
    """A ``radpilot worker`` process (its own process group: killing the group is the machine dying)."""

    def __init__(self, name: str, broker_url: str, database_url: str, tmp_path: Path, journal: Path) -> None:
        self.name = name
        self.log = tmp_path / f"{name}.log"
        command = [
            sys.executable,
            "-c",
            CLI,
            "worker",
            "--broker-url",
            broker_url,
            "--database-url",
            database_url,
            "--concurrency",
            "1",
            "--name",
            f"{name}@%h",
            "--runner",
            "tests.integration.job_runners:sleepy_runner",
            "--lease-seconds",
            str(LEASE_S),
            "--visibility-timeout",
            str(VISIBILITY_TIMEOUT_S),
            "--retry-base-seconds",
            str(RETRY.base_s),
            "--retry-max-seconds",
            str(RETRY.cap_s),
        ]
        env = subprocess_env(PYTHONPATH=str(REPO_ROOT), RADPILOT_LOG_LEVEL="INFO", **{JOURNAL_ENV: str(journal), SLEEP_ENV: str(SLEEP_S)})
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )

    def kill(self) -> None:
        """SIGKILL the worker and its pool processes at once."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)


@pytest.fixture
def cluster(fresh_redis_url: str, tmp_path: Path) -> Iterator[tuple[CeleryJobQueue, Callable[[str], Node], Path]]:
    """The submitting side's queue, a function starting worker nodes, and the runners' journal."""
    database_url = f"sqlite:///{tmp_path / 'index.sqlite3'}"
    journal = tmp_path / "journal.txt"
    queue = CeleryJobQueue.from_urls(
        fresh_redis_url, database_url, config=WorkerConfig(lease_s=LEASE_S, retry=RETRY), visibility_timeout_s=VISIBILITY_TIMEOUT_S
    )
    nodes: list[Node] = []

    def start(name: str) -> Node:
        nodes.append(Node(name, fresh_redis_url, database_url, tmp_path, journal))
        return nodes[-1]

    yield queue, start, journal
    for node in nodes:
        node.stop()
    queue.close()


def spec(series: int, analysis: str = "sleepy", **overrides: object) -> JobSpec:
    return JobSpec(
        analysis=analysis,
        analysis_version="1",
        study_instance_uid=f"2.25.{series}",
        series_instance_uid=f"2.25.{series}.1",
        instances=instances(series),
        **overrides,
    )


def node_of(worker_id: str) -> str:
    """``w1`` from ``host:pid:w1@host``."""
    return worker_id.rsplit(":", 1)[-1].split("@", 1)[0]


def test_killed_worker_node_every_job_completes_exactly_once(cluster) -> None:
    queue, start, journal = cluster
    routine = [queue.submit(spec(series)).job.id for series in range(5)]
    stat = queue.submit(spec(99, priority=Priority.STAT)).job.id
    ids = routine + [stat]
    assert not queue.submit(spec(0)).created  # idempotent submit: no second job, no second message
    nodes = {name: start(name) for name in ("w1", "w2")}

    def routine_started() -> tuple[int, int] | None:
        begun = [(job_id, pid) for event, job_id, _, pid in read_journal(journal) if event == "start"]
        return next(((j, p) for j, p in begun if j != stat), None)

    victim_id, victim_pid = wait_for(routine_started, 60, "a routine job to start", diagnostics=node_logs(nodes))
    victim_node = node_of(queue.get(victim_id).worker_id)
    nodes[victim_node].kill()

    wait_for(lambda: queue.stats().counts[JobState.DONE] == len(ids), 60, "every job to finish", diagnostics=node_logs(nodes))
    jobs = {job_id: queue.get(job_id) for job_id in ids}
    assert jobs[victim_id].attempts == 2 and node_of(jobs[victim_id].worker_id) != victim_node
    assert sorted(s["job_id"] for s in queue.store.result_sets()) == sorted(ids)
    entries = read_journal(journal)
    assert Counter(job_id for event, job_id, _, _ in entries if event == "done") == Counter(ids)
    victim_runs = [(a, p == victim_pid) for e, j, a, p in entries if e == "start" and j == victim_id]
    assert victim_runs == [(1, True), (2, False)]
    first_two = [job_id for event, job_id, _, _ in entries if event == "start"][:2]
    assert stat in first_two, f"the STAT job {stat} did not start first: {entries}"


def test_retry_permanent_failure_and_time_limit(cluster) -> None:
    queue, start, journal = cluster
    flaky = queue.submit(spec(1, "flaky")).job.id
    broken = queue.submit(spec(2, "broken")).job.id
    hung = queue.submit(spec(3, "hang", timeout_s=1.0)).job.id
    nodes = {"w1": start("w1")}

    def settled() -> bool:
        states = [queue.get(job_id).state for job_id in (flaky, broken, hung)]
        return all(state.final for state in states)

    wait_for(settled, 60, "the jobs to settle", diagnostics=node_logs(nodes))
    retried, failed, timed_out = (queue.get(job_id) for job_id in (flaky, broken, hung))
    assert retried.state is JobState.DONE and retried.attempts == 2
    assert failed.state is JobState.FAILED and failed.attempts == 1 and failed.error_kind is ErrorKind.PERMANENT
    assert failed.error == "broken cannot process this series: the series has no pixel data."
    assert timed_out.state is JobState.FAILED and timed_out.error_kind is ErrorKind.TIMEOUT
    assert timed_out.error == "hang exceeded its 1 s time limit and was stopped."
    assert [s["job_id"] for s in queue.store.result_sets()] == [flaky]
