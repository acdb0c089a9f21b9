"""RadPilot's SCU functions (echo, send, find, pull) against other RadPilot nodes and pynetdicom peers."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pynetdicom import AllStoragePresentationContexts

from radpilot.archive import Archive
from radpilot.archive.query import Query, QueryLevel
from radpilot.config import RemoteNode, Settings
from radpilot.pacs import scu
from tests.factories import make_ct_dataset, make_ct_series, to_part10_bytes, write_part10
from tests.helpers import free_port

# (MR_small_implicit.dcm is the big endian file's instance re-encoded: same UID, other bytes, so a conflict.)
COMPRESSED_AND_ODD_FILES = ["JPEG2000.dcm", "SC_rgb_rle.dcm", "image_dfl.dcm", "MR_small_bigendian.dcm", "SC_rgb_jpeg_dcmtk.dcm"]


def as_node(running, name: str = "target") -> RemoteNode:  # noqa: ANN001
    return RemoteNode(name=name, ae_title=running.ae_title, host="127.0.0.1", port=running.dicom_port)


def dataset_body(data: bytes) -> bytes:
    return data[144 + int.from_bytes(data[140:144], "little") :]


def stored_bodies(archive: Archive) -> dict[str, bytes]:
    return {
        m["SOPInstanceUID"]: dataset_body((archive.storage_dir / m["_file_path"]).read_bytes())
        for m in archive.find(Query(QueryLevel.IMAGE, {}))
    }


@pytest.fixture
def sender_settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "sender", ae_title="SENDER", dicom_port=free_port())


# -- echo ---------------------------------------------------------------------------------


def test_echo_returns_success_status(radpilot, sender_settings: Settings) -> None:  # noqa: ANN001
    assert scu.echo(sender_settings, as_node(radpilot)) == 0x0000


def test_echo_resolves_a_configured_node_by_name_or_ae_title(radpilot, tmp_path: Path) -> None:  # noqa: ANN001
    settings = Settings(data_dir=tmp_path, nodes=[as_node(radpilot, "pacs")])
    assert scu.echo(settings, "pacs") == 0x0000
    assert scu.echo(settings, "RADPILOT") == 0x0000
    with pytest.raises(KeyError, match="unknown DICOM node 'nope'.*pacs"):
        scu.echo(settings, "nope")


def test_echo_to_a_closed_port_names_the_node(sender_settings: Settings) -> None:
    node = RemoteNode(name="ghost", ae_title="GHOST", host="127.0.0.1", port=free_port())
    with pytest.raises(scu.AssociationError, match=r"cannot connect to DICOM node 'ghost' \(GHOST@127\.0\.0\.1:\d+\)"):
        scu.echo(sender_settings, node)


# -- send ---------------------------------------------------------------------------------


def test_send_stores_files_as_they_are_and_skips_non_dicom(radpilot, sender_settings: Settings, tmp_path: Path) -> None:  # noqa: ANN001
    folder = tmp_path / "files"
    series = make_ct_series(3)
    series[0].file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    paths = write_part10(series, folder)
    for name in COMPRESSED_AND_ODD_FILES:
        source = get_testdata_file(name)
        if source is not None:
            paths.append(Path(source))
    notes = folder / "notes.txt"
    notes.write_text("not DICOM")
    paths.append(notes)
    seen: list[scu.FileResult] = []

    report = scu.send(sender_settings, as_node(radpilot), paths, progress_callback=seen.append)

    assert [r.path for r in report.results] == paths
    assert report.skipped == 1 and report.results[-1].outcome == "skipped"
    assert report.failed == 0, [r.message for r in report.results if r.outcome == "failed"]
    assert report.sent == len(paths) - 1
    assert len(seen) == len(paths)
    bodies = stored_bodies(radpilot.archive)
    for path in paths[:-1]:
        uid = str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)
        assert bodies[uid] == dataset_body(path.read_bytes()), path.name


def test_send_reports_refused_files_per_file(radpilot, sender_settings: Settings, tmp_path: Path) -> None:  # noqa: ANN001
    first = make_ct_dataset(patient_name="FIRST")
    conflicting = make_ct_dataset(
        sop_uid=first.SOPInstanceUID, study_uid=first.StudyInstanceUID, series_uid=first.SeriesInstanceUID, patient_name="SECOND"
    )
    ok_path, bad_path = write_part10([first], tmp_path / "a") + write_part10([conflicting], tmp_path / "b")

    report = scu.send(sender_settings, as_node(radpilot), [ok_path, bad_path])

    assert [r.outcome for r in report.results] == ["sent", "failed"]
    assert report.results[1].status == 0xA900
    assert "0xA900" in report.results[1].message and "different content" in report.results[1].message
    assert not report.ok


def test_send_splits_more_than_128_presentation_contexts_over_associations(
    radpilot,
    sender_settings: Settings,
    tmp_path: Path,  # noqa: ANN001
) -> None:
    classes = [str(c.abstract_syntax) for c in AllStoragePresentationContexts][:70]
    datasets = []
    for index, sop_class in enumerate(classes):
        for syntax in (ExplicitVRLittleEndian, ImplicitVRLittleEndian):
            ds = make_ct_dataset(rows=2, columns=2, seed=index)
            ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = sop_class
            ds.file_meta.TransferSyntaxUID = syntax
            datasets.append(ds)
    paths = write_part10(datasets, tmp_path / "many")

    report = scu.send(sender_settings, as_node(radpilot), paths)

    assert report.failed == 0, [r.message for r in report.results if not r.ok][:3]
    assert report.sent == 140
    assert report.associations == 2
    assert radpilot.archive.instance_count() == 140


def test_send_to_a_node_that_is_down_raises(sender_settings: Settings, tmp_path: Path) -> None:
    paths = write_part10(make_ct_series(1), tmp_path)
    node = RemoteNode(name="down", ae_title="DOWN", host="127.0.0.1", port=free_port())
    with pytest.raises(scu.DicomNetworkError, match="'down'"):
        scu.send(sender_settings, node, paths)


# -- find ---------------------------------------------------------------------------------


def test_find_returns_matches_with_the_requested_keys(radpilot, sender_settings: Settings) -> None:  # noqa: ANN001
    study = make_ct_series(2, patient_name="FIND^ME", study_date="20230405")
    other = make_ct_series(1, patient_name="SOMEONE^ELSE", study_date="20190101")
    for ds in [*study, *other]:
        assert radpilot.archive.store_file_bytes(to_part10_bytes(ds)).outcome.accepted

    matches = scu.find(
        sender_settings,
        as_node(radpilot),
        "study",
        {"PatientName": "FIND*", "StudyDate": "20230101-20231231", "StudyInstanceUID": "", "NumberOfStudyRelatedInstances": ""},
    )

    assert [m.StudyInstanceUID for m in matches] == [study[0].StudyInstanceUID]
    assert int(matches[0].NumberOfStudyRelatedInstances) == 2


@pytest.mark.filterwarnings("ignore:Invalid value for VR DA")
def test_find_refused_raises_with_the_status_and_comment(radpilot, sender_settings: Settings) -> None:  # noqa: ANN001
    with pytest.raises(scu.DimseStatusError, match=r"0xA900.*StudyDate") as caught:
        scu.find(sender_settings, as_node(radpilot), "STUDY", {"StudyDate": "2023-01-01x"})
    assert caught.value.status == 0xA900


def test_find_rejects_unknown_keywords(radpilot, sender_settings: Settings) -> None:  # noqa: ANN001
    with pytest.raises(ValueError, match="NotAKeyword"):
        scu.find(sender_settings, as_node(radpilot), "STUDY", {"NotAKeyword": ""})


# -- pull ---------------------------------------------------------------------------------


@pytest.fixture
def source_with_study(radpilot_factory, tmp_path: Path):  # noqa: ANN001, ANN201
    """A source node ("SOURCE") that knows the puller ("PULLER" on a reserved port) as a move destination."""
    puller_port = free_port()
    puller_node = RemoteNode(name="puller", ae_title="PULLER", host="127.0.0.1", port=puller_port)
    source = radpilot_factory(ae_title="SOURCE", nodes=[puller_node])
    study_uid = generate_uid()
    series = [make_ct_series(2, study_uid=study_uid), make_ct_series(3, study_uid=study_uid)]
    for ds in [*series[0], *series[1]]:
        assert source.archive.store_file_bytes(to_part10_bytes(ds)).outcome.accepted
    return source, puller_port, study_uid, [s[0].SeriesInstanceUID for s in series]


def test_pull_without_a_running_listener_starts_one_for_the_move(source_with_study, tmp_path: Path) -> None:  # noqa: ANN001
    source, puller_port, study_uid, _ = source_with_study
    settings = Settings(data_dir=tmp_path / "puller", ae_title="PULLER", dicom_port=puller_port, nodes=[as_node(source, "source")])

    report = scu.pull(settings, "source", study_uid)

    assert report.ok and report.completed == 5 and report.failed == 0
    assert report.received == 5
    archive = Archive.from_settings(settings)
    try:
        assert archive.instance_count() == 5
        assert stored_bodies(archive) == stored_bodies(source.archive)
    finally:
        archive.close()
    assert scu.port_is_free("127.0.0.1", puller_port)  # the temporary listener is gone


def test_pull_of_one_series_into_a_running_node(source_with_study, radpilot_factory) -> None:  # noqa: ANN001
    source, puller_port, study_uid, series_uids = source_with_study
    puller = radpilot_factory(ae_title="PULLER", dicom_port=puller_port, nodes=[as_node(source, "source")])

    report = scu.pull(puller.settings, "source", study_uid, series_uids[1])

    assert report.ok and report.completed == 3
    assert report.received is None  # the running node received them
    assert puller.archive.instance_count() == 3


def test_pull_from_a_node_that_does_not_know_us_explains_the_a801(source_with_study, tmp_path: Path) -> None:  # noqa: ANN001
    source, _, study_uid, _ = source_with_study
    settings = Settings(data_dir=tmp_path / "stranger", ae_title="STRANGER", dicom_port=free_port(), nodes=[as_node(source, "source")])

    with pytest.raises(scu.DimseStatusError, match=r"does not know the move destination 'STRANGER'.*0xA801"):
        scu.pull(settings, "source", study_uid)


def test_send_inflates_a_deflated_file_for_a_peer_without_deflate(sender_settings: Settings) -> None:
    from pynetdicom import AE, evt

    source = get_testdata_file("image_dfl.dcm")
    if source is None:
        pytest.skip("pydicom test file image_dfl.dcm is not available locally")
    original = pydicom.dcmread(source)
    received: list[tuple[str, bytes]] = []

    def on_store(event) -> int:  # noqa: ANN001
        received.append((str(event.context.transfer_syntax), event.dataset.PixelData))
        return 0x0000

    ae = AE(ae_title="NODEFLATE")
    ae.add_supported_context(original.SOPClassUID, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    port = free_port()
    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    try:
        node = RemoteNode(name="nodeflate", ae_title="NODEFLATE", host="127.0.0.1", port=port)
        report = scu.send(sender_settings, node, [Path(source)])
    finally:
        server.shutdown()

    assert report.ok, report.results
    ((syntax, pixels),) = received
    assert syntax in (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
    assert pixels == original.PixelData


def test_send_reports_files_the_peer_cannot_take_and_sends_the_rest(sender_settings: Settings, tmp_path: Path) -> None:
    from pynetdicom import AE, evt

    j2k = get_testdata_file("JPEG2000.dcm")
    if j2k is None:
        pytest.skip("pydicom test file JPEG2000.dcm is not available locally")
    (ct,) = write_part10(make_ct_series(1), tmp_path)
    received: list[str] = []
    ae = AE(ae_title="PLAIN")
    ae.add_supported_context("1.2.840.10008.5.1.4.1.1.2", [ExplicitVRLittleEndian])  # CT, uncompressed only
    port = free_port()
    server = ae.start_server(
        ("127.0.0.1", port),
        block=False,
        evt_handlers=[(evt.EVT_C_STORE, lambda event: received.append(str(event.request.AffectedSOPInstanceUID)) or 0x0000)],
    )
    try:
        node = RemoteNode(name="plain", ae_title="PLAIN", host="127.0.0.1", port=port)
        report = scu.send(sender_settings, node, [Path(j2k), ct])
    finally:
        server.shutdown()

    assert [r.outcome for r in report.results] == ["failed", "sent"]
    assert "plain does not accept Secondary Capture Image Storage in JPEG 2000" in report.results[0].message
    assert len(received) == 1


def test_echo_to_a_node_without_verification_says_what_it_refused(sender_settings: Settings) -> None:
    from pynetdicom import AE

    ae = AE(ae_title="NOECHO")
    ae.add_supported_context("1.2.840.10008.5.1.4.1.1.2")
    port = free_port()
    server = ae.start_server(("127.0.0.1", port), block=False)
    try:
        node = RemoteNode(name="noecho", ae_title="NOECHO", host="127.0.0.1", port=port)
        with pytest.raises(scu.NoAcceptedContextError, match="'noecho'.*accepted none.*Verification SOP Class"):
            scu.echo(sender_settings, node)
    finally:
        server.shutdown()
