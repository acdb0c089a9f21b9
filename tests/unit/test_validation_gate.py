"""The acceptance gate: criteria format, which stored runs count, activation with an audited override, the CLI."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from radpilot.cli.validation import app
from radpilot.config import Settings
from radpilot.modelhub.activation import ModelNotActive, require_active
from radpilot.security.audit import events
from radpilot.validation.gate import (
    Criteria,
    CriteriaError,
    Criterion,
    GateRefused,
    activate,
    check_activation,
    criteria_for,
    deactivate,
    evaluate_gate,
    is_active,
    parse_criteria,
)
from radpilot.validation.store import ValidationStore

MODEL_CRITERIA = [
    {"metric": "dice_right_lung_mean", ">=": 0.95, "value": 0.97956, "met": True},  # the training script's annotations are ignored
    {"metric": "dice_right_lung_ci95_lower", ">=": 0.93},
    {"metric": "ctr_mae", "<=": 0.02},
]


def fake_result(
    subject: str,
    version: str,
    dataset: str,
    metrics: dict,
    *,
    kind: str = "model",
    complete: bool = True,
    verified: bool = True,
    independent: bool = True,
    n_failed: int = 0,
    model: str | None = None,
    model_version: str | None = None,
) -> dict:
    return {
        "format": "radpilot.validation.result/1",
        "status": "ok",
        "created_at": "2026-01-01T00:00:00+00:00",
        "seconds": 1.0,
        "subject": {"kind": kind, "name": subject, "version": version, "model": model, "model_version": model_version, "code_path": "test"},
        "dataset": {"name": dataset, "version": "1", "content_hash": "sha256:" + "0" * 64, "verified": verified},
        "gate_view": {
            "complete": complete,
            "independent": independent,
            "n_cases": 10,
            "n_evaluated": 10 if complete else 3,
            "n_included": 10,
            "n_excluded": 0,
            "n_failed": n_failed,
        },
        "machine": {},
        "summary": {},
        "metrics": metrics,
        "outputs": {"ctr": [0.45, 0.5]},
        "cases": [],
    }


GOOD = {"dice_right_lung_mean": 0.975, "dice_right_lung_ci95_lower": 0.97, "ctr_mae": 0.011}
BAD = {"dice_right_lung_mean": 0.93, "dice_right_lung_ci95_lower": 0.90, "ctr_mae": 0.011}


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "models" / "seg"
    folder.mkdir(parents=True)
    weights = b"not really onnx"
    (folder / "seg.onnx").write_bytes(weights)
    for version in ("1.0.0", "1.1.0"):
        sub = folder.parent / f"seg-{version}"
        sub.mkdir()
        (sub / "seg.onnx").write_bytes(weights)
        (sub / "manifest.json").write_text(
            json.dumps(
                {
                    "name": "seg",
                    "version": version,
                    "file": "seg.onnx",
                    "sha256": hashlib.sha256(weights).hexdigest(),
                    "input": {},
                    "labels": [],
                    "intended_use": "test",
                    "training_data": {"source": "somewhere else"},
                    "acceptance_criteria": MODEL_CRITERIA,
                }
            )
        )
    return folder.parent


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data")


@pytest.fixture
def store(settings: Settings) -> ValidationStore:
    return ValidationStore.open(settings)


# --------------------------------------------------------------------------------------------- criteria
def test_criteria_format() -> None:
    criteria = parse_criteria(MODEL_CRITERIA + [{"metric": "dice_lungs_mean", ">": 0.9, "dataset": "ct-lung-slices"}])
    assert criteria[0] == Criterion("dice_right_lung_mean", ">=", 0.95)
    assert criteria[3].text == "dice_lungs_mean > 0.9 on ct-lung-slices"
    assert criteria[2].holds(0.02) and not criteria[2].holds(0.021)
    for bad, message in (
        ({"metric": "x"}, "exactly one of"),
        ({"metric": "x", ">=": 1, "<=": 2}, "exactly one of"),
        ({">=": 1}, "has no 'metric'"),
        ({"metric": "x", ">=": "high"}, "finite number"),
        ({"metric": "x", ">=": 1, "weight": 2}, "unknown key"),
    ):
        with pytest.raises(CriteriaError, match=message):
            parse_criteria([bad])


def test_criteria_come_from_the_model_manifest_and_the_analysis_file(models_dir: Path) -> None:
    model = criteria_for("seg", models_dir=models_dir)
    assert model.kind == "model" and model.version == "1.1.0" and len(model.criteria) == 3
    assert criteria_for("seg", "1.0.0", models_dir=models_dir).version == "1.0.0"
    analysis = criteria_for("lung_ct_quant", models_dir=models_dir)  # shipped radpilot/analyses/lung_ct/acceptance.yaml
    assert analysis.kind == "analysis" and analysis.version == "1.0.0" and analysis.allow_development_data
    assert {c.dataset for c in analysis.criteria} == {"ct-lung-slices", "ct-lung"}
    assert any(c.metric == "dice_lungs_mean" and c.op == ">=" and c.threshold == 0.95 for c in analysis.criteria)
    assert any(c.metric == "dice_lungs_ci95_lower" and c.threshold == 0.93 for c in analysis.criteria)
    with pytest.raises(KeyError):
        criteria_for("nothing", models_dir=models_dir)


def test_the_shipped_chest_xray_manifest_uses_the_same_format() -> None:
    manifest = Path(__file__).resolve().parents[2] / "models" / "cxr_lung_heart_seg" / "manifest.json"
    if not manifest.is_file():
        pytest.skip("the chest X-ray model is not in this checkout")
    criteria = parse_criteria(json.loads(manifest.read_text())["acceptance_criteria"], str(manifest))
    assert any(c.metric == "dice_right_lung_mean" for c in criteria)


# --------------------------------------------------------------------------------------------- decisions
def test_gate_passes_on_a_good_complete_independent_run(store: ValidationStore, models_dir: Path) -> None:
    store.save(fake_result("seg", "1.1.0", "ext-cxr", GOOD))
    decision = check_activation(store, "seg", "1.1.0", models_dir=models_dir)
    assert decision.passed, decision.message
    assert "passes its 3 acceptance criteria" in decision.message and decision.runs == (1,)


def test_gate_refuses_a_version_below_its_criteria(store: ValidationStore, models_dir: Path) -> None:
    store.save(fake_result("seg", "1.0.0", "ext-cxr", BAD))
    store.save(fake_result("seg", "1.1.0", "ext-cxr", GOOD))
    decision = check_activation(store, "seg", "1.0.0", models_dir=models_dir)
    assert not decision.passed
    failed = [r for r in decision.results if not r.met]
    assert [r.criterion.metric for r in failed] == ["dice_right_lung_mean", "dice_right_lung_ci95_lower"]
    assert "FAILS its gate" in decision.message and "dice_right_lung_mean >= 0.95: got 0.93 (run 1)" in decision.message
    assert check_activation(store, "seg", "1.1.0", models_dir=models_dir).passed  # versions are kept apart


def test_gate_fails_when_validation_is_missing_or_does_not_count(store: ValidationStore, models_dir: Path) -> None:
    missing = check_activation(store, "seg", "1.1.0", models_dir=models_dir)
    assert not missing.passed and "no stored validation of seg 1.1.0" in missing.message
    store.save(fake_result("seg", "1.1.0", "ext-cxr", GOOD, complete=False))
    store.save(fake_result("seg", "1.1.0", "ext-cxr", GOOD, verified=False))
    store.save(fake_result("seg", "1.1.0", "cxr-jsrt", GOOD, independent=False))
    decision = check_activation(store, "seg", "1.1.0", models_dir=models_dir)
    assert not decision.passed
    assert "validation on training data" in decision.message
    newer_good = store.save(fake_result("seg", "1.1.0", "ext-cxr", GOOD))
    assert check_activation(store, "seg", "1.1.0", models_dir=models_dir).runs == (newer_good.id,)


def test_failed_cases_fail_the_gate(store: ValidationStore, models_dir: Path) -> None:
    store.save(fake_result("seg", "1.1.0", "ext-cxr", GOOD, n_failed=2))
    decision = check_activation(store, "seg", "1.1.0", models_dir=models_dir)
    assert not decision.passed and "2 case(s) failed" in decision.message


def test_development_data_counts_only_when_the_criteria_allow_it(store: ValidationStore) -> None:
    store.save(fake_result("lung_ct_quant", "1.0.0", "slices", {"dice_lungs_mean": 0.98}, kind="analysis", independent=False))
    strict = Criteria("lung_ct_quant", "analysis", "1.0.0", (Criterion("dice_lungs_mean", ">=", 0.95, "slices"),), "test")
    assert not evaluate_gate(store, strict).passed
    lenient = Criteria("lung_ct_quant", "analysis", "1.0.0", strict.criteria, "test", True, "tuned on it, kept-back part checks it")
    decision = evaluate_gate(store, lenient)
    assert decision.passed and decision.development_data and "ON DEVELOPMENT DATA ONLY" in decision.message
    assert not evaluate_gate(store, Criteria("lung_ct_quant", "analysis", "1.0.0", (), "none")).passed  # no criteria: no pass


def test_an_analysis_on_a_model_inherits_the_model_criteria(store: ValidationStore, models_dir: Path) -> None:
    from radpilot.contract import Analysis

    class OnModel(Analysis):  # no acceptance.yaml beside this test module: it inherits its model's criteria
        name, version, required_models = "cxr", "2.0", ("seg",)

        def check_input(self, volume):  # noqa: ANN001, ANN201
            pass

        def run(self, volume):  # noqa: ANN001, ANN201
            raise NotImplementedError

    analyses = {"cxr": OnModel()}
    criteria = criteria_for("cxr", models_dir=models_dir, analyses=analyses)
    assert criteria.version == "2.0" and len(criteria.criteria) == 3 and criteria.source.startswith("inherited from model seg 1.1.0")
    store.save(fake_result("cxr", "2.0", "ext-cxr", BAD, kind="analysis", model="seg", model_version="1.1.0"))
    decision = check_activation(store, "cxr", "2.0", models_dir=models_dir, analyses=analyses)
    assert not decision.passed and "dice_right_lung_mean >= 0.95: got 0.93" in decision.message


def test_missing_runs_are_explained_once(store: ValidationStore, models_dir: Path) -> None:
    store.save(fake_result("seg", "1.1.0", "cxr-jsrt", GOOD, independent=False))
    message = check_activation(store, "seg", "1.1.0", models_dir=models_dir).message
    assert message.count("validation on training data") == 1
    assert "dice_right_lung_mean >= 0.95, dice_right_lung_ci95_lower >= 0.93, ctr_mae <= 0.02: no run counts" in message


def test_an_analysis_run_counts_for_the_model_it_used(store: ValidationStore, models_dir: Path) -> None:
    store.save(fake_result("chest_xray", "1.0.0", "ext-cxr", GOOD, kind="analysis", model="seg", model_version="1.1.0"))
    assert check_activation(store, "seg", "1.1.0", models_dir=models_dir).passed
    assert not check_activation(store, "seg", "1.0.0", models_dir=models_dir).passed


# --------------------------------------------------------------------------------------------- activation
def test_activation_is_gated_and_the_override_is_audited(store: ValidationStore, models_dir: Path) -> None:
    store.save(fake_result("seg", "1.0.0", "ext-cxr", BAD))
    with pytest.raises(GateRefused, match="FAILS its gate"):
        activate(store, "seg", "1.0.0", user="alice", models_dir=models_dir)
    assert not is_active(store, "seg", "1.0.0")
    with pytest.raises(ValueError, match="needs a reason"):
        activate(store, "seg", "1.0.0", user="alice", override=True, models_dir=models_dir)
    result = activate(
        store, "seg", "1.0.0", user="admin", override=True, reason="local validation pending, research use", models_dir=models_dir
    )
    assert result.activation["override"] and not result.decision.passed
    assert is_active(store, "seg", "1.0.0") and require_active(store.engine, "seg", "1.0.0").activated_by == "admin"
    audit = events(store.engine, target="seg@1.0.0")
    assert [e.action for e in audit] == ["model.activate.override", "model.activate.refused"]
    assert audit[0].who == "admin" and audit[0].reason == "local validation pending, research use"
    assert audit[0].details["gate"]["passed"] is False and audit[0].details["gate"]["results"]

    store.save(fake_result("seg", "1.1.0", "ext-cxr", GOOD))
    second = activate(store, "seg", "1.1.0", user="bob", models_dir=models_dir)
    assert second.decision.passed and second.deactivated == ("seg@1.0.0",)
    assert is_active(store, "seg", "1.1.0") and not is_active(store, "seg", "1.0.0")
    with pytest.raises(ModelNotActive, match="version 1.1.0 is"):
        require_active(store.engine, "seg", "1.0.0")
    assert deactivate(store, "seg", user="bob", reason="recall") == ["seg@1.1.0"]
    with pytest.raises(ModelNotActive, match="has not been activated"):
        require_active(store.engine, "seg", "1.1.0")
    assert events(store.engine, target="seg")[0].action == "model.deactivate"


def test_check_activation_accepts_settings_and_engines(settings: Settings, store: ValidationStore, models_dir: Path) -> None:
    store.save(fake_result("seg", "1.1.0", "ext-cxr", GOOD))
    assert check_activation(settings, "seg", "1.1.0", models_dir=models_dir).passed
    assert check_activation(store.engine, "seg", "1.1.0", models_dir=models_dir).passed
    unknown = check_activation(store, "nothing", "1", models_dir=models_dir)
    assert not unknown.passed and unknown.kind == "unknown"


# --------------------------------------------------------------------------------------------- CLI
def test_models_cli_check_and_activate(settings: Settings, store: ValidationStore, models_dir: Path) -> None:
    runner = CliRunner()
    common = ["--data-dir", str(settings.data_dir), "--models-dir", str(models_dir)]
    missing = runner.invoke(app, ["models", "check", "seg", "--version", "1.0.0", *common])
    assert missing.exit_code == 1 and "no stored validation" in missing.output
    store.save(fake_result("seg", "1.0.0", "ext-cxr", BAD))
    store.save(fake_result("seg", "1.1.0", "ext-cxr", GOOD))
    failing = runner.invoke(app, ["models", "check", "seg", "--version", "1.0.0", *common])
    assert failing.exit_code == 1 and "NOT MET" in failing.output and "FAILS its gate" in failing.output
    passing = runner.invoke(app, ["models", "check", "seg", "--version", "1.1.0", *common])
    assert passing.exit_code == 0, passing.output
    as_json = runner.invoke(app, ["models", "check", "seg", "--json", *common])
    assert json.loads(as_json.stdout)[0]["passed"] is True
    refused = runner.invoke(app, ["models", "activate", "seg", "--version", "1.0.0", "--user", "alice", *common])
    assert refused.exit_code == 1 and "activation refused" in refused.output
    no_reason = runner.invoke(app, ["models", "activate", "seg", "--version", "1.0.0", "--override", *common])
    assert no_reason.exit_code == 2 and "--reason" in no_reason.output
    override = runner.invoke(
        app, ["models", "activate", "seg", "--version", "1.0.0", "--override", "--reason", "trial", "--user", "admin", *common]
    )
    assert override.exit_code == 0 and "OVERRIDE" in override.output
    history = runner.invoke(app, ["models", "history", "seg", "--json", "--data-dir", str(settings.data_dir)])
    actions = [e["action"] for e in json.loads(history.stdout)]
    assert actions == ["model.activate.override", "model.activate.refused"]
    listing = runner.invoke(app, ["models", "list", "--json", *common])
    rows = {r["name"]: r for r in json.loads(listing.stdout)}
    assert rows["seg"]["active_version"] == "1.0.0" and rows["seg"]["override"] and "lung_ct_quant" in rows
