"""Monitoring in production: per analysis and version, what ran, how often it failed, how long it took,
and whether its key outputs drift away from what its validation saw.

Source: the engine's ``job`` table (analysis, analysis_version, state, created_at,
started_at, finished_at, result with ``details.measurements`` = ``[{name, value, unit,
site}]``). Key outputs are the outputs each analysis declares with ``key=True``
(:class:`~radpilot.contract.OutputSpec`, e.g. total lung volume, LAA-950, CTR), matched by
measurement name and site among that analysis' declarations.

Drift: the production values of a key output in the window are compared with the
values the newest complete validation run of the same analysis version produced
(``validation_run.outputs``). A warning is raised when both

* the population stability index (10 bins at the reference deciles) is >= 0.2, and
* the two-sample Kolmogorov-Smirnov test gives p < 0.01;

so a large sample does not flag a trivial shift and a small one does not flag noise.
With fewer than :data:`MIN_REFERENCE` reference or :data:`MIN_PRODUCTION` production
values no test is made and the status says so (the shared ``ct-lung`` set gives only 2
reference values: drift cannot be judged against it). LAA-950 depends on the
reconstruction kernel: a change in the kernel mix shows as drift.

Review feedback: per analysis and version, how radiologists decided on its findings in
the window (accept / edit / reject counts and rates, the commonest rejection reasons;
the latest decision per finding counts), from :func:`radpilot.engine.review.review_feedback`.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
from scipy.stats import ks_2samp
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from radpilot.engine.job_store import JobStore
from radpilot.engine.jobs import JobState
from radpilot.engine.review import FeedbackRow, review_feedback
from radpilot.validation.outputs import OutputCatalog
from radpilot.validation.store import ValidationRun

MIN_REFERENCE = 20
MIN_PRODUCTION = 20
PSI_THRESHOLD = 0.2
KS_ALPHA = 0.01


@dataclass(frozen=True)
class JobRow:
    analysis: str
    version: str
    state: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    result: dict[str, Any] | None
    id: int


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def job_rows(engine: Engine, since: datetime, analysis: str | None = None, version: str | None = None) -> list[JobRow]:
    """The engine's jobs submitted since ``since``, as the engine's job store reports them."""
    return [
        JobRow(
            job.analysis,
            job.analysis_version,
            JobState(job.state).value,
            _utc(job.created_at),
            _utc(job.started_at),
            _utc(job.finished_at),
            job.result,
            job.id,
        )
        for job in JobStore(engine).created_since(since, analysis, version)
    ]


def _percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def measurement_outputs(
    result: dict[str, Any] | None, catalog: OutputCatalog | None = None, analysis: str | None = None
) -> dict[str, float]:
    """Key outputs from a job's stored result (``details.measurements``), by output name, as ``analysis`` declares them."""
    catalog = catalog or OutputCatalog.discover()
    out: dict[str, float] = {}
    details = (result or {}).get("details") or {}
    for m in details.get("measurements") or []:
        try:
            value = float(m.get("value"))
        except (TypeError, ValueError):
            continue
        spec = catalog.match("", str(m.get("name", "")), None, str(m.get("site", "")) or None, analysis=analysis)
        if spec is not None and spec.key and math.isfinite(value) and spec.name not in out:
            out[spec.name] = value
    return out


def population_stability_index(reference: np.ndarray, production: np.ndarray, bins: int = 10) -> float:
    """PSI over bins at the reference quantiles (a small floor avoids log(0))."""
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)))
    if edges.size < 3:
        edges = np.array([reference.min() - 0.5, reference.min() + 0.5]) if edges.size == 1 else edges
    inner = edges[1:-1]
    ref_counts = np.bincount(np.searchsorted(inner, reference, side="right"), minlength=inner.size + 1)
    prod_counts = np.bincount(np.searchsorted(inner, production, side="right"), minlength=inner.size + 1)
    p = np.maximum(ref_counts / ref_counts.sum(), 1e-4)
    q = np.maximum(prod_counts / prod_counts.sum(), 1e-4)
    return float(np.sum((q - p) * np.log(q / p)))


def drift(reference: list[float] | None, production: list[float]) -> dict[str, Any]:
    """Compare production values with the validation distribution; see the module docstring for the rule."""
    if not reference:
        return {"status": "no_reference", "message": "no complete validation run of this version reports this output"}
    ref, prod = np.asarray(reference, dtype=float), np.asarray(production, dtype=float)
    info: dict[str, Any] = {
        "n_reference": int(ref.size),
        "n_production": int(prod.size),
        "reference_median": float(np.median(ref)),
        "production_median": float(np.median(prod)) if prod.size else None,
    }
    if ref.size < MIN_REFERENCE or prod.size < MIN_PRODUCTION:
        info.update(
            status="insufficient_data",
            message=f"drift needs >= {MIN_REFERENCE} validation values and >= {MIN_PRODUCTION} production values "
            f"(have {ref.size} and {prod.size})",
        )
        return info

    psi = population_stability_index(ref, prod)
    ks = ks_2samp(ref, prod)
    drifted = psi >= PSI_THRESHOLD and float(ks.pvalue) < KS_ALPHA
    info.update(
        psi=psi,
        ks_statistic=float(ks.statistic),
        ks_pvalue=float(ks.pvalue),
        status="drift" if drifted else "ok",
        message=(
            f"distribution departs from validation (PSI {psi:.2f}, KS p {float(ks.pvalue):.2g})"
            if drifted
            else f"consistent with validation (PSI {psi:.2f}, KS p {float(ks.pvalue):.2g})"
        ),
    )
    return info


