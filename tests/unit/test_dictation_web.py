"""Dictation over HTTP (a recorded clip) and WebSocket (push-to-talk streaming), with the real recogniser."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from radpilot.archive import Archive
from radpilot.config import Settings
from radpilot.security.principal import Role
from radpilot.web.app import create_app
from tests.dictation_support import shared_dictation, silence_wav, speak, speak_pcm16
from tests.fixtures.auth import authenticate

pytestmark = pytest.mark.timeout(600)


@pytest.fixture
def app_and_client(tmp_path: Path) -> Iterator[tuple[object, TestClient]]:
    archive = Archive(tmp_path / "dicom", f"sqlite:///{tmp_path / 'index.db'}", durability="none")
    app = create_app(Settings(data_dir=tmp_path / "data", ohif_dir=tmp_path / "no-ohif"), archive)
    app.state.dictation = shared_dictation()  # one model load for the test run
    with TestClient(app) as client:
        authenticate(client, archive.engine, Role.RADIOLOGIST)
        yield app, client
    archive.close()


def test_post_a_recorded_clip_returns_formatted_text_and_timed_words(app_and_client, tmp_path: Path) -> None:
    _, client = app_and_client
    clip = speak("Ejection fraction of forty five percent.", tmp_path / "ef.wav").read_bytes()
    response = client.post("/api/dictation?exam=cardiac_ct", content=clip, headers={"Content-Type": "audio/wav"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert "45 %" in body["text"]
    assert {"word", "start", "end", "confidence"} == set(body["words"][0])


@pytest.mark.parametrize(
    ("query", "content", "status", "message"),
    [
        ("", b"", 422, "is empty"),
        ("", b"not audio at all" * 100, 422, "not audio RadPilot can decode"),
        ("?exam=knee_mr", b"x", 400, "unknown exam type 'knee_mr'"),
        ("?language=fr", b"x", 400, "unsupported dictation language 'fr'"),
        ("?language=ko", b"x", 503, "no dictation model is configured for 'ko'"),
    ],
)
def test_bad_requests_get_an_error_naming_the_problem(app_and_client, query: str, content: bytes, status: int, message: str) -> None:
    _, client = app_and_client
    response = client.post(f"/api/dictation{query}", content=content)
    assert response.status_code == status
    assert message in response.json()["detail"]


def test_silent_clip_is_refused(app_and_client, tmp_path: Path) -> None:
    _, client = app_and_client
    response = client.post("/api/dictation", content=silence_wav(tmp_path / "s.wav", 1.5).read_bytes())
    assert response.status_code == 422 and "silent" in response.json()["detail"]


def test_only_signed_in_radiologists_dictate_over_http_and_websocket(tmp_path: Path) -> None:
    archive = Archive(tmp_path / "dicom", f"sqlite:///{tmp_path / 'index.db'}", durability="none")
    app = create_app(Settings(data_dir=tmp_path / "data", ohif_dir=tmp_path / "no-ohif"), archive)

    with TestClient(app) as client:
        anonymous = client.post("/api/dictation", content=b"x")
        with pytest.raises(WebSocketDisconnect) as refused, client.websocket_connect("/api/dictation/stream") as socket:
            socket.receive_json()
        authenticate(client, archive.engine, Role.TECHNOLOGIST)
        response = client.post("/api/dictation", content=b"x")
    archive.close()
    assert anonymous.status_code == 401 and refused.value.code == 1008
    assert response.status_code == 403 and "radiologist" in response.json()["detail"]


def test_streaming_returns_partial_text_before_the_end_then_the_final_report_text(app_and_client, tmp_path: Path) -> None:
    _, client = app_and_client
    pcm = speak_pcm16("There is a seven millimeter nodule in the left lower lobe. Go to impression.", tmp_path)
    chunk = 16000 * 2 // 4  # 0.25 s of PCM16
    with client.websocket_connect("/api/dictation/stream?exam=chest_ct") as socket:
        assert socket.receive_json()["type"] == "ready"
        for offset in range(0, len(pcm), chunk):
            socket.send_bytes(pcm[offset : offset + chunk])
            time.sleep(0.05)
        # The talk button is still held: a partial must arrive before "end" is sent.
        partial = socket.receive_json()
        assert partial["type"] == "partial" and partial["text"], partial
        socket.send_json({"type": "end"})
        message = partial
        while message["type"] != "final":
            message = socket.receive_json()
            assert message["type"] in {"partial", "final"}, message
    assert "7 mm nodule" in message["text"]
    assert message["commands"][0]["command"] == "go_to_section" and message["commands"][0]["argument"] == "impression"


def test_streaming_refuses_odd_chunks_and_unknown_messages(app_and_client) -> None:
    _, client = app_and_client
    with client.websocket_connect("/api/dictation/stream") as socket:
        assert socket.receive_json()["type"] == "ready"
        socket.send_text("hello")
        assert "unknown message" in socket.receive_json()["error"]
        socket.send_json({"type": "end"})
        assert "too short" in socket.receive_json()["error"]
        socket.send_bytes(b"\x01\x02\x03")
        assert "whole 2-byte samples" in socket.receive_json()["error"]
    with client.websocket_connect("/api/dictation/stream?exam=knee_mr") as socket:
        assert "unknown exam type" in socket.receive_json()["error"]
