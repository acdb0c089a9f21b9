"""Voice commands inside dictation: go to a section, insert a normal phrase or a template,
accept the AI findings, undo the last phrase, sign.

:func:`split_commands` cuts a transcript into text pieces and typed commands, in the order
spoken; the report editor executes the commands (it owns the cursor, the templates and
the signature), and the text pieces go through the formatter.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum


class CommandKind(StrEnum):
    GO_TO_SECTION = "go_to_section"
    INSERT_NORMAL = "insert_normal"
    INSERT_TEMPLATE = "insert_template"
    ACCEPT_AI_FINDINGS = "accept_ai_findings"
    UNDO = "undo"
    SIGN = "sign"


@dataclass(frozen=True)
class VoiceCommand:
    """A command the radiologist spoke; ``argument`` is the section, normal phrase or template name."""

    kind: CommandKind
    argument: str | None = None
    spoken: str = ""

    def as_dict(self) -> dict[str, str | None]:
        return {"type": "command", "command": self.kind.value, "argument": self.argument, "spoken": self.spoken}


@dataclass(frozen=True)
class TextPiece:
    text: str

    def as_dict(self) -> dict[str, str]:
        return {"type": "text", "text": self.text}


# The report's sections by the names the editor uses, with the words radiologists say for them.
SECTION_WORDS: dict[str, str] = {
    "clinical history": "indication",
    "clinical information": "indication",
    "history": "indication",
    "indication": "indication",
    "indications": "indication",
    "technique": "technique",
    "comparison": "comparison",
    "comparisons": "comparison",
    "findings": "findings",
    "finding": "findings",
    "impression": "impression",
    "impressions": "impression",
    "conclusion": "impression",
    "conclusions": "impression",
    "recommendation": "recommendation",
    "recommendations": "recommendation",
}
KOREAN_SECTION_WORDS: dict[str, str] = {
    "임상 정보": "indication",
    "검사 방법": "technique",
    "비교": "comparison",
    "소견": "findings",
    "판독 소견": "findings",
    "결론": "impression",
    "인상": "impression",
    "권고": "recommendation",
}


def _alternation(words: list[str] | tuple[str, ...]) -> str:
    return "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))


# Patterns run on the transcript lower-cased with punctuation turned into "|", so a name never runs
# across a sentence boundary and offsets still match the original text.
_EN_PATTERNS: list[tuple[CommandKind, re.Pattern[str]]] = [
    (
        CommandKind.GO_TO_SECTION,
        re.compile(rf"\b(?:go|jump|move|skip|switch) to (?:the )?(?P<arg>{_alternation(list(SECTION_WORDS))})(?: section)?\b"),
    ),
    # "Insert template, chest CT.": the recogniser often puts a comma before the name.
    (CommandKind.INSERT_TEMPLATE, re.compile(r"\binsert (?:the )?template\|?(?: for)?(?: the)? (?P<arg>[a-z0-9 ]{1,40}?) *(?=\||$)")),
    (
        CommandKind.INSERT_NORMAL,
        re.compile(r"\binsert (?:the |a )?normal(?: phrase| findings| text)?(?: for)?(?: the)?(?: (?P<arg>[a-z]+))?(?= *(?:\||$))"),
    ),
    (
        CommandKind.ACCEPT_AI_FINDINGS,
        re.compile(r"\baccept (?:all )?(?:the )?(?:all )?(?:ai|a i|a\|i\||a\|i|artificial intelligence|a\.i\.) ?(?:findings?|results?)\b"),
    ),
    (CommandKind.UNDO, re.compile(r"\b(?:undo(?: that| the last phrase| last phrase| the last| last)?|scratch that|delete that)\b")),
    (CommandKind.SIGN, re.compile(r"\bsign(?: off)? (?:the )?report\b|\bsign and finali[sz]e\b|\bsign off\b")),
]
_KO_PATTERNS: list[tuple[CommandKind, re.Pattern[str]]] = [
    (CommandKind.GO_TO_SECTION, re.compile(rf"(?P<arg>{_alternation(list(KOREAN_SECTION_WORDS))})\s?(?:으로|로)?\s?(?:이동|가기)")),
    (CommandKind.INSERT_NORMAL, re.compile(r"정상\s?(?:소견|문구)\s?(?:삽입|입력|넣기)")),
    (CommandKind.ACCEPT_AI_FINDINGS, re.compile(r"(?:ai|인공지능|에이아이)\s?(?:소견|결과)\s?(?:승인|수락)")),
    (CommandKind.UNDO, re.compile(r"(?:실행\s?취소|방금\s?취소|되돌리기)")),
    (CommandKind.SIGN, re.compile(r"(?:보고서\s?)?서명(?:하기)?(?=\s*(?:\||$))")),
]


# The command phrases a short clip is checked against when the recogniser heard no command in it
# (radpilot.dictation.service: commands by rescoring), in the words radiologists say them.
_SPOKEN_SECTIONS = ("findings", "impression", "technique", "comparison", "indication", "clinical history", "recommendations")
COMMAND_PHRASES: tuple[str, ...] = (
    "Accept AI findings.",
    "Accept the AI findings.",
    "Undo.",
    "Undo that.",
    "Scratch that.",
    "Delete that.",
    "Sign report.",
    "Sign the report.",
    "Sign off.",
    "Insert normal.",
    *(f"Go to {section}." for section in _SPOKEN_SECTIONS),
)


def command_phrases(normal_names: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The English command phrases, with "Insert normal NAME." for each of the exam's normal phrases."""
    return COMMAND_PHRASES + tuple(f"Insert normal {name}." for name in normal_names)


def _masked(text: str) -> str:
    """``text`` lower-cased with sentence punctuation as "|" (same length, so offsets carry over)."""
    lowered = "".join(c.lower() if len(c.lower()) == 1 else c for c in text)
    return re.sub(r"[.,;:!?]", "|", lowered)


def split_commands(text: str, language: str = "en") -> list[TextPiece | VoiceCommand]:
    """``text`` as text pieces and voice commands in spoken order ("go to impression" -> GO_TO_SECTION impression)."""
    masked = _masked(text)
    patterns = _KO_PATTERNS if language == "ko" else _EN_PATTERNS
    found: list[tuple[int, int, VoiceCommand]] = []
    for kind, pattern in patterns:
        for match in pattern.finditer(masked):
            if any(start < match.end() and match.start() < end for start, end, _ in found):
                continue
            found.append(
                (match.start(), match.end(), VoiceCommand(kind, _argument(kind, match, language), text[match.start() : match.end()]))
            )
    pieces: list[TextPiece | VoiceCommand] = []
    position = 0
    for start, end, command in sorted(found, key=lambda item: item[0]):
        before = text[position:start]
        if before.strip(" .,;:!?|"):
            pieces.append(TextPiece(before.strip()))
        pieces.append(command)
        # The recogniser's full stop after a command belongs to the command, not to the next sentence.
        position = end + len(re.match(r"[\s.,;:!?]*", text[end:]).group(0))  # type: ignore[union-attr]
    rest = text[position:]
    if rest.strip(" .,;:!?"):
        pieces.append(TextPiece(rest.strip()))
    return pieces


def _argument(kind: CommandKind, match: re.Match[str], language: str) -> str | None:
    arg = match.groupdict().get("arg")
    if kind is CommandKind.GO_TO_SECTION and arg is not None:
        return (KOREAN_SECTION_WORDS if language == "ko" else SECTION_WORDS)[arg]
    return arg.strip() if arg else None
