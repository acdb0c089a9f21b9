"""The store port (``dicom_store_port``): what only it does, beside the C-STORE semantics that
tests/unit/test_dimse_store.py checks on both receivers."""

from __future__ import annotations

import threading

import pytest
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, build_context
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.sop_class import CTImageStorage, StudyRootQueryRetrieveInformationModelFind, Verification

from radpilot.archive.query import Query, QueryLevel
from radpilot.config import AllowedPeer
from radpilot.dicom.part10 import dataset_offset
from radpilot.pacs import native_store
from radpilot.security.audit import events_since
from tests.factories import make_ct_dataset, make_ct_series, to_part10_bytes
from tests.fixtures.receivers import require_native_receiver
from tests.helpers import wait_for
from tests.unit.test_dimse_store import partial_store_pdus, stored_files

CALLING_AE_NOT_RECOGNISED = 0x03


@pytest.fixture
def store_node(radpilot_factory):  # noqa: ANN001, ANN201
    """Start a node with a store port: ``store_node(**settings)``."""
    require_native_receiver()

    def _start(**overrides):  # noqa: ANN003, ANN202
        node = radpilot_factory(dicom_store_port=0, **overrides)
        node.store_port = node.server.store_port.port
        return node

    return _start


def associate(node, calling_ae: str = "MODALITY", contexts=None):  # noqa: ANN001, ANN201
    return AE(ae_title=calling_ae).associate(
        "127.0.0.1", node.store_port, contexts=contexts or [build_context(CTImageStorage), build_context(Verification)], ae_title="RADPILOT"
    )


def test_listed_peer_stores_and_an_unlisted_one_is_rejected_and_audited(store_node) -> None:  # noqa: ANN001
    node = store_node(allowed_peers=[AllowedPeer(ae_title="MODALITY", host="127.0.0.1")])
    (ds,) = make_ct_series(1)

    intruder = associate(node, "INTRUDER")
    assert intruder.is_rejected
    rejection = intruder.acceptor.primitive
    assert (rejection.result, rejection.result_source, rejection.diagnostic) == (0x01, 0x01, CALLING_AE_NOT_RECOGNISED)

    assoc = associate(node, "MODALITY")
    assert assoc.is_established
    assert assoc.send_c_store(ds).Status == 0x0000
    assoc.release()

    def actions() -> list[tuple[str, str, str]]:
        return [(e.action, e.who, e.outcome) for e in events_since(node.archive.engine)]

    wait_for(lambda: ("dimse.store", "MODALITY", "success") in actions(), 10.0, "the store audit row (written when the association ends)")
    assert actions() == [("dimse.associate.rejected", "INTRUDER", "refused"), ("dimse.store", "MODALITY", "success")]
    store = [e for e in events_since(node.archive.engine) if e.action == "dimse.store"][0]
    assert store.target == ds.StudyInstanceUID
    assert store.source.startswith("MODALITY@127.0.0.1:")
    assert node.archive.instance_count() == 1


def test_query_retrieve_is_not_offered_on_the_store_port(store_node) -> None:  # noqa: ANN001
    node = store_node()
    assoc = associate(node, contexts=[build_context(StudyRootQueryRetrieveInformationModelFind), build_context(Verification)])
    try:
        assert assoc.is_established
        assert [c.abstract_syntax for c in assoc.accepted_contexts] == [Verification]
        assert [c.abstract_syntax for c in assoc.rejected_contexts] == [StudyRootQueryRetrieveInformationModelFind]
    finally:
        assoc.release()


@pytest.mark.parametrize("proposed", [[ExplicitVRLittleEndian, ImplicitVRLittleEndian], [ImplicitVRLittleEndian, ExplicitVRLittleEndian]])
def test_the_requestors_preferred_transfer_syntax_is_accepted_and_kept(store_node, proposed: list[str]) -> None:  # noqa: ANN001
    node = store_node()
    ds = make_ct_dataset()
    assoc = associate(node, contexts=[build_context(CTImageStorage, proposed)])
    assert assoc.accepted_contexts[0].transfer_syntax[0] == proposed[0]
    assert assoc.send_c_store(ds).Status == 0x0000
    assoc.release()

    (match,) = node.archive.find(Query(QueryLevel.IMAGE, {"SOPInstanceUID": ds.SOPInstanceUID}))
    assert match["_transfer_syntax_uid"] == proposed[0]


