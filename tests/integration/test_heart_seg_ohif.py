"""OHIF in headless Chromium shows the heart analyses' SEG series: coronary_calcium's over its CT,
cardiac_mr_function's beside the cine they were drawn on.

Calcium: the digital calcium phantom (inserts of known size and density by artery, decoy bone and aortic
calcium) is analysed; OHIF opens the SEG, lists the arteries in the SEG's colours, jumps to the LAD's
calcium and draws it (coloured pixels on the bright insert of the bare CT).

Cine: the beating-heart phantom (8 slices x 16 phases, one MR instance per image) is stored in a RadPilot node;
its engine routes the study to cardiac_mr_function and the job runs here, in this process (see
tests/integration/test_viewer_seg_overlay.py: ``analysed_study`` for why not in a worker). The results
are two SEG series, end-diastole and end-systole (one SEG series per phase: OHIF 3 takes the instances of
one SEG series as versions of one segmentation and would offer only the last), the SR and two pictures.

A reader then opens the study in OHIF: both SEG series are in the study browser, each named by its phase;
the end-diastolic one opens over the cine and its panel lists the three segments, in the SEG's colours.
Drawing the segments over the cine is an expected failure: OHIF 3.13.2 plays the series as 8 slices x 16
trigger times and lists the SEG's segments, but draws nothing on any phase (a SEG on one time point of a 4-D
series); when it does draw, the test goes on to check where. Screenshots: /tmp/radpilot_cardiac_seg*.png.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pytest

from radpilot.analyses.cardiac_mr_function import CardiacMrFunction
from radpilot.analyses.cardiac_mr_function.phantom import make_phantom, phantom_datasets
from radpilot.analyses.coronary_calcium import CoronaryCalcium
from radpilot.analyses.coronary_calcium import phantom as calcium_phantom
from radpilot.web.ohif import ohif_config
from tests.fixtures.auth import sign_in
from tests.fixtures.radpilot import (  # noqa: F401 - radpilot_factory is a fixture
    RunningNode,
    activate_models,
    analyse_in_process,
    radpilot_factory,
    rules_without_destinations,
)
from tests.helpers import require_or_skip
from tests.integration.test_engine_end_to_end import SEG
from tests.integration.test_viewer_chromium import (  # noqa: F401 - browser is a fixture
    VIEWPORT_SIZE,
    BrowserLog,
    browser,
    dismiss_onboarding,
    save_screenshot,
    visible_error_text,
)
from tests.integration.test_viewer_seg_overlay import Overlay, measure_overlay, settled_screenshot, viewport_pixels

pytestmark = [pytest.mark.integration, pytest.mark.timeout(360)]

logger = logging.getLogger(__name__)

WORKER_ID = "cardiac-ohif-test"
UI_TIMEOUT_S = 45
PHASES, SLICES = 16, 8
SCREENSHOT = Path("/tmp/radpilot_cardiac_seg.png")
CALCIUM_SCREENSHOT = Path("/tmp/radpilot_calcium_seg.png")
# The phantom's LAD inserts are 3-5 mm across on 1 mm pixels, ~3 viewport pixels per mm: tens of pixels each.
MIN_CALCIUM_PIXELS = 20
BRIGHTER_BY = 40  # grey levels (0-255) between the calcium and the viewport's median at OHIF's W400/L40
FAILURE_SCREENSHOT = Path("/tmp/radpilot_cardiac_seg_failure.png")
# radpilot.dicom.encoders.common.SEGMENT_COLORS_RGB, in segment order (RV cavity, LV myocardium, LV cavity; LM, LAD, LCX, RCA)
MIN_SEGMENT_FRACTION = 0.002  # the phantom's RV and myocardium each cover ~1-3 % of the viewport
SEGMENT_COLOURS = ["rgb(255, 0, 0)", "rgb(0, 255, 0)", "rgb(0, 128, 255)", "rgb(255, 0, 255)"]


@pytest.fixture
def analysed_cine(radpilot_factory, tmp_path: Path) -> tuple[RunningNode, str, list[str]]:  # noqa: ANN001, F811
    """A node holding the phantom cine and cardiac_mr_function's results; the node, study UID and SEG series descriptions."""
    # no worker processes, no automatic routing
    node = radpilot_factory(rules_file=rules_without_destinations(CardiacMrFunction(), tmp_path))
    if node.server.app.state.ohif_dir is None:
        require_or_skip("the OHIF viewer is not installed (make ohif / scripts/install_ohif.sh)")
    activate_models(node, CardiacMrFunction, "cardiac_mr_function OHIF test")
    datasets = phantom_datasets(make_phantom(phases=PHASES, slices=SLICES), patient_height_m=1.75, patient_weight_kg=72.0)
    segs = analyse_in_process(node, datasets, "cardiac_mr_function", tmp_path, WORKER_ID)[SEG]
    assert len(segs) == 2 and len({str(s.SeriesInstanceUID) for s in segs}) == 2, [str(s.SeriesInstanceUID) for s in segs]
    return node, str(datasets[0].StudyInstanceUID), sorted(str(s.SeriesDescription) for s in segs)


