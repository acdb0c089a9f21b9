"""RadPilot and a real Orthanc (the hospital PACS) over DIMSE, both directions."""

from __future__ import annotations

import io
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from radpilot.archive import Archive
from radpilot.archive.query import Query, QueryLevel
from radpilot.config import Settings
from radpilot.pacs import scu
from tests.factories import make_ct_series, to_part10_bytes, write_part10
from tests.fixtures.orthanc import OrthancPeer
from tests.fixtures.radpilot import orthanc_node
from tests.fixtures.receivers import RECEIVERS, start_receiver
from tests.helpers import free_port, require_or_skip, shared_data_path

pytestmark = pytest.mark.integration

COMPRESSED_FILES = ["JPEG2000.dcm", "SC_rgb_rle.dcm", "SC_rgb_jpeg_dcmtk.dcm", "MR_small_jpeg_ls_lossless.dcm"]


def pixel_data(data: bytes) -> bytes:
    return pydicom.dcmread(io.BytesIO(data)).PixelData


def study_datasets(count: int = 3, *, compressed: bool = True, **kwargs) -> list[Dataset]:  # noqa: ANN003
    """A CT series plus (optionally) compressed instances moved into the same study."""
    series = make_ct_series(count, **kwargs)
    if compressed:
        for name in COMPRESSED_FILES:
            path = get_testdata_file(name)
            if path is None:
                continue
            ds = pydicom.dcmread(path)
            ds.StudyInstanceUID = series[0].StudyInstanceUID
            ds.PatientID, ds.PatientName = series[0].PatientID, series[0].PatientName
            series.append(ds)
    return series


def upload_to_orthanc(orthanc: OrthancPeer, datasets: list[Dataset]) -> str:
    """Upload and return the Orthanc ID of the (single) study."""
    answers = [orthanc.upload(to_part10_bytes(ds)) for ds in datasets]
    (study_id,) = {a["ParentStudy"] for a in answers}
    return study_id


def orthanc_pixels(orthanc: OrthancPeer, sop_uid: str) -> bytes:
    return pixel_data(orthanc.instance_file(orthanc.resource_id(sop_uid)))


@pytest.fixture
def node_known_to_orthanc(radpilot_factory, clean_orthanc: OrthancPeer):  # noqa: ANN001, ANN201
    """A RadPilot node that knows Orthanc (as move destination) and that Orthanc knows as 'radpilot'."""
    node = radpilot_factory(nodes=[orthanc_node(clean_orthanc)])
    clean_orthanc.add_modality("radpilot", node.ae_title, "127.0.0.1", node.dicom_port)
    return node


@pytest.mark.parametrize("kind", RECEIVERS)
def test_orthanc_c_stores_a_study_into_radpilot(radpilot_factory, clean_orthanc: OrthancPeer, kind: str) -> None:  # noqa: ANN001
    # The PACS forwards to either port: the main one (pynetdicom) or the store port (dcmtk), with its own proposals.
    node = start_receiver(kind, radpilot_factory)
    clean_orthanc.add_modality("radpilot", node.ae_title, "127.0.0.1", node.dicom_port)
    assert clean_orthanc.echo("radpilot")
    datasets = study_datasets()
    study_id = upload_to_orthanc(clean_orthanc, datasets)

    clean_orthanc.store_to("radpilot", study_id)

    archive = node.archive
    assert archive.instance_count() == len(datasets)
    for ds in datasets:
        (match,) = archive.find(Query(QueryLevel.IMAGE, {"SOPInstanceUID": ds.SOPInstanceUID}))
        stored = (archive.storage_dir / match["_file_path"]).read_bytes()
        assert pixel_data(stored) == ds.PixelData  # compressed ones arrive as they left
        assert match["_transfer_syntax_uid"] == ds.file_meta.TransferSyntaxUID


