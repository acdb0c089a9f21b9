"""Stored validation results, per analysis (or model) and version, in the archive database.

Table (migration 0004, on :class:`radpilot.db.Base`):

``validation_run``
    One validation of one subject (an analysis or a model) at one version on one
    dataset: the dataset's identity and content hash, whether the hash matched its
    manifest, whether every case was evaluated, whether the dataset is independent of
    the subject's training data, the flat metrics the gate reads, the summary, the
    distribution of key outputs (for drift monitoring) and where its JSON and HTML
    report are (``<data_dir>/validation/runs/<subject>/<version>/<id>-<dataset>/``).
The activations the gate writes live in :mod:`radpilot.modelhub.activation` (the engine
reads them there), so validation results live in the database, not only in files.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Engine, Float, Index, Integer, String, Text, select
from sqlalchemy.orm import Mapped, mapped_column, sessionmaker

from radpilot.config import Settings
from radpilot.db import Base, make_engine, migrate, utcnow
from radpilot.modelhub.activation import ModelActivation, activation_history, active_activation


class ValidationRun(Base):
    __tablename__ = "validation_run"
    __table_args__ = (Index("ix_validation_run_subject", "subject", "version", "dataset", "created_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    subject: Mapped[str] = mapped_column(String(64))
    subject_kind: Mapped[str] = mapped_column(String(16))  # analysis | model
    version: Mapped[str] = mapped_column(String(32))
    model: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)  # the model it ran, if any
    model_version: Mapped[str | None] = mapped_column(String(32), nullable=True)
    dataset: Mapped[str] = mapped_column(String(64), index=True)
    dataset_version: Mapped[str] = mapped_column(String(64), default="")
    dataset_hash: Mapped[str] = mapped_column(String(80), default="")
    dataset_verified: Mapped[bool] = mapped_column(Boolean, default=False)
    complete: Mapped[bool] = mapped_column(Boolean, default=False)
    independent: Mapped[bool] = mapped_column(Boolean, default=True)
    status: Mapped[str] = mapped_column(String(16), default="ok")  # ok | failed
    n_cases: Mapped[int] = mapped_column(Integer, default=0)
    n_evaluated: Mapped[int] = mapped_column(Integer, default=0)
    n_excluded: Mapped[int] = mapped_column(Integer, default=0)
    n_failed: Mapped[int] = mapped_column(Integer, default=0)
    code_path: Mapped[str] = mapped_column(Text, default="")
    seconds: Mapped[float] = mapped_column(Float, default=0.0)
    machine: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    summary: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    outputs: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    result_path: Mapped[str] = mapped_column(Text, default="")
    report_path: Mapped[str] = mapped_column(Text, default="")

    @property
    def eligible(self) -> bool:
        """Counts for the gate: finished, every case evaluated, dataset hash verified, independent of training data."""
        return self.status == "ok" and self.complete and self.dataset_verified and self.independent

    def ineligible_reasons(self) -> list[str]:
        reasons = []
        if self.status != "ok":
            reasons.append("the run failed")
        if not self.complete:
            reasons.append(f"only {self.n_evaluated} of {self.n_cases} cases were evaluated (a partial run)")
        if not self.dataset_verified:
            reasons.append("the dataset's content hash did not match its manifest")
        if not self.independent:
            reasons.append("the dataset was used to train it (validation on training data)")
        return reasons

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "created_at": self.created_at.isoformat() if self.created_at else None,
            "subject": self.subject,
            "subject_kind": self.subject_kind,
            "version": self.version,
            "model": self.model,
            "model_version": self.model_version,
            "dataset": self.dataset,
            "dataset_version": self.dataset_version,
            "dataset_hash": self.dataset_hash,
            "dataset_verified": self.dataset_verified,
            "complete": self.complete,
            "independent": self.independent,
            "eligible_for_gate": self.eligible,
            "status": self.status,
            "n_cases": self.n_cases,
            "n_evaluated": self.n_evaluated,
            "n_excluded": self.n_excluded,
            "n_failed": self.n_failed,
            "code_path": self.code_path,
            "seconds": self.seconds,
            "metrics": dict(self.metrics or {}),
            "result_path": self.result_path,
            "report_path": self.report_path,
        }


# --------------------------------------------------------------------------------------------- engine access
def resolve_engine(where: Any) -> tuple[Engine, Path | None]:
    """The database engine and data folder from a Settings, an Archive, an Engine, a ValidationStore or an object holding one.

    A Settings gets a new engine on its database, migrated to the newest schema.
    """
    if isinstance(where, ValidationStore):
        return where.engine, where.data_dir
    if isinstance(where, Engine):
        return where, None
    if isinstance(where, Settings):
        engine = make_engine(where.resolved_database_url)
        migrate(engine)
        return engine, Path(where.data_dir)
    engine = getattr(where, "engine", None)
    if isinstance(engine, Engine):
        settings = getattr(where, "settings", None)
        data_dir = Path(settings.data_dir) if settings is not None else None
        if data_dir is None and getattr(where, "storage_dir", None) is not None:
            data_dir = Path(where.storage_dir).parent
        return engine, data_dir
    for attribute in ("archive", "settings"):
        inner = getattr(where, attribute, None)
        if inner is not None:
            return resolve_engine(inner)
    raise TypeError(f"expected Settings, an Archive, a SQLAlchemy Engine or an object with .archive/.settings, got {type(where).__name__}")


def _safe(part: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", part)[:64] or "_"


def json_safe(value: Any) -> Any:
    """A copy of ``value`` that ``json.dumps(allow_nan=False)`` accepts: non-finite floats become None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalar
        return json_safe(value.item())
    return value


