"""The acceptance gate: a model (or analysis) version is used only when its stored validation meets its criteria.

Criteria format (the one definition; the model manifests use it)
----------------------------------------------------------------
A list of mappings, each with a ``metric``, exactly one comparison operator key and its
threshold, and optionally the ``dataset`` whose validation it applies to::

    [{"metric": "dice_right_lung_mean", ">=": 0.95},
     {"metric": "dice_lungs_ci95_lower", ">=": 0.93, "dataset": "ct-lung-slices"},
     {"metric": "ctr_mae", "<=": 0.02}]

* operators: ``>=``, ``<=``, ``>``, ``<``;
* ``metric`` names a flat metric of a stored validation run (``radpilot validate``
  prints and stores them): for a per-case metric ``m`` (e.g. ``dice_lungs``,
  ``hd95_heart_mm``, ``total_lung_volume_ml_abs_error_percent``): ``m_mean``,
  ``m_median``, ``m_min``, ``m_max``, ``m_sd``, ``m_ci95_lower``, ``m_ci95_upper``,
  ``m_n``; for a compared output ``o`` (e.g. ``ctr``): ``o_mae``, ``o_bias``,
  ``o_mae_ci95_lower/upper``, ``o_loa_lower/upper``, ``o_icc``; for a classification
  ``c``: ``c_auc``, ``c_auc_ci95_lower/upper``, ``c_sensitivity``, ``c_specificity``;
  and ``failure_rate``, ``n_failed``, ``n_cases_included``;
* ``dataset`` (optional): without it, the newest eligible run that reports the metric counts;
* other keys (``value``, ``met``, ``note`` written by a training script) are ignored:
  only a stored validation run decides.

Where criteria come from: a model's ``manifest.json`` ``acceptance_criteria`` (plus an
optional ``"allow_development_data": true`` and ``"development_data_reason"``); an
analysis: ``acceptance.yaml`` in its own folder, or, when it has none and is built on
models, the criteria of its first required model (evaluated on the analysis' own
validation runs).

Which runs count
----------------
A stored run counts when it finished, evaluated every case of the dataset, its dataset
hash matched the manifest and the dataset is independent of the subject's development
(training or tuning). Runs on development data count only when the criteria say
``allow_development_data: true`` (with a reason, repeated in every decision). For each
dataset the newest counting run is used, for all criteria on that dataset. A counting
run with failed cases fails the gate (a case the analysis could not process is a
finding to look at, not something to average away).

For the engine
--------------
The activation rows live in :mod:`radpilot.modelhub.activation`, below both the
engine and this workbench: the engine calls
:func:`radpilot.modelhub.activation.require_active` before it runs a model, one indexed query
that raises :class:`~radpilot.modelhub.activation.ModelNotActive` with a plain message unless
the version was activated with ``radpilot models activate`` (:func:`activate`), which
runs the gate (:func:`check_activation`) and refuses a failing version unless an
administrator overrides it with a reason. Activations, refusals and overrides are
written to the audit trail (``audit_event``); activating a version deactivates the
subject's others. :func:`check_activation` and :func:`is_active` accept a Settings,
an Archive, an Engine, a ValidationStore or an object with ``.archive``/``.settings``.
"""

from __future__ import annotations

import json
import math
import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from sqlalchemy import or_, select

from radpilot.analyses import discover_analyses, model_registry
from radpilot.modelhub.activation import active_versions, add_activation, deactivate_rows
from radpilot.modelhub.registry import ModelManifest
from radpilot.security.audit import record
from radpilot.validation.store import ValidationRun, ValidationStore

OPERATORS: dict[str, Callable[[float, float], bool]] = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}
IGNORED_KEYS = {"value", "met", "note", "notes", "comment", "description"}


class CriteriaError(ValueError):
    """Acceptance criteria are malformed; the message says which and where."""


