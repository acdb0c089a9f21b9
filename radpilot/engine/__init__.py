"""The engine: routing rules, the job queue and its workers, the model registry.

The job queue API lives in :mod:`radpilot.engine.jobs` (types and the
:class:`~radpilot.engine.jobs.JobQueue` interface, cheap to import), with the
database side in :mod:`radpilot.engine.job_store` and two backends:
:mod:`radpilot.engine.queue_embedded` (worker processes of ``radpilot serve``)
and :mod:`radpilot.engine.queue_celery` (``radpilot worker`` on a Redis broker).
Import those modules directly; this package imports nothing heavy.
"""

from radpilot.engine.jobs import (
    ErrorKind,
    JobOutput,
    JobQueue,
    JobRecord,
    JobRunner,
    JobSpec,
    JobState,
    PermanentJobError,
    Priority,
    SubmitResult,
    TransientJobError,
    idempotency_key,
)

__all__ = [
    "ErrorKind",
    "JobOutput",
    "JobQueue",
    "JobRecord",
    "JobRunner",
    "JobSpec",
    "JobState",
    "PermanentJobError",
    "Priority",
    "SubmitResult",
    "TransientJobError",
    "idempotency_key",
]
