"""The self-contained HTML report and the workbench CLI (datasets, validate, compare) on a tiny dataset built in the test."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from radpilot.cli.validation import app
from radpilot.validation import metrics as M
from radpilot.validation.aggregate import detection_summary
from radpilot.validation.report import compare_results, froc_plot, overlay_png, render_comparison, render_report
from radpilot.validation.runner import run_validation
from radpilot.validation.subject import resolve_subject
from tests.unit.test_validation_runner import registry_with
from tests.unit.validation_support import SLICE_MANIFEST_OPTIONS, make_slice_dataset, manifest_dict


@pytest.fixture(scope="module")
def outcome(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    tmp = tmp_path_factory.mktemp("report")
    root = make_slice_dataset(tmp / "tiny-slices", n=6, defective=1)
    registry = registry_with(tmp, manifest_dict("tiny-slices", "png-slices", root, SLICE_MANIFEST_OPTIONS))
    result = run_validation(resolve_subject("lung_ct_quant"), registry.get("tiny-slices"), registry, n_resamples=200)
    result.result["run_id"] = 7
    return result


def test_report_is_self_contained_and_complete(outcome) -> None:  # noqa: ANN001
    html = render_report(outcome.result, outcome.overlays)
    assert html.startswith("<!DOCTYPE html>")
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html), "no external resource may be referenced"
    assert "<script" not in html
    for text in (
        "Validation of lung_ct_quant 1.0.0 on tiny-slices t1",
        outcome.result["dataset"]["content_hash"],
        "matches the manifest",
        "segment_lungs_slice",
        "Limitations of this dataset",
        "synthetic",  # the manifest's stated limitation
        "95 % CI of the mean",
        "Worst cases",
        "excluded: mask_qc = FLAG_defect",
        "ID_0005_Z_0015",
        "percentile bootstrap over cases, 200 resamples, seed 0",
    ):
        assert text in html, text
    images = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", html)
    assert len(images) >= 3 + len(outcome.overlays)  # box plots and every overlay


HOSTILE = "<script>alert(1)</script>"


def test_report_escapes_every_value_it_shows(outcome) -> None:  # noqa: ANN001
    result = json.loads(json.dumps(outcome.result))
    result["cases"][0]["case_id"] = HOSTILE
    result["cases"][1]["error"] = "<img src=x onerror=alert(2)>"
    result["dataset"]["title"] = HOSTILE
    result["dataset"]["citation"] = [HOSTILE, "Second & 'third'"]
    result["warnings"] = [HOSTILE]
    overlays = [dataclasses.replace(outcome.overlays[0], case_id=HOSTILE, caption=HOSTILE, excluded=HOSTILE)]
    html = render_report(result, overlays)
    assert "<script" not in html and "<img src=x" not in html
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt;"
    assert f"<tr class=''><td>{escaped}</td>" in html  # the per-case table
    assert f"<figcaption><b>{escaped}</b> <span class='muted'>(excluded: {escaped})</span> {escaped}</figcaption>" in html
    assert f"<img alt='case {escaped}' src='data:image/png;base64," in html
    assert f"<div class='warn'>{escaped}</div>" in html
    assert f"<td>{escaped}<br>Second &amp; &#39;third&#39;</td>" in html  # the citation lines, joined by real <br>
    assert "&lt;img src=x onerror=alert(2)&gt;" in html

    b = json.loads(json.dumps(result))
    b["subject"]["name"] = HOSTILE
    comparison = compare_results(result, b, n_resamples=50)
    page = render_comparison(comparison, result, b)
    assert "<script" not in page and f"B: {escaped} 1.0.0 on tiny-slices" in page


def test_overlay_and_froc_images_are_png(outcome) -> None:  # noqa: ANN001
    png = overlay_png(outcome.overlays[0])
    assert png.startswith(b"\x89PNG")
    cases = [M.match_detections([0.9, 0.2], [[True], [False]]), M.match_detections([0.6], [[False]])]
    uri = froc_plot(detection_summary(cases, n_resamples=50))
    assert uri and uri.startswith("data:image/png;base64,")


def test_comparison_of_two_runs(outcome) -> None:  # noqa: ANN001
    b = json.loads(json.dumps(outcome.result))
    for case in b["cases"]:
        case["metrics"]["dice_lungs"] = case["metrics"]["dice_lungs"] - 0.01
    b["metrics"]["dice_lungs_mean"] -= 0.01
    comparison = compare_results(outcome.result, b, n_resamples=100)
    row = next(r for r in comparison["metrics"] if r["metric"] == "dice_lungs_mean")
    assert row["difference"] == pytest.approx(-0.01)
    paired = comparison["paired"]["dice_lungs"]
    assert paired["n"] == 5 and paired["mean_difference"] == pytest.approx(-0.01) and paired["n_a_better"] == 5
    html = render_comparison(comparison, outcome.result, b)
    assert "Paired comparison on shared cases" in html and "data:image/png;base64," in html


# --------------------------------------------------------------------------------------------- CLI
def test_cli_datasets_validate_runs_and_compare(tmp_path: Path) -> None:
    runner = CliRunner()
    root = make_slice_dataset(tmp_path / "mine", n=5)
    data = ["--data-dir", str(tmp_path / "data")]
    options = [f"--option={k}={json.dumps(v)}" for k, v in SLICE_MANIFEST_OPTIONS.items()]
    added = runner.invoke(
        app,
        [
            "datasets",
            "add",
            str(root),
            "--name",
            "my-slices",
            "--layout",
            "png-slices",
            "--analysis",
            "lung_ct_quant",
            "--licence",
            "internal",
            "--limitation",
            "one scanner",
            *options,
            *data,
        ],
    )
    assert added.exit_code == 0, added.output
    listed = json.loads(runner.invoke(app, ["datasets", "list", "--json", *data]).stdout)
    mine = next(d for d in listed if d["name"] == "my-slices")
    assert mine["origin"] == "user" and mine["present"] and mine["content_hash"].startswith("sha256:")
    assert runner.invoke(app, ["datasets", "verify", "my-slices", *data]).exit_code == 0

    first = runner.invoke(
        app, ["validate", "lung_ct_quant", "--dataset", "my-slices", "--resamples", "200", "--output", str(tmp_path / "out"), *data]
    )
    assert first.exit_code == 0, first.output
    assert "dice_lungs" in first.output and "report:" in first.output
    assert (tmp_path / "out" / "report.html").is_file() and json.loads((tmp_path / "out" / "result.json").read_text())["run_id"] == 1
    second = runner.invoke(app, ["validate", "run", "lung_ct_quant", "-d", "my-slices", "--limit", "2", "--json", *data])
    assert second.exit_code == 0, second.output
    assert json.loads(second.stdout)["gate_view"]["complete"] is False

    runs = json.loads(runner.invoke(app, ["validate", "runs", "lung_ct_quant", "--json", *data]).stdout)
    assert [r["id"] for r in runs] == [2, 1] and runs[1]["eligible_for_gate"] and not runs[0]["eligible_for_gate"]
    compared = runner.invoke(app, ["validate", "compare", "1", "lung_ct_quant@1.0.0:my-slices", *data])
    assert compared.exit_code == 0, compared.output
    assert (tmp_path / "data" / "validation" / "comparisons" / "000001-vs-000002" / "comparison.html").is_file()

    assert runner.invoke(app, ["validate", "lung_ct_quant", "--dataset", "nope", *data]).exit_code == 2
    assert runner.invoke(app, ["validate", "compare", "1", "99", *data]).exit_code == 2
    (root / "extra.txt").write_text("changed")
    changed = runner.invoke(app, ["datasets", "verify", "my-slices", *data])
    assert changed.exit_code == 1 and "changed" in changed.output
    refused = runner.invoke(app, ["validate", "lung_ct_quant", "--dataset", "my-slices", *data])
    assert refused.exit_code == 2 and "--allow-unverified" in refused.output
