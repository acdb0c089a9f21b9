"""The engine as a service inside ``radpilot serve``: detector, queue, workers and outbox together."""

from __future__ import annotations

import logging

from radpilot.analyses import discover_analyses
from radpilot.archive import Archive
from radpilot.config import Settings
from radpilot.engine.detector import StudyCompleteDetector
from radpilot.engine.flags import load_all_flag_rules
from radpilot.engine.job_store import JobStore
from radpilot.engine.jobs import JobQueue, Priority
from radpilot.engine.outbox import Outbox, make_message_senders, make_sender
from radpilot.engine.pipeline import RunnerFactory, SeriesPlan, plan_study
from radpilot.engine.queue_embedded import EmbeddedJobQueue, EmbeddedWorkerPool
from radpilot.engine.routing import load_rules

logger = logging.getLogger(__name__)

# At a stop, running jobs may finish for this long; the others go back to the queue (their attempt not
# counted) and run again after the restart. With the outbox's share, the engine stops within 10 s, so
# a service manager never has to kill it (systemd waits 90 s by default).
JOB_STOP_GRACE_S = 5.0
OUTBOX_STOP_S = 3.0


def make_queue(settings: Settings) -> JobQueue:
    """The job queue of the configured backend (jobs always live in the archive database)."""
    if settings.queue_backend == "celery":
        if not settings.broker_url:
            raise ValueError("queue_backend 'celery' needs broker_url (RADPILOT_BROKER_URL), e.g. redis://127.0.0.1:6379/0")
        from radpilot.engine.queue_celery import CeleryJobQueue  # noqa: PLC0415 - Celery loads only for that backend

        return CeleryJobQueue.from_urls(settings.broker_url, settings.resolved_database_url)

    return EmbeddedJobQueue(JobStore.from_url(settings.resolved_database_url, migrate=True))


class Engine:
    """Routes complete studies to analyses, runs them, and forwards the results.

    Raises
    ------
    radpilot.engine.routing.RulesError
        At construction, when the rules file has an error (file, line and reason).
    """

    def __init__(self, settings: Settings, archive: Archive) -> None:
        self.settings = settings
        self.archive = archive
        self.analyses = discover_analyses()
        self.rules = load_rules(settings.rules_file, self.analyses)
        # A flags.yaml with an error stops the start, like a rules file with one, instead of failing every job.
        self.flag_rules = load_all_flag_rules(self.analyses)
        self.pool = None
        if settings.queue_backend == "embedded" and settings.workers > 0:
            self.pool = EmbeddedWorkerPool(
                settings.resolved_database_url,
                RunnerFactory(settings.model_dump_json()),
                processes=settings.workers,
            )
        self._queue: JobQueue | None = None
        self.detector = StudyCompleteDetector(archive, self.on_study_complete, quiet_period_s=settings.quiet_period_s)
        self.outbox = Outbox(archive, make_sender(settings), message_senders=make_message_senders(settings))

    @property
    def queue(self) -> JobQueue:
        if self._queue is None:
            self._queue = self.pool.queue() if self.pool is not None else make_queue(self.settings)
        return self._queue

    def start(self) -> None:
        if self.pool is not None:
            self.pool.start()
        if self.settings.analysis_enabled:
            self.detector.start()
        self.outbox.start()
        logger.info(
            "engine started",
            extra={
                "analyses": sorted(self.analyses),
                "rules": len(self.rules.rules),
                "backend": self.settings.queue_backend,
                "workers": self.settings.workers,
                "quiet_period_s": self.settings.quiet_period_s,
            },
        )

    def stop(self) -> None:
        self.detector.stop()
        self.outbox.stop(timeout_s=OUTBOX_STOP_S)
        if self.pool is not None:
            self.pool.stop(timeout_s=JOB_STOP_GRACE_S)

    def on_study_complete(self, study_uid: str) -> None:
        plans = self.route_study(study_uid)
        created = sum(1 for plan in plans for _, new in plan.jobs if new)
        if created:
            logger.info("study complete: jobs queued", extra={"study_instance_uid": study_uid, "jobs": created})

    def route_study(self, study_uid: str, *, priority: Priority | None = None) -> list[SeriesPlan]:
        return plan_study(self.archive, self.rules, self.analyses, study_uid, self.queue, priority_override=priority)
