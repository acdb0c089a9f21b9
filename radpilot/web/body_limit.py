"""A limit on the size of every HTTP request body, refused with 413 before it is all read.

FastAPI reads a JSON or form body whole into memory; without a limit one request may
hold gigabytes. STOW-RS, whose bodies are studies, has its own larger limit
(``max_stow_bytes``) and spools to disk: its prefix is left to it.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger(__name__)


class BodyLimitMiddleware:
    """Answer 413 to a request whose body is (declared or found to be) longer than ``limit`` bytes."""

    def __init__(self, app: ASGIApp, limit: int, exempt_prefixes: tuple[str, ...] = ()) -> None:
        self.app = app
        self.limit = limit
        self.exempt_prefixes = exempt_prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or str(scope.get("path", "")).startswith(self.exempt_prefixes):
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            await self._refuse(scope, send, f"the request body ({int(declared)} bytes) exceeds the limit of {self.limit} bytes")
            return
        received = 0
        too_long = False
        started = False

        async def counting_receive() -> Message:
            nonlocal received, too_long
            if too_long:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    too_long = True
                    return {"type": "http.disconnect"}  # the route stops reading; the answer is ours
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if too_long:
                # The route answered the cut-off body its own way (FastAPI: 400, cannot parse): answer 413 instead.
                if not started:
                    started = True
                    await self._refuse(scope, send, f"the request body exceeds the limit of {self.limit} bytes")
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except ClientDisconnect:
            if not too_long:
                raise
        if too_long and not started:
            await self._refuse(scope, send, f"the request body exceeds the limit of {self.limit} bytes")

    @staticmethod
    async def _refuse(scope: Scope, send: Send, detail: str) -> None:
        logger.warning("request body too large", extra={"path": scope.get("path"), "reason": detail})
        body = json.dumps({"detail": detail}).encode()
        headers: list[Any] = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})
