"""chest_xray end to end with a real Orthanc as the hospital PACS.

Orthanc holds two studies built from JSRT developer films (research use only, read from the
shared data folder, never copied into the repository):

* a DX study: the PA film (MONOCHROME2, 512 x 512, ImagerPixelSpacing 0.7 mm), a lateral view
  (ViewPosition LL) and a non-image object (an encapsulated PDF labelled DX, as some consoles send
  scanned forms);
* a CR study: another film resampled to 1024 x 1024 (PixelSpacing 0.35 mm), MONOCHROME1,
  JPEG Lossless SV1.

Orthanc C-STOREs both to RadPilot; the default routing rules (destinations pointed at Orthanc)
send every CR/DX series to chest_xray; the SEG, SR and key image of both frontal films arrive in
Orthanc, dciodvfy finds no error in them, the SEG's lung masks match the SCR reference masks
(Dice > 0.9), and the lateral view and the non-image object fail with their reasons without
touching anything else.  A second test shows a model file with one changed byte failing the job
with the registry's clear error.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import yaml
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, JPEGLosslessSV1, generate_uid

from radpilot.analyses import discover_analyses
from radpilot.analyses.chest_xray import ChestXray
from radpilot.engine.routing import default_rules_text
from radpilot.modelhub.registry import DEFAULT_MODELS_DIR
from radpilot.validation.metrics import dice
from tests.factories import to_part10_bytes
from tests.fixtures.radpilot import activate_models, orthanc_node
from tests.helpers import QUIET_PERIOD_S, dciodvfy_errors, wait_for
from tests.integration.test_engine_end_to_end import (
    COMPREHENSIVE_3D_SR,
    POLL_S,
    SECONDARY_CAPTURE,
    SEG,
    _orthanc_file,
    _result_sop_classes,
)
from tests.unit.test_chest_xray_analysis import (
    CARDIOMEGALY_CASE,
    NORMAL_CASE,
    cr_monochrome1,
    jpeg_compress,
    jsrt_case,
    radiograph_dataset,
)

pytestmark = pytest.mark.integration

ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"


def default_rules_to(tmp_path: Path, destination: str) -> Path:
    """The default rules file unchanged except that every rule forwards its results to ``destination``."""
    content = yaml.safe_load(default_rules_text(discover_analyses()))
    for rule in content["rules"]:
        rule["destinations"] = [destination]
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(content, sort_keys=False))
    return path


def pdf_labelled_dx(study: Dataset) -> Dataset:
    """A non-image object in the study: an Encapsulated PDF whose Modality says DX."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ENCAPSULATED_PDF
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ENCAPSULATED_PDF
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    for keyword in (
        "StudyInstanceUID",
        "PatientID",
        "PatientName",
        "PatientBirthDate",
        "PatientSex",
        "StudyDate",
        "StudyTime",
        "AccessionNumber",
        "StudyID",
        "ReferringPhysicianName",
    ):
        setattr(ds, keyword, study.get(keyword, ""))
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "DX"
    ds.SeriesNumber = 3
    ds.InstanceNumber = 1
    ds.ConversionType = "SD"
    ds.BurnedInAnnotation = "YES"
    ds.DocumentTitle = "Scanned request form"
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.ContentDate, ds.ContentTime, ds.AcquisitionDateTime = "20240105", "101600", "20240105101600"
    ds.ConceptNameCodeSequence = []
    pdf = b"%PDF-1.1\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n2 0 obj<</Type/Pages/Kids[]/Count 0>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"
    ds.EncapsulatedDocument = pdf + (b"\x00" if len(pdf) % 2 else b"")
    return ds


def _results_or_none(orthanc, study_uid: str) -> dict[str, str] | None:  # noqa: ANN001
    """The result objects in Orthanc, or None when its REST server dropped the poll (a stale keep-alive connection
    while it is busy storing); the caller polls again."""
    import httpx

    try:
        return _result_sop_classes(orthanc, study_uid)
    except httpx.TransportError:
        return None


def _seg_labels(orthanc, instance_id: str, source_uid: str) -> np.ndarray:  # noqa: ANN001
    """The SEG's segments as one label map on the source image (read with pydicom: highdicom 0.28 cannot
    parse back a SEG whose Pixel Measures carry a PixelSpacing without a SliceThickness, as over a CR)."""
    seg = pydicom.dcmread(_orthanc_file(orthanc, instance_id))
    frames = seg.pixel_array.reshape(-1, int(seg.Rows), int(seg.Columns))
    labels = np.zeros(frames.shape[1:], dtype=np.uint8)
    shared = seg.SharedFunctionalGroupsSequence[0]
    for frame, groups in zip(frames, seg.PerFrameFunctionalGroupsSequence):
        identification = groups.get("SegmentIdentificationSequence") or shared.SegmentIdentificationSequence
        [source] = groups.DerivationImageSequence[0].SourceImageSequence
        assert source.ReferencedSOPInstanceUID == source_uid
        labels[frame > 0] = int(identification[0].ReferencedSegmentNumber)
    return labels


