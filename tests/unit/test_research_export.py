"""Research export: role-checked, audited, de-identified studies with their AI results and a manifest."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest

from radpilot.archive import Archive
from radpilot.dicom.deid import Deidentifier, DeidKey, MappingStore
from radpilot.dicom.encoders import encode_key_image, encode_measurement_report, encode_segmentation
from radpilot.pacs.research_export import research_export
from radpilot.security.audit import events_since
from radpilot.security.principal import Principal, Role, RoleRefused
from tests.factories import to_part10_bytes
from tests.unit.test_encoders import build_ct_case


@pytest.fixture
def archive(tmp_path: Path) -> Iterator[Archive]:
    store = Archive(tmp_path / "dicom", f"sqlite:///{tmp_path / 'index.db'}", durability="none")
    yield store
    store.close()


def test_export_writes_deidentified_study_with_results_and_manifest_and_is_audited(archive: Archive, tmp_path: Path) -> None:
    case = build_ct_case()
    seg = encode_segmentation(case.findings, case.sources, series_number=900)
    sr = encode_measurement_report(case.findings, case.sources, seg, series_number=901)
    key_image = encode_key_image(case.findings, case.volume, case.sources, series_number=902)
    for ds in [*case.sources, seg, sr, key_image]:
        assert archive.store_file_bytes(to_part10_bytes(ds)).outcome.accepted
    key = DeidKey.generate()
    out, mapping = tmp_path / "export", MappingStore(tmp_path / "secret" / "map.fernet", key)
    patient_id = str(case.sources[0].PatientID)

    with pytest.raises(RoleRefused, match="researcher"):
        research_export(archive, Principal("dr.x", Role.RADIOLOGIST), {"PatientID": patient_id}, out, Deidentifier(key), mapping)
    assert not out.exists()

    result = research_export(
        archive, Principal("rita", Role.RESEARCHER), {"PatientID": patient_id, "Modality": "CT"}, out, Deidentifier(key), mapping
    )
    assert result.written == len(case.sources) + 2  # images, SEG and SR; the key image is refused (burned-in text)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["studies"] == result.studies and len(manifest["refused"]) == 1 and "burned-in" in json.dumps(manifest["refused"])
    assert patient_id not in (out / "manifest.json").read_text()
    files = list(out.rglob("*.dcm"))
    assert all(patient_id.encode() not in f.read_bytes() for f in files)
    uids = {pydicom.dcmread(f).SOPInstanceUID for f in files}
    new_seg = next(pydicom.dcmread(f) for f in files if pydicom.dcmread(f).Modality == "SEG")
    refs = {r.ReferencedSOPInstanceUID for s in new_seg.ReferencedSeriesSequence for r in s.ReferencedInstanceSequence}
    assert refs <= uids
    assert mapping.load().patients  # the way back is stored, outside the export

    events = [(e.action, e.who, e.outcome) for e in events_since(archive.engine)]
    assert events == [("export.research", "dr.x", "refused"), ("export.research", "rita", "failure")]


def test_export_needs_a_query_and_keeps_the_mapping_outside(archive: Archive, tmp_path: Path) -> None:
    key = DeidKey.generate()
    admin = Principal("ops", Role.ADMINISTRATOR)
    with pytest.raises(ValueError, match="at least one query key"):
        research_export(archive, admin, {}, tmp_path / "o", Deidentifier(key), MappingStore(tmp_path / "m.fernet", key))
    with pytest.raises(ValueError, match="outside the output"):
        research_export(archive, admin, {"Modality": "CT"}, tmp_path / "o", Deidentifier(key), MappingStore(tmp_path / "o" / "m", key))


def test_cli_research_export_refuses_other_roles_and_exports_for_a_researcher(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from radpilot.cli import app

    data_dir = tmp_path / "data"
    archive = Archive(data_dir / "dicom", f"sqlite:///{data_dir / 'index.sqlite3'}", durability="none")
    case = build_ct_case()
    for ds in case.sources:
        assert archive.store_file_bytes(to_part10_bytes(ds)).outcome.accepted
    archive.close()
    runner = CliRunner()
    assert runner.invoke(app, ["deid-keygen", str(tmp_path / "k")]).exit_code == 0
    common = ["--key-file", str(tmp_path / "k"), "--mapping", str(tmp_path / "m.fernet"), "--data-dir", str(data_dir), "--modality", "CT"]
    refused = runner.invoke(app, ["research-export", str(tmp_path / "out"), "--user", "tech", "--role", "technologist", *common])
    assert refused.exit_code == 2 and "researcher" in refused.output
    done = runner.invoke(app, ["research-export", str(tmp_path / "out"), "--user", "rita", "--role", "researcher", *common])
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["instances"] == len(case.sources)
