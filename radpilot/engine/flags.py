"""Worklist flags: what each analysis' ``flags.yaml`` declares, and the flags a job's findings raise.

Format of ``flags.yaml`` (in the analysis' folder; a missing file means no flags)::

    flags:
      - name: cardiomegaly              # an identifier
        label: Cardiomegaly (CTR > 0.5) # shown in the worklist
        output: ctr                     # a declared output ... or
        # detection: nodule             # ... a declared detection (its candidates are counted)
        above: 0.5                      # raised when value > above; or at_least: N (value >= N)
        critical: false                 # critical flags float the study to the top

The engine never names an analysis: it reads these declarations, evaluates them on a
job's findings in the worker, and writes the raised flags in the transaction that
records the job's result set (:func:`record_flags`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import yaml
from sqlalchemy import delete
from sqlalchemy.orm import Session

from radpilot.contract import Analysis, Findings, FlagRule
from radpilot.db import utcnow
from radpilot.engine.jobs_models import AiFlag

logger = logging.getLogger(__name__)

_FLAG_KEYS = {"name", "label", "output", "detection", "above", "at_least", "critical"}


class FlagsFileError(ValueError):
    """A ``flags.yaml`` that cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class RaisedFlag:
    """One flag a job raised: which, by what value, against which threshold."""

    analysis: str
    name: str
    label: str
    critical: bool
    value: float
    threshold: float

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def load_flag_rules(analysis: Analysis) -> tuple[FlagRule, ...]:
    """The flag rules ``analysis`` declares in its folder's ``flags.yaml`` (none when there is no file).

    Raises
    ------
    FlagsFileError
        When the file is not valid YAML, has unknown keys, or a flag reads an output or
        detection the analysis does not declare.
    """
    path = analysis.flags_file()
    if not path.is_file():
        return ()
    try:
        content = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise FlagsFileError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(content, dict) or set(content) - {"flags"} or not isinstance(content.get("flags") or [], list):
        raise FlagsFileError(f"{path}: expected a mapping with one key 'flags' holding a list")
    rules = []
    for index, entry in enumerate(content.get("flags") or [], start=1):
        where = f"{path}: flag {index}"
        if not isinstance(entry, dict):
            raise FlagsFileError(f"{where}: expected a mapping, got {type(entry).__name__}")
        unknown = set(entry) - _FLAG_KEYS
        if unknown:
            raise FlagsFileError(f"{where}: unknown keys {sorted(unknown)}; allowed: {sorted(_FLAG_KEYS)}")
        try:
            rule = FlagRule(**{key: entry[key] for key in entry})
        except (TypeError, ValueError) as exc:
            raise FlagsFileError(f"{where}: {exc}") from exc
        if rule.output is not None and analysis.output(rule.output) is None:
            raise FlagsFileError(f"{where}: {analysis.name} declares no output {rule.output!r}")
        if rule.detection is not None and analysis.detection(rule.detection) is None:
            raise FlagsFileError(f"{where}: {analysis.name} declares no detection {rule.detection!r}")
        rules.append(rule)
    names = [r.name for r in rules]
    if len(set(names)) != len(names):
        raise FlagsFileError(f"{path}: a flag name is used twice: {names}")
    return tuple(rules)


def load_all_flag_rules(analyses: Mapping[str, Analysis]) -> dict[str, tuple[FlagRule, ...]]:
    """Every analysis' flag rules, by analysis name."""
    return {name: load_flag_rules(analysis) for name, analysis in analyses.items()}


def evaluate_flags(analysis: Analysis, rules: tuple[FlagRule, ...], findings: Findings) -> list[RaisedFlag]:
    """The flags ``findings`` raise; an output the findings lack raises nothing."""
    outputs = analysis.output_values(findings)
    counts = analysis.detection_counts(findings)
    raised = []
    for rule in rules:
        value = outputs.get(rule.output) if rule.output is not None else counts.get(rule.detection or "")
        if value is not None and rule.raised_by(value):
            raised.append(RaisedFlag(analysis.name, rule.name, rule.label, rule.critical, float(value), rule.threshold))
    return raised


def record_flags(
    session: Session, job_id: int, study_instance_uid: str, flags: list[dict[str, Any]], supersedes_job_id: int | None
) -> None:
    """Write a job's raised flags (inside the transaction that records its result set); drop the superseded job's."""
    if supersedes_job_id is not None:
        session.execute(delete(AiFlag).where(AiFlag.job_id == supersedes_job_id))
    for flag in flags:
        session.add(
            AiFlag(
                job_id=job_id,
                study_instance_uid=study_instance_uid,
                analysis=str(flag["analysis"])[:64],
                name=str(flag["name"])[:64],
                label=str(flag["label"])[:128],
                critical=bool(flag["critical"]),
                value=float(flag["value"]),
                threshold=float(flag["threshold"]),
                created_at=utcnow(),
            )
        )
    if flags:
        logger.info("flags raised", extra={"job_id": job_id, "flags": [f["name"] for f in flags]})
