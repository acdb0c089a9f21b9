"""The radiology vocabulary RadPilot carries (``lexicon.yaml``): per exam type, the recogniser's prompt,
the terms that near-miss words are corrected to, and the normal phrases a voice command inserts."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import yaml
from rapidfuzz import fuzz, process

LEXICON_FILE = Path(__file__).with_name("lexicon.yaml")
# Whisper reads at most 224 prompt tokens; about 4 characters a token leaves room for the clip's own text.
MAX_PROMPT_CHARS = 700
# Conservative: a term is substituted only for a clear near miss, never for a word that merely resembles it.
CORRECTION_SCORE = 88.0
MIN_CORRECTION_CHARS = 7
# Words a correction never swallows: joining "no pneumothorax" into "pneumothorax" would turn a
# negative finding into a positive one.
NEGATIONS = frozenset({"no", "not", "nor", "without", "none", "neither", "never", "negative", "absent", "free"})


@dataclass(frozen=True)
class ExamVocabulary:
    """The vocabulary for one exam type, "common" terms included."""

    exam: str
    terms: tuple[str, ...]
    examples: tuple[str, ...]
    normal: dict[str, str] = field(default_factory=dict)

    def prompt(self) -> str:
        """The recogniser's initial prompt: example sentences, then terms, within Whisper's prompt budget."""
        text = " ".join(self.examples)
        for term in self.terms:
            if len(text) + len(term) + 2 > MAX_PROMPT_CHARS:
                break
            text += (", " if text and not text.endswith(".") else " ") + term
        return text.strip() + "."

    def correct(self, text: str) -> str:
        """``text`` with near-miss spellings of lexicon terms replaced ("pneumo thorax" -> "pneumothorax")."""
        return _correct(text, self._targets())

    def _targets(self) -> dict[str, str]:
        return {re.sub(r"[\s-]", "", t.lower()): t for t in self.terms if len(t.replace(" ", "")) >= MIN_CORRECTION_CHARS}


class LexiconError(ValueError):
    """The lexicon file is malformed, or an exam type it does not know was asked for."""


@lru_cache(maxsize=4)
def load_lexicon(path: Path = LEXICON_FILE) -> dict[str, ExamVocabulary]:
    """Every exam type's vocabulary, "common" merged in; LexiconError naming the problem for a malformed file."""
    content = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(content, dict) or "common" not in content:
        raise LexiconError(f"{path}: expected a mapping of exam types with a 'common' entry")
    for exam, entry in content.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("terms"), list):
            raise LexiconError(f"{path}: exam type {exam!r} needs a list of 'terms'")
    common = content["common"]
    vocabularies = {}
    for exam, entry in content.items():
        terms = list(dict.fromkeys([*entry["terms"], *([] if exam == "common" else common["terms"])]))
        examples = [*(entry.get("examples") or []), *([] if exam == "common" else common.get("examples") or [])]
        vocabularies[exam] = ExamVocabulary(exam, tuple(terms), tuple(examples), dict(entry.get("normal") or {}))
    return vocabularies


def vocabulary_for(exam: str | None) -> ExamVocabulary:
    """The vocabulary of ``exam`` (None: common terms only); LexiconError listing the known exam types otherwise."""
    lexicon = load_lexicon()
    key = exam or "common"
    if key not in lexicon:
        raise LexiconError(f"unknown exam type {exam!r}: expected one of {', '.join(sorted(lexicon))}")
    return lexicon[key]


_WORD = re.compile(r"[A-Za-z][A-Za-z'-]*")


def _best(candidate: str, targets: dict[str, str]) -> tuple[str, float] | None:
    """The target ``candidate`` is closest to, with its score, when that is a clear near miss."""
    if candidate in targets:
        return candidate, 100.0
    if len(candidate) < MIN_CORRECTION_CHARS:
        return None
    best = process.extractOne(candidate, list(targets), scorer=fuzz.ratio, score_cutoff=CORRECTION_SCORE)
    return (best[0], float(best[1])) if best else None


def _joined(window: list[re.Match[str]]) -> str:
    return "".join(m.group(0).lower().replace("-", "") for m in window)


def _correct(text: str, targets: dict[str, str]) -> str:
    matches = list(_WORD.finditer(text))
    out: list[str] = []
    position = 0
    i = 0
    while i < len(matches):
        replaced = False
        for n in (3, 2, 1):
            window = matches[i : i + n]
            if len(window) < n:
                continue
            # Only words separated by spaces or hyphens join into one term, and never a negation.
            gaps = [text[a.end() : b.start()] for a, b in zip(window, window[1:])]
            if any(g.strip(" -") for g in gaps) or any(m.group(0).lower() in NEGATIONS for m in window):
                continue
            candidate = _joined(window)
            if len(candidate) < MIN_CORRECTION_CHARS:
                continue
            match = _best(candidate, targets)
            if match is None:
                continue
            target, score = match
            if candidate == target and n == 1:
                continue
            if n > 1:
                # A neighbouring word is absorbed only when it makes the match better: "a telectasis" ->
                # "atelectasis", but never "the pulmonary" -> "pulmonary".
                shorter = [_best(_joined(part), targets) for part in (window[1:], window[:-1])]
                if any(s is not None and s[1] >= score for s in shorter):
                    continue
            # Inflections are not errors: "nodules" stays, "effusions" stays.
            if candidate != target and (candidate.startswith(target) or target.startswith(candidate)):
                continue
            out.append(text[position : window[0].start()])
            term = targets[target]
            first = window[0].group(0)
            out.append(term[:1].upper() + term[1:] if first[:1].isupper() and term[:1].islower() else term)
            position = window[-1].end()
            i += n
            replaced = True
            break
        if not replaced:
            i += 1
    out.append(text[position:])
    return "".join(out)
