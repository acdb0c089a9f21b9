"""Archive storage: atomic, idempotent, conflicts refused, malformed input refused — on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from sqlalchemy import select

from radpilot.archive import Archive, StoreOutcome
from radpilot.archive.models import Series
from radpilot.dicom import status as dimse_status
from tests.factories import make_ct_dataset, make_ct_series, to_part10_bytes


@pytest.fixture(params=["sqlite", "postgresql"])
def archive(request, tmp_path: Path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'index.sqlite3'}"
    else:
        url = request.getfixturevalue("fresh_postgres_url")
    store = Archive(tmp_path / "dicom", url)
    yield store
    store.close()


def stored_files(archive: Archive) -> dict[str, str]:
    """Every stored file with the sha256 of its bytes (temporaries excluded)."""
    return {str(p.relative_to(archive.storage_dir)): hashlib.sha256(p.read_bytes()).hexdigest() for p in archive.storage_dir.rglob("*.dcm")}


def test_store_writes_file_and_index_that_read_back_identical(archive: Archive) -> None:
    data = to_part10_bytes(make_ct_dataset())
    result = archive.store_file_bytes(data, source_ae_title="MODALITY")
    assert result.outcome is StoreOutcome.STORED and result.status == dimse_status.SUCCESS
    [instance] = archive.instances_of(result.study_instance_uid)
    assert archive.read_bytes(instance) == data
    assert instance.source_ae_title == "MODALITY"
    assert not list(archive.tmp_dir.iterdir()), "no temporary file may be left behind"


def test_resending_identical_instance_is_idempotent(archive: Archive) -> None:
    data = to_part10_bytes(make_ct_dataset())
    archive.store_file_bytes(data)
    before = stored_files(archive)
    result = archive.store_file_bytes(data)
    assert result.outcome is StoreOutcome.DUPLICATE and result.status == dimse_status.SUCCESS
    assert archive.instance_count() == 1
    assert stored_files(archive) == before


def test_resending_with_other_file_meta_is_still_a_duplicate(archive: Archive) -> None:
    ds = make_ct_dataset()
    archive.store_file_bytes(to_part10_bytes(ds))
    ds.file_meta.ImplementationVersionName = "OTHER_SENDER"
    ds.file_meta.SourceApplicationEntityTitle = "ELSEWHERE"
    assert archive.store_file_bytes(to_part10_bytes(ds)).outcome is StoreOutcome.DUPLICATE


def test_conflicting_resend_keeps_first_copy_and_is_reported(archive: Archive) -> None:
    ds = make_ct_dataset(patient_name="FIRST^COPY")
    first = to_part10_bytes(ds)
    archive.store_file_bytes(first)
    ds.PatientName = "SECOND^COPY"
    result = archive.store_file_bytes(to_part10_bytes(ds), source_ae_title="OTHER")
    assert result.outcome is StoreOutcome.CONFLICT
    assert result.status == dimse_status.CONFLICT
    assert "different content" in result.message and str(ds.SOPInstanceUID) in result.message
    [instance] = archive.instances_of(str(ds.StudyInstanceUID))
    assert archive.read_bytes(instance) == first
    [conflict] = archive.conflicts()
    assert conflict.sop_instance_uid == str(ds.SOPInstanceUID) and conflict.source_ae_title == "OTHER"
    archive.store_file_bytes(to_part10_bytes(ds))
    assert archive.conflicts()[0].count == 2


def test_an_instance_of_another_study_than_the_one_named_is_refused_and_nothing_is_written(archive: Archive) -> None:
    ds = make_ct_dataset()
    named = "1.2.826.0.1.3680043.8.498.1"
    result = archive.store_file_bytes(to_part10_bytes(ds), study_instance_uid=named)
    assert result.outcome is StoreOutcome.CONFLICT and result.status == dimse_status.CONFLICT
    assert named in result.message and str(ds.StudyInstanceUID) in result.message
    assert result.sop_instance_uid == str(ds.SOPInstanceUID)
    assert archive.instance_count() == 0 and stored_files(archive) == {}
    assert archive.conflicts() == [], "a wrong study is not a content conflict of a stored instance"
    matching = archive.store_file_bytes(to_part10_bytes(ds), study_instance_uid=str(ds.StudyInstanceUID))
    assert matching.outcome is StoreOutcome.STORED


def _without(keyword: str) -> bytes:
    ds = make_ct_dataset()
    delattr(ds, keyword)
    return to_part10_bytes(ds)


def _truncated(fraction: float) -> bytes:
    data = to_part10_bytes(make_ct_dataset(rows=64, columns=64))
    return data[: int(len(data) * fraction)]


MALFORMED = {
    "not dicom": (b"this is a text file, not DICOM" * 20, "not a DICOM Part 10 file"),
    "empty": (b"", "not a DICOM Part 10 file"),
    "truncated in pixel data": (_truncated(0.6), "truncated"),
    "truncated in header": (_truncated(0.05), "truncated"),
    "missing SOPInstanceUID": (_without("SOPInstanceUID"), "SOPInstanceUID"),
    "missing StudyInstanceUID": (_without("StudyInstanceUID"), "StudyInstanceUID"),
    "missing SeriesInstanceUID": (_without("SeriesInstanceUID"), "SeriesInstanceUID"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_input_is_refused_with_reason_and_nothing_changes(archive: Archive, case: str) -> None:
    good = archive.store_file_bytes(to_part10_bytes(make_ct_dataset()))
    before = stored_files(archive)
    data, expected_reason = MALFORMED[case]
    result = archive.store_file_bytes(data)
    assert result.outcome is StoreOutcome.MALFORMED
    assert result.status == dimse_status.CANNOT_UNDERSTAND
    assert expected_reason in result.message
    assert archive.instance_count() == 1
    assert stored_files(archive) == before
    assert archive.instances_of(good.study_instance_uid)
    assert not list(archive.tmp_dir.iterdir())


def test_invalid_uid_is_refused(archive: Archive) -> None:
    ds = make_ct_dataset()
    ds.SOPInstanceUID = "1.2.abc"
    ds.file_meta.MediaStorageSOPInstanceUID = "1.2.abc"
    result = archive.store_file_bytes(to_part10_bytes(ds))
    assert result.outcome is StoreOutcome.MALFORMED and "not a valid UID" in result.message


@pytest.mark.parametrize(
    "name",
    ["CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm", "SC_rgb_jpeg_dcmtk.dcm", "SC_rgb_rle.dcm", "image_dfl.dcm", "MR_small_bigendian.dcm"],
)
def test_compressed_and_other_transfer_syntaxes_are_stored_as_received(archive: Archive, name: str) -> None:
    data = Path(get_testdata_file(name)).read_bytes()
    ds = pydicom.dcmread(io.BytesIO(data))
    if "StudyInstanceUID" not in ds:  # a few pydicom test files lack it; give them one
        ds.StudyInstanceUID = "1.2.3.4.5"
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=False)
        data = buffer.getvalue()
    result = archive.store_file_bytes(data)
    assert result.outcome is StoreOutcome.STORED, result.message
    [instance] = archive.instances_of(result.study_instance_uid, sop_uid=result.sop_instance_uid)
    assert archive.read_bytes(instance) == data
    assert instance.transfer_syntax_uid == str(ds.file_meta.TransferSyntaxUID)


def test_series_is_indexed_once_with_all_instances(archive: Archive) -> None:
    for ds in make_ct_series(5):
        archive.store_file_bytes(to_part10_bytes(ds))
    instances = archive.instances_of(str(ds.StudyInstanceUID))
    assert [i.instance_number for i in instances] == [1, 2, 3, 4, 5]
    assert len({i.series_fk for i in instances}) == 1


def test_reopening_archive_keeps_everything(archive: Archive, tmp_path: Path) -> None:
    result = archive.store_file_bytes(to_part10_bytes(make_ct_dataset()))
    url = archive.engine.url.render_as_string(hide_password=False)
    archive.close()
    reopened = Archive(archive.storage_dir, url)
    assert reopened.instance_count() == 1
    assert reopened.instances_of(result.study_instance_uid)
    reopened.close()


def test_recovery_stores_complete_temporaries_and_removes_torn_ones(tmp_path: Path) -> None:
    """A power loss can cut off the rename of a synced temporary: recovery at start stores it."""
    url = f"sqlite:///{tmp_path / 'i.db'}"
    archive = Archive(tmp_path / "dicom", url)
    complete = to_part10_bytes(make_ct_dataset())
    (archive.tmp_dir / "synced-before-crash.part").write_bytes(complete)
    (archive.tmp_dir / "torn-write.part").write_bytes(complete[: len(complete) // 2])
    report = archive.recover(full_scan=False)
    assert report == {"temporaries_recovered": 1, "temporaries_removed": 1, "files_reindexed": 0}
    assert archive.instance_count() == 1
    assert not list(archive.tmp_dir.iterdir())
    archive.close()


def test_recovery_after_unclean_stop_reindexes_files_whose_rows_were_lost(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'i.db'}"
    archive = Archive(tmp_path / "dicom", url)
    assert archive.mark_open() is False
    results = [archive.store_file_bytes(to_part10_bytes(ds)) for ds in make_ct_series(3)]
    lost = results[1].sop_instance_uid
    with archive.engine.begin() as connection:  # the index commit a power loss took away
        connection.exec_driver_sql("DELETE FROM instance WHERE sop_instance_uid = ?", (lost,))
    archive.close()

    reopened = Archive(tmp_path / "dicom", url)
    unclean = reopened.mark_open()
    assert unclean is True
    report = reopened.recover(full_scan=unclean)
    assert report["files_reindexed"] == 1
    assert reopened.instance_count() == 3
    reopened.mark_closed()
    again = Archive(tmp_path / "dicom", url)
    assert again.mark_open() is False
    again.close()
    reopened.close()


@pytest.mark.parametrize("mode", ["full", "file", "none"])
def test_every_durability_mode_stores_and_reads_back(tmp_path: Path, mode: str) -> None:
    archive = Archive(tmp_path / "dicom", f"sqlite:///{tmp_path / 'i.db'}", durability=mode)
    data = to_part10_bytes(make_ct_dataset())
    result = archive.store_file_bytes(data)
    assert archive.read_bytes(archive.instances_of(result.study_instance_uid)[0]) == data
    archive.close()


def test_unknown_durability_mode_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="durability must be one of"):
        Archive(tmp_path / "dicom", f"sqlite:///{tmp_path / 'i.db'}", durability="sometimes")


def test_opening_the_archive_elsewhere_does_not_break_stores_in_progress(tmp_path: Path) -> None:
    """Worker processes open the archive while the server receives: no store may fail because of it."""
    import threading

    url = f"sqlite:///{tmp_path / 'i.db'}"
    archive = Archive(tmp_path / "dicom", url)
    stop = threading.Event()

    def keep_opening() -> None:
        while not stop.is_set():
            Archive(tmp_path / "dicom", url).close()

    opener = threading.Thread(target=keep_opening)
    opener.start()
    try:
        results = [archive.store_file_bytes(to_part10_bytes(ds)) for ds in make_ct_series(30, rows=64, columns=64)]
    finally:
        stop.set()
        opener.join()
    assert [r.outcome for r in results] == [StoreOutcome.STORED] * 30
    archive.close()


def test_failed_index_write_leaves_no_file(tmp_path: Path, monkeypatch) -> None:
    archive = Archive(tmp_path / "dicom", f"sqlite:///{tmp_path / 'i.db'}")

    def broken_index(*_args, **_kwargs):
        raise RuntimeError("database went away")

    monkeypatch.setattr(archive, "_index", broken_index)
    with pytest.raises(RuntimeError):
        archive.store_file_bytes(to_part10_bytes(make_ct_dataset()))
    assert stored_files(archive) == {}
    assert archive.instance_count() == 0
    archive.close()


def test_an_index_write_rolled_back_after_moving_updated_at_does_not_hold_back_the_next_instance(tmp_path: Path, monkeypatch) -> None:
    archive = Archive(tmp_path / "dicom", f"sqlite:///{tmp_path / 'i.db'}")
    first, lost, third = make_ct_series(3)

    def updated_at():  # noqa: ANN202 - datetime
        with archive.sessions() as session:
            return session.scalar(select(Series.updated_at))

    archive.store_file_bytes(to_part10_bytes(first))
    after_first = updated_at()
    touch = archive._touch

    def touch_then_fail(*args, **kwargs):
        touch(*args, **kwargs)
        raise RuntimeError("commit failed")

    monkeypatch.setattr(archive, "_touch", touch_then_fail)
    with pytest.raises(RuntimeError):
        archive.store_file_bytes(to_part10_bytes(lost))
    monkeypatch.undo()
    assert updated_at() == after_first, "the failed write was rolled back"
    archive.store_file_bytes(to_part10_bytes(third))
    assert updated_at() > after_first, "the next instance of the series must move updated_at (the detector waits for quiet)"
    archive.close()
