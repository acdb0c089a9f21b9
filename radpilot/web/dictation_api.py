"""Dictation over the web: a recorded clip (``POST /api/dictation``) and push-to-talk streaming
(``WS /api/dictation/stream``) from the browser microphone.

Streaming protocol: the browser sends binary messages of 16 kHz mono PCM16 (little endian)
while the radiologist holds the talk button, and the text message ``{"type": "end"}`` on
release. The server answers ``{"type": "ready"}`` once the model is loaded,
``{"type": "partial", "text", "audio_s"}`` as it hears more (each re-decodes the recent
audio), and ``{"type": "final", ...}`` with the same fields as ``POST /api/dictation``;
the socket then takes the next utterance. Problems come as ``{"type": "error", "error"}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

import numpy as np
from fastapi import APIRouter, HTTPException, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse

from radpilot.dictation import AudioError, Dictation, LexiconError, ModelError, pcm16_to_float
from radpilot.dictation.audio import SAMPLE_RATE
from radpilot.dictation.lexicon import load_lexicon
from radpilot.html import template_environment
from radpilot.security.principal import Principal, Role, RoleRefused

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/api/dictation", tags=["dictation"])
pad_router = APIRouter(include_in_schema=False)
TEMPLATES = template_environment("radpilot.web")
PAD_SECTIONS = (
    ("indication", "Indication"),
    ("technique", "Technique"),
    ("comparison", "Comparison"),
    ("findings", "Findings"),
    ("impression", "Impression"),
    ("recommendation", "Recommendation"),
)
# As the study list's, plus the microphone for this origin and WebSocket to it.
PAD_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; connect-src 'self'; img-src 'self' data:; frame-ancestors 'self'",
    "Permissions-Policy": "microphone=(self)",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

# Partials re-decode at most this much recent audio, so their cost stays flat however long one speaks.
PARTIAL_WINDOW_S = 15.0
# A clip's compressed size can never reasonably exceed 16-bit stereo at 48 kHz for the allowed length.
BYTES_PER_SECOND_LIMIT = 48_000 * 2 * 2


def dictation_service(app: Any) -> Dictation:
    service = getattr(app.state, "dictation", None)
    if service is None:
        service = app.state.dictation = Dictation(app.state.settings)
    return service


def _require_dictating_role(principal: Principal | None) -> None:
    # Authentication (when configured) puts the principal on the request; dictating reports is a radiologist's act.
    if principal is not None:
        principal.require(Role.RADIOLOGIST)


@router.post("")
async def dictate_clip(
    request: Request,
    language: str = Query("en", description="Spoken language: en or ko"),
    exam: str | None = Query(None, description="Exam type whose vocabulary steers recognition, e.g. chest_ct"),
) -> dict[str, Any]:
    """Transcribe one recorded clip (the request body: WAV, FLAC, MP3, Ogg or WebM) into report text."""
    try:
        _require_dictating_role(getattr(request.state, "principal", None))
    except RoleRefused as exc:
        raise HTTPException(403, str(exc)) from exc
    service = dictation_service(request.app)
    try:
        service.check_request(language, exam)
    except (ValueError, ModelError) as exc:
        raise HTTPException(503 if isinstance(exc, ModelError) else 400, str(exc)) from exc
    limit = int(service.settings.dictation_max_seconds * BYTES_PER_SECOND_LIMIT) + 1_000_000
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > limit:
            raise HTTPException(
                413, f"the audio is larger than {limit} bytes; the limit is {service.settings.dictation_max_seconds:.0f} s of audio"
            )
    try:
        result = await run_in_threadpool(service.transcribe_bytes, bytes(body), language=language, exam=exam)
    except AudioError as exc:
        raise HTTPException(422, str(exc)) from exc
    except ModelError as exc:
        raise HTTPException(503, str(exc)) from exc
    return result.as_dict()


class _Utterance:
    """The audio of one push-to-talk press and its partial-text bookkeeping."""

    def __init__(self) -> None:
        self.chunks: list[np.ndarray] = []
        self.samples = 0
        self.decoded_samples = 0
        self.started = time.monotonic()

    def add(self, audio: np.ndarray) -> None:
        self.chunks.append(audio)
        self.samples += audio.size

    def audio(self, window_s: float | None = None) -> np.ndarray:
        audio = np.concatenate(self.chunks) if self.chunks else np.zeros(0, dtype=np.float32)
        self.chunks = [audio] if audio.size else []
        if window_s is not None:
            return audio[-int(window_s * SAMPLE_RATE) :]
        return audio


@router.websocket("/stream")
async def dictate_stream(websocket: WebSocket, language: str = "en", exam: str | None = None) -> None:
    """Push-to-talk dictation: PCM16 16 kHz chunks in, partial text out while speaking, final text on "end"."""
    await websocket.accept()
    try:
        _require_dictating_role(getattr(websocket.state, "principal", None))
        service = dictation_service(websocket.app)
        service.check_request(language, exam)
        await run_in_threadpool(service.backend, language)  # load the model before the first word arrives
    except (RoleRefused, ValueError, ModelError) as exc:
        await websocket.send_json({"type": "error", "error": str(exc)})
        await websocket.close(code=1008)
        return
    await websocket.send_json({"type": "ready", "sample_rate": SAMPLE_RATE, "format": "pcm_s16le", "channels": 1})
    settings = service.settings
    utterance = _Utterance()
    partial_task: asyncio.Task[None] | None = None
    send_lock = asyncio.Lock()

    async def send(message: dict[str, Any]) -> None:
        async with send_lock:
            await websocket.send_json(message)

    async def send_partial(audio: np.ndarray, audio_s: float) -> None:
        try:
            text = await run_in_threadpool(service.partial, audio, language=language, exam=exam)
        except (AudioError, ModelError) as exc:
            logger.info("partial dictation failed", extra={"error": str(exc)})
            return
        if text:
            await send({"type": "partial", "text": text, "audio_s": round(audio_s, 2)})

    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
            if message.get("bytes") is not None:
                try:
                    utterance.add(pcm16_to_float(message["bytes"]))
                except AudioError as exc:
                    await send({"type": "error", "error": str(exc)})
                    await websocket.close(code=1003)
                    break
                if utterance.samples > settings.dictation_max_seconds * SAMPLE_RATE:
                    await send(
                        {"type": "error", "error": f"the dictation is longer than the limit of {settings.dictation_max_seconds:.0f} s"}
                    )
                    await websocket.close(code=1009)
                    break
                new_audio_s = (utterance.samples - utterance.decoded_samples) / SAMPLE_RATE
                if (partial_task is None or partial_task.done()) and new_audio_s >= settings.dictation_partial_interval_s:
                    utterance.decoded_samples = utterance.samples
                    partial_task = asyncio.create_task(send_partial(utterance.audio(PARTIAL_WINDOW_S), utterance.samples / SAMPLE_RATE))
                continue
            command = _text_command(message.get("text") or "")
            if command == "end":
                if partial_task is not None:
                    await partial_task
                    partial_task = None
                audio = utterance.audio()
                utterance = _Utterance()
                try:
                    result = await run_in_threadpool(service.transcribe, audio, language=language, exam=exam, name="the dictation")
                except (AudioError, LexiconError) as exc:
                    await send({"type": "error", "error": str(exc)})
                    continue
                await send({"type": "final", **result.as_dict()})
            elif command == "cancel":
                utterance = _Utterance()
            else:
                await send(
                    {"type": "error", "error": f"unknown message {message.get('text')!r}: send binary PCM16 audio or {{'type': 'end'}}"}
                )
    except WebSocketDisconnect:
        pass
    finally:
        if partial_task is not None and not partial_task.done():
            partial_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await partial_task


def _text_command(text: str) -> str:
    """ "end" / "cancel" from ``{"type": "end"}`` or the bare word; "" for anything else."""
    try:
        data = json.loads(text)
    except ValueError:
        return text.strip().lower() if text.strip().lower() in {"end", "cancel"} else ""
    value = data.get("type") if isinstance(data, dict) else None
    return value if value in {"end", "cancel"} else ""


@pad_router.get("/ui/dictation", response_class=HTMLResponse)
def dictation_pad(exam: str = "chest_ct") -> HTMLResponse:
    """A push-to-talk dictation pad with the report's sections: the microphone client the report editor reuses."""
    lexicon = load_lexicon()
    exams = sorted(e for e in lexicon if e != "common")
    selected = exam if exam in exams else "chest_ct"
    normal = next(iter(lexicon[selected].normal), "chest")
    html = TEMPLATES.get_template("dictation_pad.html").render(
        exams=exams, selected_exam=selected, sections=PAD_SECTIONS, example_normal=normal
    )
    return HTMLResponse(html, headers=PAD_HEADERS)