def test_orthanc_forwards_a_real_ct_series_to_the_store_port(radpilot_factory, clean_orthanc: OrthancPeer) -> None:  # noqa: ANN001
    # Real scanner headers, stored deflated as the shared set keeps them: what a PACS forwards, not what our factories write.
    files = sorted((shared_data_path() / "ct-lung" / "LUNGCT-002" / "dicom").glob("*.dcm"))[:12]
    if not files:
        require_or_skip(f"no real CT under {shared_data_path() / 'ct-lung'}")
    node = start_receiver("dcmtk", radpilot_factory)
    clean_orthanc.add_modality("radpilot", node.ae_title, "127.0.0.1", node.dicom_port)
    answers = [clean_orthanc.upload(path) for path in files]
    (study_id,) = {a["ParentStudy"] for a in answers}

    clean_orthanc.store_to("radpilot", study_id)

    archive = node.archive
    assert archive.instance_count() == len(files)
    for path in files:
        sent = pydicom.dcmread(path)
        (match,) = archive.find(Query(QueryLevel.IMAGE, {"SOPInstanceUID": sent.SOPInstanceUID}))
        assert match["_transfer_syntax_uid"] == sent.file_meta.TransferSyntaxUID  # deflated, as Orthanc sent it
        kept = pydicom.dcmread(archive.storage_dir / match["_file_path"])
        assert kept.PixelData == sent.PixelData
        assert (kept.PatientID, kept.SeriesInstanceUID, kept.ImagePositionPatient) == (
            sent.PatientID,
            sent.SeriesInstanceUID,
            sent.ImagePositionPatient,
        )


def test_radpilot_sends_files_to_orthanc(radpilot, clean_orthanc: OrthancPeer, tmp_path: Path) -> None:  # noqa: ANN001
    datasets = study_datasets()
    paths = write_part10(datasets, tmp_path / "study")

    report = scu.send(radpilot.settings, orthanc_node(clean_orthanc), paths)

    assert report.ok and report.sent == len(datasets), [r.message for r in report.results if not r.ok]
    assert clean_orthanc.instance_count() == len(datasets)
    for ds in datasets:
        assert orthanc_pixels(clean_orthanc, ds.SOPInstanceUID) == ds.PixelData


@pytest.mark.parametrize(
    ("level", "query", "expected"),
    [
        ("Study", {"PatientName": "ORTHANC*", "StudyInstanceUID": ""}, "study"),
        ("Study", {"StudyDate": "20190101-20191231"}, "study"),
        ("Series", {"StudyInstanceUID": "<study>", "Modality": "CT", "SeriesInstanceUID": ""}, "series"),
        ("Instance", {"StudyInstanceUID": "<study>", "SeriesInstanceUID": "<series>", "SOPInstanceUID": ""}, "sops"),
    ],
    ids=["study-by-name", "study-by-date-range", "series", "instances"],
)
def test_orthanc_queries_radpilot(
    node_known_to_orthanc,
    clean_orthanc: OrthancPeer,
    level: str,
    query: dict,
    expected: str,  # noqa: ANN001
) -> None:
    series = make_ct_series(3, patient_name="ORTHANC^QUERY", study_date="20190704")
    for ds in series:
        assert node_known_to_orthanc.archive.store_file_bytes(to_part10_bytes(ds)).outcome.accepted
    study, series_uid = series[0].StudyInstanceUID, series[0].SeriesInstanceUID
    resolved = {k: v.replace("<study>", study).replace("<series>", series_uid) for k, v in query.items()}

    answers = clean_orthanc.query("radpilot", level, resolved)

    if expected == "study":
        assert [a["StudyInstanceUID"] for a in answers] == [study]
    elif expected == "series":
        assert [a["SeriesInstanceUID"] for a in answers] == [series_uid]
    else:
        assert sorted(a["SOPInstanceUID"] for a in answers) == sorted(ds.SOPInstanceUID for ds in series)


