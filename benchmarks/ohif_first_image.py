"""Time to the first image in OHIF for a 512-slice CT served by RadPilot, in headless Chromium (issue 20, point 2).

A 512-slice CT series (the real 64 slices of ../shared/data/ct-lung/LUNGCT-002 repeated along z with new
UIDs and positions, 512x512, Explicit VR Little Endian) is stored in a RadPilot archive; RadPilot's web
app (DICOMweb + OHIF 3) is served on loopback. For each repetition a new browser context (empty cache)
signs in (as a returning reader: OHIF's first-visit tour marked as seen), opens ``/viewer?StudyInstanceUIDs=...`` and screenshots the main viewport every 100 ms until it
shows an image (grey-level standard deviation of its centre >= 25, as tests/integration/test_viewer_chromium.py
checks). Reported per repetition: seconds from navigation to the first image, to the end of the series
metadata response, and the number of DICOMweb requests made until then; medians over repetitions.

Usage: .venv/bin/python benchmarks/ohif_first_image.py [--slices 512] [--repetitions 3]
Writes benchmarks/results/ohif_first_image.json.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pydicom
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from time_to_sign import CHROMIUM, serve  # noqa: E402

from radpilot.archive import Archive  # noqa: E402
from radpilot.security.principal import Role  # noqa: E402
from tests.fixtures.auth import sign_in  # noqa: E402
from tests.fixtures.radpilot import make_settings  # noqa: E402
from tests.helpers import shared_data_path  # noqa: E402
from tests.integration.test_viewer_chromium import MIN_IMAGE_STD, grey_std, largest_canvas_box  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
POLL_MS = 100
TIMEOUT_S = 120


def store_long_series(archive: Archive, slices: int) -> str:
    """Store ``slices`` CT instances of one new series, stacked along z; return the study UID."""
    sources = [pydicom.dcmread(p) for p in sorted((shared_data_path() / "ct-lung" / "LUNGCT-002" / "dicom").glob("*.dcm"))]
    if not sources:
        sys.exit("no CT under ct-lung/LUNGCT-002; set RADPILOT_SHARED_DATA")
    study, series = generate_uid(), generate_uid()
    spacing = float(sources[0].get("SliceThickness") or 1.0)
    for index in range(slices):
        ds = sources[index % len(sources)].copy()
        ds.file_meta = sources[index % len(sources)].file_meta.copy()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.PatientID, ds.PatientName, ds.InstanceNumber = "BENCH-OHIF", "BENCH^OHIF", index + 1
        x, y, _ = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y, -index * spacing]
        ds.SliceLocation = -index * spacing
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        result = archive.store_file_bytes(buffer.getvalue())
        if not result.outcome.accepted:
            raise RuntimeError(f"slice {index} refused: {result.message}")
    return study


def first_image(browser: Any, base: str, archive: Archive, study_uid: str) -> dict[str, Any]:  # noqa: ANN401 - Playwright browser
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    # A returning reader: OHIF's first-visit tour would dim the viewport (its pixels are what is measured).
    context.add_init_script("localStorage.setItem('shownTours', JSON.stringify(['basicViewerTour']))")
    page = context.new_page()
    sign_in(page, base, archive.engine, Role.RADIOLOGIST)
    dicomweb: list[tuple[float, str]] = []
    started = 0.0
    page.on(
        "requestfinished",
        lambda request: dicomweb.append((time.perf_counter() - started, request.url)) if "/dicomweb" in request.url else None,
    )
    try:
        started = time.perf_counter()
        page.goto(f"{base}/viewer?StudyInstanceUIDs={study_uid}", wait_until="commit")
        while time.perf_counter() - started < TIMEOUT_S:
            box = largest_canvas_box(page)
            if box is not None and grey_std(page.screenshot(), box) >= MIN_IMAGE_STD:
                seconds = time.perf_counter() - started
                metadata = [t for t, url in dicomweb if url.endswith("/metadata")]
                return {
                    "first_image_s": round(seconds, 3),
                    "series_metadata_done_s": round(min(metadata), 3) if metadata else None,
                    "dicomweb_requests_until_first_image": len(dicomweb),
                }
            page.wait_for_timeout(POLL_MS)
        page.screenshot(path=str(RESULTS / "ohif_first_image_timeout.png"))
        raise RuntimeError(
            f"no image in OHIF within {TIMEOUT_S} s after {len(dicomweb)} DICOMweb requests {dicomweb[:3]}; page text: {page.inner_text('body')[:500]!r}; screenshot in {RESULTS}"
        )
    finally:
        context.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slices", type=int, default=512)
    parser.add_argument("--repetitions", type=int, default=3)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright  # noqa: PLC0415 - only browser benchmarks need it

    if not CHROMIUM.exists():
        print(f"{CHROMIUM} is not installed (Debian package chromium)", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="ohif-first-image-") as tmp:
        settings = make_settings(Path(tmp))
        archive = Archive.from_settings(settings)
        started = time.perf_counter()
        study_uid = store_long_series(archive, args.slices)
        print(f"stored {args.slices} slices in {time.perf_counter() - started:.1f} s")
        base, server, thread = serve(settings, archive)
        runs = []
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"], headless=True)
                first_image(browser, base, archive, study_uid)  # warm-up: the server's first requests, the browser's start
                for repetition in range(args.repetitions):
                    run = first_image(browser, base, archive, study_uid)
                    runs.append(run)
                    print(f"repetition {repetition}: {run}")
                browser.close()
        finally:
            server.should_exit = True
            thread.join(timeout=10)
            archive.close()
    result = {
        "benchmark": "ohif_first_image",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "slices": args.slices,
        "median_first_image_s": round(statistics.median(r["first_image_s"] for r in runs), 3),
        "median_series_metadata_done_s": round(statistics.median(r["series_metadata_done_s"] or 0 for r in runs), 3),
        "runs": runs,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "note": "headless Chromium without GPU on the same 2 cores as the server; each repetition a new context (empty cache)",
    }
    print(json.dumps({k: result[k] for k in ("median_first_image_s", "median_series_metadata_done_s", "load_average")}))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "ohif_first_image.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
