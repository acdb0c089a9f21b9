"""De-identification (PS3.15 Annex E) on real CT, X-ray and MR images and on RadPilot's own SEG and SR."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from typer.testing import CliRunner

from radpilot.cli import app
from radpilot.dicom.deid import (
    BurnedInAnnotationRefused,
    DeidConfig,
    Deidentifier,
    DeidKey,
    MappingStore,
    Option,
    SafePrivate,
    deidentify_files,
    load_table,
)
from radpilot.dicom.deid.mapping import DeidKeyError
from radpilot.dicom.encoders import encode_key_image, encode_measurement_report, encode_segmentation
from tests.deid_support import SECRET_ID, fill_every_table_attribute, filled_tags, real_ct_files, real_mr, real_xray
from tests.unit.test_encoders import build_ct_case

GEOMETRY = ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "ImagerPixelSpacing", "SliceThickness", "Rows", "Columns")
IDENTIFYING_STRINGS = (b"SECRET", b"SMITH", b"DOE^JANE", b"20240315", b"NESTED^", SECRET_ID.encode())


def _bytes(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def table_violations(original: Dataset, output: Dataset, options: frozenset[Option]) -> list[str]:
    """Every attribute of the original whose treatment in the output differs from what Table E.1-1 asks."""
    table = load_table()
    problems: list[str] = []
    for element in original:
        tag = int(element.tag)
        if element.tag.is_private:
            if element.tag in output:
                problems.append(f"private {element.tag} survived")
            continue
        rule = table.rule_for(tag)
        if rule is None or element.value in (None, "", b""):
            continue
        action = rule.action(options)
        out = output.get(element.tag)
        name = f"{rule.name} {element.tag} ({action})"
        if action == "X" and out is not None:
            problems.append(f"{name} not removed")
        elif action == "Z" and out is not None and out.value not in (None, "", b"") and out.VR != "SQ" and tag not in (0x00100010,):
            problems.append(f"{name} not emptied: {out.value!r}")
        elif action in ("D", "U", "C") and out is not None and out.VR != "SQ" and out.value == element.value and action != "C":
            problems.append(f"{name} kept its original value {out.value!r}")
        elif action == "U" and out is not None and out.VR == "UI" and not str(out.value).startswith("2.25."):
            problems.append(f"{name} not remapped: {out.value!r}")
        elif action == "K" and (out is None or (out.VR != "SQ" and out.value != element.value)):
            problems.append(f"{name} not retained")
        if out is not None and out.VR == "SQ" and action not in ("X", "Z"):
            for before, after in zip(element.value, out.value):
                problems += [f"{name} > {p}" for p in table_violations(before, after, options)]
    return problems


@pytest.fixture
def key() -> DeidKey:
    return DeidKey.generate()


def _real_inputs() -> list[Dataset]:
    return [fill_every_table_attribute(pydicom.dcmread(p)) for p in real_ct_files(6)] + [
        fill_every_table_attribute(real_xray()),
        fill_every_table_attribute(real_mr()),
    ]


def test_real_ct_xray_and_mr_keep_no_value_the_basic_profile_removes(key: DeidKey) -> None:
    assert len(filled_tags()) > 350  # nearly the whole table is exercised
    deid = Deidentifier(key)
    for original in _real_inputs():
        output = deid.deidentify(original)
        assert table_violations(original, output, frozenset()) == []
        data = _bytes(output)
        for secret in IDENTIFYING_STRINGS:
            assert secret not in data, f"{secret!r} survived in {original.Modality}"
        assert output.PixelData == original.PixelData
        for keyword in GEOMETRY:
            assert output.get(keyword) == original.get(keyword), keyword
        assert output.PatientIdentityRemoved == "YES"
        assert [item.CodeValue for item in output.DeidentificationMethodCodeSequence] == ["113100"]
        assert output.LongitudinalTemporalInformationModified == "REMOVED"
        assert load_table().edition in output.DeidentificationMethod[0]


def test_options_follow_their_table_columns(key: DeidKey) -> None:
    options = frozenset(
        {Option.RETAIN_PATIENT_CHARACTERISTICS, Option.RETAIN_DEVICE_IDENTITY, Option.RETAIN_UIDS, Option.CLEAN_DESCRIPTORS}
    )
    deid = Deidentifier(key, DeidConfig(options=options))
    original = fill_every_table_attribute(real_xray())
    original.PatientSex = "F"
    original.SeriesDescription = f"PA chest {SECRET_ID} 20240101"
    output = deid.deidentify(original)
    assert table_violations(original, output, options) == []
    assert output.PatientSex == "F" and output.SOPInstanceUID == original.SOPInstanceUID
    assert output.SeriesDescription == "PA chest"
    codes = {item.CodeValue for item in output.DeidentificationMethodCodeSequence}
    assert codes == {"113100", "113108", "113109", "113110", "113105"}


def test_same_patient_gets_same_pseudonym_and_uid_across_runs_and_a_per_patient_date_shift(key: DeidKey) -> None:
    options = frozenset({Option.RETAIN_LONGITUDINAL_MODIFIED_DATES})
    files = real_ct_files(3)
    first = [Deidentifier(key, DeidConfig(options=options)).deidentify(pydicom.dcmread(p)) for p in files]
    second = [Deidentifier(key, DeidConfig(options=options)).deidentify(pydicom.dcmread(p)) for p in files]
    assert [d.PatientID for d in first] == [d.PatientID for d in second]
    assert [d.SOPInstanceUID for d in first] == [d.SOPInstanceUID for d in second]
    originals = [pydicom.dcmread(p) for p in files]
    by_patient: dict[str, set[str]] = {}
    for original, output in zip(originals, first):
        by_patient.setdefault(str(original.PatientID), set()).add(output.PatientID)
        assert output.StudyDate != original.StudyDate and output.StudyTime == original.StudyTime
        assert output.LongitudinalTemporalInformationModified == "MODIFIED"
    assert all(len(pseudonyms) == 1 for pseudonyms in by_patient.values())
    assert len({next(iter(p)) for p in by_patient.values()}) == len(by_patient)  # different patients, different pseudonyms
    other_key = Deidentifier(DeidKey.generate()).deidentify(originals[0])
    assert other_key.PatientID != first[0].PatientID


def test_seg_and_sr_references_resolve_after_remapping(key: DeidKey) -> None:
    case = build_ct_case()
    seg = encode_segmentation(case.findings, case.sources, series_number=900)
    sr = encode_measurement_report(case.findings, case.sources, seg, series_number=901)
    deid = Deidentifier(key)
    sources = [deid.deidentify(ds) for ds in case.sources]
    new_seg, new_sr = deid.deidentify(seg), deid.deidentify(sr)
    source_uids = {ds.SOPInstanceUID for ds in sources}
    assert not source_uids & {ds.SOPInstanceUID for ds in case.sources}
    seg_refs = {ref.ReferencedSOPInstanceUID for series in new_seg.ReferencedSeriesSequence for ref in series.ReferencedInstanceSequence}
    assert seg_refs and seg_refs <= source_uids
    assert new_seg.FrameOfReferenceUID == sources[0].FrameOfReferenceUID
    assert new_seg.StudyInstanceUID == sources[0].StudyInstanceUID
    evidence = {
        ref.ReferencedSOPInstanceUID
        for study in new_sr.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for ref in series.ReferencedSOPSequence
    }
    assert new_seg.SOPInstanceUID in evidence and evidence <= source_uids | {new_seg.SOPInstanceUID}

    def content_refs(items) -> set[str]:  # noqa: ANN001
        found: set[str] = set()
        for item in items:
            for ref in item.get("ReferencedSOPSequence", []):
                found.add(ref.ReferencedSOPInstanceUID)
            found |= content_refs(item.get("ContentSequence", []))
        return found

    refs = content_refs(new_sr.ContentSequence)
    assert refs and refs <= source_uids | {new_seg.SOPInstanceUID}


def test_key_image_and_flagged_images_are_refused_by_default_and_masked_on_request(key: DeidKey) -> None:
    case = build_ct_case()
    key_image = encode_key_image(case.findings, case.volume, case.sources, series_number=902)
    with pytest.raises(BurnedInAnnotationRefused, match="Secondary Capture Image"):
        Deidentifier(key).deidentify(key_image)
    flagged = real_xray()
    flagged.BurnedInAnnotation = "YES"
    with pytest.raises(BurnedInAnnotationRefused, match="BurnedInAnnotation is YES"):
        Deidentifier(key).deidentify(flagged)
    with pytest.raises(ValueError, match="needs at least one region"):
        DeidConfig(burned_in="mask")
    masked = Deidentifier(key, DeidConfig(burned_in="mask", mask_regions=((0, 0, 31, 511),))).deidentify(flagged)
    pixels = masked.pixel_array
    assert (pixels[:32] == pixels.min()).all() and (pixels[32:] == flagged.pixel_array[32:]).all()
    assert masked.BurnedInAnnotation == "NO"
    assert "113101" in {item.CodeValue for item in masked.DeidentificationMethodCodeSequence}


def test_private_attributes_are_removed_unless_on_the_safe_list(key: DeidKey) -> None:
    original = fill_every_table_attribute(real_xray())
    plain = Deidentifier(key).deidentify(original)
    assert not [e for e in plain if e.tag.is_private]
    with pytest.raises(ValueError, match="Retain Safe Private"):
        DeidConfig(safe_private=(SafePrivate(0x0019, "ACME SECRET", 0x11),))
    config = DeidConfig(options=frozenset({Option.RETAIN_SAFE_PRIVATE}), safe_private=(SafePrivate(0x0019, "ACME SECRET", 0x11),))
    kept = Deidentifier(key, config).deidentify(original)
    private = {int(e.tag): e.value for e in kept if e.tag.is_private}
    assert private == {0x00190010: "ACME SECRET", 0x00191011: "1.5"}


def test_mapping_is_encrypted_outside_the_output_and_opens_only_with_its_key(tmp_path: Path, key: DeidKey) -> None:
    deid = Deidentifier(key)
    original = fill_every_table_attribute(real_xray())
    output = deid.deidentify(original)
    store = MappingStore(tmp_path / "keys" / "map.fernet", key)
    store.save(deid.mapping)
    raw = store.path.read_bytes()
    # "DOE^JANE": a caret never occurs in a Fernet token's base64, where "DOE" alone turns up by chance now and then.
    assert SECRET_ID.encode() not in raw and b"DOE^JANE" not in raw
    loaded = store.load()
    assert loaded.patients[output.PatientID]["PatientID"] == SECRET_ID
    assert loaded.uids[output.SOPInstanceUID] == original.SOPInstanceUID
    with pytest.raises(DeidKeyError, match="cannot be decrypted"):
        MappingStore(store.path, DeidKey.generate()).load()
    with pytest.raises(ValueError, match="outside the output folder"):
        MappingStore(tmp_path / "out" / "map.fernet", key).check_outside(tmp_path / "out")
    assert "secret" not in repr(key).lower().replace("<secret>", "")


def test_files_run_reports_non_dicom_and_refused_inputs(tmp_path: Path, key: DeidKey) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "notes.txt").write_text("not DICOM")
    (inputs / "truncated.dcm").write_bytes(_bytes(real_xray())[:300])
    case = build_ct_case()
    encode_key_image(case.findings, case.volume, case.sources, series_number=902).save_as(inputs / "key.dcm", enforce_file_format=True)
    real_xray().save_as(inputs / "dx.dcm", enforce_file_format=True)
    report = deidentify_files([inputs], tmp_path / "out", Deidentifier(key))
    assert len(report.written) == 1
    assert [p.name for p, _ in report.refused] == ["key.dcm"]
    assert sorted(p.name for p, _ in report.failed) == ["notes.txt", "truncated.dcm"]


def test_cli_deid_writes_outputs_and_mapping_and_exits_nonzero_on_refusals(tmp_path: Path) -> None:
    runner = CliRunner()
    key_file = tmp_path / "deid.key"
    assert runner.invoke(app, ["deid-keygen", str(key_file)]).exit_code == 0
    assert runner.invoke(app, ["deid-keygen", str(key_file)]).exit_code == 2  # never overwritten
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i, path in enumerate(real_ct_files(2)):
        (inputs / f"{i}.dcm").write_bytes(path.read_bytes())
    out, mapping = tmp_path / "out", tmp_path / "private" / "map.fernet"
    args = [
        "deid",
        str(inputs),
        str(out),
        "--profile",
        "basic",
        "--retain-longitudinal-dates",
        "--key-file",
        str(key_file),
        "--mapping",
        str(mapping),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["written"] == len(list(inputs.iterdir())) and mapping.is_file()
    assert not list(out.rglob("*.fernet"))
    case = build_ct_case()
    encode_key_image(case.findings, case.volume, case.sources, series_number=902).save_as(inputs / "key.dcm", enforce_file_format=True)
    result = runner.invoke(app, args)
    assert result.exit_code == 3 and "Secondary Capture" in result.output
    bad = runner.invoke(app, ["deid", str(inputs), str(out), "--key-file", str(key_file), "--mapping", str(out / "m.fernet")])
    assert bad.exit_code == 2 and "outside the output folder" in bad.output
    assert runner.invoke(app, ["deid", str(inputs), str(out), "--profile", "strict", "--key-file", str(key_file)]).exit_code == 2
