"""The MLLP client: acknowledgements are parsed, malformed answers and negative ACKs raise errors naming the problem."""

from __future__ import annotations

import socket
import threading

import pytest

from radpilot.pacs.mllp import MllpError, control_id_of, frame, parse_ack, send_message

MESSAGE = b"MSH|^~\\&|RADPILOT|RAD|RIS|H|20261203120000||ORU^R01^ORU_R01|CTL42|P|2.5.1\rPID|1||P1^^^^MR"


def _ack(code: str, control: str = "CTL42", text: str = "") -> bytes:
    return b"MSH|^~\\&|RIS|H|RADPILOT|RAD|20261203120000||ACK^R01^ACK|A1|P|2.5.1\rMSA|" + f"{code}|{control}|{text}".encode()


def test_accepted_and_negative_acknowledgements_are_read() -> None:
    assert parse_ack(_ack("AA")).accepted
    ack = parse_ack(_ack("AE", text="unknown patient"))
    assert (ack.code, ack.control_id, ack.text, ack.accepted) == ("AE", "CTL42", "unknown patient", False)
    assert control_id_of(MESSAGE) == "CTL42"


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        (b"HELLO", "not an HL7 message"),
        (b"\xff\xfe", "not UTF-8"),
        (b"MSH|^~\\&|RIS|H|||2026||ACK|1|P|2.5.1\rPID|1", "no MSA segment"),
        (b"MSH|^~\\&|RIS|H|||2026||ACK|1|P|2.5.1\rMSA|XX|CTL42", "MSA-1 is 'XX'"),
    ],
)
def test_a_malformed_acknowledgement_is_refused_naming_the_problem(answer: bytes, problem: str) -> None:
    with pytest.raises(MllpError, match=problem):
        parse_ack(answer)


def _serve_once(reply: bytes) -> int:
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def run() -> None:
        connection, _ = server.accept()
        with connection:
            connection.recv(65536)
            if reply:
                connection.sendall(reply)
        server.close()

    threading.Thread(target=run, daemon=True).start()
    return port


@pytest.mark.parametrize(
    ("reply", "problem"),
    [
        (b"", "closed the connection without an answer"),
        (b"garbage", "does not start with the MLLP start block"),
        (b"\x0b" + _ack("AA"), "inside an MLLP frame"),
        (frame(_ack("AA", control="OTHER")), "acknowledged message 'OTHER'"),
        (frame(_ack("AR", text="not allowed")), "answered AR: not allowed"),
    ],
)
def test_send_message_raises_on_bad_or_negative_answers(reply: bytes, problem: str) -> None:
    port = _serve_once(reply)
    with pytest.raises(MllpError, match=problem):
        send_message("127.0.0.1", port, MESSAGE, timeout_s=5)


def test_send_message_returns_the_acceptance() -> None:
    port = _serve_once(frame(_ack("AA")))
    assert send_message("127.0.0.1", port, MESSAGE, timeout_s=5).code == "AA"


def test_an_unreachable_peer_is_an_error_naming_it() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(MllpError, match=f"127.0.0.1:{port} could not be reached"):
        send_message("127.0.0.1", port, MESSAGE, timeout_s=2)


def test_a_message_with_mllp_block_characters_is_refused() -> None:
    with pytest.raises(ValueError, match="block characters"):
        frame(b"MSH|\x1c")
