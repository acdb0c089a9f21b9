"""Spoken form to report form: numbers, decimals, units, percent, ranges, punctuation words (English and Korean)."""

from __future__ import annotations

import pytest

from radpilot.dictation.formatting import format_english, format_korean, format_report_text, korean_sino_number


@pytest.mark.parametrize(
    ("spoken", "report"),
    [
        ("seven millimeters", "7 mm"),
        ("zero point five eight", "0.58"),
        ("forty five percent", "45 %"),
        ("forty-five percent", "45 %"),
        ("mean attenuation of thirty Hounsfield units", "Mean attenuation of 30 HU"),
        ("attenuation in Hounsfield units", "Attenuation in HU"),
        ("volume of one hundred and twenty five milliliters", "Volume of 125 mL"),
        ("seven by five millimeters", "7 x 5 mm"),
        ("two point three by one point eight centimeters", "2.3 x 1.8 cm"),
        ("point five centimeters", "0.5 cm"),
        ("minus nine hundred fifty Hounsfield units", "-950 HU"),
        ("one thousand two hundred milliliters", "1200 mL"),
        ("twelve hundred", "1200"),
        ("an area of four square centimeters", "An area of 4 cm²"),
    ],
)
def test_spoken_numbers_and_units_become_report_form(spoken: str, report: str) -> None:
    assert format_english(spoken) == report


@pytest.mark.parametrize(
    ("recognised", "report"),
    [
        ("There is a 7 millimeter nodule.", "There is a 7 mm nodule."),
        ("The liver measures 16 .5 centimeters.", "The liver measures 16.5 cm."),
        ("Ejection fraction 55%.", "Ejection fraction 55 %."),
        ("A 2.3 by 1.8 centimeter lesion.", "A 2.3 x 1.8 cm lesion."),
    ],
)
def test_digits_written_by_the_recogniser_get_the_same_report_form(recognised: str, report: str) -> None:
    assert format_english(recognised) == report


@pytest.mark.parametrize(
    ("spoken", "report"),
    [
        ("no pneumothorax period", "No pneumothorax."),
        ("no pneumothorax. Period.", "No pneumothorax."),
        ("small effusion comma stable period", "Small effusion, stable."),
        ("findings colon normal period new line heart normal", "Findings: normal.\nHeart normal"),
        ("stable period new paragraph impression colon no acute findings full stop", "Stable.\n\nImpression: no acute findings."),
        ("is it new question mark", "Is it new?"),
    ],
)
def test_punctuation_words_become_marks_and_sentences_start_with_capitals(spoken: str, report: str) -> None:
    assert format_english(spoken) == report


def test_words_that_only_look_like_numbers_or_units_stay_words() -> None:
    assert format_english("one of the nodes is calcified") == "One of the nodes is calcified"
    assert format_english("centimeters are used") == "Centimeters are used"
    assert format_english("follow-up in three months") == "Follow-up in 3 months"
    # Two numbers spoken one after the other are two values, never run together.
    assert format_english("five seven") == "5 7"


@pytest.mark.parametrize(
    ("spoken", "report"),
    [
        ("칠 밀리미터 결절", "7 mm 결절"),
        ("사십오 퍼센트", "45 %"),
        ("영 점 오 팔", "0.58"),
        ("일 점 오 센티미터", "1.5 cm"),
        ("칠 곱하기 오 밀리미터 마침표 새 문단 결론", "7 x 5 mm.\n\n결론"),
        ("두 센티미터", "2 cm"),
        ("삼십 하운스필드 유닛", "30 HU"),
        ("이백 밀리리터", "200 mL"),
    ],
)
def test_korean_numbers_and_units_become_report_form(spoken: str, report: str) -> None:
    assert format_korean(spoken) == report


def test_korean_number_syllables_that_are_particles_stay_text() -> None:
    # 이 is "this"/a particle, 일 is "work": only a following unit or a decimal 점 makes them numbers.
    assert format_korean("이 결절은 십이 밀리미터이다") == "이 결절은 12 mm이다"
    assert format_korean("일이 많다") == "일이 많다"


def test_sino_korean_numbers() -> None:
    assert korean_sino_number("사십오") == "45"
    assert korean_sino_number("백이십") == "120"
    assert korean_sino_number("천오백") == "1500"
    with pytest.raises(ValueError, match="not a Sino-Korean number"):
        korean_sino_number("결절")


def test_unknown_language_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="unsupported dictation language 'fr'"):
        format_report_text("sept millimètres", "fr")
