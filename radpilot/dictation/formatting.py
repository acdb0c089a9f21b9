"""Spoken form to report form: numbers, units, percent, ranges and punctuation words.

Radiologists dictate "seven by five millimeters period"; the report says "7 x 5 mm.".
The recogniser sometimes writes digits itself ("7 millimeter") and sometimes words
("seven millimeters"), and sometimes adds its own punctuation around a spoken "period";
every path ends in the same report form, so the benchmark can compare against a reference
formatted by the same functions.

Pure functions, no model: English (:func:`format_english`) and Korean (:func:`format_korean`).
"""

from __future__ import annotations

import re
from decimal import Decimal

# --- English -------------------------------------------------------------------------------

_UNITS_WORDS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
    "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15, "sixteen": 16,
    "seventeen": 17, "eighteen": 18, "nineteen": 19,
}  # fmt: skip
_TENS_WORDS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90}
_SCALE_WORDS = {"hundred": 100, "thousand": 1000}
_NUMBER_WORDS = set(_UNITS_WORDS) | set(_TENS_WORDS) | set(_SCALE_WORDS)

# Longest phrases first so "square centimeters" wins over "centimeters".
_UNIT_PHRASES: list[tuple[tuple[str, ...], str]] = sorted(
    [
        (("hounsfield", "units"), "HU"),
        (("hounsfield", "unit"), "HU"),
        (("square", "centimeters"), "cm²"),
        (("square", "centimeter"), "cm²"),
        (("square", "millimeters"), "mm²"),
        (("square", "millimeters"), "mm²"),
        (("cubic", "centimeters"), "cm³"),
        (("cubic", "centimeter"), "cm³"),
        (("beats", "per", "minute"), "bpm"),
        (("per", "cent"), "%"),
        (("percent",), "%"),
        (("%",), "%"),
        (("millimeters",), "mm"),
        (("millimeter",), "mm"),
        (("millimetres",), "mm"),
        (("millimetre",), "mm"),
        (("mm",), "mm"),
        (("centimeters",), "cm"),
        (("centimeter",), "cm"),
        (("centimetres",), "cm"),
        (("centimetre",), "cm"),
        (("cm",), "cm"),
        (("milliliters",), "mL"),
        (("milliliter",), "mL"),
        (("millilitres",), "mL"),
        (("millilitre",), "mL"),
        (("ml",), "mL"),
        (("cc",), "mL"),
        (("liters",), "L"),
        (("liter",), "L"),
        (("milligrams",), "mg"),
        (("milligram",), "mg"),
        (("millisieverts",), "mSv"),
        (("millisievert",), "mSv"),
        (("hu",), "HU"),
        (("degrees",), "°"),
        (("degree",), "°"),
    ],
    key=lambda item: -len(item[0]),
)
# Units written as abbreviations even without a number before them ("mean attenuation in Hounsfield units").
_FREE_UNITS = {("hounsfield", "units"), ("hounsfield", "unit")}

_PUNCTUATION_PHRASES: list[tuple[tuple[str, ...], str]] = sorted(
    [
        (("new", "paragraph"), "\n\n"),
        (("next", "paragraph"), "\n\n"),
        (("new", "line"), "\n"),
        (("next", "line"), "\n"),
        (("newline",), "\n"),
        (("full", "stop"), "."),
        (("period",), "."),
        (("comma",), ","),
        (("colon",), ":"),
        (("semicolon",), ";"),
        (("semi", "colon"), ";"),
        (("question", "mark"), "?"),
        (("open", "parenthesis"), "("),
        (("close", "parenthesis"), ")"),
        (("open", "bracket"), "("),
        (("close", "bracket"), ")"),
        (("hyphen",), "-"),
        (("slash",), "/"),
    ],
    key=lambda item: -len(item[0]),
)
_BREAKS = {"\n", "\n\n"}
_SYMBOLS = {symbol for _, symbol in _UNIT_PHRASES} | {"x"}
_CLOSING = {".", ",", ":", ";", "?", ")", "%"}
_SENTENCE_END = {".", "?", "\n", "\n\n"}

# A token: a number as the recogniser writes it (7, 16.5, .5, 1,200), a word (with inner ' or -), or one punctuation mark.
_TOKEN = re.compile(r"\d+(?:,\d{3})*(?:\.\d+)?|\.\d+|[^\W\d_]+(?:['’-][^\W\d_]+)*|\n+|[^\s\w]", re.UNICODE)


