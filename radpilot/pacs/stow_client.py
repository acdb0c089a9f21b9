"""A minimal STOW-RS client (PS3.18 10.5) used to deliver results to a DICOMweb server."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from radpilot.pacs.multipart import file_chunks, multipart_length, new_boundary, stream_multipart

APPLICATION_DICOM = "application/dicom"
FAILED_SOP_SEQUENCE = "00081198"
FAILURE_REASON = "00081197"
REFERENCED_SOP_INSTANCE_UID = "00081155"


class StowError(RuntimeError):
    """The server did not store every instance; the message says what it answered."""


def stow(base_url: str, files: list[Path], *, timeout_s: float = 120.0) -> dict:
    """POST ``files`` to ``{base_url}/studies``; raise StowError unless every instance was stored.

    The body is streamed, a file at a time, with its Content-Length declared up front.
    """
    paths = [Path(path) for path in files]
    boundary = new_boundary()
    length = multipart_length(boundary, [(APPLICATION_DICOM, path.stat().st_size) for path in paths])
    headers = {
        "Content-Type": f'multipart/related; type="{APPLICATION_DICOM}"; boundary={boundary}',
        "Content-Length": str(length),
        "Accept": "application/dicom+json",
    }
    body = stream_multipart(boundary, ((APPLICATION_DICOM, file_chunks(path)) for path in paths))
    try:
        response = httpx.post(f"{base_url.rstrip('/')}/studies", content=body, headers=headers, timeout=timeout_s)
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
