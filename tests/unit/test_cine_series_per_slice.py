"""A short-axis cine written one series per slice position (one breath-hold each), as some scanners store it:
read as one cine, routed as one series, analysed by one job, and its SEG pointing at every series it lies on."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pydicom
import pytest

from radpilot.analyses import discover_analyses, model_registry
from radpilot.analyses.cardiac_mr_function import ANALYSIS, CardiacMrFunction
from radpilot.analyses.cardiac_mr_function.phantom import cine_datasets, make_phantom, phantom_datasets
from radpilot.archive import Archive
from radpilot.config import Settings
from radpilot.dicom.cine import cine_from_datasets
from radpilot.engine.cine_groups import cine_slice_groups
from radpilot.engine.job_store import JobStore
from radpilot.engine.pipeline import PipelineRunner, plan_study
from radpilot.engine.queue_embedded import EmbeddedJobQueue
from radpilot.engine.routing import load_rules
from radpilot.validation.gate import activate
from tests.factories import make_ct_series, to_part10_bytes

SEG = "1.2.840.10008.5.1.4.1.1.66.4"
SR = "1.2.840.10008.5.1.4.1.1.88.34"
PHASES, SLICES = 16, 8


@pytest.fixture
def archive(tmp_path: Path):  # noqa: ANN201 - Archive generator
    store = Archive(tmp_path / "dicom", f"sqlite:///{tmp_path / 'index.sqlite3'}", durability="none")
    yield store
    store.close()


def _store(archive: Archive, datasets: list) -> None:
    for ds in datasets:
        assert archive.store_file_bytes(to_part10_bytes(ds), source_ae_title="MR1").outcome.accepted


def _small(**kwargs: object) -> list:
    frames = np.arange(6 * 4 * 12 * 10, dtype=np.float32).reshape(6, 4, 12, 10)
    return cine_datasets(frames, pixel_mm=1.5, slice_spacing_mm=8.0, slice_thickness_mm=6.0, heart_rate_bpm=60.0, **kwargs)  # type: ignore[arg-type]


def test_one_series_per_slice_position_reads_as_the_same_cine_as_one_series() -> None:
    per_slice = _small(series_per_slice=True)
    assert len({str(ds.SeriesInstanceUID) for ds in per_slice}) == 4
    random.Random(1).shuffle(per_slice)
    together = cine_from_datasets(per_slice)
    reference = cine_from_datasets(_small())
    assert np.array_equal(together.frames, reference.frames)
    assert together.spacing_zyx == pytest.approx(reference.spacing_zyx)
    # the cine is filed under the series of its first slice
    first_slice = next(ds for ds in per_slice if str(ds.SOPInstanceUID) == together.sop_instance_uids[0])
    assert together.series_uid == str(first_slice.SeriesInstanceUID)


def test_series_that_mix_slice_positions_or_frames_of_reference_are_refused() -> None:
    per_slice = _small(series_per_slice=True)
    # two slice series merged into one: that series holds two positions
    merged = [ds for ds in per_slice if int(ds.SeriesNumber) != 6]
    for ds in (ds for ds in per_slice if int(ds.SeriesNumber) == 6):
        ds.SeriesInstanceUID = next(str(d.SeriesInstanceUID) for d in per_slice if int(d.SeriesNumber) == 5)
        merged.append(ds)
    with pytest.raises(ValueError, match="not one slice position each"):
        cine_from_datasets(merged)
    other = _small(series_per_slice=True)
    for ds in (ds for ds in other if int(ds.SeriesNumber) == 8):
        ds.FrameOfReferenceUID = "1.2.3.4"
    with pytest.raises(ValueError, match="frames of reference"):
        cine_from_datasets(other)
    with pytest.raises(ValueError, match="one study"):
        cine_from_datasets(_small(series_per_slice=True) + _small(series_per_slice=True))


def test_slice_series_of_one_cine_are_grouped_and_other_series_are_not(archive: Archive) -> None:
    per_slice = _small(series_per_slice=True, study_uid="1.2.826.0.1.3680043.8.498.1")
    _store(archive, per_slice)
    _store(archive, make_ct_series(3, study_uid="1.2.826.0.1.3680043.8.498.1"))
    series = archive.series_of_study("1.2.826.0.1.3680043.8.498.1")
    [group] = cine_slice_groups(archive, series)
    by_number = sorted({(int(ds.SeriesNumber), str(ds.SeriesInstanceUID)) for ds in per_slice})
    assert group.series_uids == tuple(uid for _, uid in by_number)
    assert group.filed_under == by_number[0][1]
    assert group.instance_count == len(per_slice)


def test_a_repeated_stack_or_a_single_cine_series_is_not_grouped(archive: Archive) -> None:
    study = "1.2.826.0.1.3680043.8.498.2"
    first = _small(series_per_slice=True, study_uid=study)
    frame_of_reference = str(first[0].FrameOfReferenceUID)
    again = _small(series_per_slice=True, study_uid=study)
    for ds in again:  # the same stack acquired twice: positions repeat in one frame of reference
        ds.FrameOfReferenceUID = frame_of_reference
    _store(archive, first + again)
    assert cine_slice_groups(archive, archive.series_of_study(study)) == []
    single = "1.2.826.0.1.3680043.8.498.3"
    _store(archive, _small(study_uid=single))
    assert cine_slice_groups(archive, archive.series_of_study(single)) == []


def test_a_cine_written_one_series_per_slice_is_routed_and_analysed_as_one(archive: Archive, tmp_path: Path) -> None:
    phantom = make_phantom(phases=PHASES, slices=SLICES)
    per_slice = phantom_datasets(phantom, series_per_slice=True, patient_height_m=1.75, patient_weight_kg=72.0)
    _store(archive, per_slice)
    study = str(per_slice[0].StudyInstanceUID)
    analyses = discover_analyses()
    queue = EmbeddedJobQueue(JobStore(archive.engine))
    plans = plan_study(archive, load_rules(None, analyses), analyses, study, queue)

    # one plan routes the whole cine to cardiac_mr_function; the other seven say whose cine they are part of
    routed = [p for p in plans if p.decision is not None]
    assert len(routed) == 1 and [a for a, _ in routed[0].decision.analyses] == ["cardiac_mr_function"]
    assert (
        sorted(p.skipped_reason.split(" series ")[0] for p in plans if p.decision is None)
        == ["one slice position of the cine routed with"] * 7
    )
    [job] = queue.list()
    assert set(job.input_sop_uids) == {str(ds.SOPInstanceUID) for ds in per_slice}

    registry = model_registry(analyses)
    for model in CardiacMrFunction.required_models:
        activate(archive, model, registry.manifest(model).version, user="test", override=True, reason="unit test of routing")
    claimed = queue.store.claim_next("test-worker", lease_s=600)
    assert claimed is not None and claimed.id == job.id
    output = PipelineRunner(Settings(data_dir=tmp_path / "unused"), archive=archive, analyses=analyses)(claimed)
    stored = [pydicom.dcmread(archive.path_of(i)) for i in archive.instances_by_uid(list(output.sop_instance_uids))]

    # the same measurements as the same cine written as one series
    reference = ANALYSIS.run(cine_from_datasets(phantom_datasets(phantom, patient_height_m=1.75, patient_weight_kg=72.0)))
    assert output.details["measurements"] == [
        {
            "name": m.name.meaning,
            "value": round(float(m.value), 4),
            "unit": m.unit.value,
            "site": m.finding_site.meaning if m.finding_site else "",
        }
        for m in reference.measurements
    ]
    # each SEG references its images under their own series: all eight, one image each
    series_of = {str(ds.SOPInstanceUID): str(ds.SeriesInstanceUID) for ds in per_slice}
    segs = [ds for ds in stored if str(ds.SOPClassUID) == SEG]
    assert len(segs) == 2
    for seg in segs:
        referenced = {
            str(item.SeriesInstanceUID): [str(r.ReferencedSOPInstanceUID) for r in item.ReferencedInstanceSequence]
            for item in seg.ReferencedSeriesSequence
        }
        assert len(referenced) == SLICES and all(len(uids) == 1 for uids in referenced.values())
        assert all(series_of[uid] == series for series, uids in referenced.items() for uid in uids)
    [sr] = [ds for ds in stored if str(ds.SOPClassUID) == SR]
    evidence = {
        str(item.SeriesInstanceUID)
        for study_item in sr.CurrentRequestedProcedureEvidenceSequence
        for item in study_item.ReferencedSeriesSequence
    }
    assert set(series_of.values()) <= evidence
