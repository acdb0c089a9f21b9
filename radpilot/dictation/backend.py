"""Speech recognisers behind one interface, and the manifests that pin their model files.

A recogniser's model ships inside installed Python packages (nothing is downloaded at run
time): a manifest in ``models/`` names the package, the folder inside it and each file's
sha256, and :func:`resolve_model` checks every hash before the model is loaded. A model too
large for one package (PyPI's 100 MB limit) comes in parts spread over several packages: the
manifest lists each part with its own hash, and the parts are joined once into a cache folder,
the whole file's hash checked before it is used. Another engine
plugs in by implementing :class:`SpeechBackend` and registering a factory in ``BACKENDS``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from radpilot.dictation.audio import SAMPLE_RATE

logger = logging.getLogger(__name__)

N_FRAMES = 3000  # Whisper's 30 s window in 10 ms feature frames
HOP_LENGTH = 160  # audio samples per feature frame at 16 kHz

MANIFEST_DIR = Path(__file__).with_name("models")
# The hub libraries must never reach the network: a model name instead of a path would download.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


class ModelError(RuntimeError):
    """A recogniser model that is not installed, not declared, or whose files do not match the manifest."""


@dataclass(frozen=True)
class Word:
    word: str
    start: float
    end: float
    confidence: float

    def as_dict(self) -> dict[str, Any]:
        return {"word": self.word, "start": round(self.start, 3), "end": round(self.end, 3), "confidence": round(self.confidence, 4)}


@dataclass(frozen=True)
class RawTranscript:
    """What the recogniser heard, before commands are cut out and the text is formatted."""

    text: str
    words: tuple[Word, ...]
    duration_s: float


class SpeechBackend(Protocol):
    """A speech recogniser: 16 kHz mono float32 in, text with timed words out."""

    name: str
    languages: tuple[str, ...]

    def transcribe(self, audio: np.ndarray, *, language: str, prompt: str | None, fast: bool = False) -> RawTranscript: ...

    def score_phrases(self, audio: np.ndarray, phrases: Sequence[str], *, language: str) -> list[float]:
        """How well each phrase fits ``audio`` (at most 30 s) as its whole transcript: the mean log-probability of
        the phrase's tokens, teacher-forced, without a prompt; higher fits better."""
        ...


@dataclass(frozen=True)
class FilePart:
    """One piece of a split model file: a path inside an installed package, and its sha256."""

    package: str
    path: str
    sha256: str


@dataclass(frozen=True)
class ModelManifest:
    name: str
    engine: str
    package: str
    distribution: str
    folder: str
    languages: tuple[str, ...]
    files: dict[str, str]
    parts: dict[str, tuple[FilePart, ...]] = field(default_factory=dict)  # file name -> its pieces, in order

    @classmethod
    def load(cls, name: str) -> ModelManifest:
        path = MANIFEST_DIR / f"{name}.json"
        if not path.is_file():
            known = ", ".join(sorted(p.stem for p in MANIFEST_DIR.glob("*.json")))
            raise ModelError(f"no dictation model manifest {name!r}; known: {known}")
        data = json.loads(path.read_text())
        return cls(
            data["name"],
            data["engine"],
            data["package"],
            data["distribution"],
            data["folder"],
            tuple(data["languages"]),
            dict(data["files"]),
            {name: tuple(FilePart(p["package"], p["path"], p["sha256"]) for p in pieces) for name, pieces in data.get("parts", {}).items()},
        )


_verified: dict[tuple[str, int, int, str], bool] = {}
_verified_lock = threading.Lock()


def default_cache_dir() -> Path:
    """Where split models are joined: $RADPILOT_MODEL_CACHE, else the user's cache folder."""
    configured = os.environ.get("RADPILOT_MODEL_CACHE")
    if configured:
        return Path(configured)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "radpilot" / "models"


def _package_folder(manifest: ModelManifest, package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"dictation model {manifest.name!r} is not installed: pip install {manifest.distribution}")
    return Path(next(iter(spec.submodule_search_locations)))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check(manifest: ModelManifest, path: Path, expected: str, remedy: str) -> None:
    """Raise ModelError unless ``path`` exists with sha256 ``expected`` (a file once checked is not hashed again)."""
    if not path.is_file():
        raise ModelError(f"dictation model {manifest.name!r}: {path} is missing; {remedy}")
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns, expected)
    with _verified_lock:
        if _verified.get(key):
            return
        actual = _sha256(path)
        if actual != expected:
            raise ModelError(
                f"dictation model {manifest.name!r}: {path} has sha256 {actual}, the manifest says {expected}; refusing to load it"
            )
        _verified[key] = True