def _open_seg(page, node: RunningNode, study_uid: str, description: str) -> None:  # noqa: ANN001 - playwright Page
    """Sign in, open the study in OHIF and double-click the SEG named ``description`` onto the viewport."""
    sign_in(page, node.base_url, node.archive.engine)
    page.goto(f"{node.base_url}/viewer?StudyInstanceUIDs={study_uid}", wait_until="load")
    page.wait_for_selector("canvas", state="visible")
    dismiss_onboarding(page)
    thumbnail = page.locator("[data-cy^=study-browser-thumbnail]", has_text=description).first
    thumbnail.wait_for(state="visible")
    assert "SEG" in thumbnail.inner_text()
    logger.info("study browser: %s", page.locator("[data-cy^=study-browser-thumbnail]").all_inner_texts())
    thumbnail.dblclick()
    if not ohif_config().get("disableConfirmationPrompts"):
        page.get_by_text("Do you want to open this Segmentation?").wait_for(state="visible")
        page.get_by_role("button", name="Yes", exact=True).click()


def _panel_segments(page, count: int) -> tuple[list[str], list[str]]:  # noqa: ANN001 - playwright Page
    """The segmentation panel's segment titles and colours, once it lists ``count`` of them."""
    page.locator("[data-cy=panelSegmentation-btn]").click()
    page.locator("[data-cy=data-row]").nth(count - 1).wait_for(state="visible")
    titles = [t.strip() for t in page.locator("[data-cy=data-row-title]").all_inner_texts()]
    colours = page.locator("[data-cy=data-row-colorhex]").evaluate_all("els => els.map(e => getComputedStyle(e).backgroundColor)")
    logger.info("segmentation panel: %s %s", titles, colours)
    return titles, colours


def test_ohif_lists_the_end_diastolic_and_end_systolic_seg_series_and_opens_one_over_the_cine(
    browser,  # noqa: ANN001, F811 - fixture
    analysed_cine: tuple[RunningNode, str, list[str]],
    tmp_path: Path,
) -> None:
    node, study_uid, descriptions = analysed_cine
    assert any("end-diastole" in d for d in descriptions) and any("end-systole" in d for d in descriptions), descriptions
    log = BrowserLog()
    context = browser.new_context(viewport=VIEWPORT_SIZE)
    page = context.new_page()
    page.set_default_timeout(UI_TIMEOUT_S * 1000)
    log.attach(page)
    try:
        # both SEG series are in the study browser, each named by its phase; the end-diastolic one opens
        page_has = page.locator("[data-cy^=study-browser-thumbnail]", has_text="cardiac_mr_function segmentation end-systole")
        _open_seg(page, node, study_uid, "cardiac_mr_function segmentation end-diastole")
        assert "SEG" in page_has.first.inner_text()
        titles, colours = _panel_segments(page, 3)
        assert titles == [f"{s} (end-diastole)" for s in ("RV cavity", "LV myocardium", "LV cavity")], f"{titles}\n{log.report()}"
        assert colours == SEGMENT_COLOURS[:3], colours

        page.locator("[data-cy=data-row-title]", has_text="LV cavity").first.click()
        time.sleep(1)
        png, box = settled_screenshot(page)
        save_screenshot(png, tmp_path / "cardiac_seg.png", SCREENSHOT)
        overlay = measure_overlay(png, box)
        logger.info("cardiac overlay after jumping to the LV cavity: %s", overlay.summary())
        assert not visible_error_text(page), f"{visible_error_text(page)}\n{log.report()}"
        assert not log.failed_requests and not log.page_errors, log.report()
        drawn = overlay.red.mean() > MIN_SEGMENT_FRACTION and overlay.green.mean() > MIN_SEGMENT_FRACTION
        if not drawn:
            # Seen with OHIF 3.13.2: the cine plays as 8 slices x 16 trigger times, the panel lists the segments,
            # and nothing is drawn on any phase.
            pytest.xfail(f"OHIF 3.13 does not draw a SEG that lies on one phase of a 4-D cine ({overlay.summary()})")
        # the RV (red) lies on the image's left of the LV's myocardium (green), as in the phantom
        assert Overlay.mean_x(overlay.red) < Overlay.mean_x(overlay.green), overlay.summary()
    except Exception:
        log.log()
        save_screenshot(page.screenshot(), FAILURE_SCREENSHOT)
        raise
    finally:
        context.close()


