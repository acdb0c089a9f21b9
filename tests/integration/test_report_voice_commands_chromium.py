"""Spoken commands in the report editor, in headless Chromium with the real recogniser: "go to impression"
moves the cursor, "insert normal chest" inserts the lexicon's phrase, "delete that" takes it back, "accept
the AI findings" accepts them on the server, and "sign the report" only opens the confirmation.

The first clip is Chromium's fake microphone (an espeak-ng WAV, ``%noloop``) streamed by the editor's own
push-to-talk over the WebSocket, its partial text shown while the button is held; the others go through the page's own dictation call (the same POST and the same code that
applies the result), which is seconds faster than playing them in real time.
"""

from __future__ import annotations

import base64
import threading
import time
import wave
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn

from radpilot.archive import Archive
from radpilot.security.principal import Role
from radpilot.web.app import create_app
from tests.dictation_support import require_espeak, speak
from tests.fixtures.auth import sign_in
from tests.fixtures.radpilot import make_settings
from tests.helpers import free_port, require_or_skip
from tests.report_factories import LUNG_MEASUREMENTS, record_finished_job, store_study

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

CHROMIUM = Path("/usr/bin/chromium")
# Phrasings whisper-tiny.en hears reliably in espeak-ng's voice ("undo" and "AI" alone it does not).
MICROPHONE = "There is a small nodule in the left upper lobe. Go to impression. No acute abnormality."
NORMAL = "Go to the findings section. Insert the normal chest."
UNDO_ACCEPT_SIGN = "Delete that. Now accept the artificial intelligence findings. Sign the report."
NORMAL_CHEST = "The lungs are clear. No pleural effusion or pneumothorax. The heart and mediastinum are unremarkable."
RECOGNITION_MS = 180_000


@pytest.fixture
def clips(tmp_path: Path) -> dict[str, Path]:
    require_espeak()
    return {
        name: speak(text, tmp_path / f"{name}.wav", words_per_minute=130)
        for name, text in {"microphone": MICROPHONE, "normal": NORMAL, "undo_accept_sign": UNDO_ACCEPT_SIGN}.items()
    }


@pytest.fixture
def web(tmp_path: Path) -> Iterator[tuple[str, Archive]]:
    if not CHROMIUM.exists():
        require_or_skip(f"{CHROMIUM} is not installed (Debian package chromium)")
    settings = make_settings(tmp_path)
    archive = Archive.from_settings(settings)
    app = create_app(settings, archive)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", archive
    server.should_exit = True
    thread.join(timeout=10)
    archive.close()


def _dictate(page, clip: Path) -> list[str]:  # noqa: ANN001 - a Playwright page
    """Post ``clip`` through the editor's own dictation call; the status notes it added."""
    before = page.evaluate("window.radpilotReportEditor.log.length")
    page.evaluate(
        "async (b64) => { const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));"
        " await window.radpilotReportEditor.dictateClip(new Blob([bytes], { type: 'audio/wav' })); }",
        base64.b64encode(clip.read_bytes()).decode(),
    )
    return page.evaluate("window.radpilotReportEditor.log").__getitem__(slice(before, None))


def test_spoken_commands_move_insert_undo_accept_and_ask_before_signing(web, clips) -> None:
    from playwright.sync_api import sync_playwright

    base, archive = web
    study_uid, series_uid, _ = store_study(archive)
    record_finished_job(archive, study_uid, series_uid, LUNG_MEASUREMENTS)
    with wave.open(str(clips["microphone"])) as handle:
        seconds = handle.getnframes() / handle.getframerate()
    args = [
        "--no-sandbox",
        "--disable-gpu",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={clips['microphone']}%noloop",
    ]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=args, headless=True)
        # The page's policy forbids eval, which Playwright's evaluate uses; the page's own script is unaffected.
        page = browser.new_context(permissions=["microphone"], bypass_csp=True).new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        sign_in(page, base, archive.engine, Role.RADIOLOGIST)  # the editor's writes go by the session and its CSRF token
        page.goto(f"{base}/ui/studies/{study_uid}/report")
        page.select_option("#template-select", "chest_ct")
        page.click("#create-report")
        page.wait_for_selector(".ai-badge")
        findings, impression = page.locator("#section-findings"), page.locator("#section-impression")

        # The fake microphone through push-to-talk: findings text, then "go to impression", then impression text.
        findings.click()
        page.keyboard.press("Control+End")
        page.keyboard.press("Enter")
        box = page.locator("#dictate").bounding_box()
        page.mouse.move(box["x"] + 5, box["y"] + 5)
        page.mouse.down()
        page.wait_for_timeout(int((seconds + 1.5) * 1000))
        # the audio streams while the button is held: partial text is shown before the release
        partials = page.evaluate("window.radpilotReportEditor.partials.slice()")
        shown = page.inner_text("#dictation-partial")
        page.mouse.up()
        page.wait_for_function(
            "window.radpilotReportEditor.log.length > 0 || /failed|No microphone/.test(document.getElementById('message').textContent)",
            timeout=RECOGNITION_MS,
        )
        assert "acute abnormality" in impression.input_value().lower(), (page.inner_text("#message"), impression.input_value())
        assert partials and "nodule" in " ".join(partials).lower(), partials
        assert shown.strip(), "no partial text on the page while speaking"
        assert page.inner_text("#dictation-partial") == ""  # cleared by the final text
        assert "nodule" in findings.input_value() and "nodule" not in impression.input_value()
        assert "Moved to Impression." in page.evaluate("window.radpilotReportEditor.log")
        assert page.evaluate("document.activeElement.id") == "section-impression"

        notes = _dictate(page, clips["normal"])
        assert "Moved to Findings." in notes and "Inserted the normal chest phrase into Findings." in notes, notes
        assert findings.input_value().endswith(NORMAL_CHEST)

        dialogs: list[str] = []

        def refuse(dialog) -> None:  # noqa: ANN001 - a Playwright dialog
            dialogs.append(dialog.message)
            dialog.dismiss()

        page.once("dialog", refuse)
        notes = _dictate(page, clips["undo_accept_sign"])
        assert f'Removed "{NORMAL_CHEST}" from Findings.' in notes, notes
        assert NORMAL_CHEST not in findings.input_value()
        assert "Accepted 2 AI phrases." in notes, notes
        assert page.locator(".ai-badge").count() == 0 and page.locator("#accept-all-ai").is_disabled()
        assert dialogs and dialogs[0].startswith("Sign this report?"), dialogs
        assert "Not signed: the signature was not confirmed." in notes, notes

        report = page.request.get(f"{base}/api/reports?study={study_uid}").json()
        assert report["status"] == "draft"
        assert {p["state"] for p in report["ai_phrases"]} == {"accepted"}
        assert "acute abnormality" in report["sections"]["impression"].lower()
        assert NORMAL_CHEST not in report["sections"]["findings"] and "nodule" in report["sections"]["findings"]
        assert errors == []
        browser.close()


