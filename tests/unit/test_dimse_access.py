"""Who may associate with RadPilot, and how its sockets are set up."""

from __future__ import annotations

import socket

import pytest
from pynetdicom import AE, build_context
from pynetdicom.sop_class import Verification

from radpilot.config import AllowedPeer, RemoteNode
from radpilot.pacs import scu

CALLING_AE_NOT_RECOGNISED = 0x03


def request_association(node, calling_ae: str, called_ae: str = "RADPILOT"):  # noqa: ANN001, ANN201
    ae = AE(ae_title=calling_ae)
    return ae.associate("127.0.0.1", node.dicom_port, contexts=[build_context(Verification)], ae_title=called_ae)


@pytest.fixture
def guarded_node(radpilot_factory):  # noqa: ANN001, ANN201
    return radpilot_factory(
        allowed_peers=[
            AllowedPeer(ae_title="MODALITY"),
            AllowedPeer(ae_title="PACS", host="127.0.0.1"),
            AllowedPeer(ae_title="FARAWAY", host="10.11.12.13"),
        ]
    )


@pytest.mark.parametrize("calling_ae", ["MODALITY", "PACS"])
def test_listed_peer_is_accepted(guarded_node, calling_ae: str) -> None:  # noqa: ANN001
    assoc = request_association(guarded_node, calling_ae)
    try:
        assert assoc.is_established
        assert assoc.send_c_echo().Status == 0x0000
    finally:
        assoc.release()


@pytest.mark.parametrize(
    "calling_ae",
    ["STRANGER", "modality", "FARAWAY"],
    ids=["unknown-ae-title", "ae-title-case-differs", "listed-ae-title-from-another-host"],
)
def test_unlisted_peer_is_rejected_as_calling_ae_not_recognised(guarded_node, calling_ae: str) -> None:  # noqa: ANN001
    assoc = request_association(guarded_node, calling_ae)

    assert assoc.is_rejected
    rejection = assoc.acceptor.primitive
    assert (rejection.result, rejection.result_source, rejection.diagnostic) == (0x01, 0x01, CALLING_AE_NOT_RECOGNISED)
    assert guarded_node.archive.instance_count() == 0


def test_without_allow_list_any_peer_and_any_called_ae_title_is_accepted(radpilot) -> None:  # noqa: ANN001
    assoc = request_association(radpilot, "WHOEVER", called_ae="NOT-RADPILOT")
    try:
        assert assoc.is_established
    finally:
        assoc.release()


def test_rejection_reaches_scu_functions_as_a_clear_error(guarded_node, radpilot) -> None:  # noqa: ANN001
    settings = radpilot.settings.model_copy(update={"ae_title": "STRANGER"})
    node = RemoteNode(name="guarded", ae_title="RADPILOT", host="127.0.0.1", port=guarded_node.dicom_port)

    with pytest.raises(scu.AssociationError, match=r"'guarded'.*Calling AE title not recognised.*STRANGER"):
        scu.echo(settings, node)


def test_accepted_and_outgoing_sockets_have_tcp_nodelay(radpilot) -> None:  # noqa: ANN001
    node = RemoteNode(name="self", ae_title="RADPILOT", host="127.0.0.1", port=radpilot.dicom_port)
    with scu.associate(radpilot.settings, node, [build_context(Verification)]) as assoc:
        outgoing = assoc.dul.socket.socket
        assert outgoing.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        (accepted,) = radpilot.server.dimse._server.active_associations
        assert accepted.dul.socket.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
