"""OHIF in headless Chromium shows chest radiographs the right way round, as modalities write them, and
chest_xray's key image of each.

One real JSRT film (research use only; read from shared data, never copied) is written in the vendor
encodings of tests/unit/test_chest_xray_grayscale.py (MONOCHROME1 with Presentation LUT Shape INVERSE,
Modality and VOI LUT Sequences, signed pixels, SIGMOID windows, 8 bits, "for processing"), each as a study of
its own in one RadPilot node; chest_xray analyses each in this process. A reader then opens each study in OHIF
and double-clicks the radiograph and then the key image onto the viewport. From each screenshot the test
takes the median grey of the lungs and of the heart (the film's reference masks, eroded, placed where OHIF
fits the image into the viewport): the lungs must be darker. An inverted picture (a MONOCHROME1 shown as
MONOCHROME2, an INVERSE applied twice) makes them brighter, and a viewport OHIF could not draw is black.
Screenshots: /tmp/radpilot_cxr_ohif_*.png.

Every key image must be right (RadPilot renders it), and so must every radiograph: images with a VOI LUT
Function and MONOCHROME2 images with Presentation LUT Shape INVERSE are shown right only through the mends
scripts/patch_ohif.py applies to the pinned OHIF build.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset
from scipy import ndimage

from radpilot.analyses.chest_xray import ChestXray
from tests.fixtures.radpilot import (  # noqa: F401 - radpilot_factory is a fixture
    RunningNode,
    activate_models,
    analyse_in_process,
    radpilot_factory,
    rules_without_destinations,
)
from tests.helpers import require_or_skip
from tests.integration.test_engine_end_to_end import SECONDARY_CAPTURE
from tests.integration.test_viewer_chromium import (  # noqa: F401 - browser is a fixture
    BrowserLog,
    browser,
    dismiss_onboarding,
    open_page,
    save_screenshot,
    visible_error_text,
)
from tests.integration.test_viewer_seg_overlay import settled_screenshot, viewport_pixels
from tests.unit.test_chest_xray_analysis import NORMAL_CASE, JsrtCase, jsrt_case
from tests.unit.test_chest_xray_grayscale import ENCODINGS, _mono2

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

logger = logging.getLogger(__name__)

WORKER_ID = "chest-xray-ohif-test"
UI_TIMEOUT_S = 45
SOURCE_DESCRIPTION = "CHEST PA"  # radiograph_dataset's series description
KEY_IMAGE_THUMBNAIL = "key image"
MASK_EROSION_PX = 8  # keeps a few pixels of misplacement (OHIF's fit, rounding) off the organ borders
MIN_CONTRAST = 20  # grey levels (0-255) by which the heart must be brighter than the lungs
SCREENSHOTS = Path("/tmp")
FAILURE_SCREENSHOT = Path("/tmp/radpilot_cxr_ohif_failure.png")


def _explicit_linear(p: np.ndarray) -> Dataset:
    # The window function written out as its default, LINEAR: OHIF 3.13.2 as published shows such images black
    # ("Invalid VOI LUT function"); scripts/patch_ohif.py mends it at install.
    ds = _mono2(p)
    ds.WindowCenter, ds.WindowWidth, ds.VOILUTFunction = 2048, 4096, "LINEAR"
    return ds


# Each asks OHIF for something different (the unit tests cover every encoding for RadPilot's own reading).
SHOWN_ENCODINGS = {
    "mono2": _mono2,
    "explicit_linear": _explicit_linear,
    **{
        name: ENCODINGS[name]
        for name in (
            "dx_mono1_inverse",
            "cr_mono1_no_shape",
            "mono2_inverse_of_inverted_data",
            "modality_lut_sequence",
            "signed_12_in_16",
            "signed_with_voi_lut",
            "sixteen_bit_linear_exact",
            "sigmoid_first_of_two_windows",
            "for_processing_voi_lut_8bit_packed",
        )
    },
}


@dataclass(frozen=True)
class Shown:
    """How the viewport showed one image: median grey of the lungs and of the heart."""

    lungs: float
    heart: float

    @property
    def contrast(self) -> float:
        return self.heart - self.lungs

    def __str__(self) -> str:
        return f"lungs {self.lungs:.0f}, heart {self.heart:.0f} ({self.contrast:+.0f})"


@dataclass(frozen=True)
class AnalysedFilm:
    encoding: str
    study_uid: str
    key_rows: int
    key_columns: int


@pytest.fixture(scope="module")
def film() -> JsrtCase:
    return jsrt_case(NORMAL_CASE)


@pytest.fixture
def analysed_films(radpilot_factory, film: JsrtCase, tmp_path: Path) -> tuple[RunningNode, list[AnalysedFilm]]:  # noqa: ANN001, F811
    """A node holding the film in every encoding, each its own study analysed by chest_xray."""
    node = radpilot_factory(rules_file=rules_without_destinations(ChestXray(), tmp_path))  # no workers, no automatic routing
    if node.server.app.state.ohif_dir is None:
        require_or_skip("the OHIF viewer is not installed (make ohif / scripts/install_ohif.sh)")
    activate_models(node, ChestXray, "chest_xray OHIF test")
    analysed = []
    for encoding, write in SHOWN_ENCODINGS.items():
        folder = tmp_path / encoding
        folder.mkdir()
        ds = write(film.pixels)
        ds.PatientID, ds.PatientName = f"CXR-{encoding[:55]}", f"OHIF^{encoding[:55]}"
        (key,) = analyse_in_process(node, [ds], "chest_xray", folder, WORKER_ID)[SECONDARY_CAPTURE]
        analysed.append(AnalysedFilm(encoding, str(ds.StudyInstanceUID), int(key.Rows), int(key.Columns)))
    return node, analysed


def shown_organs(png: bytes, box: dict[str, float], labels: np.ndarray, rows: int, columns: int) -> Shown:
    """The lungs' and heart's median grey where OHIF shows an image of ``rows`` x ``columns`` whose top part is
    the film of ``labels`` across its whole width (a radiograph: all of it; a key image: above its legend band).

    OHIF fits the image into the viewport, centred, keeping its aspect ratio.
    """
    grey = viewport_pixels(png, box, "L")
    height, width = grey.shape
    scale = min(width / columns, height / rows)
    left, top = (width - columns * scale) / 2, (height - rows * scale) / 2
    film_scale = scale * columns / labels.shape[1]

    def median_of(mask: np.ndarray) -> float:
        rr, cc = np.nonzero(ndimage.binary_erosion(mask, iterations=MASK_EROSION_PX))
        y = np.clip((top + (rr + 0.5) * film_scale).astype(int), 0, height - 1)
        x = np.clip((left + (cc + 0.5) * film_scale).astype(int), 0, width - 1)
        return float(np.median(grey[y, x]))

    return Shown(lungs=median_of(np.isin(labels, (1, 2))), heart=median_of(labels == 3))


def _show_series(page, thumbnail_text: str) -> tuple[bytes, dict[str, float]]:  # noqa: ANN001 - playwright Page
    thumbnail = page.locator("[data-cy^=study-browser-thumbnail]", has_text=thumbnail_text).first
    thumbnail.wait_for(state="visible")
    thumbnail.dblclick()
    page.wait_for_load_state("networkidle")
    return settled_screenshot(page)


@pytest.fixture
def viewer(browser, analysed_films: tuple[RunningNode, list[AnalysedFilm]]) -> Iterator:  # noqa: ANN001, F811
    """A page signed in to the node as a radiologist, and the log of what its browser reported."""
    log = BrowserLog()
    context, page = open_page(browser, log, analysed_films[0])
    page.set_default_timeout(UI_TIMEOUT_S * 1000)
    yield page, log
    context.close()


def test_ohif_shows_every_vendor_encoding_and_its_key_image_with_the_lungs_darker_than_the_heart(
    viewer,  # noqa: ANN001 - (playwright Page, BrowserLog)
    analysed_films: tuple[RunningNode, list[AnalysedFilm]],
    film: JsrtCase,
) -> None:
    page, log = viewer
    node, analysed = analysed_films
    shown: dict[str, tuple[Shown, Shown]] = {}
    try:
        for k, item in enumerate(analysed):
            page.goto(f"{node.base_url}/viewer?StudyInstanceUIDs={item.study_uid}", wait_until="load")
            page.wait_for_selector("canvas", state="visible")
            if k == 0:
                dismiss_onboarding(page)  # shown once per browser profile
            png, box = _show_series(page, SOURCE_DESCRIPTION)
            save_screenshot(png, SCREENSHOTS / f"radpilot_cxr_ohif_{item.encoding}.png")
            source = shown_organs(png, box, film.labels, *film.labels.shape)
            png, box = _show_series(page, KEY_IMAGE_THUMBNAIL)
            save_screenshot(png, SCREENSHOTS / f"radpilot_cxr_ohif_{item.encoding}_key.png")
            key = shown_organs(png, box, film.labels, item.key_rows, item.key_columns)
            shown[item.encoding] = (source, key)
            logger.info("%-40s radiograph: %s; key image: %s", item.encoding, source, key)
        assert not visible_error_text(page), f"{visible_error_text(page)}\n{log.report()}"
        assert not log.failed_requests and not log.page_errors, log.report()
    except Exception:
        log.log()
        save_screenshot(page.screenshot(), FAILURE_SCREENSHOT)
        raise
    table = "\n".join(f"  {name:40s} radiograph: {source}; key image: {key}" for name, (source, key) in shown.items())
    wrong_keys = [name for name, (_, key) in shown.items() if key.contrast < MIN_CONTRAST]
    assert not wrong_keys, f"key images shown without the lungs darker than the heart: {wrong_keys}\n{table}"
    # OHIF 3.13.2 as published shows "mono2_inverse_of_inverted_data" (MONOCHROME2 with INVERSE, seen from CR/DX
    # writers) as a negative: it reads no Presentation LUT Shape. scripts/patch_ohif.py mends it.
    wrong_sources = [name for name, (source, _) in shown.items() if source.contrast < MIN_CONTRAST]
    assert not wrong_sources, f"radiographs shown without the lungs darker than the heart: {wrong_sources}\n{table}"
