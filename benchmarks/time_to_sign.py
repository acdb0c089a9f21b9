"""Time-to-sign in the reading-room flow, with and without AI pre-fill, measured in headless Chromium.

One flow per repetition, on a new chest CT study each time (the same synthetic study type in both
arms): sign in, open the worklist and wait for the study's row, open its report editor, start the
report from the chest CT template, dictate the report through the page's own dictation call (an
espeak-ng WAV posted exactly as the push-to-talk clip is, recognised by the real recogniser, its
voice commands executed by the editor), then sign, confirming the dialog, until the report is final.

* ``with_ai``: the study has a finished lung CT job, so the template arrives pre-filled with the AI
  measurements as marked phrases; the radiologist dictates the findings, says "accept the artificial
  intelligence findings" and "sign the report".
* ``without_ai``: no AI job; the radiologist dictates the same findings plus the measurements the AI
  would have filled in, and says "sign the report".

Each arm is two push-to-talk presses, the last ending in "sign the report" (the confirmation is
accepted). Whatever the recogniser missed is then done by hand so the run can still sign (accept
click, impression typed, sign click) and listed in the run's ``fallbacks``. The arms alternate, so drift hits both alike. Median
seconds per arm and their ratio are printed and saved to benchmarks/results/time_to_sign.json.

Honest limits: espeak-ng's voice and scripted clicks are not a radiologist. The times are
dominated by CPU speech recognition and the machine's load, and include no reading of images or
thinking; the ratio shows what the pre-fill saves in dictation and clicks, not clinical reading time.

Usage: .venv/bin/python benchmarks/time_to_sign.py [--repetitions 3]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import uvicorn  # noqa: E402

from radpilot.archive import Archive  # noqa: E402
from radpilot.security.principal import Role  # noqa: E402
from radpilot.web.app import create_app  # noqa: E402
from tests.dictation_support import speak  # noqa: E402
from tests.fixtures.auth import sign_in  # noqa: E402
from tests.fixtures.radpilot import make_settings  # noqa: E402
from tests.helpers import free_port  # noqa: E402
from tests.report_factories import LUNG_MEASUREMENTS, record_finished_job, store_study  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
CHROMIUM = Path("/usr/bin/chromium")
FINDINGS = "There is a small nodule in the left upper lobe. Go to the impression section. Mild emphysema."
# Push-to-talk presses per arm, in order. Phrasings whisper-tiny.en hears in espeak-ng's voice ("now" before
# "accept" keeps it from being heard as "except"; the stray "Now" lands in the report, as it would for a person).
DICTATION = {
    "with_ai": [FINDINGS, "Now accept the artificial intelligence findings. Sign the report."],
    "without_ai": [
        "Emphysema involves twelve percent of lung volume. Total lung volume is five thousand one hundred milliliters. " + FINDINGS,
        "Sign the report.",
    ],
}
FINAL = "document.getElementById('report-status')?.textContent === 'final'"


def serve(settings: Any, archive: Archive) -> tuple[str, uvicorn.Server, threading.Thread]:  # noqa: ANN401 - Settings
    app = create_app(settings, archive)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    return f"http://127.0.0.1:{port}", server, thread


def one_flow(page: Any, base: str, archive: Archive, arm: str, clips: list[bytes]) -> dict[str, Any]:  # noqa: ANN401 - Playwright page
    """Seconds from opening the worklist to a final report, for one new study."""
    study_uid, series_uid, _ = store_study(archive)
    if arm == "with_ai":
        record_finished_job(archive, study_uid, series_uid, LUNG_MEASUREMENTS)
    started = time.perf_counter()
    page.goto(f"{base}/ui/", wait_until="load")
    page.wait_for_selector(f'tr[data-uid="{study_uid}"]', timeout=60_000)
    page.goto(f"{base}/ui/studies/{study_uid}/report", wait_until="load")
    page.select_option("#template-select", "chest_ct")
    page.click("#create-report")
    page.wait_for_selector("#section-findings", timeout=60_000)
    page.click("#section-findings")
    page.keyboard.press("Control+End")
    # The radiologist confirms the signature the spoken "sign the report" asks for.
    page.on("dialog", confirm)
    dictation_s = 0.0
    log: list[str] = []
    for clip in clips:
        dictated = time.perf_counter()
        # Not awaited in the page: a confirmed signature reloads it, which would end an awaited evaluation.
        page.evaluate(
            "(b64) => { const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0)); window.timeToSignDone = false;"
            " window.radpilotReportEditor.dictateClip(new Blob([bytes], { type: 'audio/wav' })).then(() => { window.timeToSignDone = true; }); }",
            base64.b64encode(clip).decode(),
        )
        page.wait_for_function(f"window.timeToSignDone === true || {FINAL}", timeout=120_000)
        dictation_s += time.perf_counter() - dictated
        # The server, not the page: a confirmed signature is reloading the page by now.
        if signed(page, base, study_uid):
            break
        log = page.evaluate("window.radpilotReportEditor.log")
    # What the recogniser missed, done by hand (counted): accept, the impression, the signature.
    fallbacks: list[str] = []
    if not signed(page, base, study_uid):
        if page.locator(".ai-badge").count():
            page.click("#accept-all-ai")
            page.wait_for_selector("#accept-all-ai[disabled]", timeout=60_000)
            fallbacks.append("accept click")
        if not page.locator("#section-impression").input_value().strip():
            page.click("#section-impression")
            page.keyboard.type("Mild emphysema.")
            fallbacks.append("impression typed")
        page.click("#sign")
        fallbacks.append("sign click")
    try:
        page.wait_for_function(FINAL, timeout=120_000)
    except Exception as exc:  # noqa: BLE001 - say what the editor showed
        raise RuntimeError(f"{arm}: the report did not become final; the editor says {page.inner_text('#message')!r}") from exc
    finally:
        page.remove_listener("dialog", confirm)
    total = time.perf_counter() - started
    return {"arm": arm, "seconds": round(total, 3), "dictation_s": round(dictation_s, 3), "fallbacks": fallbacks, "notes": log}


def signed(page: Any, base: str, study_uid: str) -> bool:  # noqa: ANN401 - Playwright page
    return page.request.get(f"{base}/api/reports?study={study_uid}").json()["status"] == "final"


def confirm(dialog: Any) -> None:  # noqa: ANN401 - Playwright dialog
    dialog.accept()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repetitions", type=int, default=3)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright  # noqa: PLC0415 - only this benchmark drives a browser

    if not CHROMIUM.exists():
        print(f"{CHROMIUM} is not installed (Debian package chromium)", file=sys.stderr)
        return 1
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="time-to-sign-") as tmp:
        work = Path(tmp)
        clips = {
            arm: [speak(text, work / f"{arm}-{i}.wav", words_per_minute=130).read_bytes() for i, text in enumerate(texts)]
            for arm, texts in DICTATION.items()
        }
        settings = make_settings(work)
        archive = Archive.from_settings(settings)
        base, server, thread = serve(settings, archive)
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"], headless=True)
                # The page's policy forbids eval, which Playwright's evaluate uses; the page's own script is unaffected.
                context = browser.new_context(bypass_csp=True)
                page = context.new_page()
                sign_in(page, base, archive.engine, Role.RADIOLOGIST)
                # A first, unmeasured flow loads the recogniser and warms the browser for both arms alike.
                one_flow(page, base, archive, "with_ai", clips["with_ai"])
                for repetition in range(args.repetitions):
                    for arm in ("with_ai", "without_ai") if repetition % 2 == 0 else ("without_ai", "with_ai"):
                        run = one_flow(page, base, archive, arm, clips[arm])
                        runs.append(run)
                        print(
                            f"{arm:10s} {run['seconds']:7.2f} s (dictation {run['dictation_s']:.2f} s, by hand: {', '.join(run['fallbacks']) or 'nothing'})"
                        )
                browser.close()
        finally:
            server.should_exit = True
            thread.join(timeout=10)
            archive.close()
    medians = {arm: statistics.median(r["seconds"] for r in runs if r["arm"] == arm) for arm in DICTATION}
    result = {
        "benchmark": "time_to_sign",
        "repetitions": args.repetitions,
        "median_seconds": {arm: round(value, 3) for arm, value in medians.items()},
        "ratio_with_ai_to_without_ai": round(medians["with_ai"] / medians["without_ai"], 3),
        "dictation": DICTATION,
        "runs": runs,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "note": (
            "espeak-ng speech and scripted clicks are not a radiologist: the times are dominated by CPU speech recognition "
            "and machine load and hold no image reading; the ratio shows what AI pre-fill saves in dictation and clicks."
        ),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "time_to_sign.json").write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"median time to sign: with AI pre-fill {medians['with_ai']:.2f} s, without {medians['without_ai']:.2f} s, "
        f"ratio {result['ratio_with_ai_to_without_ai']:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
