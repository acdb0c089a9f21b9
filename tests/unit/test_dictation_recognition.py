"""Dictation through the real recogniser on real espeak-ng speech: formatted numbers and units, commands, bad audio."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from radpilot.config import Settings
from radpilot.dictation import AudioError, Dictation, ModelError, decode_audio
from radpilot.dictation.backend import FilePart, ModelManifest, resolve_model
from radpilot.dictation.commands import COMMAND_PHRASES
from tests.dictation_support import require_espeak, shared_dictation, silence_wav, speak

pytestmark = pytest.mark.timeout(600)


def test_a_sentence_with_a_number_and_a_unit_comes_out_formatted(tmp_path: Path) -> None:
    clip = speak("There is a seven millimeter nodule in the right upper lobe.", tmp_path / "nodule.wav")
    result = shared_dictation().transcribe_file(clip, exam="chest_ct")
    assert "7 mm nodule" in result.text
    assert "right upper lobe" in result.text.lower()
    assert result.words and all(0 <= w.start <= w.end <= result.duration_s + 0.5 and 0 <= w.confidence <= 1 for w in result.words)


def test_spoken_go_to_impression_becomes_a_section_command(tmp_path: Path) -> None:
    clip = speak("Go to impression. No acute abnormality.", tmp_path / "command.wav")
    result = shared_dictation().transcribe_file(clip, exam="chest_ct")
    assert result.commands[0]["command"] == "go_to_section"
    assert result.commands[0]["argument"] == "impression"
    assert "impression" not in result.text.lower()
    assert "acute" in result.text.lower()


def test_a_short_command_clip_the_recogniser_mishears_still_becomes_the_command(tmp_path: Path) -> None:
    # Free decoding heard espeak-ng's "Scratch that." as "crash nut." / "crash note."; rescoring finds the command.
    clip = speak("Scratch that.", tmp_path / "scratch.wav", voice="en-us", words_per_minute=140)
    result = shared_dictation().transcribe_file(clip, exam="chest_xray")
    assert [c["command"] for c in result.commands] == ["undo"], result.raw_text
    assert result.text == ""
    assert result.raw_text  # what was heard, as heard


def test_scoring_phrases_on_the_clip_just_transcribed_reuses_its_encoder_pass(tmp_path: Path) -> None:
    backend = shared_dictation().backend("en")
    audio = decode_audio(speak("Scratch that.", tmp_path / "scratch.wav", voice="en-us", words_per_minute=140), max_seconds=60)
    fresh = backend.score_phrases(audio.copy(), COMMAND_PHRASES, language="en")  # another array: encoded anew
    backend.transcribe(audio, language="en", prompt=None)
    passes = len(backend._encodings)  # type: ignore[attr-defined]
    reused = backend.score_phrases(audio, COMMAND_PHRASES, language="en")
    assert len(backend._encodings) == passes == 1  # type: ignore[attr-defined]
    assert int(np.argmax(reused)) == int(np.argmax(fresh)) and COMMAND_PHRASES[int(np.argmax(reused))] == "Scratch that."
    assert max(abs(a - b) for a, b in zip(fresh, reused, strict=True)) < 0.5


def test_scoring_reuses_the_first_window_when_the_recogniser_decoded_a_second_one(tmp_path: Path) -> None:
    # The decoder sometimes goes on past the last timestamp of a short clip and encodes its last moments as a second
    # window (where it invents "Thanks." or "Okay."); the first window still holds the whole clip.
    backend = shared_dictation().backend("en")
    audio = decode_audio(speak("Scratch that.", tmp_path / "scratch.wav", voice="en-us", words_per_minute=140), max_seconds=60)
    backend.transcribe(audio, language="en", prompt=None)
    one_window = backend.score_phrases(audio, COMMAND_PHRASES, language="en")
    backend._encodings.append(backend._encodings[0])  # type: ignore[attr-defined]  # as a second window leaves it
    encoder_calls = []
    original = backend._encode  # type: ignore[attr-defined]
    backend._encode = lambda features: encoder_calls.append(1) or original(features)  # type: ignore[attr-defined]
    try:
        two_windows = backend.score_phrases(audio, COMMAND_PHRASES, language="en")
    finally:
        backend._encode = original  # type: ignore[attr-defined]
    assert encoder_calls == [] and two_windows == one_window


@pytest.mark.parametrize("spoken", ["I agree.", "No change."])
def test_a_short_dictated_phrase_is_not_taken_for_a_command(spoken: str, tmp_path: Path) -> None:
    clip = speak(spoken, tmp_path / "short.wav", voice="en-us", words_per_minute=140)
    result = shared_dictation().transcribe_file(clip, exam="chest_xray")
    assert result.commands == [] and result.text, result.raw_text


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty"),
        (b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(range(256)) * 4, "not audio RadPilot can decode"),
        (b"%PDF-1.7 this is a document, not a recording" * 50, "not audio RadPilot can decode"),
    ],
)
def test_empty_corrupt_and_wrongly_formatted_audio_is_refused_by_name(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "clip.wav"
    path.write_bytes(content)
    with pytest.raises(AudioError, match=message):
        decode_audio(path, max_seconds=60)


def test_silent_and_over_long_audio_is_refused(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match="is silent"):
        decode_audio(silence_wav(tmp_path / "silent.wav", 2.0), max_seconds=60)
    clip = speak("The lungs are clear.", tmp_path / "long.wav")
    with pytest.raises(AudioError, match="limit of 1 s|limit is 1 s"):
        decode_audio(clip, max_seconds=1)


def test_other_formats_decode_to_the_same_audio(tmp_path: Path) -> None:
    av = pytest.importorskip("av")
    wav = speak("Small pleural effusion.", tmp_path / "clip.wav")
    reference = decode_audio(wav, max_seconds=60)
    for extension, codec in (("flac", "flac"), ("webm", "libopus"), ("mp3", "libmp3lame")):
        target = tmp_path / f"clip.{extension}"
        with av.open(str(wav)) as source, av.open(str(target), "w") as sink:
            stream = sink.add_stream(codec, rate=48000 if codec == "libopus" else 22050)
            resampler = av.AudioResampler(format=stream.format.name, layout="mono", rate=stream.rate)
            for frame in source.decode(audio=0):
                for out in resampler.resample(frame):
                    for packet in stream.encode(out):
                        sink.mux(packet)
            for packet in stream.encode(None):
                sink.mux(packet)
        decoded = decode_audio(target, max_seconds=60)
        assert abs(decoded.size - reference.size) < 0.1 * 16000, extension


def test_a_model_file_that_does_not_match_its_manifest_is_refused() -> None:
    manifest = ModelManifest.load("whisper-tiny.en")
    resolve_model(manifest)
    tampered = replace(manifest, files={**manifest.files, "config.json": "0" * 64})
    with pytest.raises(ModelError, match="config.json has sha256 .* refusing to load"):
        resolve_model(tampered)
    with pytest.raises(ModelError, match="not installed: pip install no-such-model-package"):
        resolve_model(replace(manifest, package="no_such_model_package", distribution="no-such-model-package"))


def test_a_language_without_a_configured_model_says_what_to_configure() -> None:
    with pytest.raises(ModelError, match="RADPILOT_DICTATION_MODEL_KO"):
        Dictation(Settings()).check_request("ko", None)
    with pytest.raises(ValueError, match="unsupported dictation language 'fr'"):
        Dictation(Settings()).check_request("fr", None)


def test_cli_json_lists_file_text_and_timed_words_and_names_bad_files(tmp_path: Path) -> None:
    require_espeak()
    from typer.testing import CliRunner

    from radpilot.cli import app

    good = speak("Liver volume one thousand five hundred milliliters.", tmp_path / "liver.wav")
    bad = tmp_path / "broken.flac"
    bad.write_bytes(b"fLaC" + b"\x00" * 100)
    result = CliRunner().invoke(app, ["dictate", str(good), str(bad), "--exam", "abdomen_ct", "--json"])
    assert result.exit_code == 1, result.output
    start = result.stdout.index("[")
    entries = json.loads(result.stdout[start:])
    assert [e["file"] for e in entries] == [str(good), str(bad)]
    assert "1500 mL" in entries[0]["text"]
    assert set(entries[0]["words"][0]) == {"word", "start", "end", "confidence"}
    assert "not audio RadPilot can decode" in entries[1]["error"]


def _split_model(root: Path, payload: bytes) -> ModelManifest:
    """A two-package model whose model.bin is split in two, installed under ``root`` (on sys.path)."""
    half = len(payload) // 2
    for package, data in (("radpilot_test_model_a", payload[:half]), ("radpilot_test_model_b", payload[half:])):
        (root / package / "data").mkdir(parents=True)
        (root / package / "__init__.py").write_text("")
        (root / package / "data" / "model.bin.part").write_bytes(data)
    (root / "radpilot_test_model_a" / "data" / "config.json").write_text("{}")
    digest = lambda data: hashlib.sha256(data).hexdigest()  # noqa: E731
    return ModelManifest(
        "split-test",
        "faster-whisper",
        "radpilot_test_model_a",
        "radpilot-test-model-a radpilot-test-model-b",
        "data",
        ("en",),
        {"config.json": digest(b"{}"), "model.bin": digest(payload)},
        {
            "model.bin": (
                FilePart("radpilot_test_model_a", "data/model.bin.part", digest(payload[:half])),
                FilePart("radpilot_test_model_b", "data/model.bin.part", digest(payload[half:])),
            )
        },
    )


def test_a_split_model_is_joined_once_into_the_cache_and_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    payload = bytes(range(256)) * 4099
    manifest = _split_model(tmp_path / "site", payload)
    folder = resolve_model(manifest, tmp_path / "cache")
    assert (folder / "model.bin").read_bytes() == payload
    assert (folder / "config.json").read_text() == "{}"
    assert not list(folder.glob(".*joining")), "no temporary file is left behind"
    joined = (folder / "model.bin").stat().st_mtime_ns
    assert resolve_model(manifest, tmp_path / "cache") == folder
    assert (folder / "model.bin").stat().st_mtime_ns == joined, "a second load reuses the joined file"


def test_a_damaged_cache_copy_is_rebuilt_and_a_damaged_part_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    payload = bytes(range(256)) * 4099
    manifest = _split_model(tmp_path / "site", payload)
    folder = resolve_model(manifest, tmp_path / "cache")
    (folder / "model.bin").write_bytes(b"truncated")
    assert (resolve_model(manifest, tmp_path / "cache") / "model.bin").read_bytes() == payload
    (folder / "model.bin").unlink()
    part = tmp_path / "site" / "radpilot_test_model_b" / "data" / "model.bin.part"
    part.write_bytes(b"x" + part.read_bytes()[1:])
    with pytest.raises(ModelError, match=r"model\.bin\.part has sha256 .* refusing to load"):
        resolve_model(manifest, tmp_path / "cache")
    assert not (folder / "model.bin").exists(), "nothing joined from a damaged part"


def test_whisper_base_is_joined_from_its_two_packages(tmp_path: Path) -> None:
    manifest = ModelManifest.load("whisper-base")
    folder = resolve_model(manifest, tmp_path)
    assert {p.name for p in folder.iterdir()} == {"config.json", "model.bin", "tokenizer.json", "vocabulary.txt"}
    assert set(manifest.languages) >= {"en", "ko"}
