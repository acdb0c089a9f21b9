"""Production monitoring: daily counts, failure rate, processing time, key-output drift against validation, /api/monitoring."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from radpilot.config import Settings
from radpilot.engine.jobs_models import Job
from radpilot.validation.monitoring import drift, measurement_outputs, monitoring_report, population_stability_index
from radpilot.validation.store import ValidationStore
from radpilot.web.monitoring_api import router
from tests.fixtures.auth import as_principal
from tests.unit.test_validation_gate import fake_result

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def lung_result(volume_ml: float, laa: float) -> dict:
    return {
        "sop_instance_uids": [],
        "details": {
            "measurements": [
                {"name": "Volume", "value": volume_ml, "unit": "mL", "site": "Both lungs"},
                {"name": "Volume", "value": volume_ml / 2, "unit": "mL", "site": "Right lung"},
                {"name": "Lung low attenuation area below -950 HU", "value": laa, "unit": "%", "site": "Both lungs"},
            ],
            "notes": [],
        },
    }


def add_job(
    session: Session,
    n: int,
    *,
    state: str,
    day: int,
    seconds: float = 10.0,
    result: dict | None = None,
    analysis: str = "lung_ct_quant",
    version: str = "1.0.0",
    now: datetime = NOW,
) -> None:
    created = now - timedelta(days=day, hours=1)
    session.add(
        Job(
            idempotency_key=f"k{n}",
            analysis=analysis,
            analysis_version=version,
            study_instance_uid="1.2",
            series_instance_uid="1.2.3",
            input_sop_uids=[],
            priority=2,
            state=state,
            max_attempts=3,
            timeout_s=600.0,
            created_at=created,
            started_at=created + timedelta(seconds=1),
            finished_at=created + timedelta(seconds=1 + seconds) if state in ("done", "failed") else None,
            result=result,
        )
    )


@pytest.fixture
def store(tmp_path: Path) -> ValidationStore:
    return ValidationStore.open(Settings(data_dir=tmp_path / "data"))


def test_measurement_outputs_from_a_job_result() -> None:
    assert measurement_outputs(lung_result(5000.0, 3.0)) == {"total_lung_volume_ml": 5000.0, "laa950_percent": 3.0}
    assert measurement_outputs(None) == {} and measurement_outputs({"details": {"measurements": [{"name": "Volume", "value": "x"}]}}) == {}


def test_drift_rule() -> None:
    rng = np.random.default_rng(0)
    reference = rng.normal(5000, 600, 60).tolist()
    assert drift(None, [1.0])["status"] == "no_reference"
    assert drift(reference[:5], rng.normal(5000, 600, 40).tolist())["status"] == "insufficient_data"
    same = drift(reference, rng.normal(5000, 600, 80).tolist())
    assert same["status"] == "ok" and same["psi"] < 0.2
    shifted = drift(reference, rng.normal(6500, 600, 80).tolist())
    assert shifted["status"] == "drift" and shifted["ks_pvalue"] < 0.01 and "departs from validation" in shifted["message"]
    assert population_stability_index(np.arange(100.0), np.arange(100.0)) == pytest.approx(0.0, abs=1e-9)


def test_monitoring_report_per_analysis_and_version(store: ValidationStore) -> None:
    rng = np.random.default_rng(1)
    reference = {"total_lung_volume_ml": rng.normal(5000, 500, 40).tolist(), "laa950_percent": rng.uniform(0, 10, 40).tolist()}
    run = fake_result("lung_ct_quant", "1.0.0", "ref-set", {"dice_lungs_mean": 0.98}, kind="analysis")
    run["outputs"] = reference
    store.save(run)
    with Session(store.engine) as session, session.begin():
        n = 0
        for day in range(3):
            for _ in range(10):  # drifted volumes: +1500 mL, LAA-950 unchanged
                add_job(session, n, state="done", day=day, seconds=8.0 + day, result=lung_result(rng.normal(6500, 500), rng.uniform(0, 10)))
                n += 1
        add_job(session, n, state="failed", day=0)
        add_job(session, n + 1, state="queued", day=0)
        add_job(session, n + 2, state="done", day=1, result={"details": {"measurements": []}}, version="0.9.0")
        add_job(session, n + 3, state="done", day=40, result=lung_result(1.0, 1.0))  # outside the window
    report = monitoring_report(store.engine, days=30, now=NOW)
    assert [(a["analysis"], a["version"]) for a in report["analyses"]] == [("lung_ct_quant", "0.9.0"), ("lung_ct_quant", "1.0.0")]
    current = report["analyses"][1]
    assert current["submitted"] == 32 and current["done"] == 30 and current["failed"] == 1
    assert current["failure_rate"] == pytest.approx(1 / 31)
    assert current["processing_seconds"]["median"] == pytest.approx(9.0)
    days = {d["date"]: d for d in current["daily"]}
    today = days[(NOW - timedelta(hours=1)).date().isoformat()]
    assert (today["submitted"], today["done"], today["failed"], today["pending"]) == (12, 10, 1, 1)
    volume = current["outputs"]["total_lung_volume_ml"]
    assert volume["n"] == 30 and volume["drift"]["status"] == "drift" and volume["drift"]["reference_dataset"] == "ref-set"
    assert current["outputs"]["laa950_percent"]["drift"]["status"] == "ok"
    assert current["drift_warnings"] and "Total lung volume" in current["drift_warnings"][0]
    assert current["review"]["available"] is True and current["review"]["n"] == 0
    old = report["analyses"][0]
    assert old["outputs"] == {} and old["done"] == 1  # no validation of 0.9.0: nothing to compare


def test_monitoring_api(store: ValidationStore) -> None:
    app = FastAPI()
    app.state.archive = SimpleNamespace(engine=store.engine)
    app.include_router(router)
    as_principal(app, "researcher")
    with Session(store.engine) as session, session.begin():
        add_job(session, 1, state="done", day=0, result=lung_result(5000.0, 2.0), now=datetime.now(UTC))
    with TestClient(app) as client:
        response = client.get("/api/monitoring", params={"days": 7, "analysis": "lung_ct_quant"})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["window_days"] == 7 and body["analyses"][0]["done"] == 1
        assert body["analyses"][0]["outputs"]["total_lung_volume_ml"]["drift"]["status"] == "no_reference"
        assert client.get("/api/monitoring", params={"days": 0}).status_code == 422
    bare = FastAPI()
    bare.include_router(router)
    as_principal(bare)
    with TestClient(bare) as client:
        assert client.get("/api/monitoring").status_code == 503
