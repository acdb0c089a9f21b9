"""From a stored study to results in the PACS: plan jobs, run analyses, store and forward results.

``plan_study`` routes every series of a study and submits one job per chosen
analysis (idempotently); ``PipelineRunner`` runs one job: series -> Volume ->
analysis -> DICOM SEG, TID 1500 SR and key image -> archive; when the job's
result set is recorded, the results are queued in the outbox for every
destination of the rule.
"""

from __future__ import annotations

import dataclasses
import io
import logging
from dataclasses import dataclass, field

import pydicom
from pydicom.dataset import Dataset

from radpilot.analyses import discover_analyses, model_registry
from radpilot.archive import Archive, StoreOutcome
from radpilot.config import Settings
from radpilot.contract import Analysis, Findings, NotApplicableError, Segmentation
from radpilot.dicom.cine import cine_from_datasets
from radpilot.dicom.encoders import encode_figure, encode_key_image, encode_measurement_report, encode_segmentation
from radpilot.dicom.volume import Volume, volume_from_datasets
from radpilot.engine.cine_groups import cine_slice_groups
from radpilot.engine.flags import evaluate_flags, load_all_flag_rules, record_flags
from radpilot.engine.job_store import JobStore
from radpilot.engine.jobs import (
    JobOutput,
    JobQueue,
    JobRecord,
    JobSpec,
    NotApplicableJobError,
    PermanentJobError,
    Priority,
    SubmitResult,
    SupersedeConflictError,
    TransientJobError,
)
from radpilot.engine.outbox import add_delivery
from radpilot.engine.routing import RoutingDecision, RuleSet
from radpilot.engine.series_facts import series_facts, series_of_study
from radpilot.modelhub.activation import ModelNotActive, require_active

logger = logging.getLogger(__name__)

RESULT_SOURCE_AE = "RADPILOT-AI"  # source AE title recorded on the archive's own result objects
SEG_SERIES_NUMBER, SR_SERIES_NUMBER, KEY_IMAGE_SERIES_NUMBER = 9901, 9902, 9903
EXTRA_SEG_SERIES_STEP = 10  # further SEG series are 9911, 9921, ...: clear of 9902-9905 (SR, key image, verified SR, report)


@dataclass
class SeriesPlan:
    """The routing decision for one series and the jobs submitted for it."""

    series_instance_uid: str
    decision: RoutingDecision | None
    jobs: list[tuple[int, bool]] = field(default_factory=list)  # (job id, newly created)
    skipped_reason: str = ""


def _series_inputs(archive: Archive, series_uid: str) -> list[tuple[str, str]]:
    return archive.instance_inputs(series_uid)


def _is_own_result(archive: Archive, series_uid: str) -> bool:
    """True for a series of RadPilot's own results (stored as derived by :meth:`PipelineRunner._store`)."""
    return archive.series_is_derived(series_uid)


