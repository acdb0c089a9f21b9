"""The engine runs a model only after it passed its acceptance gate or an administrator overrode it (audited)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from radpilot.archive import Archive
from radpilot.config import Settings
from radpilot.contract import Analysis, Findings
from radpilot.engine.jobs import PermanentJobError
from radpilot.engine.pipeline import PipelineRunner
from radpilot.security.audit import AuditEvent
from radpilot.validation.gate import activate
from tests.factories import make_ct_series, to_part10_bytes


class NeedsSegmentationModel(Analysis):
    name = "needs_model"
    version = "0.1.0"
    required_models = ("cxr_lung_heart_seg",)

    def check_input(self, volume) -> None:  # noqa: ANN001
        return None

    def run(self, volume) -> Findings:  # noqa: ANN001
        return Findings(analysis=self.name, version=self.version, key_slices=[0])


@pytest.fixture
def runner_and_job(tmp_path: Path):
    settings = Settings(data_dir=tmp_path / "data", durability="none")
    archive = Archive.from_settings(settings)
    series = make_ct_series(2, rows=16, columns=16)
    for ds in series:
        archive.store_file_bytes(to_part10_bytes(ds))
    runner = PipelineRunner(settings, archive, analyses={"needs_model": NeedsSegmentationModel()})
    job = SimpleNamespace(
        id=1,
        analysis="needs_model",
        analysis_version="0.1.0",
        study_instance_uid=str(series[0].StudyInstanceUID),
        series_instance_uid=str(series[0].SeriesInstanceUID),
        input_sop_uids=(),
        idempotency_key="k" * 64,
        destinations=(),
        supersedes_job_id=None,
    )
    yield runner, job, archive
    archive.close()


def test_model_that_was_never_activated_is_not_run(runner_and_job) -> None:
    runner, job, _ = runner_and_job
    with pytest.raises(PermanentJobError, match="cxr_lung_heart_seg 1.0.0 has not been activated"):
        runner(job)


def test_failing_gate_refuses_activation_but_an_audited_override_lets_it_run(runner_and_job) -> None:
    from radpilot.validation.gate import GateRefused

    runner, job, archive = runner_and_job
    with pytest.raises(GateRefused):
        activate(archive, "cxr_lung_heart_seg", "1.0.0", user="admin")
    activate(archive, "cxr_lung_heart_seg", "1.0.0", user="admin", override=True, reason="research deployment, CV figures reviewed")
    output = runner(job)
    assert output.sop_instance_uids  # the key image at least
    with archive.sessions() as session:
        actions = [e.action for e in session.query(AuditEvent).order_by(AuditEvent.id)]
    assert actions == ["model.activate.refused", "model.activate.override"]
