"""C-GET and C-MOVE from RadPilot, with pynetdicom as the requestor and as the move destination."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, build_context, build_role, evt
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from radpilot.archive.query import Query, QueryLevel
from radpilot.config import RemoteNode
from tests.factories import make_ct_series, to_part10_bytes
from tests.helpers import free_port

STUDY_GET = StudyRootQueryRetrieveInformationModelGet
STUDY_MOVE = StudyRootQueryRetrieveInformationModelMove


def dataset_body(data: bytes) -> bytes:
    return data[144 + int.from_bytes(data[140:144], "little") :]


@dataclass
class StoredStudy:
    study_uid: str
    series_uids: list[str]
    sop_uids: list[str]
    bodies: dict[str, bytes] = field(default_factory=dict)  # SOP Instance UID -> dataset bytes as stored
    syntaxes: dict[str, str] = field(default_factory=dict)


def _compressed_instance(name: str, study_uid: str) -> Dataset:
    path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"pydicom test file {name} is not available locally")
    ds = pydicom.dcmread(path)
    ds.StudyInstanceUID = study_uid
    ds.PatientID = "PAT001"
    return ds


@pytest.fixture
def study_on(radpilot_factory):  # noqa: ANN001, ANN201
    """Start a node (with the given settings) holding one study: a 3-slice CT series plus JPEG 2000 and RLE instances."""

    def _make(**settings) -> tuple:
        node = radpilot_factory(**settings)
        study_uid = generate_uid()
        datasets = [
            *make_ct_series(3, study_uid=study_uid),
            _compressed_instance("JPEG2000.dcm", study_uid),
            _compressed_instance("SC_rgb_rle.dcm", study_uid),
        ]
        study = StoredStudy(study_uid, sorted({str(d.SeriesInstanceUID) for d in datasets}), [str(d.SOPInstanceUID) for d in datasets])
        for ds in datasets:
            result = node.archive.store_file_bytes(to_part10_bytes(ds), source_ae_title="TEST")
            assert result.outcome.accepted, result.message
        for match in node.archive.find(Query(QueryLevel.IMAGE, {"StudyInstanceUID": study_uid})):
            data = (node.archive.storage_dir / match["_file_path"]).read_bytes()
            study.bodies[match["SOPInstanceUID"]] = dataset_body(data)
            study.syntaxes[match["SOPInstanceUID"]] = match["_transfer_syntax_uid"]
        return node, study

    return _make


@dataclass
class Received:
    bodies: dict[str, bytes] = field(default_factory=dict)
    syntaxes: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handle_store(self, event) -> int:  # noqa: ANN001
        with self.lock:
            uid = str(event.request.AffectedSOPInstanceUID)
            self.bodies[uid] = event.encoded_dataset(include_meta=False)
            self.syntaxes[uid] = str(event.context.transfer_syntax)
        return 0x0000


@pytest.fixture
def destination() -> Iterator[tuple[RemoteNode, Received]]:
    """A pynetdicom storage SCP ("DEST") accepting every storage class in every transfer syntax."""
    received = Received()
    ae = AE(ae_title="DEST")
    for context in AllStoragePresentationContexts:
        ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
    port = free_port()
    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, received.handle_store)])
    try:
        yield RemoteNode(name="dest", ae_title="DEST", host="127.0.0.1", port=port), received
    finally:
        server.shutdown()


def identifier(level: str, **keys: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def c_get(node, study: StoredStudy, request: Dataset, model: str = STUDY_GET) -> tuple[Received, Dataset]:  # noqa: ANN001
    received = Received()
    pairs = {(cls, ts) for cls, ts in _classes_and_syntaxes(node, study)}
    contexts = [build_context(model)] + [build_context(cls, [ts]) for cls, ts in sorted(pairs)]
    roles = [build_role(cls, scp_role=True) for cls in sorted({cls for cls, _ in pairs})]
    ae = AE(ae_title="GETSCU")
    assoc = ae.associate(
        "127.0.0.1",
        node.dicom_port,
        contexts=contexts,
        ae_title=node.ae_title,
        ext_neg=roles,
        evt_handlers=[(evt.EVT_C_STORE, received.handle_store)],
    )
    assert assoc.is_established
    try:
        final = [status for status, _ in assoc.send_c_get(request, model)][-1]
    finally:
        assoc.release()
    return received, final


def _classes_and_syntaxes(node, study: StoredStudy) -> list[tuple[str, str]]:  # noqa: ANN001
    matches = node.archive.find(Query(QueryLevel.IMAGE, {"StudyInstanceUID": study.study_uid}))
    return [(m["SOPClassUID"], m["_transfer_syntax_uid"]) for m in matches]


def c_move(node, request: Dataset, destination_ae: str, model: str = STUDY_MOVE) -> Dataset:  # noqa: ANN001
    ae = AE(ae_title="MOVESCU")
    assoc = ae.associate("127.0.0.1", node.dicom_port, contexts=[build_context(model)], ae_title=node.ae_title)
    assert assoc.is_established
    try:
        responses = [status for status, _ in assoc.send_c_move(request, destination_ae, model)]
    finally:
        assoc.release()
    return responses[-1]


def test_c_get_of_a_study_returns_every_instance_byte_identical(study_on) -> None:  # noqa: ANN001
    node, study = study_on()

    received, final = c_get(node, study, identifier("STUDY", StudyInstanceUID=study.study_uid))

    assert final.Status == 0x0000
    assert final.NumberOfCompletedSuboperations == len(study.sop_uids)
    assert received.syntaxes == study.syntaxes  # compressed ones stay compressed
    assert received.bodies == study.bodies


@pytest.mark.parametrize("level", ["SERIES", "IMAGE"])
def test_c_get_at_lower_levels_returns_only_what_matches(study_on, level: str) -> None:  # noqa: ANN001
    node, study = study_on()
    ct_series = node.archive.find(
        Query(QueryLevel.IMAGE, {"StudyInstanceUID": study.study_uid, "SOPClassUID": "1.2.840.10008.5.1.4.1.1.2"})
    )
    wanted = [m["SOPInstanceUID"] for m in ct_series][:2]
    keys = {"StudyInstanceUID": study.study_uid, "SeriesInstanceUID": ct_series[0]["SeriesInstanceUID"]}
    if level == "IMAGE":
        keys["SOPInstanceUID"] = "\\".join(wanted)

    received, final = c_get(node, study, identifier(level, **keys))

    expected = wanted if level == "IMAGE" else [m["SOPInstanceUID"] for m in ct_series]
    assert final.Status == 0x0000
    assert sorted(received.bodies) == sorted(expected)


def test_c_get_with_patient_root_at_patient_level(study_on) -> None:  # noqa: ANN001
    node, study = study_on()
    received, final = c_get(node, study, identifier("PATIENT", PatientID="PAT001"), PatientRootQueryRetrieveInformationModelGet)
    assert final.Status == 0x0000
    assert sorted(received.bodies) == sorted(study.sop_uids)


def test_c_get_without_a_unique_key_fails_with_a_reason(study_on) -> None:  # noqa: ANN001
    node, study = study_on()
    received, final = c_get(node, study, identifier("STUDY", StudyInstanceUID="", PatientName="DOE*"))

    assert final.Status == 0xA900
    assert "StudyInstanceUID" in final.ErrorComment
    assert received.bodies == {}


@pytest.mark.parametrize("model", [STUDY_MOVE, PatientRootQueryRetrieveInformationModelMove], ids=["study-root", "patient-root"])
def test_c_move_sends_the_study_to_a_configured_destination(study_on, destination, model: str) -> None:  # noqa: ANN001
    dest_node, received = destination
    node, study = study_on(nodes=[dest_node])
    request = identifier("STUDY", StudyInstanceUID=study.study_uid)
    if model == PatientRootQueryRetrieveInformationModelMove:
        request.PatientID = "PAT001"

    final = c_move(node, request, "DEST", model)

    assert final.Status == 0x0000
    assert final.NumberOfCompletedSuboperations == len(study.sop_uids)
    assert received.syntaxes == study.syntaxes
    assert received.bodies == study.bodies


def test_c_move_to_an_unknown_destination_fails_with_a801(study_on) -> None:  # noqa: ANN001
    node, study = study_on()
    final = c_move(node, identifier("STUDY", StudyInstanceUID=study.study_uid), "NOBODY")
    assert final.Status == 0xA801


def test_c_move_to_a_destination_that_is_down_fails_with_a801(study_on) -> None:  # noqa: ANN001
    down = RemoteNode(name="down", ae_title="DOWN", host="127.0.0.1", port=free_port())
    node, study = study_on(nodes=[down])
    final = c_move(node, identifier("STUDY", StudyInstanceUID=study.study_uid), "DOWN")
    assert final.Status == 0xA801


def test_c_move_of_nothing_succeeds_with_no_sub_operations(study_on, destination) -> None:  # noqa: ANN001
    dest_node, received = destination
    node, _ = study_on(nodes=[dest_node])
    final = c_move(node, identifier("STUDY", StudyInstanceUID=generate_uid()), "DEST")
    assert final.Status == 0x0000
    assert received.bodies == {}


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
def test_c_move_with_a_wildcard_unique_key_fails_with_a_reason(study_on, destination) -> None:  # noqa: ANN001
    dest_node, received = destination
    node, _ = study_on(nodes=[dest_node])
    final = c_move(node, identifier("STUDY", StudyInstanceUID="1.2.*"), "DEST")
    assert final.Status == 0xA900
    assert "wildcard" in final.ErrorComment
    assert received.bodies == {}


def test_c_move_reports_an_instance_whose_file_is_gone_as_failed(study_on, destination) -> None:  # noqa: ANN001
    dest_node, received = destination
    node, study = study_on(nodes=[dest_node])
    (gone,) = node.archive.find(Query(QueryLevel.IMAGE, {"SOPInstanceUID": study.sop_uids[0]}))
    Path(node.archive.storage_dir / gone["_file_path"]).unlink()

    final = c_move(node, identifier("STUDY", StudyInstanceUID=study.study_uid), "DEST")

    assert final.Status == 0xB000  # warning: some sub-operations failed
    assert final.NumberOfFailedSuboperations == 1
    assert final.NumberOfCompletedSuboperations == len(study.sop_uids) - 1
    assert study.sop_uids[0] not in received.bodies
