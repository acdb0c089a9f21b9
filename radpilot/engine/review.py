"""The radiologist's review of AI findings: decisions, the verified SR sent back, and the feedback figures.

A study's AI results are the SRs of its latest finished jobs (one per analysis and
series; superseded results are gone from the archive). Each finding of such an SR
(:func:`radpilot.dicom.encoders.verified_sr.report_findings`) can be accepted, edited
(a new value or category, with a reason) or rejected (with a reason). Every decision is
a new ``finding_decision`` row and an audit event, written in one transaction.

Completing the review writes, per AI SR, the verified SR (accepted and edited findings,
VerificationFlag VERIFIED, the radiologist as Verifying Observer), stores it in the
archive as a RadPilot result and queues it in the outbox for the job's destinations in
the transaction that records the completion, so the PACS copy follows what the
radiologist confirmed.
"""

from __future__ import annotations

import io
import logging
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from radpilot.archive import Archive, StoreOutcome
from radpilot.contract import Code
from radpilot.db import make_session_factory, utcnow
from radpilot.dicom.encoders.verified_sr import (
    COMPREHENSIVE_3D_SR,
    Decision,
    ReportFinding,
    Verdict,
    VerifyingObserver,
    encode_verified_report,
    report_findings,
)
from radpilot.engine.jobs import JobState
from radpilot.engine.jobs_models import Job
from radpilot.engine.outbox import add_delivery
from radpilot.engine.review_models import FindingDecision, ReviewCompletion
from radpilot.pacs.research_export import FindingLabel, StudyLabels, VerifiedReportLabel
from radpilot.security.audit import record
from radpilot.security.principal import Principal, Role

logger = logging.getLogger(__name__)

REVIEW_SOURCE_AE = "RADPILOT-REVIEW"
VERIFIED_SERIES_NUMBER = 9904
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
SEGMENTATION = "1.2.840.10008.5.1.4.1.1.66.4"
MAX_REASON_CHARS = 500

#: The short list a rejection reason is usually picked from (free text is accepted too).
REJECTION_REASONS = (
    "false positive",
    "wrong location",
    "wrong measurement",
    "artefact or poor image quality",
    "not clinically relevant",
)

#: The categories a qualitative finding can be edited to (SNOMED CT).
CATEGORIES = {
    "Present": Code("52101004", "SCT", "Present"),
    "Absent": Code("2667000", "SCT", "Absent"),
    "Indeterminate": Code("82334004", "SCT", "Indeterminate"),
}

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class ReviewError(ValueError):
    """A decision or completion that cannot be taken; the message says why."""


class UnknownFinding(LookupError):
    """No AI finding of this study has this id."""


@dataclass(frozen=True)
class AiResult:
    """The AI objects of one finished job of the study."""

    job_id: int
    analysis: str
    version: str
    series_instance_uid: str
    destinations: tuple[str, ...]
    sr: Dataset
    seg_uid: str
    key_image_uid: str

    @property
    def sr_uid(self) -> str:
        return str(self.sr.SOPInstanceUID)


@dataclass(frozen=True)
class DecisionView:
    decision: str
    reason: str
    edited: dict[str, Any] | None
    decided_by: str
    decided_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "decision": self.decision,
            "reason": self.reason,
            "edited": self.edited,
            "decided_by": self.decided_by,
            "decided_at": self.decided_at.isoformat(),
        }


@dataclass(frozen=True)
class ReviewItem:
    finding: ReportFinding
    result: AiResult
    decision: DecisionView | None

    def to_dict(self) -> dict[str, Any]:
        f = self.finding
        return {
            "id": f.id,
            "kind": f.kind,
            "name": f.name,
            "value": f.value,
            "unit": f.unit,
            "unit_meaning": f.unit_meaning,
            "category": f.category,
            "location": f.location,
            "confidence": f.confidence,
            "group": f.group,
            "analysis": self.result.analysis,
            "version": self.result.version,
            "job_id": self.result.job_id,
            "key_image_uid": self.result.key_image_uid,
            "decision": self.decision.to_dict() if self.decision else None,
        }


