"""The validation workbench on the real shared data, end to end, and its HTML report in headless Chromium.

* ``validate lung_ct_quant --dataset ct-lung-slices`` on a subset, through ``python -m
  radpilot.cli.validation`` (the standalone entry point), against the MANUAL masks;
* ``validate lung_ct_quant --dataset ct-lung`` (both real DICOM series, the production
  path) against the AUTOMATIC reference masks and cases.csv;
* ``models check lung_ct_quant``: a partial run does not count for the gate;
* the HTML report opens in headless Chromium without any network request, and its
  screenshot is not blank (also written to /tmp/radpilot_validation_report.png).
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from radpilot.cli.validation import app
from tests.helpers import REPO_ROOT, require_or_skip

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOT = Path("/tmp/radpilot_validation_report.png")
SUBSET = 20


@pytest.fixture(scope="module")
def workbench(shared_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    for name in ("ct-lung-slices", "ct-lung"):
        if not (shared_data_dir / name).is_dir():
            require_or_skip(f"{shared_data_dir / name} is absent")
    data_dir = tmp_path_factory.mktemp("workbench") / "data"
    common = ["--data-dir", str(data_dir), "--data-root", str(shared_data_dir)]
    slices = subprocess.run(
        [
            sys.executable,
            "-m",
            "radpilot.cli.validation",
            "validate",
            "lung_ct_quant",
            "--dataset",
            "ct-lung-slices",
            "--limit",
            str(SUBSET),
            "--resamples",
            "500",
            "--json",
            *common,
        ],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=240,
    )
    assert slices.returncode == 0, slices.stderr[-3000:]
    series = CliRunner().invoke(app, ["validate", "lung_ct_quant", "--dataset", "ct-lung", "--resamples", "500", *common])
    assert series.exit_code == 0, series.output
    runs = {r["dataset"]: r for r in json.loads(CliRunner().invoke(app, ["validate", "runs", "--json", *common[:2]]).stdout)}
    return {
        "common": common,
        "slices_stdout": slices.stdout,
        "runs": runs,
        "slices": json.loads(Path(runs["ct-lung-slices"]["result_path"]).read_text()),
        "series": json.loads(Path(runs["ct-lung"]["result_path"]).read_text()),
    }


def test_slices_subset_against_manual_masks(workbench: dict) -> None:
    printed = json.loads(workbench["slices_stdout"])
    result = workbench["slices"]
    assert printed["run_id"] == result["run_id"]
    assert result["dataset"]["verified"] and result["dataset"]["reference"]["kind"] == "manual"
    assert result["gate_view"]["n_evaluated"] == SUBSET and not result["gate_view"]["complete"]
    metrics = result["metrics"]
    assert metrics["dice_lungs_mean"] >= 0.95 and metrics["dice_lungs_min"] >= 0.90, metrics
    assert metrics["dice_lungs_ci95_lower"] >= 0.93
    assert abs(metrics["area_error_percent_lungs_mean"]) < 3.0
    assert any("not calibrated" in x.lower() for x in result["dataset"]["limitations"])
    assert "segment_lungs_slice" in result["subject"]["code_path"]


def test_real_series_through_the_production_path(workbench: dict) -> None:
    result = workbench["series"]
    assert result["gate_view"] == result["gate_view"] | {"complete": True, "n_cases": 2, "n_failed": 0}
    assert result["subject"]["code_path"].startswith("production path")
    assert result["dataset"]["reference"]["kind"] == "automatic"
    cases = {c["case_id"]: c for c in result["cases"]}
    assert cases["LUNGCT-001"]["attributes"]["kernel"] == "L" and cases["LUNGCT-002"]["attributes"]["kernel"] == "B"
    for case in cases.values():
        assert case["metrics"]["dice_right_lung"] >= 0.95 and case["metrics"]["dice_left_lung"] >= 0.95
        total = case["values"]["total_lung_volume_ml"]
        assert total["predicted"] == pytest.approx(total["reference"], rel=0.03)
        assert total["reference_mask"] == pytest.approx(total["reference"], abs=0.1)  # the mask is read in register
        laa = case["values"]["laa950_percent"]
        assert laa["reference_mask"] == pytest.approx(laa["reference"], abs=0.01)
        assert abs(laa["predicted"] - laa["reference"]) <= 0.5
    assert cases["LUNGCT-001"]["values"]["laa950_percent"]["predicted"] > 5 > cases["LUNGCT-002"]["values"]["laa950_percent"]["predicted"]
    assert any("Only 2 case(s)" in w for w in result["warnings"])


def test_gate_does_not_count_the_partial_run(workbench: dict) -> None:
    check = CliRunner().invoke(app, ["models", "check", "lung_ct_quant", "--json", *workbench["common"][:2]])
    assert check.exit_code == 1
    decision = json.loads(check.stdout)[0]
    by_dataset = {}
    for r in decision["results"]:
        by_dataset.setdefault(r["criterion"].get("dataset"), []).append(r)
    assert all(r["met"] for r in by_dataset["ct-lung"]), by_dataset["ct-lung"]
    assert not any(r["met"] for r in by_dataset["ct-lung-slices"])
    assert "partial run" in by_dataset["ct-lung-slices"][0]["reason"]


def test_report_renders_in_headless_chromium(workbench: dict) -> None:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        require_or_skip("playwright is not installed (pip install -e '.[test]')")
    if not CHROMIUM.is_file():
        require_or_skip(f"{CHROMIUM} is absent")
    from PIL import Image

    report = Path(workbench["runs"]["ct-lung-slices"]["report_path"])
    outside: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1300, "height": 1000})
            page.on("request", lambda request: outside.append(request.url) if not request.url.startswith(("file:", "data:")) else None)
            page.goto(report.as_uri(), wait_until="load")
            assert "Validation of lung_ct_quant 1.0.0 on ct-lung-slices" in page.text_content("h1")
            loaded = page.evaluate("Array.from(document.images).filter(i => i.complete && i.naturalWidth > 0).length")
            assert loaded == page.evaluate("document.images.length") >= 3
            png = page.screenshot(full_page=True)
        finally:
            browser.close()
    SCREENSHOT.write_bytes(png)
    assert outside == [], f"the report made network requests: {outside}"
    grey = np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.float64)
    assert grey.shape[0] > 1500  # a long page: tables, plots and overlays
    assert grey.std() > 20.0, "the screenshot is blank"
    assert (grey < 128).mean() > 0.02, "almost nothing dark was drawn"
