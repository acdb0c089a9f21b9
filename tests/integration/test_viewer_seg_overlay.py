"""End to end in headless Chromium: OHIF shows the engine's DICOM SEG over the CT.

A real lung CT (LUNGCT-002) is stored in a RadPilot node; its engine routes the
study to lung_ct_quant, whose job stores a DICOM SEG, a TID 1500 SR and a key
image into the same study (see :func:`analysed_study`). Chromium
then opens ``/viewer?StudyInstanceUIDs=<uid>`` and does what a reader does:

1. double-clicks the SEG in OHIF's study browser and answers "Yes" to
   "Do you want to open this Segmentation?" (unless the app-config turns that
   prompt off), so the segmentation is drawn over the CT in the viewport;
2. opens the segmentation panel, which must list "Right lung" and "Left lung"
   in the SEG's own colours (red, green: Recommended Display CIELab Value);
3. clicks "Right lung" there, which jumps to the segment's centre (mid-chest).

The screenshot of the viewport must then hold a real area of red (right lung)
and green (left lung) pixels; the CT itself is greyscale, so colour there is
the overlay. The right lung must lie on the image's left (radiological view).
As a control, hiding all segments must remove the colour, and the bare CT under
the coloured pixels must be lung (air-dark), so the SEG is registered on the CT. The screenshots are
written to /tmp/radpilot_seg_overlay.png (and ..._hidden.png); every failed
request and browser console error is logged.
"""

from __future__ import annotations

import io
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from radpilot.web.ohif import ohif_config
from tests.fixtures.auth import sign_in
from tests.fixtures.radpilot import RunningNode, radpilot_factory  # noqa: F401 - fixture
from tests.helpers import require_or_skip
from tests.integration.test_engine_end_to_end import (  # noqa: E402
    COMPREHENSIVE_3D_SR,
    SECONDARY_CAPTURE,
    SEG,
)
from tests.integration.test_engine_end_to_end import RULES as ENGINE_RULES  # noqa: E402
from tests.integration.test_viewer_chromium import (  # noqa: F401 - browser is a fixture
    CT_FOLDER,
    VIEWPORT_SIZE,
    BrowserLog,
    browser,
    dismiss_onboarding,
    largest_canvas_box,
    save_screenshot,
    visible_error_text,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(360)]

logger = logging.getLogger(__name__)

# The same rule as the engine's end-to-end test, keeping the results in RadPilot's archive.
RULES = ENGINE_RULES.replace("destinations: [orthanc]", "destinations: []")

OVERLAY_SCREENSHOT = Path("/tmp/radpilot_seg_overlay.png")
HIDDEN_SCREENSHOT = Path("/tmp/radpilot_seg_overlay_hidden.png")
FAILURE_SCREENSHOT = Path("/tmp/radpilot_seg_overlay_failure.png")
WORKER_ID = "viewer-seg-test"
UI_TIMEOUT_S = 45
SEGMENTS = ["Right lung", "Left lung"]
SEGMENT_COLOURS = ["rgb(255, 0, 0)", "rgb(0, 255, 0)"]  # radpilot.dicom.encoders.common.SEGMENT_COLORS_RGB
# A pixel "is" a colour when that channel exceeds both others by this much (0..255);
# a greyscale CT pixel has all three equal, OHIF's chrome is blue-grey.
CHANNEL_MARGIN = 50
MIN_CHANNEL = 80
# Each lung covers ~5-10 % of the viewport at the mid-chest slice; 1 % is a clear floor.
MIN_SEGMENT_FRACTION = 0.01
MAX_HIDDEN_FRACTION = 0.001
# Lung at the default soft-tissue window (W350/L60) is black; measured 99.8 % of the coloured
# pixels lie on such pixels, 81 % when the same overlay is mirrored left-right.
AIR_GREY = 40
MIN_ON_AIR = 0.95
SLICE_OVERLAY = re.compile(r"\((\d+)\s*/\s*(\d+)\)")


