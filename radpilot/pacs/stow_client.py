"""A minimal STOW-RS client (PS3.18 10.5) used to deliver results to a DICOMweb server."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from pathlib import Path

import httpx

FAILED_SOP_SEQUENCE = "00081198"
FAILURE_REASON = "00081197"
REFERENCED_SOP_INSTANCE_UID = "00081155"


class StowError(RuntimeError):
    """The server did not store every instance; the message says what it answered."""


def _body(files: Iterable[Path], boundary: str) -> bytes:
    parts = []
    for path in files:
        parts.append(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + Path(path).read_bytes() + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode()


def stow(base_url: str, files: list[Path], *, timeout_s: float = 120.0) -> dict:
    """POST ``files`` to ``{base_url}/studies``; raise StowError unless every instance was stored."""
    boundary = uuid.uuid4().hex
    headers = {
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
        "Accept": "application/dicom+json",
    }
    try:
        response = httpx.post(f"{base_url.rstrip('/')}/studies", content=_body(files, boundary), headers=headers, timeout=timeout_s)
    except httpx.HTTPError as exc:
        raise StowError(f"STOW-RS to {base_url} failed: {exc}") from exc
    try:
        answer = response.json() if response.content else {}
    except json.JSONDecodeError:
        answer = {}
    failed = (answer or {}).get(FAILED_SOP_SEQUENCE, {}).get("Value", []) if isinstance(answer, dict) else []
    if response.status_code != 200 or failed:
        reasons = [
            f"{item.get(REFERENCED_SOP_INSTANCE_UID, {}).get('Value', ['?'])[0]}: "
            f"0x{int(item.get(FAILURE_REASON, {}).get('Value', [0])[0]):04X}"
            for item in failed
        ]
        detail = "; ".join(reasons) or response.text[:300]
        raise StowError(f"STOW-RS to {base_url} answered HTTP {response.status_code}: {detail}")
    return answer
