"""The typed result of a validation run; its ``to_document()`` is the JSON stored per run and rendered as HTML."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

RESULT_FORMAT = "radpilot.validation.result/1"

Number = float | str | None  # a rounded value; non-finite values are written "inf"/"-inf" (NaN as None)


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SubjectRecord(_Record):
    """What was validated, and the code path that produced the numbers."""

    kind: Literal["analysis", "model"]
    name: str
    version: str
    model: str | None
    model_version: str | None
    model_sha256: str | None
    code_path: str


class GateView(_Record):
    """What the acceptance gate needs to know about the run to decide whether it counts."""

    complete: bool
    independent: bool
    dependence: str
    n_cases: int = Field(ge=0)
    n_evaluated: int = Field(ge=0)
    n_included: int = Field(ge=0)
    n_excluded: int = Field(ge=0)
    n_failed: int = Field(ge=0)


class CaseRecord(_Record):
    """One case: its status, metrics, compared values (predicted, reference[, reference_mask]) and timing."""

    case_id: str
    status: Literal["ok", "failed"]
    excluded: str | None
    metrics: dict[str, Number]
    values: dict[str, dict[str, Number]]
    attributes: dict[str, str]
    notes: list[str]
    error: str | None
    seconds: float = Field(ge=0)
    cpu_seconds: float
    detections: dict[str, dict[str, int]] = {}  # detection name -> references, found, false_positives


class ValidationResult(_Record):
    """A finished validation of one subject on one dataset."""

    format: Literal["radpilot.validation.result/1"] = RESULT_FORMAT
    status: Literal["ok"] = "ok"
    created_at: str
    seconds: float = Field(ge=0)
    subject: SubjectRecord
    dataset: dict[str, Any]  # the manifest's summary, content hash and verification
    gate_view: GateView
    machine: dict[str, Any]
    primary_metric: str
    warnings: list[str]
    summary: dict[str, Any]  # per_metric, agreement, classification (see radpilot.validation.aggregate)
    metrics: dict[str, float]  # the flat metrics the gate reads
    outputs: dict[str, list[float]]  # key outputs' predicted values, for drift monitoring
    cases: list[CaseRecord]

    def to_document(self) -> dict[str, Any]:
        """The plain-data form that is stored as JSON and rendered (values unchanged, nested records as dicts)."""
        return self.model_dump()
