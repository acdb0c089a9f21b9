"""The study view in headless Chromium: OHIF with the AI segmentation beside the findings panel.

A real lung CT (LUNGCT-002) is analysed by lung_ct_quant in this process (as in
test_viewer_seg_overlay.py). A radiologist opens /ui/studies/<uid>/review:

1. OHIF, embedded in the page, draws the AI SEG over the CT once its segmentation is
   opened (the screenshot of the iframe's viewport holds the segments' red and green);
2. in the findings panel one finding is accepted with the keyboard (``j`` to move, ``a``),
   one edited (new value and reason), one rejected with a reason holding markup, which the
   panel shows as text; the API then holds exactly those decisions with the radiologist's name;
3. finishing the review from the page reports the verified SR.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import httpx
import pydicom
import pytest

from radpilot.engine.pipeline import PipelineRunner
from radpilot.security.principal import Role
from radpilot.web.ohif import ohif_config
from tests.fixtures.auth import sign_in
from tests.fixtures.principal import Api
from tests.fixtures.radpilot import RunningNode, radpilot_factory  # noqa: F401 - fixture
from tests.helpers import require_or_skip
from tests.integration.test_viewer_chromium import (  # noqa: F401 - browser is a fixture
    CT_FOLDER,
    VIEWPORT_SIZE,
    BrowserLog,
    browser,
    dismiss_onboarding,
    largest_canvas_box,
    save_screenshot,
)
from tests.integration.test_viewer_seg_overlay import MIN_SEGMENT_FRACTION, RULES, measure_overlay
from tests.review_support import RADIOLOGIST

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]

logger = logging.getLogger(__name__)

UI_TIMEOUT_S = 45
MARKUP_REASON = '<img src=x onerror="document.title=1">'
SCREENSHOT = Path("/tmp/radpilot_review_page.png")
FAILURE_SCREENSHOT = Path("/tmp/radpilot_review_page_failure.png")


@pytest.fixture
def reviewed_study(radpilot_factory, shared_data_dir: Path, tmp_path: Path) -> tuple[RunningNode, str]:  # noqa: ANN001, F811
    files = sorted((shared_data_dir / CT_FOLDER).glob("*.dcm"))
    if not files:
        require_or_skip(f"no CT slices in {shared_data_dir / CT_FOLDER}")
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    node = radpilot_factory(rules_file=rules)
    if node.server.app.state.ohif_dir is None:
        require_or_skip("the OHIF viewer is not installed (make ohif / scripts/install_ohif.sh)")
    for path in files:
        assert node.archive.store_file_bytes(path.read_bytes()).outcome.accepted
    study_uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    engine = node.server.engine
    engine.route_study(study_uid)
    job = engine.queue.store.claim_next("review-page", lease_s=600)
    assert job is not None and job.analysis == "lung_ct_quant"
    runner = PipelineRunner(node.settings, node.archive, analyses=engine.analyses)
    output = runner(job)
    assert engine.queue.store.complete(job.id, "review-page", output, on_record=runner.on_record)
    return node, study_uid


def test_review_page_shows_the_seg_in_ohif_and_records_accept_edit_reject(
    browser,  # noqa: ANN001, F811 - the browser fixture
    reviewed_study: tuple[RunningNode, str],
    tmp_path: Path,
) -> None:
    node, study_uid = reviewed_study
    log = BrowserLog()
    context = browser.new_context(viewport=VIEWPORT_SIZE)
    page = context.new_page()
    page.set_default_timeout(UI_TIMEOUT_S * 1000)
    user = sign_in(page, node.base_url, node.archive.engine, Role.RADIOLOGIST)
    log.attach(page)
    try:
        page.goto(f"{node.base_url}/ui/studies/{study_uid}/review", wait_until="load")
        findings = page.locator(".finding")
        assert findings.count() >= 3
        names = [n.strip() for n in page.locator(".finding .name").all_inner_texts()]
        logger.info("findings panel: %s", names)

        # 1. OHIF in the page draws the AI segmentation
        viewer = page.frame_locator("iframe.viewer")
        frame = next(f for f in page.frames if "/viewer" in f.url)
        frame.wait_for_selector("canvas", state="visible")
        dismiss_onboarding(frame)
        seg_thumbnail = viewer.locator("[data-cy^=study-browser-thumbnail]", has_text="lung_ct_quant segmentation")
        seg_thumbnail.wait_for(state="visible")
        seg_thumbnail.dblclick()
        if not ohif_config().get("disableConfirmationPrompts"):
            viewer.get_by_text("Do you want to open this Segmentation?").wait_for(state="visible")
            viewer.get_by_role("button", name="Yes", exact=True).click()
        viewer.locator("[data-cy=panelSegmentation-btn]").click()
        viewer.locator("[data-cy=data-row-title]", has_text="Right lung").click()
        deadline = time.monotonic() + UI_TIMEOUT_S
        shown = None
        while time.monotonic() < deadline:
            page.mouse.move(5, 5)
            page.wait_for_timeout(1500)
            box = largest_canvas_box(frame)
            if box is None:
                continue
            png = page.screenshot()
            shown = measure_overlay(png, box)
            if shown.red.mean() > MIN_SEGMENT_FRACTION and shown.green.mean() > MIN_SEGMENT_FRACTION:
                break
        save_screenshot(png, tmp_path / "review_page.png", SCREENSHOT)
        assert shown is not None and shown.red.mean() > MIN_SEGMENT_FRACTION, f"no red overlay: {shown and shown.summary()}\n{log.report()}"
        assert shown.green.mean() > MIN_SEGMENT_FRACTION, f"no green overlay: {shown.summary()}"

        # 2. accept with the keyboard, edit, reject with markup in the reason
        findings.first.click(position={"x": 5, "y": 5})
        page.keyboard.press("j")
        second = findings.nth(1)
        second_name = second.locator(".name").inner_text()
        page.keyboard.press("a")
        second.locator(".decision[data-state=accept]").wait_for()

        edited = findings.nth(0)
        edited.locator("details.edit summary").click()
        edited.locator(".edit-value").fill("1234.5")
        edited.locator(".edit-reason").fill("contour leaks into the airway")
        edited.locator("button.save-edit").click()
        edited.locator(".decision[data-state=edit]").wait_for()

        rejected = findings.nth(2)
        rejected.locator("details.reject summary").click()
        rejected.locator(".reject-text").fill(MARKUP_REASON)
        rejected.locator("button.save-reject").click()
        rejected.locator(".decision[data-state=reject]").wait_for()
        assert MARKUP_REASON in rejected.locator(".decision").inner_text()
        assert page.locator("img[src=x]").count() == 0 and page.title() != "1"

        # a reject without any reason is refused, and the page says why
        if findings.count() > 3:
            fourth = findings.nth(3)
            fourth.locator("details.reject summary").click()
            fourth.locator(".reject-choice").select_option("")
            fourth.locator("button.save-reject").click()
            page.locator("#review-error", has_text="a reason is required").wait_for()

        with httpx.Client(base_url=node.base_url, timeout=30) as client:
            review = Api(client, node.archive.engine, RADIOLOGIST).call("GET", f"/api/studies/{study_uid}/review").json()
        decided = {f["name"] + "|" + f["location"]: f["decision"] for f in review["findings"] if f["decision"]}
        assert len(decided) == 3, decided
        by_state = {d["decision"]: d for d in decided.values()}
        assert set(by_state) == {"accept", "edit", "reject"}
        assert by_state["edit"]["edited"]["value"] == 1234.5 and by_state["reject"]["reason"] == MARKUP_REASON
        assert all(d["decided_by"] == user for d in decided.values())

        # the signed-in session may not change anything without the page's CSRF token
        finding_id = findings.nth(3).get_attribute("data-finding-id")
        forged = page.request.post(f"{node.base_url}/api/studies/{study_uid}/findings/{finding_id}/decision", data={"decision": "accept"})
        assert forged.status == 403 and "CSRF" in forged.text(), forged.text()
        assert any(k.startswith(second_name + "|") for k, d in decided.items() if d["decision"] == "accept")

        # 3. decide the rest with the keyboard and finish the review from the page
        for index in range(3, findings.count()):
            findings.nth(index).locator("button.accept").click()
            findings.nth(index).locator(".decision[data-state=accept]").wait_for()
        page.locator("#complete-review").click()
        page.locator("#review-status", has_text="verified SR").wait_for()
        assert not log.page_errors, log.report()
    except Exception:
        log.log()
        save_screenshot(page.screenshot(), FAILURE_SCREENSHOT)
        raise
    finally:
        context.close()
