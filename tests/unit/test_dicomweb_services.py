"""The DICOMweb services below the routes: their domain errors, and the one place that maps them to HTTP.

The same behaviour over HTTP is in tests/unit/test_dicomweb_router.py; these pin the
seams between the modules of radpilot.pacs.dicomweb.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

import radpilot.pacs.dicomweb as dicomweb_package
from radpilot.archive import Archive
from radpilot.archive.query import QueryLevel
from radpilot.dicom import status as dimse_status
from radpilot.pacs.dicomweb import router
from radpilot.pacs.dicomweb.frames import FrameError, FrameErrorKind, parse_frame_list, read_frames
from radpilot.pacs.dicomweb.qido import QidoError, QidoRequest, parse_qido_parameters, search
from radpilot.pacs.dicomweb.stow import StowRequestError, StowRequestErrorKind, process_stow, stow_boundary
from radpilot.pacs.dicomweb.wado import ResourceNotFoundError, bulk_value, find_instances
from tests.factories import make_ct_dataset, to_part10_bytes

PACKAGE_DIR = Path(dicomweb_package.__file__).parent
HTTP_MODULES = {"fastapi", "starlette"}


@pytest.fixture
def archive(tmp_path: Path) -> Iterator[Archive]:
    store = Archive(tmp_path / "dicom", f"sqlite:///{tmp_path / 'index.sqlite3'}", durability="none")
    yield store
    store.close()


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("module", ["qido.py", "wado.py", "frames.py", "stow.py", "media.py"])
def test_only_the_router_knows_http(module: str) -> None:
    assert not _imported_modules(PACKAGE_DIR / module) & HTTP_MODULES
    assert "status_code" not in (PACKAGE_DIR / module).read_text()


def test_every_error_kind_has_an_http_status() -> None:
    for kind in FrameErrorKind:
        assert router.http_error(FrameError(kind, "x")).status_code in (400, 404, 500)
    for kind in StowRequestErrorKind:
        assert router.http_error(StowRequestError(kind, "x")).status_code in (400, 415)
    with pytest.raises(TypeError, match="no HTTP status"):
        router.http_error(ValueError("not a DICOMweb error"))


# -- QIDO-RS ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "items, parameter",
    [
        ([("limit", "-1")], "limit"),
        ([("offset", "x")], "offset"),
        ([("includefield", "NoSuchThing")], "includefield"),
        ([("NoSuchThing", "1")], "NoSuchThing"),
        ([("A.B", "1")], "A.B"),
        ([("fuzzymatching", "maybe")], "fuzzymatching"),
        ([("PatientID", "a"), ("PatientID", "b")], "PatientID"),
    ],
)
def test_malformed_qido_parameters_name_the_parameter(items: list[tuple[str, str]], parameter: str) -> None:
    with pytest.raises(QidoError) as caught:
        parse_qido_parameters(items)
    assert caught.value.parameter == parameter
    assert router.http_error(caught.value).status_code == 400


def test_a_key_the_archive_refuses_is_a_qido_error(archive: Archive) -> None:
    qido = parse_qido_parameters([("StudyDate", "2024-01-02")])
    with pytest.raises(QidoError, match="is not a date") as caught:
        search(archive, QueryLevel.STUDY, {}, qido, "http://x/dicomweb")
    assert caught.value.parameter == "StudyDate"


def test_search_answers_dicom_json(archive: Archive) -> None:
    ds = make_ct_dataset(patient_id="P7")
    archive.store_file_bytes(to_part10_bytes(ds))
    (study,) = search(archive, QueryLevel.STUDY, {}, QidoRequest(), "http://x/dicomweb")
    assert study["00100020"] == {"vr": "LO", "Value": ["P7"]}
    assert study["00081190"]["Value"] == [f"http://x/dicomweb/studies/{ds.StudyInstanceUID}"]


# -- WADO-RS and frames ----------------------------------------------------------------


def test_missing_resources_are_named(archive: Archive) -> None:
    ds = make_ct_dataset()
    archive.store_file_bytes(to_part10_bytes(ds))
    with pytest.raises(ResourceNotFoundError, match="study 1.2 is not in the archive"):
        find_instances(archive, "1.2")
    with pytest.raises(ResourceNotFoundError, match=f"series 1.2 is not in study {ds.StudyInstanceUID}"):
        find_instances(archive, ds.StudyInstanceUID, "1.2")
    (instance,) = find_instances(archive, ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    with pytest.raises(ResourceNotFoundError) as caught:
        bulk_value(archive.path_of(instance), instance.transfer_syntax_uid, "00540016/5/00091010")
    assert caught.value.parameter == "path"


@pytest.mark.parametrize("text", ["", "0", "a", "1,,2", "1,-3", "1.5"])
def test_malformed_frame_lists(text: str) -> None:
    with pytest.raises(FrameError) as caught:
        parse_frame_list(text)
    assert caught.value.kind is FrameErrorKind.MALFORMED_FRAME_LIST
    assert router.http_error(caught.value).parameter == "frames"


def test_frame_errors_say_why(tmp_path: Path) -> None:
    with_pixels = tmp_path / "ct.dcm"
    with_pixels.write_bytes(to_part10_bytes(make_ct_dataset()))
    with pytest.raises(FrameError) as beyond:
        read_frames(with_pixels, "1.2.840.10008.1.2.1", [1, 2])
    assert beyond.value.kind is FrameErrorKind.NO_SUCH_FRAME
    assert "the instance has 1 frame(s)" in beyond.value.message
    no_pixels = Path(get_testdata_file("rtplan.dcm"))
    with pytest.raises(FrameError) as none:
        read_frames(no_pixels, "1.2.840.10008.1.2", None)
    assert none.value.kind is FrameErrorKind.NO_PIXEL_DATA


def test_short_pixel_data_is_unreadable_not_a_crash(tmp_path: Path) -> None:
    ds = make_ct_dataset()
    ds.PixelData = ds.PixelData[:100]  # shorter than Rows x Columns x 2
    path = tmp_path / "short.dcm"
    path.write_bytes(to_part10_bytes(ds))
    with pytest.raises(FrameError) as caught:
        read_frames(path, "1.2.840.10008.1.2.1", [1])
    assert caught.value.kind is FrameErrorKind.UNREADABLE
    assert router.http_error(caught.value).status_code == 500


# -- STOW-RS ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type, kind",
    [
        (None, StowRequestErrorKind.UNSUPPORTED_MEDIA_TYPE),
        ("", StowRequestErrorKind.UNSUPPORTED_MEDIA_TYPE),
        ("application/dicom", StowRequestErrorKind.UNSUPPORTED_MEDIA_TYPE),
        ('multipart/related; type="application/dicom+json"; boundary=a', StowRequestErrorKind.UNSUPPORTED_MEDIA_TYPE),
        ('multipart/related; type="application/dicom', StowRequestErrorKind.MALFORMED),
        ("multipart/related; boundary", StowRequestErrorKind.MALFORMED),
        ('multipart/related; type="application/dicom"', StowRequestErrorKind.MALFORMED),
        ("multipart/related; boundary=" + "x" * 71, StowRequestErrorKind.MALFORMED),
    ],
)
def test_unusable_stow_content_types(content_type: str | None, kind: StowRequestErrorKind) -> None:
    with pytest.raises(StowRequestError) as caught:
        stow_boundary(content_type)
    assert caught.value.kind is kind
    assert caught.value.header == "Content-Type"


def test_stow_boundary_of_a_usable_content_type() -> None:
    assert stow_boundary('Multipart/Related; type="application/dicom"; boundary="a b"') == "a b"
    assert stow_boundary("multipart/related; boundary=xyz") == "xyz"


@pytest.mark.parametrize(
    "body, kind, fragment",
    [
        (b"garbage", StowRequestErrorKind.MALFORMED, "cannot be parsed"),
        (b"--bb--\r\n", StowRequestErrorKind.MALFORMED, "no parts"),
        (
            b"--bb\r\nContent-Type: text/plain\r\n\r\nx\r\n--bb--",
            StowRequestErrorKind.UNSUPPORTED_MEDIA_TYPE,
            "text/plain",
        ),
    ],
)
def test_stow_bodies_refused_as_a_whole(archive: Archive, body: bytes, kind: StowRequestErrorKind, fragment: str) -> None:
    with pytest.raises(StowRequestError, match=fragment) as caught:
        process_stow(archive, body, "bb", None, "http://x/dicomweb")
    assert caught.value.kind is kind
    assert archive.instance_count() == 0


def test_stow_parts_get_the_archive_status_codes(archive: Archive) -> None:
    good = to_part10_bytes(make_ct_dataset())
    body = (
        b"--bb\r\nContent-Type: application/dicom\r\n\r\n" + good
        + b"\r\n--bb\r\nContent-Type: application/dicom\r\n\r\nnot dicom"
        + b"\r\n--bb\r\nContent-Type: application/dicom\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nx"
        + b"\r\n--bb--"
    )  # fmt: skip
    answer = process_stow(archive, body, "bb", None, "http://x/dicomweb")
    assert [o.status for o in answer.outcomes] == [
        dimse_status.SUCCESS,
        dimse_status.CANNOT_UNDERSTAND,
        dimse_status.CANNOT_UNDERSTAND,
    ]
    assert answer.stored == 1
    assert [item["00081197"]["Value"] for item in answer.body["00081198"]["Value"]] == [[0xC000], [0xC000]]
