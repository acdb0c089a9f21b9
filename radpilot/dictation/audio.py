"""Audio in: decode any clip PyAV reads (WAV, FLAC, MP3, WebM/Opus, Ogg) to 16 kHz mono float32, and refuse bad clips.

Every refusal is an :class:`AudioError` whose message names the problem (empty, corrupt,
not audio, too long, silent), so the CLI, the HTTP endpoint and the WebSocket can pass it
on to the radiologist as it is.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import av
import numpy as np

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
# Below this level (about -50 dBFS) a clip holds no speech a recogniser could use.
SILENCE_RMS = 0.003
MIN_SECONDS = 0.2


class AudioError(ValueError):
    """Audio that cannot be dictated from; the message says why."""


def decode_audio(source: bytes | Path, *, max_seconds: float) -> np.ndarray:
    """``source`` (file bytes or a path) as 16 kHz mono float32 in [-1, 1]; AudioError for empty, corrupt or over-long audio."""
    name = str(source) if isinstance(source, Path) else "the audio"
    data = source.read_bytes() if isinstance(source, Path) else source
    if not data:
        raise AudioError(f"{name} is empty (0 bytes)")
    chunks: list[np.ndarray] = []
    samples = 0
    limit = int(max_seconds * SAMPLE_RATE)
    try:
        with av.open(io.BytesIO(data), mode="r", metadata_errors="ignore") as container:
            if not container.streams.audio:
                raise AudioError(f"{name} holds no audio stream (format {container.format.name})")
            stream = container.streams.audio[0]
            if stream.duration is not None and stream.time_base is not None and float(stream.duration * stream.time_base) > max_seconds + 1:
                raise AudioError(f"{name} is {float(stream.duration * stream.time_base):.0f} s long; the limit is {max_seconds:.0f} s")
            resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    array = out.to_ndarray().reshape(-1)
                    chunks.append(array)
                    samples += array.size
                if samples > limit:
                    raise AudioError(f"{name} is longer than the limit of {max_seconds:.0f} s")
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
    except AudioError:
        raise
    except (av.error.FFmpegError, ValueError, OSError) as exc:
        raise AudioError(f"{name} is not audio RadPilot can decode (WAV, FLAC, MP3, Ogg or WebM expected): {exc}") from exc
    audio = (np.concatenate(chunks).astype(np.float32) / 32768.0) if chunks else np.zeros(0, dtype=np.float32)
    check_audio(audio, name=name, max_seconds=max_seconds)
    return audio


def pcm16_to_float(data: bytes) -> np.ndarray:
    """Raw little-endian 16-bit mono PCM (the browser's stream) as float32; AudioError for an odd byte count."""
    if len(data) % 2:
        raise AudioError(f"a PCM16 chunk must hold whole 2-byte samples; got {len(data)} bytes")
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0


def check_audio(audio: np.ndarray, *, name: str = "the audio", max_seconds: float) -> None:
    """AudioError unless ``audio`` (16 kHz mono) is long enough, short enough and not silent."""
    seconds = audio.size / SAMPLE_RATE
    if seconds < MIN_SECONDS:
        raise AudioError(f"{name} is empty or too short ({seconds:.2f} s of audio; at least {MIN_SECONDS} s needed)")
    if seconds > max_seconds:
        raise AudioError(f"{name} is {seconds:.0f} s long; the limit is {max_seconds:.0f} s")
    rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))
    if rms < SILENCE_RMS:
        raise AudioError(f"{name} is silent (level {20 * np.log10(max(rms, 1e-9)):.0f} dBFS): no speech to recognise")
