"""The researcher's view: no patient name, ID or birth date leaves the server for that role.

:class:`ResearcherFilter` sits inside the authentication middleware. For a principal who
may not see identities (:attr:`Principal.sees_identities`) it

* refuses a query that matches on a patient identity (QIDO-RS ``PatientName=...``,
  ``/api/studies?patient_id=...``): the answer would confirm who a study belongs to;
* rewrites every JSON answer (``/api``, QIDO-RS, WADO-RS metadata: DICOM JSON and the
  reading room's ``patient_*`` fields) and every Part 10 file (WADO-RS instances, single
  or multipart) with :class:`radpilot.security.pseudonyms.Pseudonymizer`;
* lets frames, rendered images and bulk data pass untouched (they hold pixels only).

Pages render de-identified data themselves (see :func:`deidentified`), so an HTML answer
passes through as the page wrote it. Other principals' requests pass through untouched.
"""

from __future__ import annotations

import json
import logging
from collections.abc import MutableMapping
from typing import Any
from urllib.parse import parse_qsl

from fastapi import Request
from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import JSONResponse

from radpilot.pacs.multipart import MultipartError, parse_media_type, parse_multipart, stream_multipart
from radpilot.security.principal import Principal
from radpilot.security.pseudonyms import IDENTITY_QUERY_KEYS, Pseudonymizer
from radpilot.web.auth import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger(__name__)

JSON_TYPES = ("application/json", "application/dicom+json")
DICOM_TYPE = "application/dicom"


def deidentified(request: Request, value: Any) -> Any:
    """``value`` (the reading room's JSON: dicts, lists) as the request's principal may see it."""
    principal = getattr(request.state, "principal", None)
    pseudonymizer = getattr(request.app.state, "pseudonymizer", None)
    if isinstance(principal, Principal) and not principal.sees_identities:
        if pseudonymizer is None:
            raise RuntimeError("no pseudonymizer configured for a researcher's request")
        return pseudonymizer.api_json(value)
    return value


def _identity_keys_in(query_string: bytes) -> list[str]:
    keys = []
    for key, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True):
        if key in IDENTITY_QUERY_KEYS and value.strip():
            keys.append(key)
    return keys


class ResearcherFilter:
    """Pure ASGI middleware; a no-op for principals who see identities."""

    def __init__(self, app: ASGIApp, *, pseudonymizer: Pseudonymizer) -> None:
        self.app = app
        self.pseudonymizer = pseudonymizer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        principal = scope.get("state", {}).get("principal") if scope["type"] == "http" else None
        if not isinstance(principal, Principal) or principal.sees_identities:
            await self.app(scope, receive, send)
            return
        keys = _identity_keys_in(scope.get("query_string", b""))
        if keys:
            detail = f"role {principal.role.value!r} sees de-identified data only and may not search by {', '.join(sorted(set(keys)))}"
            await JSONResponse({"detail": detail}, status_code=403)(scope, receive, send)
            return
        await self.app(scope, receive, _RewritingSend(send, self.pseudonymizer))


class _RewritingSend:
    """Buffers a JSON or DICOM answer, rewrites it, and sends it as one body; passes anything else on as it streams."""

    def __init__(self, send: Send, pseudonymizer: Pseudonymizer) -> None:
        self.send = send
        self.pseudonymizer = pseudonymizer
        self.start: Message | None = None
        self.kind = ""
        self.content_type = ""
        self.body = bytearray()

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = Headers(raw=message.get("headers", []))
            self.content_type = headers.get("content-type", "")
            self.kind = _kind(self.content_type)
            if not self.kind:
                await self.send(message)
                return
            self.start = message
            return
        if message["type"] != "http.response.body" or not self.kind:
            await self.send(message)
            return
        self.body.extend(message.get("body", b""))
        if message.get("more_body", False):
            return
        body = self._rewrite(bytes(self.body))
        assert self.start is not None
        start: MutableMapping[str, Any] = dict(self.start)
        headers = MutableHeaders(raw=list(self.start.get("headers", [])))
        headers["content-length"] = str(len(body))
        if self.kind == "multipart":
            headers["content-type"] = self.content_type
        start["headers"] = headers.raw
        await self.send(start)
        await self.send({"type": "http.response.body", "body": body, "more_body": False})

    def _rewrite(self, body: bytes) -> bytes:
        if not body:
            return body
        if self.kind == "json":
            try:
                document = json.loads(body)
            except ValueError:
                # Not JSON after all: nothing identifying can be told apart in it, so it is withheld.
                return b'{"detail": "this answer cannot be de-identified"}'
            return json.dumps(self.pseudonymizer.api_json(document), ensure_ascii=False).encode("utf-8")
        if self.kind == "dicom":
            return self.pseudonymizer.part10(body)
        media = parse_media_type(self.content_type)
        boundary = media.params["boundary"]
        parts = [(p.content_type or DICOM_TYPE, p.content(body)) for p in parse_multipart(body, boundary)]
        rewritten = [(ctype, [self.pseudonymizer.part10(data)]) for ctype, data in parts]
        return b"".join(stream_multipart(boundary, rewritten))


def _kind(content_type: str) -> str:
    """What must be rewritten in an answer of this type: json, dicom, multipart (of DICOM files), or nothing."""
    lowered = content_type.lower()
    main = lowered.split(";", 1)[0].strip()
    if main in JSON_TYPES:
        return "json"
    if main == DICOM_TYPE:
        return "dicom"
    if main == "multipart/related":
        try:
            media = parse_media_type(content_type)
        except MultipartError:
            return ""
        if media.params.get("type", "").strip('"').lower() == DICOM_TYPE and "boundary" in media.params:
            return "multipart"
    return ""
