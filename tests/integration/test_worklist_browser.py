"""The worklist in headless Chromium: studies sent by Orthanc appear without a reload; keyboard; layout; Korean.

Orthanc (the PACS) sends a chest CT and a chest radiograph to RadPilot while the page is open;
both rows must appear through the server-sent events, with no navigation (a marker set on
``window`` before the send survives). Then the keyboard claims the first study, the page is
checked at 1366x768 and 1920x1080 for horizontal overflow (screenshots in /tmp for a person),
and the Korean page shows Korean. The radiologist and the administrator sign in through the
sign-in page; the claim goes through the page's script with the session's CSRF token.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.uid import DigitalXRayImageStorageForPresentation, generate_uid

from radpilot.security.principal import Role
from tests.factories import make_ct_dataset, make_ct_series, to_part10_bytes
from tests.fixtures.auth import sign_in
from tests.fixtures.principal import start_node_with_test_principal
from tests.fixtures.radpilot import RunningNode, make_settings
from tests.helpers import require_or_skip
from tests.unit.worklist_support import add_job

pytestmark = pytest.mark.integration
logger = logging.getLogger(__name__)

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--no-first-run"]
SIZES = {"laptop": {"width": 1366, "height": 768}, "desktop": {"width": 1920, "height": 1080}}
SCREENSHOTS = Path("/tmp")
WAIT_MS = 30_000


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
def node(tmp_path: Path) -> Iterator[RunningNode]:
    started = start_node_with_test_principal(make_settings(tmp_path))
    yield started
    started.server.stop()


def chest_radiograph() -> bytes:
    ds = make_ct_dataset(patient_id="CXR-1", patient_name="PARK^SEOYEON", modality="DX", rows=16, columns=16, accession="ACC-CXR")
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = DigitalXRayImageStorageForPresentation
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.StudyDescription = "CHEST PA"
    ds.RequestedProcedurePriority = "STAT"
    return to_part10_bytes(ds)


def horizontal_overflow(page) -> int:  # noqa: ANN001 - playwright Page
    return page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")


def test_studies_from_orthanc_appear_live_and_the_page_fits_laptop_and_desktop(browser, node: RunningNode, orthanc, clean_orthanc) -> None:  # noqa: ANN001
    ct = make_ct_series(3, rows=16, columns=16, patient_id="CT-1", patient_name="KIM^MINJI", accession="ACC-CT")
    for ds in ct:
        orthanc.upload(to_part10_bytes(ds))
    radiograph = orthanc.upload(chest_radiograph())
    ct_uid = str(ct[0].StudyInstanceUID)
    cxr_uid = orthanc.rest_get(f"/studies/{radiograph['ParentStudy']}")["MainDicomTags"]["StudyInstanceUID"]

    context = browser.new_context(viewport=SIZES["laptop"])
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    try:
        reader = sign_in(page, node.base_url, node.archive.engine, Role.RADIOLOGIST)
        page.goto(f"{node.base_url}/ui/", wait_until="load")
        page.locator("#live-status.live").wait_for(timeout=WAIT_MS)
        page.evaluate("window.__notReloaded = true")
        assert page.locator("tr[data-uid]").count() == 0

        orthanc.add_modality("radpilot", node.ae_title, node.host, node.dicom_port)
        orthanc.store_to("radpilot", [orthanc.resource_id(ct_uid), orthanc.resource_id(cxr_uid)])
        page.locator(f'tr[data-uid="{ct_uid}"]').wait_for(timeout=WAIT_MS)
        page.locator(f'tr[data-uid="{cxr_uid}"]').wait_for(timeout=WAIT_MS)
        assert page.evaluate("window.__notReloaded === true"), "the page was reloaded"
        rows = page.locator("tr[data-uid]")
        assert rows.count() == 2
        assert rows.nth(0).get_attribute("data-uid") == cxr_uid  # STAT first
        assert "STAT" in rows.nth(0).inner_text() and "PARK, SEOYEON" in rows.nth(0).inner_text()
        assert "KIM, MINJI" in rows.nth(1).inner_text() and "CT" in rows.nth(1).inner_text()

        # An analysis finishing on the CT raises a critical flag: the row moves up and shows it, still without a reload.
        add_job(node.archive, ct_uid, str(ct[0].SeriesInstanceUID), "lung_ct_quant", state="done", flags=[("nodule_candidates", True)])
        page.locator(f'tr[data-uid="{ct_uid}"]', has_text="lung_ct_quant: done").wait_for(timeout=WAIT_MS)
        assert "Nodule_Candidates" in page.locator(f'tr[data-uid="{ct_uid}"]').inner_text()
        assert page.evaluate("window.__notReloaded === true"), "the page was reloaded"

        # Keyboard: j selects the first study, c claims it; the row updates through the event stream.
        page.keyboard.press("j")
        page.keyboard.press("c")
        page.locator(f'tr[data-uid="{cxr_uid}"]', has_text=f"Claimed by {reader}").wait_for(timeout=WAIT_MS)
        page.keyboard.press("?")
        assert page.locator("#keys").is_visible()

        for name, size in SIZES.items():
            page.set_viewport_size(size)
            page.screenshot(path=str(SCREENSHOTS / f"radpilot_worklist_{name}.png"), full_page=True)
            assert horizontal_overflow(page) <= 0, f"the worklist overflows horizontally at {size}"
        admin_context = browser.new_context(viewport=SIZES["laptop"])
        admin = admin_context.new_page()
        sign_in(admin, node.base_url, node.archive.engine, Role.ADMINISTRATOR)
        for section in ("nodes", "rules", "jobs", "models", "audit"):
            admin.goto(f"{node.base_url}/ui/admin/{section}", wait_until="load")
            assert admin.locator("h1").inner_text() == "Administration"
            assert horizontal_overflow(admin) <= 0, f"/ui/admin/{section} overflows at 1366x768"
        admin.screenshot(path=str(SCREENSHOTS / "radpilot_admin_audit.png"), full_page=True)
        assert "study.claim" in admin.locator("main").inner_text()  # the keyboard claim was audited
        admin_context.close()

        context.add_cookies([{"name": "radpilot_lang", "value": "ko", "url": node.base_url}])
        page.set_viewport_size(SIZES["laptop"])
        page.reload(wait_until="load")
        assert page.locator("h1").inner_text().startswith("워크리스트")
        assert "응급" in page.locator(f'tr[data-uid="{cxr_uid}"]').inner_text()
        page.screenshot(path=str(SCREENSHOTS / "radpilot_worklist_ko.png"), full_page=True)
        assert horizontal_overflow(page) <= 0
        assert not errors, errors
    finally:
        context.close()