def _join_parts(manifest: ModelManifest, filename: str, target: Path) -> None:
    """Concatenate the checked parts of ``filename`` into ``target`` atomically; the whole file's hash is checked before the rename."""
    pieces = manifest.parts[filename]
    for piece in pieces:
        _check(manifest, _package_folder(manifest, piece.package) / piece.path, piece.sha256, f"reinstall {manifest.distribution}")
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{filename}.", suffix=".joining")
    try:
        digest = hashlib.sha256()
        with os.fdopen(handle, "wb") as out:
            for piece in pieces:
                with (_package_folder(manifest, piece.package) / piece.path).open("rb") as source:
                    while block := source.read(1 << 20):
                        digest.update(block)
                        out.write(block)
            out.flush()
            os.fsync(out.fileno())
        if digest.hexdigest() != manifest.files[filename]:
            raise ModelError(
                f"dictation model {manifest.name!r}: the parts of {filename} join to sha256 {digest.hexdigest()}, "
                f"the manifest says {manifest.files[filename]}; reinstall {manifest.distribution}"
            )
        os.replace(temporary, target)  # concurrent joiners write the same bytes; the last rename wins
        logger.info("dictation model file joined from its parts", extra={"model": manifest.name, "file": str(target), "parts": len(pieces)})
    finally:
        Path(temporary).unlink(missing_ok=True)


def resolve_model(manifest: ModelManifest, cache_dir: Path | None = None) -> Path:
    """The model folder, every file's sha256 checked against the manifest.

    A model without parts is used where its package installed it. A model with parts is
    assembled in ``cache_dir`` (default :func:`default_cache_dir`): the whole files are copied
    there, the split ones joined, each checked; a later call finds them and only re-checks.
    """
    source = _package_folder(manifest, manifest.package) / manifest.folder
    remedy = f"reinstall {manifest.distribution}"
    if not manifest.parts:
        for filename, expected in manifest.files.items():
            _check(manifest, source / filename, expected, remedy)
        return source
    folder = (cache_dir or default_cache_dir()) / f"{manifest.name}-{manifest.files[next(iter(manifest.parts))][:12]}"
    for filename, expected in manifest.files.items():
        target = folder / filename
        if not target.is_file():
            if filename in manifest.parts:
                _join_parts(manifest, filename, target)
            else:
                _check(manifest, source / filename, expected, remedy)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source / filename, target)
        try:
            _check(manifest, target, expected, remedy)
        except ModelError:
            target.unlink(missing_ok=True)  # a damaged cache copy is rebuilt once from the packages
            if filename in manifest.parts:
                _join_parts(manifest, filename, target)
            else:
                shutil.copyfile(source / filename, target)
            _check(manifest, target, expected, remedy)
    return folder


