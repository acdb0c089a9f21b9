"""A minimal STOW-RS client (PS3.18 10.5) used to deliver results to a DICOMweb server."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx

from radpilot.pacs.multipart import file_chunks, multipart_length, new_boundary, stream_multipart

APPLICATION_DICOM = "application/dicom"
FAILED_SOP_SEQUENCE = "00081198"
FAILURE_REASON = "00081197"
REFERENCED_SOP_INSTANCE_UID = "00081155"
# Answers worth another try: the server or a proxy in front of it is busy or restarting.
TRANSIENT_STATUS = {408, 429, 500, 502, 503, 504}

logger = logging.getLogger(__name__)


class StowError(RuntimeError):
    """The server did not store every instance; the message says what it answered.

    ``failed`` maps each SOP Instance UID the server named in its FailedSOPSequence to its failure reason;
    ``transient`` is true for a connection error or an answer worth retrying (408, 429, 5xx).
    """

    def __init__(self, message: str, *, failed: dict[str, str] | None = None, transient: bool = False) -> None:
        super().__init__(message)
        self.failed = failed or {}
        self.transient = transient


def redact_url(url: str) -> str:
    """``url`` with its user information removed (credentials never reach a manifest, an audit record or a log)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def stow(base_url: str, files: list[Path], *, timeout_s: float = 120.0, headers: dict[str, str] | None = None) -> dict:
    """POST ``files`` to ``{base_url}/studies``; raise StowError unless every instance was stored.

    The body is streamed, a file at a time, with its Content-Length declared up front.
    ``headers`` are added to the request (e.g. ``Authorization``).
    """
    paths = [Path(path) for path in files]
    boundary = new_boundary()
    length = multipart_length(boundary, [(APPLICATION_DICOM, path.stat().st_size) for path in paths])
    extra = headers or {}
    headers = {
        **extra,
        "Content-Type": f'multipart/related; type="{APPLICATION_DICOM}"; boundary={boundary}',
        "Content-Length": str(length),
        "Accept": "application/dicom+json",
    }
    body = stream_multipart(boundary, ((APPLICATION_DICOM, file_chunks(path)) for path in paths))
    try:
        response = httpx.post(f"{base_url.rstrip('/')}/studies", content=body, headers=headers, timeout=timeout_s)
    except httpx.HTTPError as exc:
        raise StowError(f"STOW-RS to {redact_url(base_url)} failed: {exc}", transient=True) from exc
    try:
        answer = response.json() if response.content else {}
    except ValueError:  # not JSON, or not text: the status alone decides
        answer = {}
    sequence = answer.get(FAILED_SOP_SEQUENCE) if isinstance(answer, dict) else None
    failed = sequence.get("Value") if isinstance(sequence, dict) else None
    failed = [item for item in failed if isinstance(item, dict)] if isinstance(failed, list) else []
    if response.status_code != 200 or failed:
        named = {}
        for item in failed:
            try:
                uid = str(item.get(REFERENCED_SOP_INSTANCE_UID, {}).get("Value", ["?"])[0])
                named[uid] = f"0x{int(item.get(FAILURE_REASON, {}).get('Value', [0])[0]):04X}"
            except (AttributeError, IndexError, TypeError, ValueError):
                continue  # a malformed item names nothing; the HTTP status still fails the request
        detail = "; ".join(f"{uid}: {reason}" for uid, reason in named.items()) or response.text[:300]
        raise StowError(
            f"STOW-RS to {redact_url(base_url)} answered HTTP {response.status_code}: {detail}",
            failed=named,
            transient=response.status_code in TRANSIENT_STATUS and not named,
        )
    return answer


def stow_with_retries(
    base_url: str,
    files: list[Path],
    *,
    attempts: int = 3,
    backoff_s: float = 0.5,
    timeout_s: float = 120.0,
    headers: dict[str, str] | None = None,
) -> dict:
    """:func:`stow`, tried again after a transient failure (connection error, 408, 429, 5xx) with doubling waits.

    Re-sending is safe: a STOW-RS server keeps one copy of a SOP Instance UID sent twice with the same content.
    """
    for attempt in range(1, attempts + 1):
        try:
            return stow(base_url, files, timeout_s=timeout_s, headers=headers)
        except StowError as exc:
            if not exc.transient or attempt == attempts:
                raise
            wait = backoff_s * 2 ** (attempt - 1)
            logger.warning("STOW-RS failed, retrying", extra={"url": base_url, "attempt": attempt, "wait_s": wait, "error": str(exc)})
            time.sleep(wait)
    raise AssertionError("unreachable")  # pragma: no cover