@dataclass
class StudyReview:
    study_instance_uid: str
    results: list[AiResult] = field(default_factory=list)
    items: list[ReviewItem] = field(default_factory=list)
    completions: list[dict[str, Any]] = field(default_factory=list)

    def item(self, finding_id: str) -> ReviewItem:
        for item in self.items:
            if item.finding.id == finding_id:
                return item
        raise UnknownFinding(f"study {self.study_instance_uid} has no AI finding {finding_id!r}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "study_instance_uid": self.study_instance_uid,
            "results": [
                {
                    "job_id": r.job_id,
                    "analysis": r.analysis,
                    "version": r.version,
                    "sr_uid": r.sr_uid,
                    "seg_uid": r.seg_uid,
                    "key_image_uid": r.key_image_uid,
                    "destinations": list(r.destinations),
                }
                for r in self.results
            ],
            "findings": [item.to_dict() for item in self.items],
            "undecided": sum(1 for item in self.items if item.decision is None),
            "completions": self.completions,
            "rejection_reasons": list(REJECTION_REASONS),
            "categories": list(CATEGORIES),
        }


def clean_reason(reason: object, *, required: bool) -> str:
    """The reason as stored: trimmed, at most MAX_REASON_CHARS, no control characters; ReviewError otherwise."""
    if reason is None:
        reason = ""
    if not isinstance(reason, str):
        raise ReviewError(f"reason must be text, got {type(reason).__name__}")
    text = reason.strip()
    if required and not text:
        raise ReviewError("a reason is required for an edit or a rejection")
    if len(text) > MAX_REASON_CHARS:
        raise ReviewError(f"reason is {len(text)} characters long; at most {MAX_REASON_CHARS} are kept")
    if _CONTROL.search(text):
        raise ReviewError("reason contains control characters")
    return text


