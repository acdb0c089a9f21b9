"""Path tricks in values that become file names: ``../``, absolute paths, NUL, backslashes, very long names.

The archive refuses such UIDs outright (a UID is digits and dots); the de-identification
outputs, which may keep a file's own UIDs (retain_uids), turn them into digests.
"""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest

from radpilot.archive import Archive, StoreOutcome
from radpilot.dicom.deid import DeidConfig, Deidentifier, DeidKey, Option, deidentify_files
from radpilot.dicom.paths import MAX_NAME_LENGTH, inside, safe_name
from tests.factories import make_ct_dataset, to_part10_bytes

pytestmark = pytest.mark.filterwarnings("ignore:.*VR UI:UserWarning")  # pydicom warns on each hostile UID

HOSTILE = {
    "parent": "../../../escaped",
    "absolute": "/tmp/escaped",
    "nul": "1.2.3\x00.4",
    "backslash": "..\\..\\escaped",
    "dot": ".",
    "dotdot": "..",
    "long": "1." * 200 + "1",
    "empty": "",
    "newline": "1.2\n3",
}


def files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_safe_name_is_one_plain_component_and_the_same_every_time(name: str) -> None:
    made = safe_name(HOSTILE[name], "study")
    assert made == safe_name(HOSTILE[name], "study")
    assert made.startswith("study-") and "/" not in made and "\\" not in made and "\x00" not in made
    assert len(made) <= MAX_NAME_LENGTH and made not in (".", "..")


def test_plain_uids_keep_their_readable_names() -> None:
    assert safe_name("1.2.826.0.1.3680043.8.498.1", "study") == "1.2.826.0.1.3680043.8.498.1"
    assert safe_name("PSEUDO-ab12", "patient") == "PSEUDO-ab12"


def test_inside_refuses_a_symbolic_link_that_leaves_the_folder(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "link").symlink_to(tmp_path)
    with pytest.raises(ValueError, match="outside"):
        inside(out, ("link", "patient"), ("x", "study"))


@pytest.mark.parametrize("keyword", ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"])
@pytest.mark.parametrize("name", ["parent", "absolute", "nul", "backslash", "long"])
def test_archive_refuses_a_uid_that_is_a_path_and_writes_nothing(tmp_path: Path, keyword: str, name: str) -> None:
    archive = Archive(tmp_path / "dicom", f"sqlite:///{tmp_path / 'index.sqlite3'}", durability="none")
    try:
        ds = make_ct_dataset()
        setattr(ds, keyword, HOSTILE[name])
        if keyword == "SOPInstanceUID":
            ds.file_meta.MediaStorageSOPInstanceUID = HOSTILE[name]
        before = files_under(tmp_path)
        result = archive.store_file_bytes(to_part10_bytes(ds))
        assert result.outcome is StoreOutcome.MALFORMED
        assert keyword in result.message
        assert files_under(tmp_path) == before
    finally:
        archive.close()


def test_deid_with_retained_uids_writes_hostile_names_inside_the_output_folder(tmp_path: Path) -> None:
    inputs, out = tmp_path / "in", tmp_path / "work" / "out"
    inputs.mkdir()
    study = HOSTILE["parent"]
    for index, (series, sop) in enumerate([(HOSTILE["absolute"], HOSTILE["nul"]), (HOSTILE["backslash"], HOSTILE["long"])]):
        ds = make_ct_dataset(study_uid="1.2.3", series_uid="1.2.4", sop_uid=f"1.2.5.{index}")
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = study, series, sop
        ds.file_meta.MediaStorageSOPInstanceUID = sop
        pydicom.dcmwrite(inputs / f"{index}.dcm", ds, enforce_file_format=True)
    before = files_under(tmp_path) - files_under(out)

    deidentifier = Deidentifier(DeidKey.generate(), DeidConfig(options=frozenset({Option.RETAIN_UIDS})))
    report = deidentify_files([inputs], out, deidentifier)

    assert len(report.written) == 2, report.failed
    assert all(path.resolve().is_relative_to(out.resolve()) for path in report.written)
    assert files_under(tmp_path) - files_under(out) == before, "nothing written outside the output folder"
    assert len({path.parent.parent for path in report.written}) == 1, "both instances of the study share its folder"
    for path in report.written:
        kept = pydicom.dcmread(path)
        assert str(kept.StudyInstanceUID) == study  # retained as asked; only the name is a digest
