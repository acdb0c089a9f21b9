"""The shared real-peer fixtures work: Orthanc, PostgreSQL and dcmtk, all on 127.0.0.1."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import psycopg
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from tests.fixtures.dcmtk import DcmtkTools
from tests.fixtures.orthanc import OrthancPeer
from tests.helpers import REPO_ROOT, free_port

pytestmark = pytest.mark.integration


def make_ct_instance() -> Dataset:
    """A minimal but complete single-slice CT instance (8x8, all air)."""
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.FrameOfReferenceUID = generate_uid()
    ds.PatientName = "Fixture^Test"
    ds.PatientID = "FIXTURE-1"
    ds.Modality = "CT"
    ds.StudyDate, ds.StudyTime = "20240101", "120000"
    ds.InstanceNumber = 1
    ds.ImagePositionPatient = [0, 0, 0]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [1, 1]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows = ds.Columns = 8
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
    ds.PixelData = np.zeros((8, 8), dtype=np.int16).tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def test_orthanc_answers_system_with_dicomweb(orthanc: OrthancPeer) -> None:
    system = orthanc.rest_get("/system")
    assert system["DicomAet"] == "ORTHANC"
    assert system["DicomPort"] == orthanc.dicom_port
    assert "dicom-web" in orthanc.rest_get("/plugins")
    assert orthanc.dicomweb_url == f"http://127.0.0.1:{orthanc.http_port}/dicom-web"


def test_orthanc_stores_uploaded_instance(clean_orthanc: OrthancPeer, tmp_path: Path) -> None:
    ds = make_ct_instance()
    path = tmp_path / "ct.dcm"
    ds.save_as(path, enforce_file_format=True)

    answer = clean_orthanc.upload(path)

    assert answer["Status"] == "Success"
    assert clean_orthanc.instance_count() == 1
    assert clean_orthanc.study_instance_uids() == [ds.StudyInstanceUID]
    qido = httpx.get(f"{clean_orthanc.dicomweb_url}/studies", params={"StudyInstanceUID": ds.StudyInstanceUID})
    assert qido.status_code == 200 and len(qido.json()) == 1


def test_clean_orthanc_starts_empty(clean_orthanc: OrthancPeer) -> None:
    assert clean_orthanc.instance_count() == 0
    assert clean_orthanc.modalities() == []


def test_echoscu_reaches_orthanc(dcmtk: DcmtkTools, orthanc: OrthancPeer) -> None:
    result = dcmtk.run("echoscu", "-aet", "ECHOTEST", "-aec", orthanc.ae_title, orthanc.host, str(orthanc.dicom_port))
    assert result.returncode == 0, result.stderr


def test_sample_study_is_valid_and_storescu_sends_it(dcmtk: DcmtkTools, clean_orthanc: OrthancPeer, tmp_path: Path) -> None:
    sample = tmp_path / "sample"
    subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "make_sample_study.py"), str(sample)], check=True, timeout=120)
    files = sorted(sample.iterdir())
    assert len(files) == 40
    if Path("/usr/bin/dciodvfy").exists():
        check = subprocess.run(["dciodvfy", "-new", str(files[0])], capture_output=True, text=True, timeout=60)
        assert "Error" not in check.stderr + check.stdout, check.stderr

    result = dcmtk.run(
        "storescu", "-aec", clean_orthanc.ae_title, "+sd", "+r", clean_orthanc.host, str(clean_orthanc.dicom_port), sample, timeout=120
    )

    assert result.returncode == 0, result.stderr
    assert clean_orthanc.instance_count() == 40


def test_orthanc_store_to_a_declared_modality(dcmtk: DcmtkTools, clean_orthanc: OrthancPeer, tmp_path: Path) -> None:
    if dcmtk.storescp is None:
        pytest.skip("storescp not installed")
    port = free_port()
    received = tmp_path / "received"
    received.mkdir()
    scp = subprocess.Popen(
        [str(dcmtk.storescp), "-aet", "SINK", "-od", str(received), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.3)
        clean_orthanc.add_modality("sink", "SINK", "127.0.0.1", port)
        assert clean_orthanc.echo("sink")
        instance_id = clean_orthanc.upload(make_ct_instance())["ID"]
        clean_orthanc.store_to("sink", [instance_id])
    finally:
        scp.terminate()
        scp.wait(timeout=10)
    assert len(list(received.iterdir())) == 1


def test_fresh_postgres_database_accepts_create_table(fresh_postgres_url: str, postgres_url: str) -> None:
    assert fresh_postgres_url != postgres_url
    with psycopg.connect(fresh_postgres_url) as conn:
        conn.execute("CREATE TABLE probe (id integer PRIMARY KEY, name text NOT NULL)")
        conn.execute("INSERT INTO probe VALUES (1, 'radpilot')")
        assert conn.execute("SELECT name FROM probe").fetchall() == [("radpilot",)]
        assert conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone() == (1,)


def test_session_postgres_database_is_reachable(postgres_url: str) -> None:
    assert postgres_url.startswith("postgresql://radpilot_test:") and postgres_url.endswith("/radpilot_test")
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT current_database(), current_user").fetchone() == ("radpilot_test", "radpilot_test")


def test_orthanc_query_and_move_helpers(dcmtk: DcmtkTools, clean_orthanc: OrthancPeer, tmp_path: Path) -> None:
    """Orthanc queries and moves from itself (declared as a modality) to a dcmtk storescp."""
    if dcmtk.storescp is None:
        pytest.skip("storescp not installed")
    ds = make_ct_instance()
    clean_orthanc.upload(ds)
    clean_orthanc.add_modality("self", clean_orthanc.ae_title, "127.0.0.1", clean_orthanc.dicom_port)
    port = free_port()
    received = tmp_path / "received"
    received.mkdir()
    clean_orthanc.add_modality("sink", "SINK", "127.0.0.1", port)
    scp = subprocess.Popen(
        [str(dcmtk.storescp), "-aet", "SINK", "-od", str(received), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.3)
        answers = clean_orthanc.query("self", "Study", {"StudyInstanceUID": ds.StudyInstanceUID, "PatientID": ""})
        assert [a["PatientID"] for a in answers] == ["FIXTURE-1"]
        clean_orthanc.move_to("self", "Study", {"StudyInstanceUID": ds.StudyInstanceUID}, target_aet="SINK")
    finally:
        scp.terminate()
        scp.wait(timeout=10)
    assert len(list(received.iterdir())) == 1
