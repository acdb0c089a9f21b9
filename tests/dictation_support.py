"""Speech for dictation tests: real espeak-ng audio (never committed), and one recogniser per test process."""

from __future__ import annotations

import shutil
import subprocess
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

from radpilot.config import Settings
from radpilot.dictation import Dictation
from radpilot.dictation.audio import SAMPLE_RATE, decode_audio


def require_espeak() -> str:
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng; `make setup` does it)")
    return espeak


def speak(text: str, path: Path, *, voice: str = "en-us", words_per_minute: int = 160) -> Path:
    """``text`` spoken by espeak-ng into the WAV file ``path`` (22.05 kHz mono)."""
    subprocess.run([require_espeak(), "-v", voice, "-s", str(words_per_minute), "-w", str(path), text], check=True, timeout=60)
    return path


def speak_pcm16(text: str, tmp_path: Path, **kwargs: object) -> bytes:
    """``text`` as the browser streams it: 16 kHz mono little-endian PCM16."""
    audio = decode_audio(speak(text, tmp_path / "stream.wav", **kwargs), max_seconds=60)  # type: ignore[arg-type]
    return (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()


def silence_wav(path: Path, seconds: float) -> Path:
    import wave

    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(SAMPLE_RATE)
        handle.writeframes(b"\0\0" * int(seconds * SAMPLE_RATE))
    return path


@lru_cache(maxsize=1)
def shared_dictation() -> Dictation:
    """One loaded recogniser for the whole test run (loading costs seconds on two cores)."""
    return Dictation(Settings())