def _tokens(text: str) -> list[str]:
    tokens: list[str] = []
    for match in _TOKEN.finditer(text):
        token = match.group(0)
        if token.startswith("\n"):
            token = "\n\n" if len(token) > 1 else "\n"
        # "forty-five" is two number words; "follow-up" stays one word.
        parts = token.split("-")
        if len(parts) > 1 and all(p.lower() in _NUMBER_WORDS for p in parts):
            tokens.extend(parts)
        else:
            tokens.append(token)
    return tokens


def _is_digits(token: str) -> bool:
    return bool(re.fullmatch(r"\d+(?:,\d{3})*(?:\.\d+)?|\.\d+", token))


def _match_phrase(words: list[str], i: int, phrases: list[tuple[tuple[str, ...], str]]) -> tuple[int, str] | None:
    for phrase, replacement in phrases:
        end = i + len(phrase)
        if end <= len(words) and tuple(w.lower() for w in words[i:end]) == phrase:
            return len(phrase), replacement
    return None


def _parse_integer_words(words: list[str], i: int) -> tuple[int, int] | None:
    """An integer spoken from ``words[i]`` on: (value, words used), or None. "one hundred and twenty five" -> 125.

    "five seven" is two numbers (a pause, or two values), not 57; "twenty five" is one.
    """
    total, current, last = 0, 0, ""
    j = i
    while j < len(words):
        w = words[j].lower()
        if w in _UNITS_WORDS and _UNITS_WORDS[w] < 10 and last in ("", "tens", "hundred", "thousand") and not (w == "zero" and last):
            current += _UNITS_WORDS[w]
            last = "zero" if w == "zero" else "unit"
        elif w in _UNITS_WORDS and last in ("", "hundred", "thousand"):
            current += _UNITS_WORDS[w]
            last = "teen"
        elif w in _TENS_WORDS and last in ("", "hundred", "thousand"):
            current += _TENS_WORDS[w]
            last = "tens"
        elif w == "hundred" and last in ("unit", "teen"):
            current = (current - current % 100) + (current % 100) * 100
            last = "hundred"
        elif w == "thousand" and last in ("unit", "teen", "tens", "hundred"):
            total += current * 1000
            current, last = 0, "thousand"
        elif w == "and" and last in ("hundred", "thousand") and j + 1 < len(words) and words[j + 1].lower() in _NUMBER_WORDS:
            j += 1
            continue
        else:
            break
        j += 1
        if last == "zero":
            break
    if not last:
        return None
    return total + current, j - i


def _parse_number(words: list[str], i: int) -> tuple[str, int] | None:
    """A number (digits or words, with "point" decimals) from ``words[i]``: (report text, tokens used), or None."""
    w = words[i]
    if _is_digits(w):
        text, used = w.replace(",", ""), 1
        if text.startswith("."):
            text = "0" + text
    else:
        parsed = _parse_integer_words(words, i)
        if parsed is None:
            if (
                w.lower() == "point"
                and i + 1 < len(words)
                and words[i + 1].lower() in _UNITS_WORDS
                and _UNITS_WORDS[words[i + 1].lower()] < 10
            ):
                text, used = "0", 0  # "point five" -> 0.5
            else:
                return None
        else:
            text, used = str(parsed[0]), parsed[1]
    # Recognisers split "16.5" as "16" ".5"; a spoken decimal comes as "point five eight".
    j = i + used
    if j < len(words) and re.fullmatch(r"\.\d+", words[j]) and "." not in text:
        return text + words[j], used + 1
    if j + 1 < len(words) and words[j].lower() == "point" and "." not in text:
        digits = []
        k = j + 1
        while k < len(words) and (
            words[k].lower() in _UNITS_WORDS and _UNITS_WORDS[words[k].lower()] < 10 or re.fullmatch(r"\d", words[k])
        ):
            digits.append(str(_UNITS_WORDS.get(words[k].lower(), words[k])))
            k += 1
        if digits:
            return f"{text}.{''.join(digits)}", k - i
    return text, used


def _normalise_decimal(text: str) -> str:
    return text if "." not in text else str(Decimal(text))