class FasterWhisperBackend:
    """Whisper through CTranslate2 (faster-whisper) on the CPU, int8.

    Chosen over pocketsphinx because, measured on espeak-ng radiology speech here, it is about
    three times more accurate with a term prompt and still far faster than real time; the prompt,
    voice activity filtering and no conditioning on previous text stop Whisper's repetition loops.
    """

    def __init__(self, manifest: ModelManifest, *, threads: int, beam_size: int, cache_dir: Path | None = None) -> None:
        from faster_whisper import WhisperModel  # noqa: PLC0415 - CTranslate2 is heavy; load only when dictation is used

        self.name = manifest.name
        self.languages = manifest.languages
        self.beam_size = beam_size
        folder = resolve_model(manifest, cache_dir)
        self._model = WhisperModel(str(folder), device="cpu", compute_type="int8", cpu_threads=threads, local_files_only=True)
        # CTranslate2 models are not safe to call from two threads at once with one set of workers.
        self._lock = threading.Lock()
        # The encoder outputs of the last final transcription and the clip they came from: scoring phrases on
        # that clip (a short push-to-talk command) reuses them instead of encoding a 30 s window again.
        self._encodings: list[Any] = []
        self._last_clip: tuple[np.ndarray, list[Any]] | None = None
        self._encode = encode = self._model.encode

        def encode_and_keep(features: np.ndarray) -> Any:
            output = encode(features)
            self._encodings.append(output)
            return output

        self._model.encode = encode_and_keep
        logger.info("dictation model loaded", extra={"model": manifest.name, "folder": str(folder), "threads": threads})

    def transcribe(self, audio: np.ndarray, *, language: str, prompt: str | None, fast: bool = False) -> RawTranscript:
        if language not in self.languages:
            raise ModelError(f"dictation model {self.name!r} recognises {', '.join(self.languages)}, not {language!r}")
        with self._lock:
            self._encodings = []
            segments, _info = self._model.transcribe(
                audio,
                language=language,
                initial_prompt=prompt or None,
                vad_filter=True,
                condition_on_previous_text=False,
                word_timestamps=not fast,
                beam_size=1 if fast else self.beam_size,
                temperature=0.0 if fast else [0.0, 0.2, 0.4, 0.6],
            )
            segments = list(segments)
            self._last_clip = None if fast else (audio, self._encodings)
        words = tuple(Word(w.word.strip(), float(w.start), float(w.end), float(w.probability)) for s in segments for w in (s.words or ()))
        text = " ".join(s.text.strip() for s in segments).strip()
        return without_hallucinated_ending(RawTranscript(text, words, audio.size / SAMPLE_RATE))

    def score_phrases(self, audio: np.ndarray, phrases: Sequence[str], *, language: str) -> list[float]:
        from faster_whisper.audio import pad_or_trim  # noqa: PLC0415 - with the model, loaded only when dictation is used
        from faster_whisper.tokenizer import Tokenizer  # noqa: PLC0415

        if language not in self.languages:
            raise ModelError(f"dictation model {self.name!r} recognises {', '.join(self.languages)}, not {language!r}")
        model = self._model
        tokenizer = Tokenizer(model.hf_tokenizer, model.model.is_multilingual, task="transcribe", language=language)
        # The frame count only bounds the alignment's time axis, not the token probabilities used here.
        frames = min(audio.size // HOP_LENGTH + 1, N_FRAMES)
        with self._lock:
            last = self._last_clip
            # The speech of this very clip, as the recogniser just encoded it: its first window holds all of a clip
            # under 30 s (a second one, when the decoder went on past its last timestamp, only the last moments).
            if last is not None and last[0] is audio and last[1] and audio.size <= N_FRAMES * HOP_LENGTH:
                encoded = last[1][0]
            else:
                encoded = self._encode(pad_or_trim(model.feature_extractor(audio)))  # not kept as a transcription's
            scores = []
            for phrase in phrases:
                tokens = tokenizer.encode(" " + phrase.strip())
                if not tokens:
                    scores.append(float("-inf"))
                    continue
                (aligned,) = model.model.align(encoded, tokenizer.sot_sequence, [tokens], [frames])
                probabilities = np.maximum(np.asarray(aligned.text_token_probs, dtype=np.float64), 1e-12)
                scores.append(float(np.mean(np.log(probabilities))))
        return scores


# Whisper's best-known artefact: a "Thank you." invented after the end of speech (so many subtitled videos
# in its training data end with one). Seen on short push-to-talk clips ("Go to findings. Thank you.", the
# "Thank" at probability 0.02-0.06); dropped only when its first word was barely believed, so a
# radiologist who does say it keeps it.
HALLUCINATED_ENDINGS = (("thank", "you", "for", "watching"), ("thanks", "for", "watching"), ("thank", "you"))
HALLUCINATION_MAX_CONFIDENCE = 0.2


def without_hallucinated_ending(transcript: RawTranscript) -> RawTranscript:
    """``transcript`` without a trailing "Thank you." (or "Thanks for watching.") whose first word has low confidence."""
    words = transcript.words
    for ending in HALLUCINATED_ENDINGS:
        tail = words[-len(ending) :]
        if (
            len(tail) == len(ending)
            and tuple(bare_word(w.word) for w in tail) == ending
            and tail[0].confidence < HALLUCINATION_MAX_CONFIDENCE
        ):
            pattern = r"[\s,.!?]*" + r"[\s,.!?]+".join(ending) + r"[\s,.!?]*$"
            text = re.sub(pattern, "", transcript.text, flags=re.IGNORECASE)
            if text and text[-1].isalnum():
                text += "."
            return RawTranscript(text, words[: -len(ending)], transcript.duration_s)
    return transcript


def bare_word(word: str) -> str:
    """A recognised word as compared with others: lower case, letters and apostrophes only."""
    return re.sub(r"[^a-z']", "", word.lower())


BACKENDS: dict[str, Callable[..., SpeechBackend]] = {"faster-whisper": FasterWhisperBackend}


def load_backend(model_name: str, *, threads: int, beam_size: int, cache_dir: Path | None = None) -> SpeechBackend:
    """The recogniser for the model ``model_name`` (its manifest names the engine)."""
    manifest = ModelManifest.load(model_name)
    if manifest.engine not in BACKENDS:
        raise ModelError(f"dictation model {model_name!r} needs engine {manifest.engine!r}, which is not available")
    return BACKENDS[manifest.engine](manifest, threads=threads, beam_size=beam_size, cache_dir=cache_dir)