class GateRefused(RuntimeError):
    """Activation refused: the version does not pass its gate and no override was given."""

    def __init__(self, decision: GateDecision) -> None:
        super().__init__(decision.message)
        self.decision = decision


# ------------------------------------------------------------------------------------------ criteria
@dataclass(frozen=True)
class Criterion:
    metric: str
    op: str
    threshold: float
    dataset: str | None = None

    @classmethod
    def parse(cls, item: Any, where: str = "criteria") -> Criterion:
        if not isinstance(item, dict):
            raise CriteriaError(f"{where}: each criterion must be a mapping, got {item!r}")
        metric = item.get("metric")
        if not isinstance(metric, str) or not metric:
            raise CriteriaError(f"{where}: criterion {item!r} has no 'metric'")
        ops = [k for k in item if k in OPERATORS]
        if len(ops) != 1:
            raise CriteriaError(f"{where}: criterion for {metric!r} needs exactly one of {list(OPERATORS)}, got {ops or 'none'}")
        unknown = set(item) - {"metric", "dataset", *OPERATORS} - IGNORED_KEYS
        if unknown:
            raise CriteriaError(f"{where}: criterion for {metric!r} has unknown key(s) {sorted(unknown)}")
        threshold = item[ops[0]]
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(float(threshold)):
            raise CriteriaError(f"{where}: threshold of {metric!r} must be a finite number, got {threshold!r}")
        dataset = item.get("dataset")
        return cls(metric, ops[0], float(threshold), str(dataset) if dataset else None)

    def holds(self, value: float) -> bool:
        return OPERATORS[self.op](value, self.threshold)

    @property
    def text(self) -> str:
        where = f" on {self.dataset}" if self.dataset else ""
        return f"{self.metric} {self.op} {self.threshold:g}{where}"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"metric": self.metric, self.op: self.threshold}
        if self.dataset:
            out["dataset"] = self.dataset
        return out


def parse_criteria(items: Any, where: str = "criteria") -> list[Criterion]:
    if items is None:
        return []
    if not isinstance(items, list):
        raise CriteriaError(f"{where}: acceptance criteria must be a list")
    return [Criterion.parse(item, f"{where}[{i}]") for i, item in enumerate(items)]


@dataclass(frozen=True)
class Criteria:
    """The acceptance criteria of one subject version and where they were declared."""

    subject: str
    kind: Literal["analysis", "model"]
    version: str
    criteria: tuple[Criterion, ...]
    source: str
    allow_development_data: bool = False
    development_data_reason: str = ""


def criteria_for(
    subject: str,
    version: str | None = None,
    *,
    models_dir: Path | None = None,
    analyses: dict[str, Any] | None = None,
) -> Criteria:
    """The declared criteria of ``subject`` at ``version`` (default: the newest model manifest / the installed analysis).

    Raises
    ------
    KeyError
        When there is no model or analysis of that name (and version).
    CriteriaError
        When the declared criteria are malformed.
    """
    analyses = analyses if analyses is not None else discover_analyses()
    registry = model_registry(analyses, models_dir)
    if any(m.name == subject for m in registry.manifests()):
        return _model_criteria(subject, "model", registry.manifest(subject, version))  # KeyError lists the known versions
    if subject not in analyses:
        raise KeyError(f"no model or analysis called {subject!r}")
    analysis = analyses[subject]
    version = version or str(analysis.version)
    path = analysis.acceptance_file()
    if not path.is_file():
        # An analysis built on models, without its own criteria file, inherits its first model's criteria,
        # evaluated on the analysis' own validation runs.
        known = {m.name for m in registry.manifests()}
        for model_name in analysis.required_models:
            if model_name in known:
                manifest = registry.manifest(model_name)
                inherited = _model_criteria(subject, "analysis", manifest, version=version)
                return Criteria(
                    inherited.subject,
                    inherited.kind,
                    inherited.version,
                    inherited.criteria,
                    f"inherited from model {manifest.name} {manifest.version} ({inherited.source}); no {path.name} in {path.parent}",
                    inherited.allow_development_data,
                    inherited.development_data_reason,
                )
        return Criteria(subject, "analysis", version, (), f"{path} (absent)")
    try:
        content = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise CriteriaError(f"{path}: {exc}") from exc
    if not isinstance(content, dict):
        raise CriteriaError(f"{path}: expected a mapping with 'criteria'")
    declared = content.get("versions", "*")
    applies = declared == "*" or (isinstance(declared, list) and (version in [str(v) for v in declared] or "*" in declared))
    criteria = tuple(parse_criteria(content.get("criteria"), str(path))) if applies else ()
    source = str(path) if applies else f"{path} (declares versions {declared}, not {version})"
    return Criteria(
        subject,
        "analysis",
        version,
        criteria,
        source,
        bool(content.get("allow_development_data", False)),
        str(content.get("development_data_reason", "")).strip(),
    )