def format_english(text: str) -> str:
    """Report form of English dictation: "seven by five millimeters period" -> "7 x 5 mm."."""
    words = _tokens(text)
    out: list[str] = []
    i = 0
    last_number_at = -2  # index in ``out`` of the last number written
    while i < len(words):
        punct = _match_phrase(words, i, _PUNCTUATION_PHRASES)
        if punct is not None:
            used, mark = punct
            # The recogniser may have written the mark itself as well ("nodule. Period."): keep one.
            if out and out[-1] in _CLOSING | _BREAKS and mark in _CLOSING and out[-1] == mark:
                i += used
                continue
            out.append(mark)
            i += used
            # Skip the recogniser's own mark right after a spoken one ("period." -> ".").
            while i < len(words) and words[i] in _CLOSING - {")", "%"}:
                i += 1
            continue
        if words[i] in _CLOSING | _BREAKS or words[i] in {"(", "-", "/"}:
            if out and out[-1] in _SENTENCE_END and words[i] in _SENTENCE_END - _BREAKS:
                i += 1  # "nodule.." -> "nodule."
                continue
            if words[i] == "%" and out and last_number_at == len(out) - 1:
                out.append("%")
            elif words[i] != "%":
                out.append(words[i])
            i += 1
            continue
        number = _parse_number(words, i)
        # A lone "one" not followed by a unit or "by" stays a word ("one of the nodes").
        if number is not None and words[i].lower() == "one" and number[1] == 1:
            nxt = i + 1
            if not (nxt < len(words) and (_match_phrase(words, nxt, _UNIT_PHRASES) or words[nxt].lower() in {"by", "x"})):
                number = None
        if number is not None:
            value, used = number
            out.append(_normalise_decimal(value))
            last_number_at = len(out) - 1
            i += used
            continue
        lower = words[i].lower()
        if lower in {"minus", "negative"} and i + 1 < len(words) and (number := _parse_number(words, i + 1)) is not None:
            value, used = number
            out.append("-" + _normalise_decimal(value))
            last_number_at = len(out) - 1
            i += 1 + used
            continue
        if lower in {"by", "x", "times"} and last_number_at == len(out) - 1 and i + 1 < len(words) and _parse_number(words, i + 1):
            out.append("x")
            i += 1
            continue
        unit = _match_phrase(words, i, _UNIT_PHRASES)
        if unit is not None:
            used, symbol = unit
            phrase = tuple(w.lower() for w in words[i : i + used])
            if last_number_at == len(out) - 1 or phrase in _FREE_UNITS:
                out.append(symbol)
                i += used
                continue
        out.append(words[i])
        i += 1
    return _join(out)


def _join(tokens: list[str]) -> str:
    """Tokens to text: no space before closing marks, a space before "%" and units, capitals at sentence starts."""
    text = ""
    capitalise = True
    for token in tokens:
        if token in _BREAKS:
            text = text.rstrip(" ") + token
            capitalise = True
            continue
        if capitalise and token[:1].isalpha() and token not in _SYMBOLS:
            token = token[:1].upper() + token[1:]
            capitalise = False
        if token == "%":
            text += " %"
        elif token in _CLOSING:
            text = text.rstrip(" ") + token
        elif not text or text.endswith(("\n", "(", "/", "-")) or token == "-" or token == "/":
            text = text.rstrip(" ") if token in {"-", "/"} else text
            text += token
        else:
            text += " " + token
        if token in _SENTENCE_END:
            capitalise = True
    return text.strip(" ")


# --- Korean --------------------------------------------------------------------------------

_KO_DIGITS = {"영": 0, "공": 0, "일": 1, "이": 2, "삼": 3, "사": 4, "오": 5, "육": 6, "륙": 6, "칠": 7, "팔": 8, "구": 9}
_KO_SCALES = {"십": 10, "백": 100, "천": 1000}
_KO_NATIVE = {
    "하나": 1, "한": 1, "둘": 2, "두": 2, "셋": 3, "세": 3, "넷": 4, "네": 4, "다섯": 5, "여섯": 6, "일곱": 7, "여덟": 8, "아홉": 9, "열": 10,
}  # fmt: skip
_KO_UNITS = [
    ("하운스필드 유닛", "HU"),
    ("하운스필드유닛", "HU"),
    ("하운스필드 단위", "HU"),
    ("제곱센티미터", "cm²"),
    ("밀리미터", "mm"),
    ("센티미터", "cm"),
    ("밀리리터", "mL"),
    ("퍼센트", "%"),
    ("프로", "%"),
    ("밀리", "mm"),
    ("센티", "cm"),
]
_KO_PUNCTUATION = [
    ("새 문단", "\n\n"),
    ("새문단", "\n\n"),
    ("줄 바꿈", "\n"),
    ("줄바꿈", "\n"),
    ("마침표", "."),
    ("쉼표", ","),
    ("콤마", ","),
]
_KO_NUMBER = r"(?:[영공일이삼사오육륙칠팔구십백천]+(?:\s?점(?:\s?[영공일이삼사오육륙칠팔구])+)?|\d+(?:\.\d+)?)"
_KO_UNIT_ALTERNATION = "|".join(re.escape(u) for u, _ in _KO_UNITS)
_KO_NATIVE_ALTERNATION = "|".join(sorted(_KO_NATIVE, key=len, reverse=True))


