"""Run an analysis (or a model) over a reference dataset and measure it: the validation runner.

:func:`run_validation` checks the dataset's content hash, evaluates every case through
the subject's evaluation path (:mod:`radpilot.validation.evaluators`), aggregates the
per-case metrics with bootstrap CIs (:mod:`radpilot.validation.aggregate`) and returns a
:class:`ValidationOutcome`: the typed :class:`~radpilot.validation.result.ValidationResult`
(per-case table, summaries, agreement, ROC, flat metrics for the gate, the dataset's
identity, hash and limitations, the machine), its JSON document, and overlay images of the
worst cases for the HTML report. :func:`validate` also renders the report and stores both.
"""

from __future__ import annotations

import heapq
import importlib.metadata
import json
import logging
import math
import os
import platform
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import scipy

from radpilot import __version__
from radpilot.validation.aggregate import N_RESAMPLES, SEED, aggregate
from radpilot.validation.datasets import CaseRef, DatasetError, DatasetManifest, DatasetRegistry
from radpilot.validation.evaluators import CaseResult, Overlay, choose_evaluator
from radpilot.validation.report import render_report
from radpilot.validation.result import CaseRecord, GateView, SubjectRecord, ValidationResult
from radpilot.validation.store import StoredRun, ValidationStore
from radpilot.validation.subject import Subject, ValidationError, resolve_subject

logger = logging.getLogger(__name__)

WORST_CASES = 6

__all__ = ["ValidationError", "ValidationOutcome", "machine_info", "resolve_subject", "run_validation", "validate"]


