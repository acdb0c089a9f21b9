"""Every DIMSE access is audited with the peer's AE title and address, in the hash chain."""

from __future__ import annotations

from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, build_context
from pynetdicom.sop_class import CTImageStorage, StudyRootQueryRetrieveInformationModelFind

from radpilot.config import AllowedPeer
from radpilot.security.audit import events_since, verify_chain
from tests.factories import make_ct_series
from tests.helpers import wait_for
from tests.unit.test_dimse_retrieve import c_get, c_move, destination, identifier, study_on  # noqa: F401 - fixtures


def _actions(node) -> list[tuple[str, str, str, str]]:  # noqa: ANN001
    return [(e.action, e.who, e.target, e.outcome) for e in events_since(node.archive.engine)]


def test_store_find_get_move_and_rejection_are_audited_with_peer_and_outcome(study_on, destination) -> None:  # noqa: ANN001, F811 - fixtures
    dest, _ = destination
    node, study = study_on(nodes=[dest])
    series = make_ct_series(2)
    ae = AE(ae_title="CT01")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", node.dicom_port, ae_title=node.ae_title)
    assert assoc.is_established
    for ds in series:
        assert assoc.send_c_store(ds).Status == 0x0000
    assoc.release()

    finder = AE(ae_title="FINDSCU")
    assoc = finder.associate("127.0.0.1", node.dicom_port, contexts=[build_context(StudyRootQueryRetrieveInformationModelFind)])
    request = identifier("STUDY", StudyInstanceUID=study.study_uid)
    assert len(list(assoc.send_c_find(request, StudyRootQueryRetrieveInformationModelFind))) == 2
    assoc.release()
    c_get(node, study, identifier("STUDY", StudyInstanceUID=study.study_uid))
    c_move(node, identifier("STUDY", StudyInstanceUID=study.study_uid), "DEST")
    c_move(node, identifier("STUDY", StudyInstanceUID=study.study_uid), "NOWHERE")

    wait_for(lambda: any(a[0] == "dimse.store" for a in _actions(node)), 10.0, "the store audit row (written when the association ends)")
    events = events_since(node.archive.engine)
    store = next(e for e in events if e.action == "dimse.store")
    assert (store.who, store.target, store.outcome) == ("CT01", str(series[0].StudyInstanceUID), "success")
    assert store.details == {"stored": 2, "refused": 0} and store.source.startswith("CT01@127.0.0.1:")
    find = next(e for e in events if e.action == "dimse.find")
    assert find.who == "FINDSCU" and find.target == study.study_uid and find.details["matches"] == 1
    get = next(e for e in events if e.action == "dimse.get")
    assert get.who == "GETSCU" and get.target == study.study_uid and get.details["instances"] == len(study.sop_uids)
    moves = [e for e in events if e.action == "dimse.move"]
    assert [(m.outcome, m.details.get("destination")) for m in moves] == [("success", "DEST"), ("refused", None)]
    assert verify_chain(node.archive.engine).ok


def test_a_rejected_peer_is_audited(radpilot_factory) -> None:  # noqa: ANN001
    node = radpilot_factory(allowed_peers=[AllowedPeer(ae_title="PACS")])
    assoc = AE(ae_title="INTRUDER").associate("127.0.0.1", node.dicom_port, contexts=[build_context("1.2.840.10008.1.1")])
    assert assoc.is_rejected
    events = events_since(node.archive.engine)
    assert [(e.action, e.who, e.outcome) for e in events] == [("dimse.associate.rejected", "INTRUDER", "refused")]
    assert events[0].source.startswith("INTRUDER@127.0.0.1:")