def _reference_outputs(engine: Engine, analysis: str, version: str) -> tuple[dict[str, list[float]], int | None, str | None]:
    query = (
        select(ValidationRun)
        .where(
            ValidationRun.subject == analysis,
            ValidationRun.version == version,
            ValidationRun.status == "ok",
            ValidationRun.complete.is_(True),
        )
        .order_by(ValidationRun.created_at.desc(), ValidationRun.id.desc())
    )

    with Session(engine) as session:
        merged: dict[str, list[float]] = {}
        run_id, dataset = None, None
        for run in session.scalars(query):
            for name, values in (run.outputs or {}).items():
                if name not in merged and values:
                    merged[name] = [float(v) for v in values]
                    run_id, dataset = (run_id or run.id), (dataset or run.dataset)
        return merged, run_id, dataset


def _review_rates(feedback: dict[tuple[str, str], FeedbackRow], analysis: str, version: str) -> dict[str, Any]:
    """The radiologists' decisions on this version's findings in the window (see radpilot.engine.review)."""
    row = feedback.get((analysis, version))
    if row is None:
        return {"available": True, "n": 0, "message": "no finding of this version was reviewed in the window"}
    return {"available": True, "n": row.decided, **row.to_dict()}


def monitoring_report(
    engine: Engine, *, days: int = 30, analysis: str | None = None, version: str | None = None, now: datetime | None = None
) -> dict[str, Any]:
    """Per analysis and version over the last ``days`` days: daily counts, failure rate, processing time, key outputs with drift."""
    if days < 1:
        raise ValueError("days must be at least 1")
    now = now or datetime.now(UTC)
    since = now - timedelta(days=days)
    catalog = OutputCatalog.discover()
    groups: dict[tuple[str, str], list[JobRow]] = defaultdict(list)
    for row in job_rows(engine, since, analysis, version):
        groups[(row.analysis, row.version)].append(row)
    feedback = {(r.analysis, r.version): r for r in review_feedback(engine, since=since, analysis=analysis, version=version)}
    out = []
    for (name, ver), rows in sorted(groups.items()):
        daily: dict[date, dict[str, Any]] = {}
        durations: list[float] = []
        values: dict[str, list[float]] = defaultdict(list)
        for row in rows:
            day = row.created_at.date()
            d = daily.setdefault(
                day, {"date": day.isoformat(), "submitted": 0, "done": 0, "failed": 0, "cancelled": 0, "pending": 0, "durations": []}
            )
            d["submitted"] += 1
            key = row.state if row.state in ("done", "failed", "cancelled") else "pending"
            d[key] += 1
            if row.state == "done" and row.started_at and row.finished_at:
                seconds = (row.finished_at - row.started_at).total_seconds()
                durations.append(seconds)
                d["durations"].append(seconds)
            if row.state == "done":
                for output, value in measurement_outputs(row.result, catalog, name).items():
                    values[output].append(value)
        daily_list = []
        for day in sorted(daily):
            d = daily[day]
            finished = d["done"] + d["failed"]
            d["failure_rate"] = d["failed"] / finished if finished else None
            d["median_seconds"] = _percentile(d.pop("durations"), 50)
            daily_list.append(d)
        done = sum(d["done"] for d in daily_list)
        failed = sum(d["failed"] for d in daily_list)
        reference, ref_run, ref_dataset = _reference_outputs(engine, name, ver)
        outputs = {}
        for output in sorted(set(values) | set(reference)):
            v = values.get(output, [])
            outputs[output] = {
                "label": catalog.label(output),
                "unit": catalog.unit(output),
                "n": len(v),
                "median": _percentile(v, 50),
                "p05": _percentile(v, 5),
                "p95": _percentile(v, 95),
                "drift": dict(drift(reference.get(output), v), reference_run=ref_run, reference_dataset=ref_dataset),
            }
        out.append(
            {
                "analysis": name,
                "version": ver,
                "submitted": len(rows),
                "done": done,
                "failed": failed,
                "failure_rate": failed / (done + failed) if done + failed else None,
                "processing_seconds": {
                    "n": len(durations),
                    "median": _percentile(durations, 50),
                    "p90": _percentile(durations, 90),
                    "max": max(durations) if durations else None,
                },
                "daily": daily_list,
                "outputs": outputs,
                "drift_warnings": [
                    f"{outputs[o]['label']}: {outputs[o]['drift']['message']}"
                    for o in outputs
                    if outputs[o]["drift"].get("status") == "drift"
                ],
                "review": _review_rates(feedback, name, ver),
            }
        )
    return {
        "generated_at": now.isoformat(),
        "window_days": days,
        "since": since.isoformat(),
        "key_outputs": [o.name for o in catalog.key_outputs],
        "drift_rule": f"PSI >= {PSI_THRESHOLD} and KS p < {KS_ALPHA}; needs >= {MIN_REFERENCE} validation and >= {MIN_PRODUCTION} production values",
        "analyses": out,
        # every version reviewed in the window, also one whose jobs ran before it
        "review_feedback": [row.to_dict() for row in feedback.values()],
    }