def test_parallel_associations_store_every_instance_exactly_once(store_node) -> None:  # noqa: ANN001
    node = store_node()
    series = make_ct_series(48)
    statuses: list[int] = []
    lock = threading.Lock()

    def sender(part: list) -> None:  # noqa: ANN001
        assoc = associate(node)
        for ds in part:
            status = assoc.send_c_store(ds).Status
            with lock:
                statuses.append(status)
        assoc.release()

    # Each instance is sent by two associations at once: the second copy is an identical resend.
    parts = [series[i::4] for i in range(4)] + [series[i::4] for i in range(4)]
    threads = [threading.Thread(target=sender, args=(part,)) for part in parts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert statuses == [0x0000] * 96
    assert node.archive.instance_count() == 48
    assert len(stored_files(node.archive)) == 48


def test_instances_of_different_sizes_on_one_association_are_each_kept_as_sent(store_node) -> None:  # noqa: ANN001
    # The receiver reuses one buffer per association: a smaller instance after a larger one must not keep its tail.
    node = store_node()
    sizes = [(256, 256), (32, 32), (128, 64), (256, 256), (16, 16)]
    sent = [make_ct_dataset(rows=rows, columns=columns) for rows, columns in sizes]
    assoc = associate(node, contexts=[build_context(CTImageStorage, ExplicitVRLittleEndian)])  # sent as encoded here
    assert [assoc.send_c_store(ds).Status for ds in sent] == [0x0000] * len(sent)
    assoc.release()

    for ds in sent:
        (path,) = [p for p in stored_files(node.archive) if p.name.startswith(f"{ds.SOPInstanceUID}.")]
        kept, encoded = path.read_bytes(), to_part10_bytes(ds)
        assert kept[dataset_offset(kept) :] == encoded[dataset_offset(encoded) :]


def test_an_odd_length_fragment_ends_the_association_and_stores_nothing(store_node) -> None:  # noqa: ANN001
    # PS3.8 Annex E: fragments are even; dcmtk aborts on an odd one. Nothing of that instance may be kept.
    node = store_node()
    ds = make_ct_dataset(rows=256, columns=256)
    assoc = associate(node)
    context_id = assoc.accepted_contexts[0].context_id
    pdus = partial_store_pdus(ds, context_id, 16382)
    odd = P_DATA()
    odd.presentation_data_value_list = [[context_id, b"\x02" + b"\x00" * 7]]  # last dataset fragment of 7 bytes
    for pdu in [*pdus, odd]:
        assoc.dul.send_pdu(pdu)
    wait_for(lambda: not assoc.is_established, 10.0, "the store port to end the association")

    check = associate(node)
    assert check.send_c_echo().Status == 0x0000
    check.release()
    assert node.archive.instance_count() == 0
    assert stored_files(node.archive) == []


def test_a_dataset_over_the_size_limit_ends_the_association_and_stores_nothing(store_node) -> None:  # noqa: ANN001
    node = store_node(dicom_max_dataset_bytes=64 * 1024)
    small, big = make_ct_dataset(rows=64, columns=64), make_ct_dataset(rows=256, columns=256)  # 8 KiB and 128 KiB of pixels
    assoc = associate(node)
    assert assoc.send_c_store(small).Status == 0x0000
    response = assoc.send_c_store(big)
    assert response is None or "Status" not in response  # no answer: the association was aborted
    wait_for(lambda: not assoc.is_established, 10.0, "the store port to end the association")
    assert node.archive.instance_count() == 1


def test_without_the_native_receiver_the_start_names_what_builds_it(radpilot_factory, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    monkeypatch.setattr(native_store, "NATIVE_MODULE", "radpilot.pacs._no_such_receiver")
    with pytest.raises(native_store.NativeReceiverMissing, match=r"dicom_store_port.*make setup.*libdcmtk-dev"):
        radpilot_factory(dicom_store_port=0)
