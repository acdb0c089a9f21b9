"""Derived objects (RadPilot's own results) and the archive's read accessors, on SQLite and PostgreSQL."""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from radpilot.archive import Archive, StoreOutcome
from radpilot.db import utcnow
from tests.factories import make_ct_series, to_part10_bytes


@pytest.fixture(params=["sqlite", "postgresql"])
def archive(request: pytest.FixtureRequest, tmp_path: Path):  # noqa: ANN201 - Archive generator
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'index.sqlite3'}"
    else:
        url = request.getfixturevalue("fresh_postgres_url")
    store = Archive(tmp_path / "dicom", url, durability="none")
    yield store
    store.close()


def result_series(study_uid: str, count: int = 2) -> list:
    """A small series standing in for a result (SEG, SR, key image) in ``study_uid``."""
    return make_ct_series(count, study_uid=study_uid, series_number=9901, series_description="RESULT")


def store_all(archive: Archive, datasets: list, **kwargs: object) -> None:
    for ds in datasets:
        result = archive.store_file_bytes(to_part10_bytes(ds), **kwargs)
        assert result.outcome is StoreOutcome.STORED, result.message


def changed_now(archive: Archive) -> list[str]:
    now = utcnow()
    return archive.studies_changed_between(now - timedelta(hours=1), now + timedelta(seconds=1))


def test_derived_objects_are_indexed_as_derived_and_named_so(archive: Archive) -> None:
    source = make_ct_series(3)
    study_uid = str(source[0].StudyInstanceUID)
    store_all(archive, source, source_ae_title="CT1")
    results = result_series(study_uid)
    store_all(archive, results, source_ae_title="RADPILOT-AI", derived=True)

    assert not archive.series_is_derived(str(source[0].SeriesInstanceUID))
    assert archive.series_is_derived(str(results[0].SeriesInstanceUID))
    assert not archive.series_is_derived("2.25.404")
    stored = archive.instances_of(study_uid)
    assert sorted(i.derived for i in stored) == [False, False, False, True, True]
    assert all(i.file_path.endswith(".derived.dcm") == i.derived for i in stored)


def test_only_derived_objects_never_make_a_study_due(archive: Archive) -> None:
    source = make_ct_series(2)
    study_uid = str(source[0].StudyInstanceUID)
    store_all(archive, source)
    routed_until = utcnow()
    assert changed_now(archive) == [study_uid]

    store_all(archive, result_series(study_uid), derived=True)
    assert archive.studies_changed_between(routed_until, utcnow() + timedelta(seconds=1)) == []

    lone_result_study = generate_uid()
    store_all(archive, result_series(lone_result_study), derived=True)
    assert lone_result_study not in changed_now(archive)

    store_all(archive, make_ct_series(1, study_uid=study_uid))
    assert archive.studies_changed_between(routed_until, utcnow() + timedelta(seconds=1)) == [study_uid]


def test_a_result_stored_again_by_the_engine_becomes_derived(archive: Archive) -> None:
    """Recovery may have indexed a result without knowing it was derived; the engine's retry fixes that."""
    [ds] = result_series(generate_uid(), count=1)
    data = to_part10_bytes(ds)
    assert archive.store_file_bytes(data, source_ae_title="RECOVERY").outcome is StoreOutcome.STORED
    assert not archive.series_is_derived(str(ds.SeriesInstanceUID))
    assert archive.store_file_bytes(data, derived=True).outcome is StoreOutcome.DUPLICATE
    assert archive.series_is_derived(str(ds.SeriesInstanceUID))


def test_recovery_keeps_derived_objects_derived(archive: Archive, tmp_path: Path) -> None:
    study_uid = generate_uid()
    results = result_series(study_uid, count=2)
    source = make_ct_series(1, study_uid=study_uid)
    scratch = Archive(tmp_path / "scratch", f"sqlite:///{tmp_path / 'scratch.sqlite3'}", durability="none")
    store_all(scratch, [results[0]], derived=True)
    store_all(scratch, source)
    [derived_file] = [scratch.path_of(i) for i in scratch.instances_of(study_uid) if i.derived]
    [source_file] = [scratch.path_of(i) for i in scratch.instances_of(study_uid) if not i.derived]
    # A derived file whose index row was lost (power loss), and a derived temporary whose rename was lost.
    for path in (derived_file, source_file):
        target = archive.storage_dir / path.relative_to(scratch.storage_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    (archive.tmp_dir / "tmp1234.derived.part").write_bytes(to_part10_bytes(results[1]))
    scratch.close()

    report = archive.recover(full_scan=True)

    assert report["files_reindexed"] == 2 and report["temporaries_recovered"] == 1
    by_uid = {i.sop_instance_uid: i.derived for i in archive.instances_of(study_uid)}
    assert by_uid == {str(results[0].SOPInstanceUID): True, str(results[1].SOPInstanceUID): True, str(source[0].SOPInstanceUID): False}


def test_series_summary_and_inputs(archive: Archive) -> None:
    source = make_ct_series(3, patient_id="P7")
    study_uid, series_uid = str(source[0].StudyInstanceUID), str(source[0].SeriesInstanceUID)
    store_all(archive, reversed(source), source_ae_title="CT1")
    store_all(archive, result_series(study_uid), derived=True)

    summary = archive.series_summary(series_uid)
    assert summary.study_instance_uid == study_uid and summary.series_instance_uid == series_uid
    assert summary.first_instance.sop_instance_uid == str(source[0].SOPInstanceUID)
    assert summary.first_instance.source_ae_title == "CT1"
    assert (summary.instance_count, summary.frame_count, summary.derived) == (3, 3, False)
    with pytest.raises(KeyError, match="not in the archive"):
        archive.series_summary("2.25.404")

    assert archive.series_of_study(study_uid)[0] == series_uid and len(archive.series_of_study(study_uid)) == 2
    assert archive.series_of_study("2.25.404") == []
    expected = {(i.sop_instance_uid, i.content_sha256) for i in archive.instances_of(study_uid, series_uid)}
    assert set(archive.instance_inputs(series_uid)) == expected and len(expected) == 3
    wanted = [str(source[1].SOPInstanceUID), "2.25.404"]
    assert [i.sop_instance_uid for i in archive.instances_by_uid(wanted)] == wanted[:1]
    assert archive.instances_by_uid([]) == []
    counts = archive.counts()
    assert (counts.studies, counts.series, counts.instances) == (1, 2, 5)