def _model_criteria(subject: str, kind: Literal["model", "analysis"], manifest: ModelManifest, *, version: str | None = None) -> Criteria:
    """The criteria a model manifest declares, for the model itself or for an analysis that inherits them."""
    raw = manifest.raw
    where = manifest.file.parent / "manifest.json"
    return Criteria(
        subject,
        kind,
        version or manifest.version,
        tuple(parse_criteria(raw.get("acceptance_criteria"), f"{where} acceptance_criteria")),
        str(where),
        bool(raw.get("allow_development_data", False)),
        str(raw.get("development_data_reason", "")),
    )


# ------------------------------------------------------------------------------------------ decisions
@dataclass(frozen=True)
class CriterionResult:
    criterion: Criterion
    met: bool
    value: float | None = None
    run_id: int | None = None
    dataset: str | None = None
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "criterion": self.criterion.to_dict(),
            "text": self.criterion.text,
            "met": self.met,
            "value": self.value,
            "run_id": self.run_id,
            "dataset": self.dataset,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class GateDecision:
    """Whether ``subject`` ``version`` passes its acceptance criteria on its stored validations, and why."""

    subject: str
    kind: str
    version: str
    passed: bool
    results: tuple[CriterionResult, ...] = ()
    problems: tuple[str, ...] = ()
    runs: tuple[int, ...] = ()
    development_data: bool = False
    development_data_reason: str = ""
    criteria_source: str = ""
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def message(self) -> str:
        head = f"{self.kind} {self.subject} {self.version}: "
        if self.passed:
            text = head + f"passes its {len(self.results)} acceptance criteria (validation runs {', '.join(map(str, self.runs))})"
            if self.development_data:
                text += f"; ON DEVELOPMENT DATA ONLY ({self.development_data_reason or 'accepted by its criteria'})"
            return text
        parts = list(self.problems)
        by_reason: dict[str, list[str]] = {}
        for r in self.results:
            if r.met:
                continue
            if r.value is not None:
                parts.append(f"{r.criterion.text}: got {r.value:.4g}" + (f" (run {r.run_id})" if r.run_id else ""))
            else:
                by_reason.setdefault(r.reason, []).append(r.criterion.text)
        parts += [f"{', '.join(texts)}: {reason}" for reason, texts in by_reason.items()]
        return head + "FAILS its gate - " + "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "kind": self.kind,
            "version": self.version,
            "passed": self.passed,
            "message": self.message,
            "results": [r.to_dict() for r in self.results],
            "problems": list(self.problems),
            "runs": list(self.runs),
            "development_data": self.development_data,
            "development_data_reason": self.development_data_reason,
            "criteria_source": self.criteria_source,
            "notes": list(self.notes),
        }


def _runs_of(store: ValidationStore, subject: str, version: str) -> list[ValidationRun]:
    """Runs of the subject itself, and runs of analyses that used this model version; newest first."""
    query = (
        select(ValidationRun)
        .where(
            or_(
                (ValidationRun.subject == subject) & (ValidationRun.version == version),
                (ValidationRun.model == subject) & (ValidationRun.model_version == version),
            )
        )
        .order_by(ValidationRun.created_at.desc(), ValidationRun.id.desc())
    )
    with store.sessions() as session:
        return list(session.scalars(query))