# ----------------------------------------------------------------------------- RadPilot side
@pytest.fixture
def analysed_study(radpilot_factory, shared_data_dir: Path, tmp_path: Path) -> tuple[RunningNode, str]:  # noqa: F811
    """A RadPilot whose engine has run lung_ct_quant on LUNGCT-002; returns it and the study UID.

    The engine routes the study with its rules and queues the job; the job is then
    claimed, run by the engine's PipelineRunner and recorded here, exactly as an
    embedded worker does, but in this process. A worker process is not used: each
    one opening the archive deletes every ``.incoming/*.part`` file, also those of
    stores still in flight, so CT slices stored while it starts can fail
    ("storage error: [Errno 2] No such file or directory: ...part"). The detector
    and worker processes are covered by test_engine_end_to_end.py.
    """
    from radpilot.engine.pipeline import PipelineRunner

    files = sorted((shared_data_dir / CT_FOLDER).glob("*.dcm"))
    if not files:
        require_or_skip(f"no CT slices in {shared_data_dir / CT_FOLDER}")
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    node = radpilot_factory(rules_file=rules)  # no worker processes, no automatic routing
    if node.server.app.state.ohif_dir is None:
        require_or_skip("the OHIF viewer is not installed (make ohif / scripts/install_ohif.sh)")

    started = time.monotonic()
    study_uids = set()
    for path in files:
        result = node.archive.store_file_bytes(path.read_bytes())
        assert result.outcome.accepted, f"{path.name}: {result.outcome} {result.message}"
        study_uids.add(result.study_instance_uid)
    assert len(study_uids) == 1
    study_uid = study_uids.pop()

    engine = node.server.engine
    engine.route_study(study_uid)
    store = engine.queue.store
    job = store.claim_next(WORKER_ID, lease_s=600)
    assert job is not None and job.analysis == "lung_ct_quant", engine.queue.list()
    runner = PipelineRunner(node.settings, node.archive, analyses=engine.analyses)
    output = runner(job)
    assert store.complete(job.id, WORKER_ID, output, on_record=runner.on_record)
    runner.on_committed(job, output)

    assert [(j.analysis, j.state.value) for j in engine.queue.list()] == [("lung_ct_quant", "done")]
    results = {
        i.sop_class_uid: i.sop_instance_uid
        for i in node.archive.instances_of(study_uid)
        if i.sop_class_uid in (SEG, COMPREHENSIVE_3D_SR, SECONDARY_CAPTURE)
    }
    assert set(results) == {SEG, COMPREHENSIVE_3D_SR, SECONDARY_CAPTURE}, results
    assert sorted(output.sop_instance_uids) == sorted(results.values())
    logger.info("engine results in the archive after %.1f s: %s", time.monotonic() - started, results)
    return node, study_uid


# ----------------------------------------------------------------------------- pixels
@dataclass
class Overlay:
    """Where the viewport is drawn in each segment colour (boolean masks over the viewport)."""

    red: np.ndarray
    green: np.ndarray

    @property
    def coloured(self) -> np.ndarray:
        return self.red | self.green

    @staticmethod
    def mean_x(mask: np.ndarray) -> float:
        return float(np.nonzero(mask)[1].mean() / mask.shape[1]) if mask.any() else float("nan")

    def summary(self) -> str:
        return (
            f"red {self.red.mean():.2%} of the viewport (mean x {self.mean_x(self.red):.2f}), "
            f"green {self.green.mean():.2%} (mean x {self.mean_x(self.green):.2f})"
        )


def viewport_pixels(png: bytes, box: dict[str, float], mode: str = "RGB") -> np.ndarray:
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert(mode)
    image = image.crop((int(box["x"]), int(box["y"]), int(box["x"] + box["width"]), int(box["y"] + box["height"])))
    return np.asarray(image, dtype=np.int16)


def measure_overlay(png: bytes, box: dict[str, float]) -> Overlay:
    rgb = viewport_pixels(png, box)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return Overlay(
        red=(r > MIN_CHANNEL) & (r - np.maximum(g, b) > CHANNEL_MARGIN), green=(g > MIN_CHANNEL) & (g - np.maximum(r, b) > CHANNEL_MARGIN)
    )


# ----------------------------------------------------------------------------- OHIF, as a reader uses it
def current_slice(page) -> tuple[int, int]:  # noqa: ANN001 - playwright Page
    """The viewport's ``(n, of)`` from its bottom-right overlay, e.g. "I:29 (36/64)"."""
    text = page.locator("[data-cy=viewport-overlay-bottom-right]").first.inner_text()
    match = SLICE_OVERLAY.search(text)
    assert match, f"no slice position in the viewport overlay: {text!r}"
    return int(match.group(1)), int(match.group(2))


def settled_screenshot(page) -> tuple[bytes, dict[str, float]]:  # noqa: ANN001 - playwright Page
    """Move the pointer off the viewport (no tooltips), let rendering finish, screenshot."""
    page.mouse.move(5, VIEWPORT_SIZE["height"] - 5)
    page.wait_for_timeout(1500)
    box = largest_canvas_box(page)
    assert box is not None, "no viewport canvas"
    return page.screenshot(), box


