"""Chromium's fake microphone dictates into the dictation pad: push-to-talk over the real WebSocket,
the real recogniser, and a spoken command that moves the cursor to another section.

Chromium plays a WAV made by espeak-ng as its microphone (``--use-file-for-fake-audio-capture``,
``%noloop`` so it is heard once); Playwright holds the Talk button for the length of the clip.
"""

from __future__ import annotations

import wave
from collections.abc import Iterator
from pathlib import Path

import pytest

from radpilot.security.principal import Role
from tests.dictation_support import require_espeak, speak
from tests.fixtures.auth import sign_in
from tests.fixtures.radpilot import RunningNode, radpilot, radpilot_factory  # noqa: F401 - fixtures
from tests.helpers import require_or_skip

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

CHROMIUM = Path("/usr/bin/chromium")
SENTENCE = "There is a seven millimeter nodule in the left upper lobe. Go to impression. No acute abnormality."


@pytest.fixture
def microphone_browser(tmp_path: Path) -> Iterator[tuple[object, float]]:
    """Headless Debian Chromium whose microphone plays SENTENCE once; yields it and the clip's length (s)."""
    require_espeak()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        require_or_skip("the playwright Python package is not installed")
    if not CHROMIUM.exists():
        require_or_skip(f"{CHROMIUM} is not installed (Debian package chromium)")
    clip = speak(SENTENCE, tmp_path / "dictation.wav", words_per_minute=150)
    with wave.open(str(clip)) as handle:
        seconds = handle.getnframes() / handle.getframerate()
    args = [
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={clip}%noloop",
        "--autoplay-policy=no-user-gesture-required",
    ]
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=args, headless=True)
        yield chromium, seconds
        chromium.close()


def test_fake_microphone_dictates_into_the_pad_and_a_spoken_command_moves_to_impression(microphone_browser, radpilot) -> None:  # noqa: F811
    browser, seconds = microphone_browser
    # The page's policy forbids eval, which Playwright's wait_for_function and evaluate use; the page's own script is unaffected.
    context = browser.new_context(permissions=["microphone"], bypass_csp=True)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(f"console {msg.type}: {msg.text}") if msg.type == "error" else None)
    sign_in(page, radpilot.base_url, radpilot.archive.engine, Role.RADIOLOGIST)  # the pad's POST and WebSocket go by its session
    page.goto(f"{radpilot.base_url}/ui/dictation?exam=chest_ct", wait_until="load")
    talk = page.locator("[data-talk]")
    talk.hover()
    page.mouse.down()
    try:
        page.wait_for_function("document.querySelector('[data-dictation-pad]').dataset.state === 'listening'", timeout=120_000)
    except Exception as exc:  # noqa: BLE001 - say what the page showed
        pytest.fail(f"the pad never listened: status {page.inner_text('[data-status]')!r}, errors {errors}: {exc}")
    page.wait_for_timeout(int((seconds + 1.0) * 1000))
    page.mouse.up()
    page.wait_for_function("window.radpilotDictationLog.finals.length + window.radpilotDictationLog.errors.length > 0", timeout=300_000)
    log = page.evaluate("window.radpilotDictationLog")
    assert not log["errors"] and not errors, (log["errors"], errors)
    findings = page.locator("textarea[data-section=findings]").input_value()
    impression = page.locator("textarea[data-section=impression]").input_value()
    assert "7 mm nodule" in findings, log["finals"]
    assert "acute abnormality" in impression.lower() and "nodule" not in impression, (findings, impression)
    assert page.evaluate("document.activeElement.dataset.section") == "impression"
    assert log["partials"], "no partial text arrived while the talk button was held"
    context.close()


def test_the_pad_page_carries_a_policy_that_allows_only_its_own_origin(radpilot) -> None:  # noqa: F811
    import httpx

    response = httpx.get(f"{radpilot.base_url}/ui/dictation?exam=<script>", headers=radpilot.headers, timeout=30)
    assert response.status_code == 200
    assert "connect-src 'self'" in response.headers["content-security-policy"]
    assert "<script>" not in response.text.replace('<script src="/ui/static/dictation.js" defer></script>', "")