def _sr_values(orthanc, instance_id: str) -> dict[str, list]:  # noqa: ANN001
    sr = pydicom.dcmread(_orthanc_file(orthanc, instance_id))
    found: dict[str, list] = {}

    def walk(node: Dataset) -> None:
        for item in node.get("ContentSequence", []):
            if "ConceptNameCodeSequence" in item:
                name = str(item.ConceptNameCodeSequence[0].CodeMeaning)
                if "MeasuredValueSequence" in item:
                    found.setdefault(name, []).append(float(item.MeasuredValueSequence[0].NumericValue))
                elif "ConceptCodeSequence" in item:
                    found.setdefault(name, []).append(str(item.ConceptCodeSequence[0].CodeMeaning))
                elif item.get("GraphicType"):
                    found.setdefault(f"SCOORD {item.GraphicType}", []).append([float(v) for v in item.GraphicData])
            walk(item)

    walk(sr)
    return found


def test_radiographs_from_pacs_come_back_with_seg_sr_and_key_image(radpilot_factory, orthanc, clean_orthanc, tmp_path: Path) -> None:
    pa_case, cr_case = jsrt_case(CARDIOMEGALY_CASE), jsrt_case(NORMAL_CASE)
    pa = radiograph_dataset(pa_case.pixels, patient_id="CXRPA", series_number=1)
    lateral = radiograph_dataset(
        pa_case.pixels, view_position="LL", study_uid=pa.StudyInstanceUID, patient_id="CXRPA", series_number=2, description="CHEST LAT"
    )
    document = pdf_labelled_dx(pa)
    cr = jpeg_compress(cr_monochrome1(cr_case.pixels, patient_id="CXRCR"), JPEGLosslessSV1)
    for ds in (pa, lateral, document, cr):
        orthanc.upload(to_part10_bytes(ds))

    node = radpilot_factory(
        nodes=[orthanc_node(orthanc)],
        rules_file=default_rules_to(tmp_path, "orthanc"),
        quiet_period_s=QUIET_PERIOD_S,
        workers=1,
        analysis_enabled=True,
    )
    activate_models(node, ChestXray, "chest_xray end-to-end test")
    orthanc.add_modality("radpilot", node.ae_title, node.host, node.dicom_port)
    orthanc.store_to("radpilot", [orthanc.resource_id(pa.StudyInstanceUID), orthanc.resource_id(cr.StudyInstanceUID)])
    assert node.archive.instance_count() == 4
    [stored_cr] = node.archive.instances_of(cr.StudyInstanceUID)
    assert pydicom.dcmread(node.archive.path_of(stored_cr), stop_before_pixels=True).file_meta.TransferSyntaxUID == JPEGLosslessSV1

    results = {}
    for study in (pa.StudyInstanceUID, cr.StudyInstanceUID):
        results[study] = wait_for(
            lambda study=study: (found := _results_or_none(orthanc, study)) and len(found) == 3 and found,
            timeout_s=240,
            what=f"SEG, SR and key image of study {study} in Orthanc",
            interval_s=POLL_S,
        )
    jobs = wait_for(
        lambda: (found := node.server.engine.queue.list()) and len(found) == 4 and all(j.state.final for j in found) and found,
        timeout_s=60,
        what="all four jobs to finish",
        interval_s=POLL_S,
    )
    by_series = {j.series_instance_uid: j for j in jobs}
    assert {j.analysis for j in jobs} == {"chest_xray"}
    assert by_series[pa.SeriesInstanceUID].state.value == "done" and by_series[cr.SeriesInstanceUID].state.value == "done"
    failed_lateral, failed_document = by_series[lateral.SeriesInstanceUID], by_series[document.SeriesInstanceUID]
    assert failed_lateral.state.value == "failed" and failed_lateral.attempts == 1
    assert "lateral view (ViewPosition LL): chest_xray analyses frontal (PA/AP) radiographs only" in failed_lateral.error
    assert failed_document.state.value == "failed" and failed_document.attempts == 1
    assert "series cannot be read as an image volume" in failed_document.error and "no pixel data" in failed_document.error
    # nothing else is affected: 4 inputs + 2 x 3 results, and Orthanc holds exactly those
    assert node.archive.instance_count() == 10
    assert orthanc.instance_count() == 10

    # The SEG lines up with the image: lung Dice against the SCR masks of each case.
    pa_labels = _seg_labels(orthanc, results[pa.StudyInstanceUID][SEG], pa.SOPInstanceUID)
    cr_labels = _seg_labels(orthanc, results[cr.StudyInstanceUID][SEG], cr.SOPInstanceUID)
    cr_reference = np.kron(cr_case.labels, np.ones((2, 2), dtype=np.uint8))
    for labels, reference in ((pa_labels, pa_case.labels), (cr_labels, cr_reference)):
        assert labels.shape == reference.shape
        for value in (1, 2):
            assert dice(labels == value, reference == value) > 0.9
        assert dice(labels == 3, reference == 3) > 0.85

    pa_sr = _sr_values(orthanc, results[pa.StudyInstanceUID][COMPREHENSIVE_3D_SR])
    assert pa_sr["Cardiothoracic ratio"][0] == pytest.approx(pa_case.ctr, abs=0.03)
    assert pa_sr["Cardiomegaly"] == ["Present"] and len(pa_sr["Width"]) == 2 and len(pa_sr["Area"]) == 4
    cr_sr = _sr_values(orthanc, results[cr.StudyInstanceUID][COMPREHENSIVE_3D_SR])
    assert cr_sr["Cardiomegaly"] == ["Absent"]
    assert cr_sr["Cardiothoracic ratio"][0] == pytest.approx(cr_case.ctr, abs=0.03)
    nodule_model = (DEFAULT_MODELS_DIR / "cxr_nodule_det" / "manifest.json").is_file()
    for values, series in ((pa_sr, pa.SeriesInstanceUID), (cr_sr, cr.SeriesInstanceUID)):
        # nodule candidates: one planar ROI each, a circle on the radiograph with its certainty and diameter
        regions = values.get("SCOORD CIRCLE", []) + values.get("SCOORD POINT", [])
        assert len(regions) == values.get("Finding", []).count("Nodule")
        certainties = values.get("Certainty of Finding", [])
        assert len(certainties) == len(regions) and all(0.0 <= v <= 1.0 for v in certainties), certainties
        notes = " ".join(by_series[series].result["details"]["notes"])
        assert ("operating point" in notes) if nodule_model else ("nodule detector not installed" in notes)
    if nodule_model:
        # JPCLN107's nodule (JSRT centre row 289.4, column 421.6 of 512; a training case of the detector, so this
        # checks the plumbing, not accuracy) as a circle on the 1024 CR: SCOORD (column, row), pixel TLHC at (0, 0)
        centres = [(c[1], c[0]) for c in cr_sr["SCOORD CIRCLE"]]
        assert min(np.hypot(r - (2 * 289.38 + 1), c - (2 * 421.62 + 1)) * 0.35 for r, c in centres) < 10.0

    key = pydicom.dcmread(_orthanc_file(orthanc, results[cr.StudyInstanceUID][SECONDARY_CAPTURE]))
    assert key.PhotometricInterpretation == "RGB" and key.Columns == 1024 and key.BurnedInAnnotation == "YES"
    assert key.SourceImageSequence[0].ReferencedSOPInstanceUID == cr.SOPInstanceUID

    for study, found in results.items():
        for sop_class, instance_id in found.items():
            path = tmp_path / f"{sop_class}-{study[-8:]}.dcm"
            path.write_bytes(orthanc.instance_file(instance_id))
            errors = dciodvfy_errors(path)
            assert not errors, f"{sop_class}: {errors}"