@pytest.fixture
def analysed_calcium(radpilot_factory, tmp_path: Path) -> tuple[RunningNode, str]:  # noqa: ANN001, F811
    """A node holding the calcium phantom and coronary_calcium's results; the node and study UID."""
    node = radpilot_factory(rules_file=rules_without_destinations(CoronaryCalcium(), tmp_path))
    if node.server.app.state.ohif_dir is None:
        require_or_skip("the OHIF viewer is not installed (make ohif / scripts/install_ohif.sh)")
    datasets = calcium_phantom.phantom_datasets(calcium_phantom.make_phantom(rows=256, columns=256, pixel_mm=1.0, noise_hu=10.0))
    segs = analyse_in_process(node, datasets, "coronary_calcium", tmp_path, WORKER_ID)[SEG]
    assert len(segs) == 1
    return node, str(datasets[0].StudyInstanceUID)


def test_ohif_opens_the_calcium_seg_by_artery_and_draws_the_lad_calcium_on_its_insert(
    browser,  # noqa: ANN001, F811 - fixture
    analysed_calcium: tuple[RunningNode, str],
    tmp_path: Path,
) -> None:
    node, study_uid = analysed_calcium
    log = BrowserLog()
    context = browser.new_context(viewport=VIEWPORT_SIZE)
    page = context.new_page()
    page.set_default_timeout(UI_TIMEOUT_S * 1000)
    log.attach(page)
    try:
        _open_seg(page, node, study_uid, "coronary_calcium segmentation")
        titles, colours = _panel_segments(page, 4)
        assert titles == ["LM calcium", "LAD calcium", "LCX calcium", "RCA calcium"], f"{titles}\n{log.report()}"
        assert colours == SEGMENT_COLOURS, colours

        # "jump to segment": the LAD's calcium (green) is drawn on the slice OHIF moves to
        page.locator("[data-cy=data-row-title]", has_text="LAD calcium").first.click()
        time.sleep(1)
        png, box = settled_screenshot(page)
        save_screenshot(png, tmp_path / "calcium_seg.png", CALCIUM_SCREENSHOT)
        green = measure_overlay(png, box).green
        page.locator("[data-cy=all-segments-visibility-toggle]").first.click()
        hidden_png, hidden_box = settled_screenshot(page)
        hidden_green = measure_overlay(hidden_png, hidden_box).green
        log.log()
        logger.info("LAD calcium drawn on %d viewport pixels, %d with the segments hidden", int(green.sum()), int(hidden_green.sum()))
        assert green.sum() >= MIN_CALCIUM_PIXELS, f"LAD calcium not drawn: {int(green.sum())} px\n{log.report()}"
        assert hidden_green.sum() < green.sum() / 20
        # under the drawn calcium the bare CT is the bright insert, not the grey heart around it
        grey = viewport_pixels(hidden_png, box, "L")
        assert float(np.median(grey[green])) > float(np.median(grey)) + BRIGHTER_BY, (np.median(grey[green]), np.median(grey))

        assert not visible_error_text(page), f"{visible_error_text(page)}\n{log.report()}"
        assert not log.failed_requests and not log.page_errors, log.report()
    except Exception:
        log.log()
        save_screenshot(page.screenshot(), FAILURE_SCREENSHOT)
        raise
    finally:
        context.close()
