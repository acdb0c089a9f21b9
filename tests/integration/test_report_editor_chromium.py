"""The report editor in headless Chromium: start from a template, keyboard editing, AI phrases marked then
accepted, push-to-talk dictation inserted at the cursor, sign only after confirming, read-only once signed."""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

import pytest
import uvicorn

from radpilot.archive import Archive
from radpilot.web.app import create_app
from tests.fixtures.principal import act_as
from tests.fixtures.radpilot import make_settings
from tests.helpers import free_port, require_or_skip
from tests.report_factories import LUNG_MEASUREMENTS, RADIOLOGIST, record_finished_job, store_study

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]


@pytest.fixture
def web(tmp_path: Path):
    if not CHROMIUM.exists():
        require_or_skip("chromium is not installed")
    settings = make_settings(tmp_path)
    archive = Archive.from_settings(settings)
    app = create_app(settings, archive)
    act_as(app, RADIOLOGIST)
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


def test_radiologist_writes_dictates_and_signs_a_report_in_the_browser(web) -> None:
    from playwright.sync_api import expect, sync_playwright

    base, archive = web
    study_uid, series_uid, _ = store_study(archive)
    record_finished_job(archive, study_uid, series_uid, LUNG_MEASUREMENTS)
    dictated: list[bytes] = []

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        page = browser.new_context(permissions=["microphone"]).new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))

        # The dictation service (speech models) is not part of this web app: a stand-in on the WebSocket speaks
        # its protocol (ready, then partial and final after "end"), keeping the PCM16 audio the page streamed.
        def fake_dictation_stream(socket) -> None:  # noqa: ANN001
            def on_message(message) -> None:  # noqa: ANN001
                if isinstance(message, bytes):
                    dictated.append(message)
                elif json.loads(message).get("type") == "end":
                    socket.send(json.dumps({"type": "partial", "text": "No pleural", "audio_s": 1.0}))
                    pieces = [{"type": "text", "text": "No pleural effusion."}]
                    socket.send(json.dumps({"type": "final", "text": "No pleural effusion.", "pieces": pieces}))

            socket.on_message(on_message)
            socket.send(json.dumps({"type": "ready"}))

        page.route_web_socket(re.compile(r".*/api/dictation/stream.*"), fake_dictation_stream)
        page.goto(f"{base}/ui/studies/{study_uid}/report")
        page.select_option("#template-select", "chest_ct")
        page.click("#create-report")
        page.wait_for_selector(".ai-badge")
        assert page.locator(".ai-phrase mark").first.inner_text() == "Emphysema: LAA-950 12.3 % of lung volume."

        page.click("#section-impression")
        page.keyboard.type("Mild centrilobular emphysema.")
        page.keyboard.press("Control+s")
        expect(page.locator("#message")).to_have_text("Saved.")

        findings = page.locator("#section-findings")
        findings.click()
        page.keyboard.press("Control+End")
        page.keyboard.press("Enter")
        dictate = page.locator("#dictate")
        dictate.scroll_into_view_if_needed()
        box = dictate.bounding_box()
        page.mouse.move(box["x"] + 5, box["y"] + 5)
        page.mouse.down()
        page.wait_for_timeout(1200)
        page.mouse.up()
        expect(findings).to_have_value(re.compile(r"Total lung volume 5123 mL\.\nNo pleural effusion\.$"), timeout=15000)
        expect(page.locator("#message")).to_have_text("Saved.")
        assert dictated and sum(len(chunk) for chunk in dictated) > 16000, "the page streamed (almost) no audio"

        page.once("dialog", lambda dialog: dialog.accept())
        page.click("#sign")
        expect(page.locator("#message")).to_contain_text("not yet accepted")
        page.click("#accept-all-ai")
        page.wait_for_load_state("load")
        page.wait_for_selector("#accept-all-ai[disabled]", timeout=30000)
        assert page.locator(".ai-badge").count() == 0

        page.once("dialog", lambda dialog: dialog.dismiss())
        page.click("#sign")
        page.wait_for_timeout(500)
        assert page.locator("#report-status").inner_text() == "draft"

        page.once("dialog", lambda dialog: dialog.accept())
        page.click("#sign")
        expect(page.locator("#report-status")).to_have_text("final", timeout=30000)
        assert page.locator("textarea[readonly]").count() == 5
        assert page.locator("#sign").count() == 0
        assert "No pleural effusion." in page.locator("#section-findings").input_value()
        assert errors == []
        browser.close()