def _to_bytes(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


class ReviewService:
    """Reads and records the review of a study's AI findings over the archive's database."""

    def __init__(self, archive: Archive, *, organisation: str = "RadPilot") -> None:
        self.archive = archive
        self.organisation = organisation
        self.sessions = make_session_factory(archive.engine)

    # ------------------------------------------------------------------ reading
    def _latest_jobs(self, session: Session, study_uid: str) -> list[Job]:
        jobs = list(
            session.scalars(
                select(Job).where(Job.study_instance_uid == study_uid, Job.state == JobState.DONE.value).order_by(Job.id.desc())
            )
        )
        latest: dict[tuple[str, str], Job] = {}
        for job in jobs:
            latest.setdefault((job.analysis, job.series_instance_uid), job)
        return sorted(latest.values(), key=lambda j: j.id)

    def results(self, study_uid: str) -> list[AiResult]:
        """The AI SR (with its SEG and key image) of each latest finished job of the study."""
        with self.sessions() as session:
            jobs = self._latest_jobs(session, study_uid)
        found = []
        for job in jobs:
            uids = list((job.result or {}).get("sop_instance_uids", []))
            instances = self.archive.instances_by_uid(uids)
            by_class = {i.sop_class_uid: i for i in instances}
            sr_instance = by_class.get(COMPREHENSIVE_3D_SR)
            if sr_instance is None:
                continue
            sr = pydicom.dcmread(self.archive.path_of(sr_instance))
            found.append(
                AiResult(
                    job_id=job.id,
                    analysis=job.analysis,
                    version=job.analysis_version,
                    series_instance_uid=job.series_instance_uid,
                    destinations=tuple(job.destinations or ()),
                    sr=sr,
                    seg_uid=by_class[SEGMENTATION].sop_instance_uid if SEGMENTATION in by_class else "",
                    key_image_uid=by_class[SECONDARY_CAPTURE].sop_instance_uid if SECONDARY_CAPTURE in by_class else "",
                )
            )
        return found

    def study(self, study_uid: str) -> StudyReview:
        """The study's AI findings, each with its latest decision, and the reviews completed so far."""
        review = StudyReview(study_uid, results=self.results(study_uid))
        with self.sessions() as session:
            latest: dict[str, FindingDecision] = {}
            for row in session.scalars(
                select(FindingDecision).where(FindingDecision.study_instance_uid == study_uid).order_by(FindingDecision.id)
            ):
                latest[row.finding_id] = row
            completions = list(
                session.scalars(
                    select(ReviewCompletion).where(ReviewCompletion.study_instance_uid == study_uid).order_by(ReviewCompletion.id)
                )
            )
        for result in review.results:
            for finding in report_findings(result.sr):
                row = latest.get(finding.id)
                if row is not None and row.ai_sr_uid != result.sr_uid:
                    row = None  # a decision on an earlier result of the same finding does not carry over
                view = DecisionView(row.decision, row.reason, row.edited, row.decided_by, row.decided_at) if row else None
                review.items.append(ReviewItem(finding, result, view))
        review.completions = [
            {
                "job_id": c.job_id,
                "ai_sr_uid": c.ai_sr_uid,
                "verified_sr_uid": c.verified_sr_uid,
                "instance_number": c.instance_number,
                "destinations": list(c.destinations or []),
                "completed_by": c.completed_by,
                "completed_at": c.completed_at.isoformat(),
            }
            for c in completions
        ]
        return review

    def labels(self, study_uid: str) -> StudyLabels:
        """The study's AI findings with their latest decisions and its finished reviews, for a research export.

        Pass the bound method as the export's label source; the export de-identifies what it returns.
        """
        review = self.study(study_uid)
        with self.sessions() as session:
            completions = list(
                session.scalars(
                    select(ReviewCompletion).where(ReviewCompletion.study_instance_uid == study_uid).order_by(ReviewCompletion.id)
                )
            )
        findings = []
        for item in review.items:
            f, result, decision = item.finding, item.result, item.decision
            findings.append(
                FindingLabel(
                    ai_sr_uid=result.sr_uid,
                    seg_uid=result.seg_uid,
                    key_image_uid=result.key_image_uid,
                    analysis=result.analysis,
                    version=result.version,
                    finding_id=f.id,
                    name=f.name,
                    kind=f.kind,
                    value=f.value,
                    unit=f.unit,
                    category=f.category,
                    location=f.location,
                    confidence=f.confidence,
                    decision=decision.decision if decision else None,
                    edited=decision.edited if decision else None,
                    reason=decision.reason if decision else "",
                    decided_by=decision.decided_by if decision else "",
                    decided_at=decision.decided_at if decision else None,
                )
            )
        reports = [VerifiedReportLabel(c.ai_sr_uid, c.verified_sr_uid, c.completed_by, c.completed_at) for c in completions]
        return StudyLabels(findings, reports)

    # ------------------------------------------------------------------ deciding
    def decide(
        self,
        principal: Principal,
        study_uid: str,
        finding_id: str,
        decision: object,
        *,
        reason: object = "",
        value: object = None,
        category: object = None,
    ) -> ReviewItem:
        """Record one decision (and its audit event) in one transaction; return the finding with it.

        Raises
        ------
        RoleRefused
            Unless ``principal`` is a radiologist.
        UnknownFinding
            When the study has no AI finding ``finding_id``.
        ReviewError
            For an unknown decision, a missing or bad reason, an edit without a valid new value or category.
        """
        principal.require(Role.RADIOLOGIST)
        if decision not in Decision.ALL:
            raise ReviewError(f"unknown decision {decision!r}: expected one of {', '.join(Decision.ALL)}")
        item = self.study(study_uid).item(finding_id)
        finding = item.finding
        text = clean_reason(reason, required=decision != Decision.ACCEPT)
        edited: dict[str, Any] | None = None
        if decision == Decision.EDIT:
            edited = self._edited_value(finding, value, category)
        elif value is not None or category is not None:
            raise ReviewError(f"a new value or category goes with an edit, not with {decision!r}")
        original = {"value": finding.value, "unit": finding.unit, "category": finding.category}
        now = utcnow()
        with self.sessions() as session, session.begin():
            session.add(
                FindingDecision(
                    study_instance_uid=study_uid,
                    job_id=item.result.job_id,
                    analysis=item.result.analysis,
                    analysis_version=item.result.version,
                    ai_sr_uid=item.result.sr_uid,
                    finding_id=finding.id,
                    finding_name=finding.name[:128],
                    kind=finding.kind,
                    decision=str(decision),
                    reason=text,
                    original=original,
                    edited=edited,
                    decided_by=principal.name,
                    decided_at=now,
                )
            )
            record(
                session,
                who=principal.name,
                action=f"finding.{decision}",
                target=f"study:{study_uid}/finding:{finding.id}",
                reason=text,
                details={
                    "analysis": item.result.analysis,
                    "version": item.result.version,
                    "finding": finding.name,
                    "original": original,
                    "edited": edited,
                },
            )
        logger.info(
            "finding decided",
            extra={
                "study": study_uid,
                "finding": finding.id,
                "decision": decision,
                "analysis": item.result.analysis,
                "who": principal.name,
            },
        )
        return ReviewItem(finding, item.result, DecisionView(str(decision), text, edited, principal.name, now))

    @staticmethod
    def _edited_value(finding: ReportFinding, value: object, category: object) -> dict[str, Any]:
        if finding.kind == "measurement":
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(float(value)):
                raise ReviewError(f"an edit of {finding.name!r} needs a finite number as its new value, got {value!r}")
            if category is not None:
                raise ReviewError(f"{finding.name!r} is a measurement: edit its value, not a category")
            return {"value": float(value), "unit": finding.unit}
        if finding.kind == "qualitative":
            if not isinstance(category, str) or category not in CATEGORIES:
                raise ReviewError(f"an edit of {finding.name!r} needs a category, one of {', '.join(CATEGORIES)}; got {category!r}")
            if value is not None:
                raise ReviewError(f"{finding.name!r} is a category: edit the category, not a value")
            return {"category": category}
        raise ReviewError(f"{finding.name!r} is a located finding without a value or category to edit: accept or reject it")

    # ------------------------------------------------------------------ completing
    def complete(self, principal: Principal, study_uid: str) -> list[dict[str, Any]]:
        """Write the verified SR of every AI result of the study and queue it for the job's destinations.

        Raises
        ------
        ReviewError
            When the study has no AI findings or some finding has no decision yet (nothing is written then).
        """
        principal.require(Role.RADIOLOGIST)
        review = self.study(study_uid)
        if not review.items:
            raise ReviewError(f"study {study_uid} has no AI findings to review")
        undecided = [f"{i.finding.name} ({i.result.analysis})" for i in review.items if i.decision is None]
        if undecided:
            raise ReviewError(f"{len(undecided)} finding(s) have no decision yet: {', '.join(undecided)}")
        observer = VerifyingObserver(principal.name, self.organisation, utcnow().astimezone().replace(tzinfo=None))
        done = []
        for result in review.results:
            verdicts = {}
            for item in review.items:
                if item.result is not result or item.decision is None:
                    continue
                edited = item.decision.edited or {}
                verdicts[item.finding.id] = Verdict(
                    item.decision.decision,
                    item.decision.reason,
                    value=edited.get("value"),
                    category=CATEGORIES.get(edited.get("category", "")),
                )
            done.append(self._complete_result(principal, study_uid, result, verdicts, observer))
        return done

    def _complete_result(
        self, principal: Principal, study_uid: str, result: AiResult, verdicts: dict[str, Verdict], observer: VerifyingObserver
    ) -> dict[str, Any]:
        with self.sessions() as session:
            previous = session.scalar(select(func.count()).select_from(ReviewCompletion).where(ReviewCompletion.ai_sr_uid == result.sr_uid))
        instance_number = int(previous or 0) + 1
        all_rejected = all(v.decision == Decision.REJECT for v in verdicts.values())
        verified_uid = ""
        if not all_rejected:
            verified = encode_verified_report(
                result.sr, verdicts, observer, instance_number=instance_number, series_number=VERIFIED_SERIES_NUMBER
            )
            stored = self.archive.store_file_bytes(_to_bytes(verified), source_ae_title=REVIEW_SOURCE_AE, derived=True)
            if not stored.outcome.accepted and stored.outcome is not StoreOutcome.CONFLICT:
                raise ReviewError(f"the verified SR could not be stored: {stored.message}")
            verified_uid = stored.sop_instance_uid
        destinations = list(result.destinations) if verified_uid else []
        counts = Counter(v.decision for v in verdicts.values())
        with self.sessions() as session, session.begin():
            session.add(
                ReviewCompletion(
                    study_instance_uid=study_uid,
                    job_id=result.job_id,
                    ai_sr_uid=result.sr_uid,
                    verified_sr_uid=verified_uid,
                    instance_number=instance_number,
                    destinations=destinations,
                    completed_by=principal.name,
                    completed_at=utcnow(),
                )
            )
            for destination in destinations:
                add_delivery(session, destination, [verified_uid], job_id=result.job_id)
            record(
                session,
                who=principal.name,
                action="review.complete",
                target=f"study:{study_uid}/sr:{result.sr_uid}",
                details={"verified_sr_uid": verified_uid, "destinations": destinations, "decisions": dict(counts)},
            )
        logger.info(
            "review completed",
            extra={"study": study_uid, "job": result.job_id, "verified_sr": verified_uid, "destinations": destinations},
        )
        return {
            "job_id": result.job_id,
            "analysis": result.analysis,
            "ai_sr_uid": result.sr_uid,
            "verified_sr_uid": verified_uid,
            "instance_number": instance_number,
            "destinations": destinations,
            "decisions": dict(counts),
            "note": "every finding was rejected: no verified SR was written" if not verified_uid else "",
        }


# ---------------------------------------------------------------------- feedback
@dataclass(frozen=True)
class FeedbackRow:
    """Decisions on one analysis version: counts, rates and the commonest rejection reasons."""

    analysis: str
    version: str
    accepted: int
    edited: int
    rejected: int
    top_rejection_reasons: list[tuple[str, int]]

    @property
    def decided(self) -> int:
        return self.accepted + self.edited + self.rejected

    def rate(self, count: int) -> float | None:
        return round(count / self.decided, 4) if self.decided else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "analysis": self.analysis,
            "version": self.version,
            "decided": self.decided,
            "accepted": self.accepted,
            "edited": self.edited,
            "rejected": self.rejected,
            "accept_rate": self.rate(self.accepted),
            "edit_rate": self.rate(self.edited),
            "reject_rate": self.rate(self.rejected),
            "top_rejection_reasons": [{"reason": r, "count": n} for r, n in self.top_rejection_reasons],
        }


