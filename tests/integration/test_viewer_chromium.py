"""End to end in headless Chromium: a real CT in RadPilot, shown by OHIF and listed by /ui/archive/.

RadPilot is started with a real lung CT series (Deflated Explicit VR Little Endian)
in its archive; Chromium opens the reading-room study list, follows its "Open in
viewer" link to OHIF, and the test checks from a screenshot that the viewport
shows an image (not a blank or an error page). Every failed request and browser
console error is logged, so a failure names the DICOMweb request OHIF could not
get. The screenshots are also written to /tmp/radpilot_viewer.png and
/tmp/radpilot_ui.png for a person to look at.
"""

from __future__ import annotations

import io
import logging
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from radpilot.archive.query import Query, QueryLevel
from radpilot.security.principal import Role
from tests.fixtures.auth import sign_in
from tests.fixtures.radpilot import RunningNode, radpilot, radpilot_factory  # noqa: F401 - fixtures
from tests.helpers import require_or_skip

pytestmark = pytest.mark.integration

logger = logging.getLogger(__name__)

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
CT_FOLDER = Path("ct-lung") / "LUNGCT-002" / "dicom"
VIEWER_SCREENSHOT = Path("/tmp/radpilot_viewer.png")
UI_SCREENSHOT = Path("/tmp/radpilot_ui.png")
VIEWPORT_SIZE = {"width": 1400, "height": 900}
RENDER_TIMEOUT_S = 90
# Grey-level standard deviation (0..255) of the central viewport region. A blank
# or black viewport is ~0, a loading spinner a few units; a CT slice is far above.
MIN_IMAGE_STD = 25.0
ERROR_TEXT = re.compile(r"Something went wrong|\bError\b|Failed to load|No data source", re.IGNORECASE)


@dataclass
class BrowserLog:
    """What the browser reported: console messages, page errors and failed requests."""

    console: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    dicomweb_requests: list[str] = field(default_factory=list)

    def attach(self, page) -> None:  # noqa: ANN001 - playwright Page
        page.on("console", lambda msg: self.console.append(f"[{msg.type}] {msg.text}"))
        page.on("pageerror", lambda exc: self.page_errors.append(str(exc)))
        page.on("requestfailed", self._on_failed)
        page.on("response", self._on_response)

    def _on_failed(self, request) -> None:  # noqa: ANN001 - playwright Request
        # The worklist's event stream never ends by itself: leaving the page aborts it, which is no failure.
        if "/ui/events" in request.url and "ERR_ABORTED" in str(request.failure):
            return
        self.failed_requests.append(f"{request.method} {request.url} -> {request.failure}")

    def _on_response(self, response) -> None:  # noqa: ANN001 - playwright Response
        request = response.request
        line = f"{request.method} {response.url} -> {response.status}"
        if "/dicomweb" in response.url:
            self.dicomweb_requests.append(line)
        if response.status >= 400:
            self.failed_requests.append(line)

    def report(self) -> str:
        errors = [c for c in self.console if c.startswith(("[error]", "[warning]"))]
        sections = [
            ("failed requests", self.failed_requests),
            ("page errors", self.page_errors),
            ("console errors/warnings (last 40)", errors[-40:]),
            (f"dicomweb requests ({len(self.dicomweb_requests)}, first 30)", self.dicomweb_requests[:30]),
        ]
        return "\n".join(f"{title}:\n  " + ("\n  ".join(lines) if lines else "(none)") for title, lines in sections)

    def log(self) -> None:
        logger.info("browser log\n%s", self.report())


