"""Small real job runners for the job-queue tests (imported by worker processes).

The behaviour follows the job's analysis name:

``sleepy``  sleeps, then returns one result UID;
``flaky``   raises :class:`TransientJobError` on its first attempt, then behaves like ``sleepy``;
``broken``  raises :class:`PermanentJobError`;
``hang``    sleeps for an hour (to be stopped by its time limit).

Every run appends ``start <job> <attempt> <pid>`` and, when it returns,
``done <job> <attempt> <pid>`` to a journal file (appends of one short line are
atomic across processes), so a test can see how often each job really ran.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from radpilot.engine.jobs import JobOutput, JobRecord, PermanentJobError, TransientJobError

JOURNAL_ENV = "RADPILOT_TEST_JOB_JOURNAL"
SLEEP_ENV = "RADPILOT_TEST_JOB_SLEEP_S"


class ScriptedRunner:
    """A runner whose behaviour is chosen by ``job.analysis`` (see the module docstring)."""

    def __init__(self, journal: str | None, sleep_s: float = 1.0) -> None:
        self.journal = Path(journal) if journal else None
        self.sleep_s = sleep_s

    def _log(self, event: str, job: JobRecord) -> None:
        if self.journal is not None:
            with open(self.journal, "a", encoding="ascii") as handle:
                handle.write(f"{event} {job.id} {job.attempts} {os.getpid()}\n")

    def __call__(self, job: JobRecord) -> JobOutput:
        self._log("start", job)
        if job.analysis == "broken":
            raise PermanentJobError("the series has no pixel data")
        if job.analysis == "flaky" and job.attempts == 1:
            raise TransientJobError("the GPU is busy")
        if job.analysis == "hang":
            time.sleep(3600)
        time.sleep(self.sleep_s)
        self._log("done", job)
        return JobOutput([f"2.25.{job.id}.{job.attempts}"], {"pid": os.getpid()})


def make_sleepy_runner(journal: str | None, sleep_s: float = 1.0) -> ScriptedRunner:
    """A factory for the embedded pool (pass through ``functools.partial``)."""
    return ScriptedRunner(journal, sleep_s)


def sleepy_runner() -> ScriptedRunner:
    """A factory for ``radpilot worker --runner``: journal and sleep from the environment."""
    return ScriptedRunner(os.environ.get(JOURNAL_ENV), float(os.environ.get(SLEEP_ENV, "1.0")))


def read_journal(path: Path) -> list[tuple[str, int, int, int]]:
    """``(event, job_id, attempt, pid)`` lines of a journal, in order."""
    if not path.exists():
        return []
    entries = []
    for line in path.read_text(encoding="ascii").splitlines():
        event, job_id, attempt, pid = line.split()
        entries.append((event, int(job_id), int(attempt), int(pid)))
    return entries
