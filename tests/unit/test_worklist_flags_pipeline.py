"""Flags from declarations, end to end through the engine: a plug-in analysis' flags.yaml, a real job, the worklist row.

The example plug-in analysis of test_analysis_plugin gets a flags.yaml; its job runs through the
production pipeline and the job store, and the worklist shows its flag (critical, first in the
list) without the engine or the web naming the analysis.
"""

from __future__ import annotations

from pathlib import Path

import pydicom

from radpilot.analyses import discover_analyses
from radpilot.archive import Archive
from radpilot.config import Settings
from radpilot.engine.job_store import JobStore
from radpilot.engine.jobs import JobSpec
from radpilot.engine.pipeline import PipelineRunner
from radpilot.validation.gate import activate
from radpilot.worklist.query import WorklistQuery, worklist_page
from tests.unit.test_analysis_plugin import MODEL, PACKAGE, phantoms, plugin  # noqa: F401 - fixtures
from tests.unit.worklist_support import store_study

FLAGS = """
flags:
  - {name: air_found, label: Air space present, output: right_air_ml, above: 0.0, critical: true}
  - {name: huge_air, label: Huge air space, output: left_air_ml, above: 1000000.0}
"""


def test_a_flag_declared_in_the_analysis_folder_reaches_the_worklist(plugin: Path, phantoms: Path, tmp_path: Path) -> None:  # noqa: F811
    (plugin / "flags.yaml").write_text(FLAGS)
    settings = Settings(data_dir=tmp_path / "data", durability="none")
    archive = Archive.from_settings(settings)
    try:
        analyses = discover_analyses()
        activate(archive, MODEL, "0.1.0", user="admin", override=True, reason="example plug-in")
        newer, _ = store_study(archive, patient_id="NEWER", study_date="20991231")
        paths = sorted((phantoms / "PH-001" / "dicom").glob("*.dcm"))
        for path in paths:
            assert archive.store_file_bytes(path.read_bytes()).outcome.accepted
        first = pydicom.dcmread(paths[0], stop_before_pixels=True)
        study, series = str(first.StudyInstanceUID), str(first.SeriesInstanceUID)
        store = JobStore(archive.engine)
        job = store.submit(JobSpec(PACKAGE, "0.1.0", study, series, archive.instance_inputs(series))).job
        job = store.claim(job.id, "worker-1", 600.0).job
        runner = PipelineRunner(settings, archive, analyses=analyses)
        output = runner(job)
        assert [f["name"] for f in output.details["flags"]] == ["air_found"]
        assert store.complete(job.id, "worker-1", output, on_record=runner.on_record)

        rows = worklist_page(archive.engine, WorklistQuery()).rows
        assert [r.study_instance_uid for r in rows] == [study, newer]  # critical first, though older
        [flag] = rows[0].flags
        assert (flag.analysis, flag.name, flag.label, flag.critical) == (PACKAGE, "air_found", "Air space present", True)
        assert flag.value > 0 and flag.threshold == 0.0
        assert [(a.analysis, a.state) for a in rows[0].ai] == [(PACKAGE, "done")]
    finally:
        archive.close()