def plan_study(
    archive: Archive,
    rules: RuleSet,
    analyses: dict[str, Analysis],
    study_uid: str,
    queue: JobQueue | None = None,
    *,
    priority_override: Priority | None = None,
) -> list[SeriesPlan]:
    """Route every series of ``study_uid``; submit jobs to ``queue`` unless it is None (dry run)."""
    plans: list[SeriesPlan] = []
    series_uids = series_of_study(archive, study_uid)
    groups = {g.filed_under: g for g in cine_slice_groups(archive, series_uids)}
    part_of = {uid: g.filed_under for g in groups.values() for uid in g.series_uids if uid != g.filed_under}
    for series_uid in series_uids:
        if _is_own_result(archive, series_uid):
            plans.append(SeriesPlan(series_uid, None, skipped_reason="RadPilot's own result series"))
            continue
        if series_uid in part_of:
            reason = f"one slice position of the cine routed with series {part_of[series_uid]}"
            plans.append(SeriesPlan(series_uid, None, skipped_reason=reason))
            continue
        facts = series_facts(archive, series_uid)
        group = groups.get(series_uid)
        if group is not None:
            # routed as the whole cine: every image of every slice position
            facts.attributes["NumberOfSlices"] = group.instance_count
        decision = rules.route(facts)
        plan = SeriesPlan(series_uid, decision)
        if not decision.matched:
            plan.skipped_reason = "no rule matches this series"
        if queue is not None:
            member_series = group.series_uids if group else (series_uid,)
            for analysis_name, rule in decision.analyses:
                analysis = analyses.get(analysis_name)
                if analysis is None:
                    logger.error("rule names an unknown analysis", extra={"rule": rule.name, "analysis": analysis_name})
                    continue
                # the input and the job it supersedes are read at submit time
                template = JobSpec(
                    analysis=analysis.name,
                    analysis_version=analysis.version,
                    study_instance_uid=study_uid,
                    series_instance_uid=series_uid,
                    instances=(),
                    rule=rule.name,
                    destinations=rule.destinations,
                    priority=priority_override if priority_override is not None else Priority.parse(rule.priority),
                    timeout_s=float(analysis.timeout_s),
                )
                result = _submit_on_newest_inputs(queue, archive, template, member_series)
                plan.jobs.append((result.job.id, result.created))
        plans.append(plan)
    return plans


SUBMIT_ATTEMPTS = 5
"""Tries of one job's submit while other routers keep submitting on the same series."""


def _submit_on_newest_inputs(queue: JobQueue, archive: Archive, template: JobSpec, member_series: tuple[str, ...]) -> SubmitResult:
    """Submit ``template`` on every image its series has now, superseding the newest earlier job.

    The newest job is read *before* the images: whatever job another router committed
    by then was planned on images stored by then, which this read sees too, so the new
    job's input is never smaller than the job it replaces. When another router submits
    between this read and the submit, the queue refuses the stale supersede
    (:class:`SupersedeConflictError`) and both are read again.
    """
    analysis, series_uid = template.analysis, template.series_instance_uid
    for attempt in range(1, SUBMIT_ATTEMPTS + 1):
        previous = _previous_job(queue, analysis, series_uid)
        inputs = [pair for uid in member_series for pair in _series_inputs(archive, uid)]
        try:
            return queue.submit(dataclasses.replace(template, instances=inputs, supersedes_job_id=previous))
        except SupersedeConflictError:
            if attempt == SUBMIT_ATTEMPTS:
                raise
            logger.info(
                "another router submitted on this series first; reading it again",
                extra={"analysis": analysis, "series_instance_uid": series_uid, "attempt": attempt},
            )
    raise AssertionError("unreachable")


def _previous_job(queue: JobQueue, analysis: str, series_uid: str) -> int | None:
    """The newest queued, running or done job of this analysis on this series: a new job supersedes it.

    Not only a finished one: a series that grows while its first job waits or runs must not
    be analysed and delivered twice (the older job is cancelled and its output discarded).
    """
    previous = queue.job_to_supersede(analysis, series_uid)
    return previous.id if previous is not None else None


def load_series_datasets(archive: Archive, study_uid: str, series_uid: str, sop_uids: tuple[str, ...] | None = None) -> list[Dataset]:
    """The job's input images: ``sop_uids`` of the study (a cine may span one series per slice position), else the series."""
    if sop_uids:
        wanted = set(sop_uids)
        instances = [i for i in archive.instances_of(study_uid) if i.sop_instance_uid in wanted]
        missing = wanted - {i.sop_instance_uid for i in instances}
        if missing:
            raise PermanentJobError(f"{len(missing)} input instance(s) are no longer in the archive")
    else:
        instances = archive.instances_of(study_uid, series_uid)
    return [pydicom.dcmread(archive.path_of(i)) for i in instances]