def test_ohif_draws_the_engines_seg_over_the_ct(browser, analysed_study, tmp_path: Path) -> None:  # noqa: ANN001, F811 - the browser fixture
    node, study_uid = analysed_study
    prompt_expected = not ohif_config().get("disableConfirmationPrompts")
    log = BrowserLog()
    context = browser.new_context(viewport=VIEWPORT_SIZE)
    page = context.new_page()
    page.set_default_timeout(UI_TIMEOUT_S * 1000)
    sign_in(page, node.base_url, node.archive.engine)
    log.attach(page)
    try:
        page.goto(f"{node.base_url}/viewer?StudyInstanceUIDs={study_uid}", wait_until="load")
        page.wait_for_selector("canvas", state="visible")
        dismiss_onboarding(page)

        # 1. the SEG is its own display set in the study browser: double-click it onto the viewport
        seg_thumbnail = page.locator("[data-cy^=study-browser-thumbnail]", has_text="lung_ct_quant segmentation")
        seg_thumbnail.wait_for(state="visible")
        assert "SEG" in seg_thumbnail.inner_text()
        seg_thumbnail.dblclick()
        if prompt_expected:
            page.get_by_text("Do you want to open this Segmentation?").wait_for(state="visible")
            page.get_by_role("button", name="Yes", exact=True).click()

        # 2. the segmentation panel lists both lungs in the SEG's colours
        page.locator("[data-cy=panelSegmentation-btn]").click()
        rows = page.locator("[data-cy=data-row]")
        rows.nth(len(SEGMENTS) - 1).wait_for(state="visible")
        titles = [t.strip() for t in page.locator("[data-cy=data-row-title]").all_inner_texts()]
        colours = page.locator("[data-cy=data-row-colorhex]").evaluate_all("els => els.map(e => getComputedStyle(e).backgroundColor)")
        logger.info("segmentation panel: %s %s", titles, colours)
        assert titles == SEGMENTS, f"{titles}\n{log.report()}"
        assert colours == SEGMENT_COLOURS, colours

        # 3. "jump to segment": clicking Right lung shows its centre slice (mid-chest)
        before = current_slice(page)
        page.locator("[data-cy=data-row-title]", has_text="Right lung").click()
        deadline = time.monotonic() + UI_TIMEOUT_S
        while current_slice(page) == before and time.monotonic() < deadline:
            page.wait_for_timeout(250)
        position, count = current_slice(page)
        logger.info("viewport moved from slice %s to %d/%d", before, position, count)
        assert count == 64 and count // 4 <= position <= 3 * count // 4, (position, count)

        png, box = settled_screenshot(page)
        save_screenshot(png, tmp_path / "seg_overlay.png", OVERLAY_SCREENSHOT)
        shown = measure_overlay(png, box)
        logger.info("overlay in viewport %s: %s", box, shown.summary())

        # control: with every segment hidden, the same viewport is greyscale again
        page.locator("[data-cy=all-segments-visibility-toggle]").first.click()
        hidden_png, hidden_box = settled_screenshot(page)
        save_screenshot(hidden_png, tmp_path / "seg_overlay_hidden.png", HIDDEN_SCREENSHOT)
        hidden = measure_overlay(hidden_png, hidden_box)
        logger.info("with segments hidden: %s", hidden.summary())
        log.log()

        assert shown.red.mean() > MIN_SEGMENT_FRACTION, f"right lung (red) not drawn: {shown.summary()}\n{log.report()}"
        assert shown.green.mean() > MIN_SEGMENT_FRACTION, f"left lung (green) not drawn: {shown.summary()}\n{log.report()}"
        # radiological convention: the patient's right is on the left of the image
        assert Overlay.mean_x(shown.red) < 0.5 < Overlay.mean_x(shown.green), shown.summary()
        assert hidden.coloured.mean() < MAX_HIDDEN_FRACTION, f"colour remains with the SEG hidden: {hidden.summary()}"
        # the overlay lies on the CT's lungs: under the colour the bare CT is air-black (lung at W350/L60);
        # a left-right flipped or shifted SEG puts much of it on soft tissue and bone (~80 % for a flip)
        assert hidden_box == box
        on_air = float((viewport_pixels(hidden_png, box, "L")[shown.coloured] < AIR_GREY).mean())
        logger.info("%.1f %% of the coloured pixels lie on air-dark CT", 100 * on_air)
        assert on_air > MIN_ON_AIR, on_air
        assert current_slice(page) == (position, count)

        assert not visible_error_text(page), f"{visible_error_text(page)}\n{log.report()}"
        assert not log.failed_requests and not log.page_errors, log.report()
        assert not [c for c in log.console if c.startswith("[error]")], log.report()
    except Exception:
        # a UI step that timed out says little by itself: show what the browser saw and asked for
        log.log()
        save_screenshot(page.screenshot(), FAILURE_SCREENSHOT)
        raise
    finally:
        context.close()
