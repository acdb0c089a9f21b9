"""HL7 v2 over MLLP: send one message, read the acknowledgement, say whether it was accepted.

MLLP (HL7 v2 Minimal Lower Layer Protocol) frames a message as ``<VT> message <FS><CR>``.
The receiver answers with an ACK whose MSA-1 is AA (accepted), AE (error) or AR (rejected),
or CA/CE/CR in enhanced mode. Only AA and CA count as delivered; every other answer, a
malformed or missing answer and a connection failure raise :class:`MllpError` with the
reason, so the outbox retries and finally reports the delivery as failed.
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass

from hl7apy.core import Message
from hl7apy.exceptions import HL7apyException
from hl7apy.parser import parse_message

logger = logging.getLogger(__name__)

START_BLOCK, END_BLOCK, CARRIAGE_RETURN = b"\x0b", b"\x1c", b"\x0d"
MAX_FRAME_BYTES = 1024 * 1024  # an ACK is a few hundred bytes; a peer that sends more is not answering MLLP
ACCEPTED_CODES = ("AA", "CA")


class MllpError(RuntimeError):
    """A message was not accepted: connection failure, malformed answer, or a negative acknowledgement."""


@dataclass(frozen=True)
class Acknowledgement:
    """MSA of an ACK: the code (AA, AE, AR, CA, CE, CR), the acknowledged control id and the peer's text."""

    code: str
    control_id: str
    text: str = ""

    @property
    def accepted(self) -> bool:
        return self.code in ACCEPTED_CODES


def frame(message: bytes) -> bytes:
    """``message`` wrapped in the MLLP start and end blocks."""
    if START_BLOCK in message or END_BLOCK in message:
        raise ValueError("an HL7 message may not contain the MLLP block characters 0x0B or 0x1C")
    return START_BLOCK + message + END_BLOCK + CARRIAGE_RETURN


def read_frame(sock: socket.socket, *, max_bytes: int = MAX_FRAME_BYTES) -> bytes:
    """One MLLP frame's content read from ``sock``; MllpError when the bytes are not a frame."""
    buffer = bytearray()
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            if not buffer:
                raise MllpError("the peer closed the connection without an answer")
            raise MllpError(f"the peer closed the connection inside an MLLP frame ({len(buffer)} bytes, no end block)")
        buffer.extend(chunk)
        if buffer[:1] != START_BLOCK:
            raise MllpError(f"the answer does not start with the MLLP start block 0x0B (got {bytes(buffer[:1])!r})")
        end = buffer.find(END_BLOCK + CARRIAGE_RETURN)
        if end >= 0:
            return bytes(buffer[1:end])
        if len(buffer) > max_bytes:
            raise MllpError(f"the answer is longer than {max_bytes} bytes without an MLLP end block")


def parse_ack(content: bytes) -> Acknowledgement:
    """The MSA of an HL7 v2 ACK; MllpError naming the problem when ``content`` is not one."""
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MllpError(f"the answer is not UTF-8 text: {exc}") from exc
    text = text.replace("\r\n", "\r").replace("\n", "\r").strip("\r")
    if not text.startswith("MSH"):
        raise MllpError(f"the answer is not an HL7 message (it starts with {text[:20]!r})")
    try:
        message = parse_message(text, find_groups=False)
    except (HL7apyException, ValueError, IndexError, KeyError) as exc:
        raise MllpError(f"the answer is not a valid HL7 v2 message: {exc}") from exc
    msa = [segment for segment in message.children if segment.name == "MSA"]
    if not msa:
        raise MllpError("the answer has no MSA segment: it is not an acknowledgement")
    code = msa[0].msa_1.value if msa[0].msa_1 else ""
    if code not in ("AA", "AE", "AR", "CA", "CE", "CR"):
        raise MllpError(f"the answer's MSA-1 is {code!r}: expected AA, AE, AR, CA, CE or CR")
    control_id = msa[0].msa_2.value if msa[0].msa_2 else ""
    error_text = msa[0].msa_3.value if msa[0].children and len(msa[0].children) >= 3 else ""
    errors = [segment for segment in message.children if segment.name == "ERR"]
    if errors and not error_text:
        error_text = errors[0].value.replace("|", " ").strip()
    return Acknowledgement(code=code, control_id=control_id, text=error_text)


def control_id_of(message: bytes) -> str:
    """MSH-10 (message control id) of an HL7 v2 message."""
    header = message.split(b"\r", 1)[0].decode("utf-8", "replace")
    if not header.startswith("MSH") or len(header) < 4:
        raise ValueError("an HL7 v2 message starts with its MSH segment")
    fields = header.split(header[3])
    return fields[9] if len(fields) > 9 else ""


def send_message(host: str, port: int, message: bytes | Message, *, timeout_s: float = 30.0) -> Acknowledgement:
    """Send one HL7 v2 message over MLLP and return the peer's acknowledgement if it accepted it.

    Raises
    ------
    MllpError
        When the peer cannot be reached, answers something that is not an ACK, acknowledges
        another message, or answers AE/AR/CE/CR (the message says which and the peer's text).
    """
    data = message.to_er7().encode("utf-8") if isinstance(message, Message) else bytes(message)
    expected = control_id_of(data)
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.sendall(frame(data))
            ack = parse_ack(read_frame(sock))
    except OSError as exc:
        raise MllpError(f"MLLP peer {host}:{port} could not be reached or stopped answering: {exc}") from exc
    if expected and ack.control_id != expected:
        raise MllpError(f"MLLP peer {host}:{port} acknowledged message {ack.control_id!r}, not {expected!r}")
    if not ack.accepted:
        raise MllpError(f"MLLP peer {host}:{port} answered {ack.code}" + (f": {ack.text}" if ack.text else ""))
    logger.info("HL7 message accepted", extra={"peer": f"{host}:{port}", "control_id": expected, "ack": ack.code})
    return ack