def encode_results(analysis: Analysis, findings: Findings, volume: Volume, datasets: list[Dataset], uid_seed: str) -> list[Dataset]:
    """DICOM SEG (one per segmentation), TID 1500 SR, a key image in the analysis' display window and its figures, per IHE AIR."""
    identity = dict(algorithm_name=findings.analysis, algorithm_version=findings.version, uid_seed=uid_seed)
    objects: list[Dataset] = []
    seg = None
    extras = [s for s in findings.extra_segmentations if s.labels.any()]
    if findings.segmentation is not None and findings.segmentation.labels.any():
        seg = encode_segmentation(
            findings,
            datasets,
            series_number=SEG_SERIES_NUMBER,
            series_description=_seg_series_description(findings, findings.segmentation) if extras else None,
            **identity,
        )
        objects.append(seg)
    # Each further segmentation (e.g. the end-systolic phase of a cine) is a SEG series of its own: viewers
    # (OHIF 3) take the instances of one SEG series as versions of one segmentation and open only the latest.
    for number, extra in enumerate(extras, start=1):
        objects.append(
            encode_segmentation(
                dataclasses.replace(findings, segmentation=extra),
                datasets,
                series_number=SEG_SERIES_NUMBER + EXTRA_SEG_SERIES_STEP * number,
                series_description=_seg_series_description(findings, extra),
                **(identity | {"uid_seed": f"{uid_seed}/segmentation-{number}"}),
            )
        )
    if findings.measurements or findings.qualitative or findings.points:
        objects.append(encode_measurement_report(findings, datasets, seg, series_number=SR_SERIES_NUMBER, **identity))
    key_images = 0
    # The default key image draws the segmentation on the analysed volume's own slices; a segmentation that lies
    # on other images of the series (another phase) is drawn by the analysis itself, in its figures.
    if findings.segmentation is None or findings.segmentation.source_uids is None or not findings.figures:
        key_images += 1
        objects.append(
            encode_key_image(
                findings,
                volume,
                datasets,
                series_number=KEY_IMAGE_SERIES_NUMBER,
                window=analysis.display_window(volume.modality),
                **identity,
            )
        )
    for figure in findings.figures:
        key_images += 1
        objects.append(
            encode_figure(figure, findings, datasets, series_number=KEY_IMAGE_SERIES_NUMBER, instance_number=key_images, **identity)
        )
    return objects


def _seg_series_description(findings: Findings, segmentation: Segmentation) -> str:
    return f"{findings.analysis} segmentation {segmentation.label}".strip()[:64]