def _counts(run: ValidationRun, allow_development: bool) -> bool:
    if run.eligible:
        return True
    return allow_development and run.status == "ok" and run.complete and run.dataset_verified and not run.independent


def evaluate_gate(store: ValidationStore, criteria: Criteria) -> GateDecision:
    """Evaluate declared criteria against the stored runs (see the module docstring for which runs count)."""
    subject, version = criteria.subject, criteria.version
    runs = _runs_of(store, subject, version)
    common = dict(
        subject=subject,
        kind=criteria.kind,
        version=version,
        criteria_source=criteria.source,
        development_data_reason=criteria.development_data_reason,
    )
    if not criteria.criteria:
        return GateDecision(passed=False, problems=(f"no acceptance criteria are declared ({criteria.source})",), **common)
    if not runs:
        return GateDecision(
            passed=False,
            problems=(f"no stored validation of {subject} {version}: run `radpilot validate {subject} --dataset NAME`",),
            **common,
        )
    newest_counting: dict[str, ValidationRun] = {}
    for run in runs:  # newest first
        if run.dataset not in newest_counting and _counts(run, criteria.allow_development_data):
            newest_counting[run.dataset] = run
    results: list[CriterionResult] = []
    used: dict[int, ValidationRun] = {}
    for criterion in criteria.criteria:
        if criterion.dataset:
            run = newest_counting.get(criterion.dataset)
            candidates = [r for r in runs if r.dataset == criterion.dataset]
        else:
            holding = [r for r in newest_counting.values() if criterion.metric in (r.metrics or {})]
            run = max(holding, key=lambda r: (r.created_at, r.id)) if holding else None
            candidates = runs
        if run is None:
            if not candidates:
                reason = f"no stored validation on {criterion.dataset}" if criterion.dataset else "no stored validation reports this metric"
            else:
                newest = candidates[0]
                why = newest.ineligible_reasons()
                reason = f"no run counts: the newest (run {newest.id} on {newest.dataset}) does not because {'; '.join(why) or 'it lacks the metric'}"
            results.append(CriterionResult(criterion, False, reason=reason, dataset=criterion.dataset))
            continue
        used[run.id] = run
        value = (run.metrics or {}).get(criterion.metric)
        if value is None or not math.isfinite(float(value)):
            results.append(
                CriterionResult(
                    criterion, False, None, run.id, run.dataset, f"run {run.id} on {run.dataset} does not report {criterion.metric}"
                )
            )
            continue
        results.append(CriterionResult(criterion, criterion.holds(float(value)), float(value), run.id, run.dataset))
    problems = [f"run {r.id} on {r.dataset}: {r.n_failed} case(s) failed" for r in used.values() if r.n_failed]
    development = any(not r.independent for r in used.values())
    notes = []
    if development:
        notes.append("validated on development data only: " + (criteria.development_data_reason or "accepted by its criteria"))
    passed = all(r.met for r in results) and not problems
    return GateDecision(
        passed=passed,
        results=tuple(results),
        problems=tuple(problems),
        runs=tuple(sorted(used)),
        development_data=development,
        notes=tuple(notes),
        **common,
    )


def check_activation(
    where: Any, model_name: str, version: str | None = None, *, models_dir: Path | None = None, analyses: dict[str, Any] | None = None
) -> GateDecision:
    """The gate decision for ``model_name`` (a model or an analysis) at ``version``, from its stored validations.

    ``where`` is a Settings, an Archive, a SQLAlchemy Engine, a ValidationStore, or an
    object with ``.archive`` / ``.settings`` (e.g. the engine service). Declared criteria
    that cannot be found or parsed give a failing decision that says why.
    """
    store = where if isinstance(where, ValidationStore) else ValidationStore.open(where)
    try:
        criteria = criteria_for(model_name, version, models_dir=models_dir, analyses=analyses)
    except (KeyError, CriteriaError) as exc:
        text = str(exc.args[0]) if isinstance(exc, KeyError) else str(exc)
        return GateDecision(model_name, "unknown", version or "?", False, problems=(text,))
    return evaluate_gate(store, criteria)