def test_editor_applies_template_section_moves_and_undo_without_touching_typed_text(web) -> None:
    """The editor's handling of pieces the recogniser hears less reliably (no audio): insert template, indication."""
    from playwright.sync_api import expect, sync_playwright

    base, archive = web
    study_uid, _, _ = store_study(archive)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"], headless=True)
        page = browser.new_context(bypass_csp=True).new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        sign_in(page, base, archive.engine, Role.RADIOLOGIST)  # the editor's writes go by the session and its CSRF token
        page.goto(f"{base}/ui/studies/{study_uid}/report")
        page.select_option("#template-select", "chest_ct")
        page.click("#create-report")
        page.wait_for_selector("#section-technique")
        technique, impression = page.locator("#section-technique"), page.locator("#section-impression")
        technique.fill("")
        impression.click()
        page.keyboard.type("Typed by hand.")
        page.keyboard.press("Control+s")
        expect(page.locator("#message")).to_have_text("Saved.")
        findings_before = page.locator("#section-findings").input_value()

        apply = "(pieces) => window.radpilotReportEditor.applyPieces(pieces)"
        notes = page.evaluate(
            apply,
            [
                {"type": "command", "command": "go_to_section", "argument": "indication"},
                {"type": "text", "text": "Cough."},
                {"type": "command", "command": "go_to_section", "argument": "impression"},
                {"type": "command", "command": "insert_template", "argument": "chest ct"},
            ],
        )
        assert notes == ["Moved to Clinical information.", "Moved to Impression.", "Inserted the CT chest template into Technique."]
        assert page.locator("#section-clinical_information").input_value() == "Cough."
        assert technique.input_value() == "CT of the chest."
        assert impression.input_value() == "Typed by hand."
        assert page.locator("#section-findings").input_value() == findings_before

        notes = page.evaluate(apply, [{"type": "command", "command": "undo"}])
        assert notes == ["Nothing dictated in Impression to undo."]
        notes = page.evaluate(
            apply, [{"type": "command", "command": "go_to_section", "argument": "indication"}, {"type": "command", "command": "undo"}]
        )
        assert notes == ["Moved to Clinical information.", 'Removed "Cough." from Clinical information.']
        report = page.request.get(f"{base}/api/reports?study={study_uid}").json()
        assert report["sections"]["clinical_information"] == "" and report["sections"]["technique"] == "CT of the chest."
        assert report["sections"]["impression"] == "Typed by hand."

        # A template name as the recogniser may mishear it still finds that template, not the study's own.
        notes = page.evaluate(apply, [{"type": "command", "command": "insert_template", "argument": "low those lung ct"}])
        assert notes == ["Inserted the Low-dose CT lung screening template into Clinical information."], notes

        page.once("dialog", lambda dialog: dialog.accept())
        # Not awaited: signing reloads the page, which would end the evaluation.
        page.evaluate("(pieces) => { window.radpilotReportEditor.applyPieces(pieces); }", [{"type": "command", "command": "sign"}])
        expect(page.locator("#report-status")).to_have_text("final", timeout=30_000)
        assert page.locator("textarea[readonly]").count() == 5 and page.locator("#dictate").count() == 0
        assert errors == []
        browser.close()