def korean_sino_number(spoken: str) -> str:
    """Sino-Korean number words to digits: "칠" -> "7", "사십오" -> "45", "영 점 오 팔" -> "0.58"."""
    spoken = spoken.replace(" ", "")
    if re.fullmatch(r"\d+(?:\.\d+)?", spoken):
        return spoken
    whole, _, fraction = spoken.partition("점")
    total, current = 0, 0
    for ch in whole:
        if ch in _KO_DIGITS:
            # "이오" read digit by digit is 25; "사십오" is 4 x 10 + 5.
            current = current * 10 + _KO_DIGITS[ch]
        elif ch in _KO_SCALES:
            total += max(current, 1) * _KO_SCALES[ch]
            current = 0
        else:
            raise ValueError(f"{spoken!r} is not a Sino-Korean number")
    value = str(total + current)
    if fraction:
        if any(ch not in _KO_DIGITS for ch in fraction):
            raise ValueError(f"{spoken!r} has a decimal part that is not digit words")
        value += "." + "".join(str(_KO_DIGITS[ch]) for ch in fraction)
    return value


def format_korean(text: str) -> str:
    """Report form of Korean dictation: "칠 밀리미터" -> "7 mm", "사십오 퍼센트" -> "45 %", "영 점 오 팔" -> "0.58".

    A single syllable such as 이 or 일 is also a particle or a noun, so number words are
    converted only where a unit follows them, where they carry a decimal 점, or around 곱하기 (x).
    """
    for spoken, mark in _KO_PUNCTUATION:
        text = re.sub(rf"[ \t]*{re.escape(spoken)}[ \t]*", mark if mark in _BREAKS else mark + " ", text)
    unit_map = dict(_KO_UNITS)

    def number_unit(match: re.Match[str]) -> str:
        return f"{korean_sino_number(match.group('n'))} {unit_map[match.group('u')]}"

    def native_unit(match: re.Match[str]) -> str:
        return f"{_KO_NATIVE[match.group('n')]} {unit_map[match.group('u')]}"

    # "칠 곱하기 오 밀리미터" -> "7 x 5 mm"
    text = re.sub(
        rf"(?<![가-힣])(?P<a>{_KO_NUMBER})\s*곱하기\s*(?P<b>{_KO_NUMBER})(?=\s*(?:{_KO_UNIT_ALTERNATION}))",
        lambda m: f"{korean_sino_number(m.group('a'))} x {korean_sino_number(m.group('b'))}",
        text,
    )
    text = re.sub(rf"(?<![가-힣])(?P<n>{_KO_NUMBER})\s*(?P<u>{_KO_UNIT_ALTERNATION})", number_unit, text)
    text = re.sub(rf"(?<![가-힣])(?P<n>{_KO_NATIVE_ALTERNATION})\s*(?P<u>{_KO_UNIT_ALTERNATION})", native_unit, text)
    text = re.sub(
        r"(?<![가-힣])(?P<n>[영공일이삼사오육륙칠팔구십백천]+\s?점(?:\s?[영공일이삼사오육륙칠팔구])+)(?![가-힣])",
        lambda m: korean_sino_number(m.group("n")),
        text,
    )
    text = re.sub(r"(\d) ?%", r"\1 %", text)
    text = re.sub(r"[ \t]+([.,])", r"\1", text)
    text = re.sub(r"[ \t]*\n[ \t]*", "\n", text)
    return re.sub(r"[ \t]{2,}", " ", text).strip(" ")


def format_report_text(text: str, language: str = "en") -> str:
    """Report form of dictated ``text`` in ``language`` ("en" or "ko")."""
    if language == "ko":
        return format_korean(text)
    if language == "en":
        return format_english(text)
    raise ValueError(f"unsupported dictation language {language!r}: expected 'en' or 'ko'")