def review_feedback(
    engine: Engine,
    *,
    days: int | None = None,
    since: datetime | None = None,
    analysis: str | None = None,
    version: str | None = None,
    top: int = 5,
) -> list[FeedbackRow]:
    """Per analysis and version: how the latest decision on each finding went, and why findings were rejected.

    Only a finding's latest decision counts (a radiologist who changes their mind is counted once).
    Rejection reasons are grouped case-insensitively.
    """
    query = select(FindingDecision).order_by(FindingDecision.id)
    if days is not None:
        query = query.where(FindingDecision.decided_at >= utcnow() - timedelta(days=days))
    if since is not None:
        query = query.where(FindingDecision.decided_at >= since)
    if analysis is not None:
        query = query.where(FindingDecision.analysis == analysis)
    if version is not None:
        query = query.where(FindingDecision.analysis_version == version)
    with Session(engine) as session:
        latest: dict[tuple[str, str], FindingDecision] = {}
        for row in session.scalars(query):
            latest[(row.ai_sr_uid, row.finding_id)] = row
    groups: dict[tuple[str, str], list[FindingDecision]] = {}
    for row in latest.values():
        groups.setdefault((row.analysis, row.analysis_version), []).append(row)
    rows = []
    for (name, ver), decisions in sorted(groups.items()):
        counts = Counter(d.decision for d in decisions)
        reasons = Counter(d.reason.strip().lower() for d in decisions if d.decision == Decision.REJECT and d.reason.strip())
        rows.append(
            FeedbackRow(
                name,
                ver,
                counts.get(Decision.ACCEPT, 0),
                counts.get(Decision.EDIT, 0),
                counts.get(Decision.REJECT, 0),
                reasons.most_common(top),
            )
        )
    return rows
