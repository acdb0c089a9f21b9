"""The AI findings a report may quote, with the radiologist's review state.

:class:`ReportFinding` is all that template pre-fill needs: which declared output it is,
its value and unit, and whether the radiologist accepted, edited or rejected it.
:func:`study_findings` reads them for a study. Today the engine stores each finished job's
measurements (``details.measurements``); the radiologist's review decisions
(:mod:`radpilot.engine.review`) join in here: accepted, edited (with the edited value) or
rejected; a finding nobody decided on yet stays ``pending``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from radpilot.contract import Analysis
from radpilot.engine.job_store import JobStore
from radpilot.engine.review import ReviewService


class FindingState(StrEnum):
    """Where the radiologist's review of one AI finding stands."""

    PENDING = "pending"
    ACCEPTED = "accepted"
    EDITED = "edited"
    REJECTED = "rejected"


@dataclass(frozen=True)
class ReportFinding:
    """One AI finding as a report quotes it: a declared output's value with its review state."""

    finding_id: str
    output: str
    value: float
    unit: str
    state: FindingState = FindingState.PENDING
    edited_value: float | None = None
    analysis: str = ""
    label: str = ""

    def __post_init__(self) -> None:
        if not self.finding_id or not self.output:
            raise ValueError("a report finding needs its finding_id and the name of the output it is")
        object.__setattr__(self, "state", FindingState(self.state))
        if not math.isfinite(float(self.value)):
            raise ValueError(f"finding {self.finding_id!r} has a non-finite value {self.value!r}")
        if self.state is FindingState.EDITED and self.edited_value is None:
            raise ValueError(f"finding {self.finding_id!r} is edited but has no edited value")

    @property
    def shown_value(self) -> float:
        """The value a report shows: the radiologist's edit wins over the AI's value."""
        return float(self.edited_value) if self.state is FindingState.EDITED and self.edited_value is not None else float(self.value)

    @property
    def verified(self) -> bool:
        return self.state in (FindingState.ACCEPTED, FindingState.EDITED)

    def to_json(self) -> dict[str, Any]:
        return {
            "finding_id": self.finding_id,
            "output": self.output,
            "value": self.value,
            "unit": self.unit,
            "state": self.state.value,
            "edited_value": self.edited_value,
            "analysis": self.analysis,
            "label": self.label,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ReportFinding:
        return cls(
            finding_id=str(data["finding_id"]),
            output=str(data["output"]),
            value=float(data["value"]),
            unit=str(data.get("unit", "")),
            state=FindingState(data.get("state", "pending")),
            edited_value=None if data.get("edited_value") is None else float(data["edited_value"]),
            analysis=str(data.get("analysis", "")),
            label=str(data.get("label", "")),
        )


def findings_from_job_result(job_id: int, analysis: Analysis | None, result: Mapping[str, Any] | None) -> list[ReportFinding]:
    """The declared outputs among one job's stored measurements, as pending findings."""
    if analysis is None:
        return []
    details = (result or {}).get("details") or {}
    found: dict[str, ReportFinding] = {}
    for m in details.get("measurements") or []:
        site = str(m.get("site", "")) or None
        spec = next((s for s in analysis.outputs if s.matches("", str(m.get("name", "")), None, site)), None)
        if spec is None or spec.name in found:
            continue
        try:
            value = float(m["value"])
        except (KeyError, TypeError, ValueError):
            continue
        found[spec.name] = ReportFinding(
            finding_id=f"job{job_id}:{spec.name}",
            output=spec.name,
            value=value,
            unit=spec.unit,
            analysis=analysis.name,
            label=spec.label,
        )
    return list(found.values())


DECISION_STATES = {"accept": FindingState.ACCEPTED, "edit": FindingState.EDITED, "reject": FindingState.REJECTED}


def study_findings(
    jobs: JobStore, analyses: Mapping[str, Analysis], study_uid: str, review: ReviewService | None = None
) -> list[ReportFinding]:
    """The AI findings of a study, with their review state (the one place review decisions join in).

    Each finished, not superseded job contributes its declared outputs, ``pending``; with
    ``review``, each output the radiologist decided on (in that job's AI SR) takes the decision:
    accepted, edited (the edited value) or rejected.
    """
    findings: list[ReportFinding] = []
    for job in jobs.done_jobs_of_study(study_uid):
        findings.extend(findings_from_job_result(job.id, analyses.get(job.analysis), job.result))
    if review is None:
        return findings
    decided: dict[str, tuple[FindingState, float | None]] = {}
    for item in review.study(study_uid).items:
        analysis = analyses.get(item.result.analysis)
        if item.decision is None or analysis is None:
            continue
        spec = next((s for s in analysis.outputs if s.matches("", item.finding.name, None, item.finding.location or None)), None)
        if spec is None:  # a measurement without a finding site: the review shows its group's name as its location
            spec = next((s for s in analysis.outputs if s.site is None and s.concept_meaning == item.finding.name), None)
        if spec is None:
            continue
        state = DECISION_STATES.get(item.decision.decision)
        if state is None:
            continue
        edited = (item.decision.edited or {}).get("value") if state is FindingState.EDITED else None
        if state is FindingState.EDITED and edited is None:
            state = FindingState.ACCEPTED  # a category edit changes no number a template quotes
        decided[f"job{item.result.job_id}:{spec.name}"] = (state, None if edited is None else float(edited))
    return [
        ReportFinding(
            finding_id=f.finding_id,
            output=f.output,
            value=f.value,
            unit=f.unit,
            state=decided[f.finding_id][0],
            edited_value=decided[f.finding_id][1],
            analysis=f.analysis,
            label=f.label,
        )
        if f.finding_id in decided
        else f
        for f in findings
    ]