def _to_bytes(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


class PipelineRunner:
    """Runs one job end to end inside a worker; see :class:`radpilot.engine.jobs.JobRunner`."""

    def __init__(self, settings: Settings, archive: Archive | None = None, analyses: dict[str, Analysis] | None = None) -> None:
        self.settings = settings
        self.archive = archive or Archive.from_settings(settings)
        self.analyses = analyses if analyses is not None else discover_analyses()
        self.models = model_registry(self.analyses)
        self.flag_rules = load_all_flag_rules(self.analyses)

    def __call__(self, job: JobRecord) -> JobOutput:
        analysis = self.analyses.get(job.analysis)
        if analysis is None:
            raise PermanentJobError(f"this RadPilot has no analysis called {job.analysis!r}")
        if analysis.version != job.analysis_version:
            raise PermanentJobError(f"{job.analysis} is now version {analysis.version}; the job asked for {job.analysis_version}")
        self._require_active_models(analysis)
        datasets = load_series_datasets(self.archive, job.study_instance_uid, job.series_instance_uid, job.input_sop_uids)
        try:
            # An analysis that reads a cine gets every phase of every slice; the others one volume.
            volume = (
                cine_from_datasets(datasets) if analysis.inputs is not None and analysis.inputs.temporal else volume_from_datasets(datasets)
            )
        except (ValueError, TypeError, NotImplementedError) as exc:
            raise PermanentJobError(f"series cannot be read as an image volume: {exc}") from exc
        # run() may refuse too, when only the analysis' own model can tell (no liver in the field of view):
        # the worklist shows that as "not applicable" with its reason, like a refusal of check_input.
        try:
            analysis.check_input(volume)
            findings = analysis.run(volume)
        except NotApplicableError as exc:
            raise NotApplicableJobError(str(exc)) from exc
        objects = encode_results(analysis, findings, volume, datasets, uid_seed=job.idempotency_key)
        stored = [self._store(ds) for ds in objects]
        return JobOutput(
            sop_instance_uids=stored,
            details={
                "measurements": [
                    {
                        "name": m.name.meaning,
                        "value": round(float(m.value), 4),
                        "unit": m.unit.value,
                        "site": m.finding_site.meaning if m.finding_site else "",
                    }
                    for m in findings.measurements
                ],
                "notes": list(findings.notes),
                "outputs": analysis.output_values(findings),
                "flags": [f.as_json() for f in evaluate_flags(analysis, self.flag_rules.get(analysis.name, ()), findings)],
            },
        )

    def _require_active_models(self, analysis: Analysis) -> None:
        """Run only model versions that passed their acceptance gate or were activated by an audited override."""
        for model_name in analysis.required_models:
            version = self.models.manifest(model_name).version
            try:
                require_active(self.archive.engine, model_name, version)
            except ModelNotActive as exc:
                raise PermanentJobError(f"{analysis.name} cannot run: {exc}") from exc

    def _store(self, ds: Dataset) -> str:
        result = self.archive.store_file_bytes(_to_bytes(ds), source_ae_title=RESULT_SOURCE_AE, derived=True)
        if result.outcome is StoreOutcome.CONFLICT:
            # Result UIDs derive from the job's inputs: the object is this job's own, written by an
            # earlier attempt that died before recording its result set. Keep that copy.
            return result.sop_instance_uid
        if not result.outcome.accepted:
            raise TransientJobError(f"could not store result object: {result.message}")
        return result.sop_instance_uid

    def on_record(self, session, job: JobRecord, output: JobOutput) -> None:  # noqa: ANN001 - SQLAlchemy Session
        """Queue the deliveries in the very transaction that records the result set: both happen or neither."""
        for destination in job.destinations:
            add_delivery(session, destination, output.sop_instance_uids, job_id=job.id)
        record_flags(session, job.id, job.study_instance_uid, list(output.details.get("flags", [])), job.supersedes_job_id)

    def on_committed(self, job: JobRecord, output: JobOutput) -> None:
        if job.supersedes_job_id is not None:
            self._remove_superseded(job.supersedes_job_id, keep=set(output.sop_instance_uids))

    def on_discarded(self, job: JobRecord, output: JobOutput) -> None:
        """Delete what this attempt stored, except objects of the job's recorded result set.

        Result UIDs derive from the job, so an attempt that lost the race to another worker
        wrote the recorded objects themselves: those stay. A cancelled (superseded) job has
        no result set: everything it wrote goes.
        """
        recorded = {uid for result in JobStore(self.archive.engine).result_sets(job.id) for uid in result["sop_instance_uids"]}
        orphans = [uid for uid in output.sop_instance_uids if uid not in recorded]
        removed = self.archive.delete_instances(orphans) if orphans else 0
        logger.info("discarded output", extra={"job": job.id, "instances": len(output.sop_instance_uids), "removed": removed})

    def _remove_superseded(self, old_job_id: int, keep: set[str]) -> None:
        old = JobStore(self.archive.engine).get(old_job_id)
        if old is None or not old.result:
            return
        old_uids = [u for u in old.result.get("sop_instance_uids", []) if u not in keep]
        removed = self.archive.delete_instances(old_uids)
        logger.info("superseded results removed", extra={"old_job": old_job_id, "removed": removed})


def make_runner(settings: Settings | None = None) -> PipelineRunner:
    """Runner factory for worker processes (settings from the environment when not given)."""
    return PipelineRunner(settings or Settings())


@dataclass(frozen=True)
class RunnerFactory:
    """A picklable runner factory carrying the server's settings into spawned worker processes."""

    settings_json: str

    def __call__(self) -> PipelineRunner:
        return PipelineRunner(Settings.model_validate_json(self.settings_json))
