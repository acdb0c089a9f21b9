"""Slow-loris clients on both ports: a peer that trickles bytes is cut off in bounded time, and others are served meanwhile."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

import httpx
import pytest
from pynetdicom import AE, build_context
from pynetdicom.sop_class import Verification

from tests.fixtures.radpilot import RunningNode
from tests.fixtures.receivers import native_receiver_built, require_native_receiver

TIMEOUT_S = 1.0
CUT_WITHIN_S = 6.0  # the timeout, plus a loaded CI machine's slack


@pytest.fixture
def node(radpilot_factory) -> RunningNode:  # noqa: ANN001
    return radpilot_factory(
        http_header_timeout_s=TIMEOUT_S,
        http_body_idle_timeout_s=TIMEOUT_S,
        dicom_network_timeout=TIMEOUT_S,
        dicom_acse_timeout=TIMEOUT_S,
        dicom_max_pdu_bytes=1024**2,
        dicom_store_port=0 if native_receiver_built() else None,
    )


def dimse_port(node: RunningNode, which: str) -> int:
    """The main DIMSE port (pynetdicom) or the store port (dcmtk)."""
    if which == "dicom":
        return node.dicom_port
    if node.server.store_port is None:
        require_native_receiver()
    return node.server.store_port.port


DIMSE_PORTS = pytest.mark.parametrize("which", ["dicom", "store"])


def trickle_until_cut(sock: socket.socket, byte: bytes = b"x", interval: float = 0.1) -> float:
    """Send one byte every ``interval`` until the peer closes; the seconds that took (fails after 30 s)."""
    started = time.monotonic()
    sock.settimeout(0.05)
    while time.monotonic() - started < 30:
        try:
            sock.sendall(byte)
            if sock.recv(4096) == b"":
                return time.monotonic() - started
        except TimeoutError:
            pass  # nothing answered yet: keep trickling
        except OSError:
            return time.monotonic() - started  # reset or broken pipe: cut off
        time.sleep(interval)
    raise AssertionError("the slow client was never cut off")


def while_loris(attack: Callable[[], float], serve: Callable[[], None]) -> float:
    """Run ``attack`` in a thread and ``serve`` (another client's request) meanwhile; the attack's duration."""
    result: list[float] = []
    thread = threading.Thread(target=lambda: result.append(attack()))
    thread.start()
    time.sleep(0.3)
    started = time.monotonic()
    serve()
    assert time.monotonic() - started < CUT_WITHIN_S, "another client waited for the slow one"
    thread.join(40)
    return result[0]


def http_served(node: RunningNode) -> None:
    assert httpx.get(f"{node.dicomweb_url}/studies", headers=node.headers, timeout=10).status_code in (200, 204)


def echo_served(node: RunningNode, which: str = "dicom") -> None:
    assoc = AE(ae_title="OTHER").associate("127.0.0.1", dimse_port(node, which), [build_context(Verification)], ae_title=node.ae_title)
    assert assoc.is_established
    assert assoc.send_c_echo().Status == 0x0000
    assoc.release()


def test_http_client_trickling_its_headers_is_cut_off_and_others_are_served(node: RunningNode) -> None:
    def attack() -> float:
        with socket.create_connection(("127.0.0.1", node.http_port)) as sock:
            sock.sendall(b"GET /dicomweb/studies HTTP/1.1\r\nHost: x\r\n")
            return trickle_until_cut(sock, b"X")  # a header line that never ends

    assert while_loris(attack, lambda: http_served(node)) < CUT_WITHIN_S


def test_http_connection_that_sends_nothing_is_closed(node: RunningNode) -> None:
    with socket.create_connection(("127.0.0.1", node.http_port)) as sock:
        sock.settimeout(CUT_WITHIN_S + 5)
        started = time.monotonic()
        assert sock.recv(1) == b""
        assert time.monotonic() - started < CUT_WITHIN_S


def test_stow_body_that_stalls_is_refused_with_408_and_nothing_stored(node: RunningNode) -> None:
    head = (
        "POST /dicomweb/studies HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n"
        'Content-Type: multipart/related; type="application/dicom"; boundary=b\r\n'
        + "".join(f"{k}: {v}\r\n" for k, v in node.headers.items())
        + "\r\n"
    )
    with socket.create_connection(("127.0.0.1", node.http_port)) as sock:
        sock.sendall(head.encode() + b"--b\r\nContent-Type: application/dicom\r\n\r\nDICM")
        sock.settimeout(CUT_WITHIN_S + 5)
        started = time.monotonic()
        answer = sock.recv(4096)
        assert time.monotonic() - started < CUT_WITHIN_S
        while not answer.endswith(b"}"):  # the JSON body may follow the head in a second segment
            more = sock.recv(4096)
            if not more:
                break
            answer += more
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"sent nothing for 1 s" in answer
    assert node.archive.instance_count() == 0


@DIMSE_PORTS
def test_dimse_peer_trickling_its_association_request_is_cut_off_and_others_are_served(node: RunningNode, which: str) -> None:
    port = dimse_port(node, which)

    def attack() -> float:
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(b"\x01\x00\x00\x00\x00\xc8")  # A-ASSOCIATE-RQ of 200 bytes ...
            return trickle_until_cut(sock, b"\x00")  # ... sent one byte at a time

    assert while_loris(attack, lambda: echo_served(node, which)) < CUT_WITHIN_S


@DIMSE_PORTS
def test_dimse_peer_trickling_a_dataset_pdu_is_cut_off(node: RunningNode, which: str) -> None:
    assoc = AE(ae_title="LORIS").associate("127.0.0.1", dimse_port(node, which), [build_context(Verification)], ae_title=node.ae_title)
    assert assoc.is_established
    sock = assoc.dul.socket.socket
    sock.sendall(b"\x04\x00\x00\x00\x04\x00")  # P-DATA-TF of 1 KiB, then a trickle
    took = trickle_until_cut(sock, b"\x00")
    assoc.abort()
    assert took < CUT_WITHIN_S
    echo_served(node, which)


@DIMSE_PORTS
def test_dimse_pdu_longer_than_announced_ends_the_association_without_reading_it(node: RunningNode, which: str) -> None:
    assoc = AE(ae_title="HUGE").associate("127.0.0.1", dimse_port(node, which), [build_context(Verification)], ae_title=node.ae_title)
    assert assoc.is_established
    # The store port announces dcmtk's ceiling of 128 KiB, under the setting's 1 MiB.
    assert assoc.acceptor.maximum_length == (1024**2 if which == "dicom" else 128 * 1024), "the node announces its limit"
    sock = assoc.dul.socket.socket
    sock.sendall(b"\x04\x00\xff\xff\xff\xf0" + bytes(1024))  # declares a 4 GiB PDU
    sock.settimeout(CUT_WITHIN_S + 5)
    started = time.monotonic()
    try:
        while sock.recv(65536):
            pass  # an A-ABORT may come first
    except OSError:
        pass
    assert time.monotonic() - started < CUT_WITHIN_S
    assoc.abort()
    echo_served(node, which)