def test_a_model_file_with_a_changed_byte_fails_the_job_with_the_registry_error(radpilot_factory, tmp_path: Path) -> None:
    from radpilot.engine.pipeline import PipelineRunner, plan_study
    from radpilot.engine.routing import load_rules
    from radpilot.engine.service import make_queue
    from radpilot.engine.worker import WorkerConfig, execute_job
    from radpilot.modelhub.registry import ModelRegistry

    models = tmp_path / "models"
    shutil.copytree(DEFAULT_MODELS_DIR / "cxr_lung_heart_seg", models / "cxr_lung_heart_seg")
    [onnx] = (models / "cxr_lung_heart_seg").glob("*.onnx")
    data = bytearray(onnx.read_bytes())
    data[-100] ^= 0xFF
    onnx.write_bytes(bytes(data))
    analyses = {"chest_xray": ChestXray(registry=ModelRegistry(models, providers=["CPUExecutionProvider"], intra_op_threads=1))}

    node = radpilot_factory(workers=0)
    activate_models(
        node, ChestXray, "chest_xray end-to-end test"
    )  # the versions are the shipped ones; only the file under the test's registry is changed
    ds = radiograph_dataset(jsrt_case(NORMAL_CASE).pixels)
    node.archive.store_file_bytes(to_part10_bytes(ds))
    queue = make_queue(node.settings)
    [plan] = plan_study(node.archive, load_rules(), analyses, str(ds.StudyInstanceUID), queue)
    [(job_id, created)] = plan.jobs
    job = queue.store.claim_next("test-worker", 60.0)
    assert created and job is not None and job.id == job_id
    outcome = execute_job(queue.store, job, PipelineRunner(node.settings, node.archive, analyses), "test-worker", WorkerConfig())
    assert outcome.job.state.value == "failed" and outcome.error_kind.value == "permanent"
    assert "model cxr_lung_heart_seg 1.0.0: cxr_lung_heart_seg_v1.onnx has sha256 " in outcome.job.error
    assert "the file was changed or is corrupt and will not be run" in outcome.job.error
    assert node.archive.instance_count() == 1  # no result object was written