@pytest.fixture(scope="module")
def browser() -> Iterator:
    """Debian's headless Chromium driven by Playwright (never a downloaded browser)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        require_or_skip("the playwright Python package is not installed")
    if not CHROMIUM.exists():
        require_or_skip(f"{CHROMIUM} is not installed (Debian package chromium)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def ct_node(radpilot: RunningNode, shared_data_dir: Path) -> tuple[RunningNode, str]:  # noqa: F811
    """A running RadPilot holding the real LUNGCT-002 series; returns it and the study UID."""
    if radpilot.server.app.state.ohif_dir is None:
        require_or_skip("the OHIF viewer is not installed (make ohif / scripts/install_ohif.sh)")
    files = sorted((shared_data_dir / CT_FOLDER).glob("*.dcm"))
    if not files:
        require_or_skip(f"no CT slices in {shared_data_dir / CT_FOLDER}")
    study_uids = set()
    for path in files:
        result = radpilot.archive.store_file_bytes(path.read_bytes())
        assert result.outcome.accepted, f"{path.name}: {result.outcome} {result.message}"
        study_uids.add(result.study_instance_uid)
    assert len(study_uids) == 1
    logger.info("stored %d CT slices", len(files))
    return radpilot, study_uids.pop()


def grey_std(png: bytes, box: dict[str, float] | None = None, central_fraction: float = 0.5) -> float:
    """Standard deviation of the grey levels of a PNG, in the central part of ``box`` when given."""
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("L")
    if box is not None:
        margin_x = box["width"] * (1 - central_fraction) / 2
        margin_y = box["height"] * (1 - central_fraction) / 2
        image = image.crop(
            (
                int(box["x"] + margin_x),
                int(box["y"] + margin_y),
                int(box["x"] + box["width"] - margin_x),
                int(box["y"] + box["height"] - margin_y),
            )
        )
    return float(np.asarray(image, dtype=np.float32).std())


def largest_canvas_box(page) -> dict[str, float] | None:  # noqa: ANN001 - playwright Page
    """The bounding box of the largest visible canvas (the main viewport), if any."""
    boxes = [c.bounding_box() for c in page.locator("canvas").all() if c.is_visible()]
    boxes = [b for b in boxes if b and b["width"] > 100 and b["height"] > 100]
    return max(boxes, key=lambda b: b["width"] * b["height"]) if boxes else None


def dismiss_onboarding(page, wait_ms: int = 5000) -> None:  # noqa: ANN001 - playwright Page
    """Close OHIF's first-visit tour and its 'investigational use' banner (the tour dims the whole viewport).

    With ``wait_ms=0`` only what is on screen now is closed (the tour can appear at any moment of loading).
    """
    for name in ("Skip all", "Confirm and hide"):
        button = page.get_by_text(name, exact=True).first
        try:
            if wait_ms:
                button.wait_for(state="visible", timeout=wait_ms)
            if button.is_visible():
                button.click()
                logger.info("closed OHIF's %r control", name)
        except Exception:  # noqa: BLE001 - not shown in this OHIF build/config: nothing to close
            logger.info("OHIF showed no %r control", name)


def wait_for_rendered_image(page, log: BrowserLog) -> tuple[bytes, dict[str, float], float]:  # noqa: ANN001
    """Wait until the main viewport canvas shows an image; return the screenshot, its box and std."""
    page.wait_for_selector("canvas", state="visible", timeout=RENDER_TIMEOUT_S * 1000)
    try:
        page.wait_for_load_state("networkidle", timeout=RENDER_TIMEOUT_S * 1000)
    except Exception:  # noqa: BLE001 - keep polling the pixels; the log says what is still loading
        logger.warning("network did not go idle within %ss", RENDER_TIMEOUT_S)
    deadline = time.monotonic() + RENDER_TIMEOUT_S
    best: tuple[bytes, dict[str, float], float] | None = None
    while time.monotonic() < deadline:
        page.wait_for_timeout(1000)
        dismiss_onboarding(page, wait_ms=0)
        box = largest_canvas_box(page)
        if box is None:
            continue
        png = page.screenshot()
        std = grey_std(png, box)
        if best is None or std > best[2]:
            best = (png, box, std)
        if std >= MIN_IMAGE_STD:
            page.wait_for_timeout(3000)  # let progressive loading settle, then take the final picture
            dismiss_onboarding(page, wait_ms=0)
            box = largest_canvas_box(page) or box
            png = page.screenshot()
            settled = grey_std(png, box)
            logger.info("viewport grey std %.1f, %.1f after 3 s", std, settled)
            if settled >= MIN_IMAGE_STD:
                return png, box, settled
            # Still changing (a slower machine: the layout or the image was being replaced): keep watching.
            best = (png, box, settled)
    log.log()
    if best is None:
        pytest.fail(f"no viewport canvas appeared in OHIF\n{log.report()}")
    return best


def save_screenshot(png: bytes, *paths: Path) -> None:
    for path in paths:
        path.write_bytes(png)
        logger.info("screenshot written to %s", path)


def visible_error_text(page) -> list[str]:  # noqa: ANN001 - playwright Page
    """Visible text on the page that reads like an OHIF error message."""
    return [line for line in page.inner_text("body").splitlines() if ERROR_TEXT.search(line)]


def open_page(browser, log: BrowserLog, node: RunningNode, role: Role = Role.RADIOLOGIST):  # noqa: ANN001, ANN201 - playwright objects
    """A page signed in to ``node`` as a new user with ``role`` through its sign-in page, then watched by ``log``."""
    context = browser.new_context(viewport=VIEWPORT_SIZE)
    page = context.new_page()
    sign_in(page, node.base_url, node.archive.engine, role)
    log.attach(page)
    return context, page


def test_study_list_links_to_ohif_which_renders_the_ct(browser, ct_node, tmp_path: Path) -> None:  # noqa: ANN001
    node, study_uid = ct_node
    log = BrowserLog()
    context, page = open_page(browser, log, node)
    try:
        page.goto(f"{node.base_url}/ui/archive/", wait_until="load")
        row = page.locator("table.studies tbody tr", has_text="LUNGCT-002")
        assert row.count() == 1, page.inner_text("body")
        cells = row.inner_text()
        assert "LUNGCT, 002" in cells and "Chest" in cells and "2007-04-04" in cells and "RP002" in cells
        assert "\t1\t64\t" in cells, cells  # one series, 64 instances
        save_screenshot(page.screenshot(full_page=True), tmp_path / "ui.png", UI_SCREENSHOT)

        with page.expect_navigation():
            row.get_by_role("link", name="Open in viewer").click()
        assert page.url == f"{node.base_url}/viewer?StudyInstanceUIDs={study_uid}"

        png, box, std = wait_for_rendered_image(page, log)
        save_screenshot(png, tmp_path / "viewer.png", VIEWER_SCREENSHOT)
        blank_std = grey_std(png, {"x": 0, "y": 0, "width": 40, "height": 40}, central_fraction=1.0)
        log.log()
        logger.info("viewport %s: grey std %.1f (a blank patch: %.1f)", box, std, blank_std)
        assert std >= MIN_IMAGE_STD, f"the viewport looks empty (std {std:.1f})\n{log.report()}"
        assert std > 5 * max(blank_std, 1.0)
        assert not visible_error_text(page), f"{visible_error_text(page)}\n{log.report()}"
        assert not log.failed_requests and not log.page_errors, log.report()
        assert not [c for c in log.console if c.startswith("[error]")], log.report()
    finally:
        context.close()


def test_ohif_study_list_queries_radpilot(browser, ct_node) -> None:  # noqa: ANN001
    node, study_uid = ct_node
    log = BrowserLog()
    context, page = open_page(browser, log, node)
    try:
        page.goto(f"{node.base_url}/?resultsPerPage=25", wait_until="load")  # the bare root is RadPilot's worklist
        try:
            page.get_by_text("RP002", exact=True).first.wait_for(state="visible", timeout=RENDER_TIMEOUT_S * 1000)
        finally:
            log.log()
            save_screenshot(page.screenshot(), Path("/tmp/radpilot_ohif_studylist.png"))
        assert any("/dicomweb/studies" in r for r in log.dicomweb_requests), log.report()
        assert page.get_by_text("LUNGCT, 002").first.is_visible()
        assert not [r for r in log.failed_requests if "/dicomweb" in r], log.report()
        assert not visible_error_text(page), log.report()
    finally:
        context.close()


def test_a_researcher_sees_only_pseudonyms_in_ohif(browser, ct_node) -> None:  # noqa: ANN001
    """OHIF's study list and viewer, signed in as a researcher: the pseudonym, never the patient's name or ID."""
    node, study_uid = ct_node
    (study,) = node.archive.find(Query(QueryLevel.STUDY, {"StudyInstanceUID": study_uid}))
    real_id, real_name = str(study["PatientID"]), str(study["PatientName"])
    # OHIF's study list shows the patient's name: the pseudonym ANON^CODE reads "ANON, CODE" there.
    pseudonym = "ANON, " + node.server.app.state.pseudonymizer.code(real_id)
    log = BrowserLog()
    context, page = open_page(browser, log, node, Role.RESEARCHER)
    try:
        page.goto(f"{node.base_url}/", wait_until="load")
        try:
            page.get_by_text(pseudonym).first.wait_for(state="visible", timeout=RENDER_TIMEOUT_S * 1000)
        except Exception as exc:
            raise AssertionError(
                f"{pseudonym} not shown: {page.inner_text('body')[:1500]}\n{log.report()}\n{log.dicomweb_requests}"
            ) from exc
        shown = page.inner_text("body")
        page.goto(f"{node.base_url}/viewer?StudyInstanceUIDs={study_uid}", wait_until="load")
        wait_for_rendered_image(page, log)
        shown += page.inner_text("body") + page.content()
        page.goto(f"{node.base_url}/ui/", wait_until="load")
        shown += page.content()
        for secret in (real_id, real_name, real_name.replace("^", ", "), real_name.replace("^", " ")):
            if secret:
                assert secret not in shown, f"{secret!r} shown to a researcher"
        assert pseudonym in shown
    finally:
        log.log()
        context.close()


def test_chromium_keeps_a_secure_httponly_session_cookie_on_loopback(browser, radpilot_factory) -> None:  # noqa: ANN001, F811
    """With the Secure flag forced on plain http://127.0.0.1 (which browsers count as a secure origin), signing in works."""
    node = radpilot_factory(session_cookie_secure=True)
    context = browser.new_context(viewport=VIEWPORT_SIZE)
    page = context.new_page()
    try:
        sign_in(page, node.base_url, node.archive.engine)
        (cookie,) = [c for c in context.cookies() if c["name"] == "radpilot_session"]
        assert cookie["secure"] and cookie["httpOnly"] and cookie["sameSite"] == "Lax"
        page.goto(f"{node.base_url}/ui/", wait_until="load")
        assert page.url == f"{node.base_url}/ui/" and page.locator("table.studies").count() == 1
        assert page.evaluate("document.cookie") == ""  # HttpOnly: no script reads the session
    finally:
        context.close()
