"""Research exports as background jobs: asked for over the web, run one at a time by the server's export worker.

A request names a query, the de-identification profile and options, and a destination: a
folder name under the configured export root (never a path) and/or a configured DICOMweb
target by name. It is checked completely before a row is written (``queued``); the worker
then runs :func:`radpilot.pacs.research_export.research_export` with the engine's review
decisions as labels and records the counts as it goes, renewing its lease (a heartbeat) while it
runs. Several servers may share one database: a ``running`` job whose heartbeat is older than
the lease was left by a server that stopped, and is marked failed (its folder may be
incomplete) by whichever server notices first, at start or while polling. Only researchers and administrators may ask; every request and refusal is audited.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select, update

from radpilot.archive import Archive
from radpilot.archive.query import INDEXED_ATTRIBUTES, Query, QueryError, QueryLevel
from radpilot.config import Settings
from radpilot.db import make_session_factory, utcnow
from radpilot.dicom.deid import DeidConfig, Deidentifier, DeidKey, MappingStore, Option
from radpilot.dicom.deid.mapping import DeidKeyError
from radpilot.engine.research_export_models import ResearchExportJob
from radpilot.engine.review import ReviewService
from radpilot.pacs.research_export import ALLOWED_ROLES, DicomwebTarget, ExportResult, research_export
from radpilot.security import audit
from radpilot.security.principal import Principal, Role
from radpilot.security.pseudonyms import IDENTITY_QUERY_KEYS

logger = logging.getLogger(__name__)

FOLDER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
STATES = ("queued", "running", "done", "failed")
# Options a web request may choose; the safe-private list and masking regions need files and stay on the command line.
WEB_OPTIONS = frozenset(o.value for o in Option) - {Option.RETAIN_SAFE_PRIVATE.value}
MAX_QUERY_KEYS = 12
MAX_VALUE_CHARS = 128
MAX_ERRORS = 50
LEASE_S = 120.0  # a running job's heartbeat older than this means its server stopped
INTERRUPTED = "interrupted: RadPilot stopped while this export ran; its folder may be incomplete: start a new export"


class ExportRequestError(ValueError):
    """A request that cannot be run; ``field`` names the part of the body at fault (e.g. ``destination.folder``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class ExportConflict(ValueError):
    """The request is well formed but cannot run here now (the folder exists, no de-identification key is configured)."""


@dataclass(frozen=True)
class ExportRequest:
    query: dict[str, str]
    profile: str = "basic"
    options: tuple[str, ...] = ()
    folder: str | None = None
    dicomweb: str | None = None


def read_token(path: Path) -> str:
    """The bearer token in ``path``: one line, no spaces; ValueError naming the file otherwise (the token itself never)."""
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read the bearer token file {path}: {exc}") from exc
    if not token or any(c.isspace() or ord(c) < 33 for c in token):
        raise ValueError(f"the bearer token file {path} must hold one token (no spaces or line breaks)")
    return token


class ResearchExports:
    """Submits, lists and runs research export jobs over the archive's database."""

    def __init__(self, settings: Settings, archive: Archive, *, poll_s: float = 5.0, lease_s: float = LEASE_S) -> None:
        self.settings = settings
        self.archive = archive
        self.sessions = make_session_factory(archive.engine)
        self.poll_s = poll_s
        self.lease_s = lease_s
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def root(self) -> Path:
        return self.settings.resolved_research_export_dir

    # ------------------------------------------------------------------ asking
    def submit(self, principal: Principal, request: ExportRequest) -> dict[str, Any]:
        """Check ``request`` completely, then queue it; returns the job.

        Raises
        ------
        RoleRefused
            Unless the principal is a researcher or an administrator (audited).
        ExportRequestError
            Naming the field at fault.
        ExportConflict
            When the folder exists already or no de-identification key is configured.
        """
        try:
            principal.require(*ALLOWED_ROLES)
        except PermissionError as exc:
            audit.record(
                self.archive.engine,
                who=principal.name,
                action="export.research.request",
                target="research-export",
                outcome="refused",
                reason=str(exc),
                source="web",
            )
            raise
        self._check(principal, request)
        write_instances = request.folder is not None or request.dicomweb is None
        with self.sessions() as session, session.begin():
            job = ResearchExportJob(
                state="queued",
                requested_by=principal.name,
                requested_role=principal.role.value,
                query=dict(request.query),
                profile=request.profile,
                options=sorted(request.options),
                folder=request.folder or "",
                write_instances=write_instances,
                dicomweb_target=request.dicomweb,
                errors=[],
            )
            session.add(job)
            session.flush()
            if not job.folder:
                job.folder = f"job-{job.id}"  # the manifest and labels of a DICOMweb-only export
            audit.record(
                session,
                who=principal.name,
                action="export.research.request",
                target=f"research-export:{job.id}",
                source="web",
                details={"query": job.query, "options": job.options, "folder": job.folder, "dicomweb": job.dicomweb_target},
            )
            answer = self._json(job)
        logger.info("research export queued", extra={"job": answer["id"], "who": principal.name, "folder": answer["destination"]["folder"]})
        self._wake.set()
        return answer

    def _check(self, principal: Principal, request: ExportRequest) -> None:
        if request.profile != "basic":
            raise ExportRequestError("profile", f"unknown profile {request.profile!r}: only 'basic' (PS3.15 E.1-1 with its options)")
        for option in request.options:
            if option not in WEB_OPTIONS:
                raise ExportRequestError(
                    "options", f"unknown or unavailable option {option!r}; choose from {', '.join(sorted(WEB_OPTIONS))}"
                )
        try:
            DeidConfig(options=frozenset(Option(o) for o in request.options))
        except ValueError as exc:
            raise ExportRequestError("options", str(exc)) from exc
        self._check_query(principal, request.query)
        if request.folder is None and request.dicomweb is None:
            raise ExportRequestError("destination", "give a folder name, a DICOMweb target, or both")
        if request.folder is not None:
            if not FOLDER_NAME.match(request.folder) or ".." in request.folder:
                raise ExportRequestError(
                    "destination.folder",
                    f"folder {request.folder!r} must be a plain name (letters, digits, '.', '_', '-'; at most 64) under the export root",
                )
            if (self.root / request.folder).exists():
                raise ExportConflict(f"folder {request.folder!r} already exists under the export root: choose another name")
        if request.dicomweb is not None:
            try:
                self.settings.research_export_target(request.dicomweb)
            except KeyError as exc:
                raise ExportRequestError("destination.dicomweb", str(exc.args[0])) from exc
        try:
            key = DeidKey.from_settings(self.settings.deid_key_file)
            MappingStore(self.settings.resolved_deid_mapping_file, key).check_outside(self.root)
        except (DeidKeyError, ValueError) as exc:
            raise ExportConflict(f"research exports are not configured on this node: {exc}") from exc

    def _check_query(self, principal: Principal, query: dict[str, str]) -> None:
        if not query:
            raise ExportRequestError(
                "query", "give at least one query key (e.g. StudyDate, Modality); StudyInstanceUID '*' selects every study"
            )
        if len(query) > MAX_QUERY_KEYS:
            raise ExportRequestError("query", f"at most {MAX_QUERY_KEYS} query keys")
        for key, value in query.items():
            if key not in INDEXED_ATTRIBUTES:
                raise ExportRequestError(f"query.{key}", f"{key!r} is not a key RadPilot can select studies by")
            if INDEXED_ATTRIBUTES[key].level > QueryLevel.SERIES:
                raise ExportRequestError(
                    f"query.{key}", f"{key!r} is an instance-level key; select studies by patient, study or series keys"
                )
            if not principal.sees_identities and key in IDENTITY_QUERY_KEYS:
                raise ExportRequestError(f"query.{key}", f"a researcher may not select by {key} (it would confirm who a study belongs to)")
            if not value or len(value) > MAX_VALUE_CHARS or any(ord(c) < 32 for c in value):
                raise ExportRequestError(f"query.{key}", f"the value of {key} must be 1-{MAX_VALUE_CHARS} printable characters")
        keys = {k: v for k, v in query.items() if not (k == "StudyInstanceUID" and v == "*")}
        try:
            self.archive.find(Query(QueryLevel.SERIES, keys, limit=1))
        except QueryError as exc:
            raise ExportRequestError("query", str(exc)) from exc

    # ------------------------------------------------------------------ reading
    def get(self, job_id: int) -> dict[str, Any] | None:
        with self.sessions() as session:
            job = session.get(ResearchExportJob, job_id)
            return self._json(job) if job is not None else None

    def list(self, principal: Principal, limit: int = 100) -> list[dict[str, Any]]:
        """The newest jobs: all of them for an administrator, a researcher's own for a researcher."""
        query = select(ResearchExportJob).order_by(ResearchExportJob.id.desc()).limit(limit)
        if principal.role is not Role.ADMINISTRATOR:
            query = query.where(ResearchExportJob.requested_by == principal.name)
        with self.sessions() as session:
            return [self._json(job) for job in session.scalars(query)]

    def output_file(self, job: dict[str, Any], name: str) -> Path | None:
        """``manifest.json`` or ``labels.json`` of a job, if it was written."""
        path = self.root / job["destination"]["folder"] / name
        return path if job["state"] in ("done", "failed") and path.is_file() else None

    def _json(self, job: ResearchExportJob) -> dict[str, Any]:
        links = {}
        for name, file in (("manifest", "manifest.json"), ("labels", "labels.json")):
            path = self.root / job.folder / file
            links[name] = f"/api/research-exports/{job.id}/{name}" if job.state in ("done", "failed") and path.is_file() else None
        return {
            "id": job.id,
            "state": job.state,
            "requested_by": job.requested_by,
            "query": dict(job.query or {}),
            "profile": job.profile,
            "options": list(job.options or []),
            "destination": {"folder": job.folder, "files": job.write_instances, "dicomweb": job.dicomweb_target},
            "counts": {
                "studies": job.studies,
                "instances": job.instances,
                "sent": job.sent,
                "refused": job.refused,
                "not_sent": job.not_sent,
                "labelled_findings": job.labelled_findings,
            },
            "errors": list(job.errors or []),
            "created_at": job.created_at.isoformat() if job.created_at else None,
            "started_at": job.started_at.isoformat() if job.started_at else None,
            "finished_at": job.finished_at.isoformat() if job.finished_at else None,
            **links,
        }

    # ------------------------------------------------------------------ running
    def recover(self) -> int:
        """Mark running jobs whose server stopped (heartbeat older than the lease) as failed; returns how many."""
        stale = utcnow() - timedelta(seconds=self.lease_s)
        with self.sessions() as session, session.begin():
            count = session.execute(
                update(ResearchExportJob)
                .where(
                    ResearchExportJob.state == "running",
                    (ResearchExportJob.heartbeat_at.is_(None)) | (ResearchExportJob.heartbeat_at < stale),
                )
                .values(state="failed", errors=[INTERRUPTED], finished_at=utcnow())
            ).rowcount
        if count:
            logger.warning("research exports whose server stopped marked failed", extra={"jobs": count})
        return int(count or 0)

    def _heartbeat(self, job_id: int) -> None:
        with self.sessions() as session, session.begin():
            session.execute(
                update(ResearchExportJob)
                .where(ResearchExportJob.id == job_id, ResearchExportJob.claimed_by == self.worker_id)
                .values(heartbeat_at=utcnow())
            )

    def run_next(self) -> int | None:
        """Take the oldest queued job (one conditional UPDATE, so two workers never take the same) and run it; its id, or None."""
        with self.sessions() as session, session.begin():
            job_id = session.scalar(
                select(ResearchExportJob.id).where(ResearchExportJob.state == "queued").order_by(ResearchExportJob.id).limit(1)
            )
            if job_id is None:
                return None
            taken = session.execute(
                update(ResearchExportJob)
                .where(ResearchExportJob.id == job_id, ResearchExportJob.state == "queued")
                .values(state="running", started_at=utcnow(), claimed_by=self.worker_id, heartbeat_at=utcnow())
            ).rowcount
        if taken:
            beating = threading.Event()

            def renew() -> None:
                while not beating.wait(self.lease_s / 4):
                    try:
                        self._heartbeat(job_id)
                    except Exception:  # noqa: BLE001 - a missed beat is retried; the lease allows several
                        logger.warning("research export heartbeat failed", extra={"job": job_id}, exc_info=True)

            heart = threading.Thread(target=renew, name=f"radpilot-research-export-heartbeat-{job_id}", daemon=True)
            heart.start()
            try:
                self._run(job_id)
            finally:
                beating.set()
                heart.join()
        return job_id

    def _run(self, job_id: int) -> None:
        with self.sessions() as session:
            job = session.get(ResearchExportJob, job_id)
            assert job is not None
            principal = Principal(job.requested_by, Role.parse(job.requested_role))
            keys, options, folder = dict(job.query), [Option(o) for o in job.options], job.folder
            write_instances, target_name = job.write_instances, job.dicomweb_target
        try:
            key = DeidKey.from_settings(self.settings.deid_key_file)
            target = None
            if target_name is not None:
                configured = self.settings.research_export_target(target_name)
                token = read_token(configured.bearer_token_file) if configured.bearer_token_file is not None else None
                target = DicomwebTarget(configured.dicomweb_url, token, name=configured.name)
            result = research_export(
                self.archive,
                principal,
                keys,
                self.root / folder,
                Deidentifier(key, DeidConfig(options=frozenset(options))),
                MappingStore(self.settings.resolved_deid_mapping_file, key),
                source=f"web research-export:{job_id}",
                labels=ReviewService(self.archive, organisation=self.settings.organisation).labels,
                dicomweb=target,
                write_instances=write_instances,
                progress=lambda partial: self._record(job_id, partial),
            )
        except Exception as exc:  # noqa: BLE001 - whatever stops an export is recorded on the job, never lost in a thread
            logger.exception("research export failed", extra={"job": job_id})
            self._finish(job_id, "failed", [f"{type(exc).__name__}: {exc}"])
            return
        self._record(job_id, result)
        errors = [f"not sent {f['instance']}: {f['reason']}" for f in result.failed]
        errors += [f"refused {r['instance']}: {r['reason']}" for r in result.refused]
        self._finish(job_id, "failed" if result.failed else "done", errors)

    def _record(self, job_id: int, result: ExportResult) -> None:
        with self.sessions() as session, session.begin():
            session.execute(
                update(ResearchExportJob)
                .where(ResearchExportJob.id == job_id)
                .values(
                    studies=len(result.studies),
                    instances=result.written,
                    sent=result.sent,
                    refused=len(result.refused),
                    not_sent=len(result.failed),
                    labelled_findings=result.labelled_findings,
                )
            )

    def _finish(self, job_id: int, state: str, errors: list[str]) -> None:
        with self.sessions() as session, session.begin():
            session.execute(
                update(ResearchExportJob)
                .where(ResearchExportJob.id == job_id, ResearchExportJob.claimed_by == self.worker_id)
                .values(state=state, errors=errors[:MAX_ERRORS], finished_at=utcnow())
            )
        logger.info("research export finished", extra={"job": job_id, "state": state, "errors": len(errors)})

    # ------------------------------------------------------------------ the worker thread
    def start(self) -> None:
        """Mark interrupted jobs failed, then run queued ones in a background thread until :meth:`stop`."""
        self.recover()
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="radpilot-research-export", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.recover()
                while not self._stop.is_set() and self.run_next() is not None:
                    pass
            except Exception:  # noqa: BLE001 - a database hiccup must not end the worker; the job stays queued
                logger.exception("research export worker: could not take a job")
            self._wake.wait(self.poll_s)
            self._wake.clear()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop taking jobs; a running export finishes first (or, past ``timeout``, is marked failed at the next start)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