# ------------------------------------------------------------------------------------------ activation
@dataclass(frozen=True)
class Activation:
    decision: GateDecision
    activation: dict[str, Any]
    audit_event_id: int
    deactivated: tuple[str, ...] = ()


def activate(
    where: Any,
    model_name: str,
    version: str,
    *,
    user: str,
    override: bool = False,
    reason: str = "",
    models_dir: Path | None = None,
    analyses: dict[str, Any] | None = None,
) -> Activation:
    """Make ``version`` the active version of ``model_name`` if it passes its gate.

    A failing version is refused (:class:`GateRefused`) unless ``override`` is set with a
    non-empty ``reason``. Both outcomes that change state are audited (action
    ``model.activate`` or ``model.activate.override``, who, target ``name@version``,
    reason, and the full gate decision); a refused attempt is audited too
    (``model.activate.refused``). Other active versions of the model are deactivated in
    the same transaction.
    """
    if not isinstance(user, str) or not user.strip():
        raise ValueError("activation needs the name of the user who activates")
    store = where if isinstance(where, ValidationStore) else ValidationStore.open(where)
    decision = check_activation(store, model_name, version, models_dir=models_dir, analyses=analyses)
    target = f"{model_name}@{version}"
    if decision.kind == "unknown":
        raise KeyError(decision.message)
    if not decision.passed and not override:
        record(store.engine, who=user, action="model.activate.refused", target=target, reason=reason, details=decision.to_dict())
        raise GateRefused(decision)
    if not decision.passed and not reason.strip():
        raise ValueError("an override of a failing gate needs a reason (--reason)")
    now = datetime.now(UTC)
    with store.sessions() as session, session.begin():
        previous = active_versions(session, model_name)
        action = "model.activate" if decision.passed else "model.activate.override"
        event = record(
            session,
            who=user,
            action=action,
            target=target,
            reason=reason,
            details={"gate": decision.to_dict(), "deactivated": [f"{p.subject}@{p.version}" for p in previous]},
        )
        deactivated = tuple(deactivate_rows(previous, user=user, when=now))
        row = add_activation(
            session,
            subject=model_name,
            subject_kind=decision.kind,
            version=version,
            activated_at=now,
            activated_by=user,
            gate_passed=decision.passed,
            override=not decision.passed,
            reason=reason,
            gate=json.loads(json.dumps(decision.to_dict())),
            audit_event_id=event.id,
        )
        snapshot = row.to_dict()
        event_id = event.id
    return Activation(decision, snapshot, event_id, deactivated)


def deactivate(where: Any, model_name: str, *, user: str, reason: str = "") -> list[str]:
    """Deactivate every active version of ``model_name`` (audited as ``model.deactivate``); returns them."""
    if not isinstance(user, str) or not user.strip():
        raise ValueError("deactivation needs the name of the user")
    store = where if isinstance(where, ValidationStore) else ValidationStore.open(where)
    now = datetime.now(UTC)
    with store.sessions() as session, session.begin():
        versions = deactivate_rows(active_versions(session, model_name), user=user, when=now)
        if versions:
            record(session, who=user, action="model.deactivate", target=model_name, reason=reason, details={"versions": versions})
    return versions


def is_active(where: Any, model_name: str, version: str) -> bool:
    """True when ``version`` of ``model_name`` is the active version (activated through the gate or an audited override)."""
    store = where if isinstance(where, ValidationStore) else ValidationStore.open(where)
    return store.active(model_name, version) is not None