@dataclass(frozen=True)
class StoredRun:
    id: int
    result_path: Path
    report_path: Path | None


class ValidationStore:
    """Validation runs in the database, their full JSON and HTML report in the data folder.

    Parameters
    ----------
    engine
        The archive database (migrated).
    data_dir
        RadPilot's data folder; run files go to ``<data_dir>/validation/runs``.
    """

    def __init__(self, engine: Engine, data_dir: Path | None) -> None:
        self.engine = engine
        self.data_dir = Path(data_dir) if data_dir is not None else None
        self.sessions = sessionmaker(bind=engine, expire_on_commit=False)

    @classmethod
    def open(cls, where: Any) -> ValidationStore:
        engine, data_dir = resolve_engine(where)
        return cls(engine, data_dir)

    @property
    def runs_dir(self) -> Path:
        if self.data_dir is None:
            raise ValueError("this store has no data folder: results cannot be written to files")
        return self.data_dir / "validation" / "runs"

    # -- writing -------------------------------------------------------------------------------------
    def save(self, result: dict[str, Any], html: str | None = None, extra_files: dict[str, bytes] | None = None) -> StoredRun:
        """Store one validation result (the runner's JSON document) and its HTML report; returns the run id.

        The row and the files are written together: if writing a file fails the row is rolled back.
        """
        subject, dataset = result["subject"], result["dataset"]
        gate_view = result["gate_view"]
        with self.sessions() as session, session.begin():
            row = ValidationRun(
                subject=subject["name"],
                subject_kind=subject["kind"],
                version=subject["version"],
                model=subject.get("model"),
                model_version=subject.get("model_version"),
                dataset=dataset["name"],
                dataset_version=dataset["version"],
                dataset_hash=dataset.get("content_hash") or "",
                dataset_verified=bool(dataset.get("verified")),
                complete=bool(gate_view["complete"]),
                independent=bool(gate_view["independent"]),
                status=str(result.get("status", "ok")),
                n_cases=int(gate_view["n_cases"]),
                n_evaluated=int(gate_view["n_evaluated"]),
                n_excluded=int(gate_view["n_excluded"]),
                n_failed=int(gate_view["n_failed"]),
                code_path=str(subject.get("code_path", "")),
                seconds=float(result.get("seconds", 0.0)),
                machine=json_safe(result.get("machine", {})),
                metrics=json_safe(result.get("metrics", {})),
                summary=json_safe(result.get("summary", {})),
                outputs=json_safe(result.get("outputs", {})),
            )
            session.add(row)
            session.flush()
            folder = self.runs_dir / _safe(subject["name"]) / _safe(subject["version"]) / f"{row.id:06d}-{_safe(dataset['name'])}"
            folder.mkdir(parents=True, exist_ok=True)
            document = dict(result, run_id=row.id)
            result_path = folder / "result.json"
            result_path.write_text(json.dumps(json_safe(document), indent=1, allow_nan=False))
            report_path = None
            if html is not None:
                report_path = folder / "report.html"
                report_path.write_text(html, encoding="utf-8")
            for name, data in (extra_files or {}).items():
                (folder / _safe(name)).write_bytes(data)
            row.result_path = str(result_path)
            row.report_path = str(report_path) if report_path else ""
            run_id = row.id
        return StoredRun(run_id, result_path, report_path)

    def attach_report(self, run_id: int, html: str) -> Path:
        """Write (or rewrite) the HTML report of a stored run."""
        with self.sessions() as session, session.begin():
            row = session.get(ValidationRun, run_id)
            if row is None:
                raise KeyError(f"no validation run {run_id}")
            path = Path(row.result_path).parent / "report.html"
            path.write_text(html, encoding="utf-8")
            row.report_path = str(path)
        return path

    # -- reading -------------------------------------------------------------------------------------
    def runs(
        self, subject: str | None = None, version: str | None = None, dataset: str | None = None, *, limit: int = 500
    ) -> list[ValidationRun]:
        """Stored runs, newest first."""
        query = select(ValidationRun).order_by(ValidationRun.created_at.desc(), ValidationRun.id.desc()).limit(limit)
        if subject is not None:
            query = query.where(ValidationRun.subject == subject)
        if version is not None:
            query = query.where(ValidationRun.version == version)
        if dataset is not None:
            query = query.where(ValidationRun.dataset == dataset)
        with self.sessions() as session:
            return list(session.scalars(query))

    def get(self, run_id: int) -> ValidationRun:
        with self.sessions() as session:
            row = session.get(ValidationRun, int(run_id))
        if row is None:
            raise KeyError(f"no validation run with id {run_id}")
        return row

    def latest(self, subject: str, version: str, dataset: str | None = None, *, eligible_only: bool = False) -> ValidationRun | None:
        for row in self.runs(subject, version, dataset):
            if not eligible_only or row.eligible:
                return row
        return None

    def load_result(self, run: int | ValidationRun) -> dict[str, Any]:
        row = self.get(run) if isinstance(run, int) else run
        try:
            return json.loads(Path(row.result_path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise FileNotFoundError(f"the result file of validation run {row.id} ({row.result_path}) cannot be read: {exc}") from exc

    def resolve(self, ref: str) -> ValidationRun:
        """A run from a command-line reference: ``17`` (run id), ``SUBJECT@VERSION`` or ``SUBJECT@VERSION:DATASET`` (latest)."""
        ref = ref.strip()
        if ref.isdigit():
            return self.get(int(ref))
        head, _, dataset = ref.partition(":")
        subject, sep, version = head.partition("@")
        if not sep or not subject or not version:
            raise KeyError(f"{ref!r}: expected a run id, SUBJECT@VERSION or SUBJECT@VERSION:DATASET")
        row = self.latest(subject, version, dataset or None)
        if row is None:
            raise KeyError(f"no stored validation of {subject} {version}" + (f" on {dataset}" if dataset else ""))
        return row

    # -- activation ----------------------------------------------------------------------------------
    def active(self, subject: str, version: str | None = None) -> ModelActivation | None:
        """The current activation row of ``subject`` (of that version when given), or None."""
        return active_activation(self.engine, subject, version)

    def activations(self, subject: str | None = None) -> list[ModelActivation]:
        return activation_history(self.engine, subject)
