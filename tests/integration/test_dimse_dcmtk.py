"""dcmtk's SCU tools (echoscu, storescu, findscu, getscu, movescu) against RadPilot."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from radpilot.archive.query import Query, QueryLevel
from radpilot.config import RemoteNode
from tests.factories import make_ct_series, to_part10_bytes, write_part10
from tests.fixtures.dcmtk import DcmtkTools
from tests.fixtures.receivers import RECEIVERS, start_receiver
from tests.helpers import free_port

pytestmark = pytest.mark.integration

# storescu proposes one compressed transfer syntax per call, chosen by an option.
COMPRESSED_FILES = {
    "JPEG2000.dcm": "-xw",
    "MR_small_jp2klossless.dcm": "-xv",
    "SC_rgb_rle.dcm": "-xr",
    "SC_rgb_jpeg_dcmtk.dcm": "-xy",
    "SC_rgb_jpeg_gdcm.dcm": "-xs",
    "MR_small_jpeg_ls_lossless.dcm": "-xt",
    "image_dfl.dcm": "-xd",
}


def peer(node) -> list[str]:  # noqa: ANN001
    return ["-aec", node.ae_title, "127.0.0.1", str(node.dicom_port)]


def check(result) -> None:  # noqa: ANN001
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"


def populate(node, count: int = 3, **kwargs) -> list:  # noqa: ANN001, ANN003
    series = make_ct_series(count, **kwargs)
    for ds in series:
        assert node.archive.store_file_bytes(to_part10_bytes(ds)).outcome.accepted
    return series


@pytest.mark.parametrize("kind", RECEIVERS)
def test_echoscu(dcmtk: DcmtkTools, radpilot_factory, kind: str) -> None:  # noqa: ANN001
    check(dcmtk.run("echoscu", "-aet", "ECHOSCU", *peer(start_receiver(kind, radpilot_factory))))


@pytest.mark.parametrize("kind", RECEIVERS)
def test_storescu_sends_a_folder_then_compressed_files_as_they_are(dcmtk: DcmtkTools, radpilot_factory, kind: str, tmp_path: Path) -> None:  # noqa: ANN001
    # On the main port and on the store port alike.
    radpilot = start_receiver(kind, radpilot_factory)
    folder = tmp_path / "send"  # only DICOM files: storescu +sd stops at the first other file
    datasets = make_ct_series(5)
    write_part10(datasets, folder)

    check(dcmtk.run("storescu", "-aet", "STORESCU", "+sd", "+r", *peer(radpilot), folder))
    for name, option in COMPRESSED_FILES.items():
        source = get_testdata_file(name)
        if source is None:
            continue
        # Several test files are one image in several encodings under one SOP Instance UID: give each its own.
        ds = pydicom.dcmread(source)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        path = tmp_path / name
        ds.save_as(path, enforce_file_format=True)
        datasets.append(ds)
        check(dcmtk.run("storescu", "-aet", "STORESCU", option, *peer(radpilot), path))

    archive = radpilot.archive
    assert archive.instance_count() == len(datasets)
    for ds in datasets:
        (match,) = archive.find(Query(QueryLevel.IMAGE, {"SOPInstanceUID": ds.SOPInstanceUID}))
        assert match["_transfer_syntax_uid"] == ds.file_meta.TransferSyntaxUID  # compressed stays compressed
        stored = pydicom.dcmread(archive.storage_dir / match["_file_path"])
        assert stored.PixelData == ds.PixelData


def test_findscu_at_study_and_series_level(dcmtk: DcmtkTools, radpilot, tmp_path: Path) -> None:  # noqa: ANN001
    wanted = populate(radpilot, 2, patient_name="DCMTK^FIND", study_date="20200505")
    populate(radpilot, 1, patient_name="NOT^ME", patient_id="OTHER", study_date="20200505")
    studies, series = tmp_path / "studies", tmp_path / "series"
    studies.mkdir()
    series.mkdir()

    check(
        dcmtk.run(
            "findscu",
            "-S",
            "-aet",
            "FINDSCU",
            "-X",
            "-od",
            studies,
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            "PatientName=DCMTK*",
            "-k",
            "StudyDate=20200101-20201231",
            "-k",
            "StudyInstanceUID",
            "-k",
            "NumberOfStudyRelatedInstances",
            *peer(radpilot),
        )
    )
    check(
        dcmtk.run(
            "findscu",
            "-S",
            "-aet",
            "FINDSCU",
            "-X",
            "-od",
            series,
            "-k",
            "QueryRetrieveLevel=SERIES",
            "-k",
            f"StudyInstanceUID={wanted[0].StudyInstanceUID}",
            "-k",
            "SeriesInstanceUID",
            "-k",
            "Modality",
            *peer(radpilot),
        )
    )

    (study_answer,) = [pydicom.dcmread(p) for p in studies.glob("rsp*.dcm")]
    assert study_answer.StudyInstanceUID == wanted[0].StudyInstanceUID
    assert int(study_answer.NumberOfStudyRelatedInstances) == 2
    (series_answer,) = [pydicom.dcmread(p) for p in series.glob("rsp*.dcm")]
    assert (series_answer.SeriesInstanceUID, series_answer.Modality) == (wanted[0].SeriesInstanceUID, "CT")


def test_getscu_retrieves_a_study(dcmtk: DcmtkTools, radpilot, tmp_path: Path) -> None:  # noqa: ANN001
    series = populate(radpilot, 4)
    out = tmp_path / "got"
    out.mkdir()

    check(
        dcmtk.run(
            "getscu",
            "-S",
            "-aet",
            "GETSCU",
            "-od",
            out,
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            f"StudyInstanceUID={series[0].StudyInstanceUID}",
            *peer(radpilot),
        )
    )

    received = {str(pydicom.dcmread(p).SOPInstanceUID): pydicom.dcmread(p) for p in out.iterdir()}
    assert sorted(received) == sorted(ds.SOPInstanceUID for ds in series)
    for ds in series:
        assert received[ds.SOPInstanceUID].PixelData == ds.PixelData


def test_movescu_moves_a_series_to_a_configured_destination(dcmtk: DcmtkTools, radpilot_factory, tmp_path: Path) -> None:  # noqa: ANN001
    port = free_port()
    node = radpilot_factory(nodes=[RemoteNode(name="workstation", ae_title="MOVESCU", host="127.0.0.1", port=port)])
    study_uid = generate_uid()
    populate(node, 2, study_uid=study_uid)
    wanted = populate(node, 3, study_uid=study_uid)
    out = tmp_path / "moved"
    out.mkdir()

    check(
        dcmtk.run(
            "movescu",
            "-S",
            "-aet",
            "MOVESCU",
            "-aem",
            "MOVESCU",
            "+P",
            str(port),
            "+xa",
            "-od",
            out,
            "-k",
            "QueryRetrieveLevel=SERIES",
            "-k",
            f"StudyInstanceUID={study_uid}",
            "-k",
            f"SeriesInstanceUID={wanted[0].SeriesInstanceUID}",
            *peer(node),
        )
    )

    moved = sorted(str(pydicom.dcmread(p).SOPInstanceUID) for p in out.iterdir())
    assert moved == sorted(ds.SOPInstanceUID for ds in wanted)


def test_movescu_to_an_unknown_destination_is_told_so(dcmtk: DcmtkTools, radpilot) -> None:  # noqa: ANN001
    series = populate(radpilot, 1)

    result = dcmtk.run(
        "movescu",
        "-v",
        "-S",
        "-aet",
        "MOVESCU",
        "-aem",
        "NOWHERE",
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        f"StudyInstanceUID={series[0].StudyInstanceUID}",
        *peer(radpilot),
    )

    output = result.stdout + result.stderr
    assert "MoveDestinationUnknown" in output, output