def machine_info(subject: Subject | None = None) -> dict[str, Any]:
    """Where the numbers were made: host, OS, CPU count, library versions, the git commit if known."""
    info: dict[str, Any] = {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or "",
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "radpilot": __version__,
    }
    if subject is not None and subject.model_manifest is not None:
        info["onnxruntime"] = importlib.metadata.version("onnxruntime")
    try:
        repo = Path(__file__).resolve().parents[2]
        commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if commit.returncode == 0:
            info["git_commit"] = commit.stdout.strip()
            dirty = subprocess.run(
                ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=5
            )
            info["git_dirty"] = bool(dirty.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    return info


# ------------------------------------------------------------------------------------------ the run
@dataclass
class ValidationOutcome:
    """A finished validation: the JSON document and the overlays of the worst (and excluded) cases."""

    record: ValidationResult
    overlays: list[Overlay]
    cases: list[CaseResult]
    result: dict[str, Any] = field(init=False)  # the record's document: what is stored and rendered

    def __post_init__(self) -> None:
        self.result = self.record.to_document()

    @property
    def metrics(self) -> dict[str, float]:
        return self.result["metrics"]


ProgressCallback = Callable[[int, int, str], None]


def _independence(subject: Subject, manifest: DatasetManifest) -> tuple[bool, str]:
    names = {subject.name}
    if subject.model_manifest is not None:
        names.add(subject.model_manifest.name)
        training = json.dumps(subject.model_manifest.training_data)
        if manifest.name in training:
            return False, f"the model's manifest names {manifest.name} in its training data"
    used = sorted(names & set(manifest.development_use))
    if used:
        return False, f"the dataset manifest lists {', '.join(used)} under development_use (trained or tuned on it)"
    return True, ""


def run_validation(
    subject: Subject,
    manifest: DatasetManifest,
    registry: DatasetRegistry,
    *,
    limit: int | None = None,
    case_ids: Sequence[str] | None = None,
    allow_unverified: bool = False,
    progress: ProgressCallback | None = None,
    seed: int = SEED,
    n_resamples: int = N_RESAMPLES,
    worst: int = WORST_CASES,
) -> ValidationOutcome:
    """Evaluate ``subject`` on every case (or a subset) of ``manifest``'s dataset.

    The dataset's content hash is checked first; a changed (or unpinned) dataset is
    refused unless ``allow_unverified``, and a run on it never counts for the gate.
    ``limit``/``case_ids`` make a partial run, which never counts for the gate either.
    """
    verification = registry.verify(manifest)
    if verification.status in ("missing", "invalid"):
        raise ValidationError(f"dataset {manifest.name}: {verification.message}")
    if not verification.ok and not allow_unverified:
        raise ValidationError(
            f"dataset {manifest.name} cannot be verified: {verification.message}. Results on it would not be reproducible; "
            "restore the dataset, or run with --allow-unverified (such a run never counts for the gate)"
        )
    evaluator = choose_evaluator(subject, manifest)
    all_cases: list[CaseRef] = registry.cases(manifest)
    selected = all_cases
    if case_ids:
        wanted = list(dict.fromkeys(case_ids))
        known = {c.case_id: c for c in all_cases}
        missing = [c for c in wanted if c not in known]
        if missing:
            raise ValidationError(f"dataset {manifest.name} has no case(s) {missing[:5]}")
        selected = [known[c] for c in wanted]
    if limit is not None:
        if limit < 1:
            raise ValidationError("limit must be at least 1")
        selected = selected[:limit]
    independent, dependence = _independence(subject, manifest)
    started_at = datetime.now(UTC)
    wall0 = time.perf_counter()
    results: list[CaseResult] = []
    heap: list[tuple[float, int, Overlay]] = []  # the worst included cases by the primary metric
    excluded_overlays: list[Overlay] = []
    try:
        for index, ref in enumerate(selected):
            if progress is not None:
                progress(index, len(selected), ref.case_id)
            result = CaseResult(ref.case_id, excluded=ref.excluded, attributes=dict(ref.attributes))
            result.attributes.pop("value_offset", None)
            t0, c0 = time.perf_counter(), time.process_time()
            try:
                data = registry.load_case(manifest, ref)
                evaluator.evaluate(data, result)
            except (DatasetError, OSError) as exc:
                raise ValidationError(f"case {ref.case_id} of {manifest.name} cannot be read: {exc}") from exc
            except Exception as exc:  # noqa: BLE001 - a failing case is a result, not a crash of the run
                logger.warning("validation case failed", extra={"case": ref.case_id, "error": str(exc)})
                result.status, result.error = "failed", f"{type(exc).__name__}: {exc}"
                result.metrics.clear()
            result.seconds, result.cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
            overlay, result.overlay = result.overlay, None
            if overlay is not None:
                overlay.excluded = result.excluded
                score = result.metrics.get(evaluator.primary_metric, float("nan"))
                overlay.caption = (f"{evaluator.primary_metric} {score:.4f}" if math.isfinite(score) else "") + (
                    f"; {overlay.caption}" if overlay.caption else ""
                )
                if result.excluded:
                    excluded_overlays.append(overlay)
                elif math.isfinite(score) and worst > 0:
                    item = (-score, index, overlay)
                    if len(heap) < worst:
                        heapq.heappush(heap, item)
                    elif item > heap[0]:
                        heapq.heapreplace(heap, item)
            results.append(result)
        if progress is not None:
            progress(len(selected), len(selected), "")
    finally:
        evaluator.close()
    seconds = time.perf_counter() - wall0
    summary, flat = aggregate(results, evaluator, seed=seed, n_resamples=n_resamples)
    n_failed = sum(1 for r in results if r.status == "failed")
    complete = len(selected) == len(all_cases)
    key_outputs = {o.name for o in (subject.analysis or subject.owner).outputs if o.key} if (subject.analysis or subject.owner) else set()
    outputs: dict[str, list[float]] = {}
    for r in results:
        if r.status != "ok":
            continue
        for name, v in r.values.items():
            if name in key_outputs and v.get("predicted") is not None:
                outputs.setdefault(name, []).append(float(v["predicted"]))
    warnings_: list[str] = []
    if not verification.ok:
        warnings_.append(f"Dataset not verified ({verification.status}): {verification.message}. This run does not count for the gate.")
    if not complete:
        warnings_.append(f"Partial run: {len(selected)} of {len(all_cases)} cases. This run does not count for the gate.")
    if not independent:
        warnings_.append(f"Not independent: {dependence}. The figures are optimistic; an independent check is still needed.")
    if n_failed:
        warnings_.append(f"{n_failed} case(s) failed; they are listed in the table and counted in failure_rate.")
    n_included = sum(1 for r in results if r.included)
    if 0 < n_included < 10:
        warnings_.append(f"Only {n_included} case(s) in the statistics: confidence intervals are wide or meaningless.")
    nonfinite = {k: v["n_nonfinite"] for k, v in summary["per_metric"].items() if v.get("n_nonfinite")}
    if nonfinite:
        warnings_.append(f"Non-finite values (a missed structure) were left out of the averages: {nonfinite}.")
    ordered_overlays = [o for _, _, o in sorted(heap, key=lambda item: item[0], reverse=True)] + excluded_overlays
    record = ValidationResult(
        created_at=started_at.isoformat(),
        seconds=round(seconds, 3),
        subject=SubjectRecord(
            kind=subject.kind,
            name=subject.name,
            version=subject.version,
            model=subject.model,
            model_version=subject.model_version,
            model_sha256=subject.model_manifest.sha256 if subject.model_manifest is not None else None,
            code_path=evaluator.code_path,
        ),
        dataset=dict(
            manifest.summary(),
            content_hash=verification.actual_hash,
            verified=verification.ok,
            verification=verification.status,
            verification_message=verification.message,
            root=str(verification.root),
            n_cases=len(all_cases),
        ),
        gate_view=GateView(
            complete=complete,
            independent=independent,
            dependence=dependence,
            n_cases=len(all_cases),
            n_evaluated=len(results),
            n_included=n_included,
            n_excluded=sum(1 for r in results if r.excluded and r.status == "ok"),
            n_failed=n_failed,
        ),
        machine=machine_info(subject),
        primary_metric=evaluator.primary_metric,
        warnings=warnings_,
        summary=summary,
        metrics=flat,
        outputs=outputs,
        cases=[CaseRecord(**r.to_dict()) for r in results],
    )
    return ValidationOutcome(record, ordered_overlays, results)


def validate(
    subject_name: str,
    dataset_name: str,
    *,
    settings: Any,
    model_version: str | None = None,
    models_dir: Path | None = None,
    registry: DatasetRegistry | None = None,
    store: ValidationStore | None = None,
    limit: int | None = None,
    case_ids: Sequence[str] | None = None,
    allow_unverified: bool = False,
    progress: ProgressCallback | None = None,
    n_resamples: int = N_RESAMPLES,
    seed: int = SEED,
) -> tuple[ValidationOutcome, StoredRun]:
    """Resolve, run, render the HTML report and store the run; returns ``(outcome, StoredRun)``."""
    registry = registry or DatasetRegistry.from_settings(settings)
    try:
        manifest = registry.get(dataset_name)
    except KeyError as exc:
        raise ValidationError(str(exc.args[0])) from exc
    subject = resolve_subject(subject_name, model_version=model_version, models_dir=models_dir)
    if not manifest.checks(subject.name) and not (subject.model and manifest.checks(subject.model)):
        logger.info("dataset does not declare this subject", extra={"dataset": manifest.name, "subject": subject.name})
    outcome = run_validation(
        subject,
        manifest,
        registry,
        limit=limit,
        case_ids=case_ids,
        allow_unverified=allow_unverified,
        progress=progress,
        n_resamples=n_resamples,
        seed=seed,
    )
    store = store or ValidationStore.open(settings)
    stored = store.save(outcome.result, html=None)
    outcome.result["run_id"] = stored.id
    html = render_report(outcome.result, outcome.overlays)
    report_path = store.attach_report(stored.id, html)
    return outcome, StoredRun(stored.id, stored.result_path, report_path)