def test_radpilot_finds_on_orthanc(radpilot, clean_orthanc: OrthancPeer) -> None:  # noqa: ANN001
    wanted = make_ct_series(2, patient_name="FIND^ORTHANC", study_date="20220202", patient_id="ORTH-1")
    upload_to_orthanc(clean_orthanc, wanted)
    upload_to_orthanc(clean_orthanc, make_ct_series(1, patient_name="OTHER^PERSON", study_date="20100101", patient_id="ORTH-2"))
    node = orthanc_node(clean_orthanc)

    studies = scu.find(
        radpilot.settings,
        node,
        "STUDY",
        {"PatientName": "FIND*", "StudyDate": "20220101-20221231", "StudyInstanceUID": "", "NumberOfStudyRelatedInstances": ""},
    )
    series = scu.find(
        radpilot.settings, node, "SERIES", {"StudyInstanceUID": wanted[0].StudyInstanceUID, "SeriesInstanceUID": "", "Modality": ""}
    )

    assert [s.StudyInstanceUID for s in studies] == [wanted[0].StudyInstanceUID]
    assert int(studies[0].NumberOfStudyRelatedInstances) == 2
    assert [(s.SeriesInstanceUID, s.Modality) for s in series] == [(wanted[0].SeriesInstanceUID, "CT")]


def test_orthanc_c_moves_a_study_from_radpilot_to_itself(node_known_to_orthanc, clean_orthanc: OrthancPeer) -> None:  # noqa: ANN001
    datasets = study_datasets()
    for ds in datasets:
        assert node_known_to_orthanc.archive.store_file_bytes(to_part10_bytes(ds)).outcome.accepted

    clean_orthanc.move_to("radpilot", "Study", {"StudyInstanceUID": datasets[0].StudyInstanceUID}, target_aet=clean_orthanc.ae_title)

    assert clean_orthanc.instance_count() == len(datasets)
    for ds in datasets:
        assert orthanc_pixels(clean_orthanc, ds.SOPInstanceUID) == ds.PixelData


def test_radpilot_pulls_a_study_from_orthanc_into_the_running_node(
    node_known_to_orthanc,
    clean_orthanc: OrthancPeer,  # noqa: ANN001
) -> None:
    datasets = study_datasets()
    upload_to_orthanc(clean_orthanc, datasets)

    report = scu.pull(node_known_to_orthanc.settings, "orthanc", datasets[0].StudyInstanceUID)

    assert report.ok and report.completed == len(datasets)
    archive = node_known_to_orthanc.archive
    assert archive.instance_count() == len(datasets)
    for ds in datasets:
        (match,) = archive.find(Query(QueryLevel.IMAGE, {"SOPInstanceUID": ds.SOPInstanceUID}))
        assert pixel_data((archive.storage_dir / match["_file_path"]).read_bytes()) == ds.PixelData


def test_radpilot_pulls_one_series_without_a_running_listener(clean_orthanc: OrthancPeer, tmp_path: Path) -> None:
    port = free_port()
    settings = Settings(data_dir=tmp_path / "puller", ae_title="PULLER", dicom_port=port, nodes=[orthanc_node(clean_orthanc)])
    clean_orthanc.add_modality("puller", "PULLER", "127.0.0.1", port)
    study_uid = generate_uid()
    first, second = make_ct_series(2, study_uid=study_uid), make_ct_series(3, study_uid=study_uid)
    upload_to_orthanc(clean_orthanc, first + second)

    report = scu.pull(settings, "orthanc", study_uid, second[0].SeriesInstanceUID)

    assert report.ok and report.completed == 3 and report.received == 3
    archive = Archive.from_settings(settings)
    try:
        assert archive.instance_count() == 3
    finally:
        archive.close()


def test_pull_from_orthanc_that_does_not_know_us_explains_why(radpilot_factory, clean_orthanc: OrthancPeer) -> None:  # noqa: ANN001
    node = radpilot_factory(ae_title="UNKNOWN", nodes=[orthanc_node(clean_orthanc)])
    upload_to_orthanc(clean_orthanc, make_ct_series(1, study_uid=(uid := generate_uid())))

    # Orthanc answers 0xC000 (not 0xA801) for a move destination it does not know.
    with pytest.raises(scu.DimseStatusError, match=r"'orthanc'.*refused the C-MOVE.*our AE title 'UNKNOWN'"):
        scu.pull(node.settings, "orthanc", uid)


def test_radpilot_echoes_orthanc_and_orthanc_echoes_radpilot(node_known_to_orthanc, clean_orthanc: OrthancPeer) -> None:  # noqa: ANN001
    assert scu.echo(node_known_to_orthanc.settings, "orthanc") == 0x0000
    assert clean_orthanc.echo("radpilot")
