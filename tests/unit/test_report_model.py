"""The report model: templates filled from findings, status changes with who and when, amendments keep history, audited."""

from __future__ import annotations

from pathlib import Path

import pytest

from radpilot.analyses import discover_analyses
from radpilot.db import make_engine, migrate
from radpilot.reports.findings import FindingState, ReportFinding, findings_from_job_result
from radpilot.reports.store import IllegalTransition, ReportError, ReportLocked, ReportStore
from radpilot.reports.templates import TemplateError, TemplateLibrary, parse_template, prefill
from radpilot.security.audit import events
from radpilot.security.principal import Principal, Role, RoleRefused

DOCTOR = Principal("dr.house", Role.RADIOLOGIST)
TECH = Principal("tech.anna", Role.TECHNOLOGIST)
STUDY = "1.2.826.0.1.3680043.8.498.1"


@pytest.fixture(scope="module")
def library() -> TemplateLibrary:
    return TemplateLibrary(discover_analyses())


@pytest.fixture
def store(tmp_path: Path) -> ReportStore:
    engine = make_engine(f"sqlite:///{tmp_path / 'index.sqlite3'}")
    migrate(engine)
    return ReportStore(engine)


def _finding(output: str, value: float, state: str = "pending", edited: float | None = None) -> ReportFinding:
    return ReportFinding(f"job1:{output}", output, value, "", FindingState(state), edited_value=edited)


def test_every_shipped_exam_template_loads(library: TemplateLibrary) -> None:
    assert {"chest_ct", "low_dose_lung_ct", "chest_xray", "abdominal_liver_ct", "cardiac_mr", "calcium_score_ct"} <= set(library.templates)
    assert library.get("chest_ct").fields[0].output == "laa950_percent"
    assert library.suggest(["DX"]).name == "chest_xray"
    assert library.suggest(["CT"], "CT CHEST WITH CONTRAST").name == "chest_ct"
    assert library.suggest(["CT"], "LOW DOSE CHEST SCREENING").name == "low_dose_lung_ct"
    assert library.suggest(["CT"], "ABDOMEN PORTAL VENOUS").name == "abdominal_liver_ct"
    assert library.suggest(["US"]) is None


def test_prefill_quotes_findings_marks_pending_ones_and_never_shows_rejected(library: TemplateLibrary) -> None:
    findings = [
        _finding("laa950_percent", 12.34),  # pending: shown, marked
        _finding("total_lung_volume_ml", 5000.0, "edited", edited=5123.0),  # edited value wins
        _finding("perc15_hu", -901.0, "rejected"),  # never shown
        _finding("agatston_total", 87.0, "accepted"),
    ]
    filled = prefill(library.get("chest_ct"), findings)
    text = filled.sections["findings"]
    assert "Emphysema: LAA-950 12.3 % of lung volume." in text
    assert "Total lung volume 5123 mL." in text and "5000" not in text
    assert "Perc15" not in text and "-901" not in text
    states = {p.output: p.state for p in filled.phrases}
    assert states == {"laa950_percent": "pending", "total_lung_volume_ml": "accepted", "agatston_total": "accepted"}
    assert "perc15_hu" not in {f.output for f in filled.quoted}


def test_chest_xray_template_fills_the_cardiothoracic_ratio(library: TemplateLibrary) -> None:
    filled = prefill(library.get("chest_xray"), [_finding("ctr", 0.5812)])
    assert "Cardiothoracic ratio 0.58." in filled.sections["findings"]


def test_findings_are_read_from_a_jobs_stored_measurements() -> None:
    analyses = discover_analyses()
    result = {"details": {"measurements": [{"name": "Cardiothoracic ratio", "value": 0.61, "unit": "1", "site": ""}]}}
    [finding] = findings_from_job_result(7, analyses["chest_xray"], result)
    assert (finding.finding_id, finding.output, finding.value, finding.state) == ("job7:ctr", "ctr", 0.61, FindingState.PENDING)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("name: x\n", "must match the file name"),
        ("- a\n", "must hold a mapping"),
        ("name: bad\ntitle: T\nprocedure: {code: a, scheme: LN, meaning: m}\nsections: {summary: x}\n", "unknown sections"),
        (
            "name: bad\ntitle: T\nprocedure: {code: a, scheme: LN, meaning: m}\nfields: [{output: ctr, section: findings, text: 'CTR {value.__class__}'}]\n",
            "may use only {value}",
        ),
        (
            "name: bad\ntitle: T\nprocedure: {code: a, scheme: LN, meaning: m}\nfields: [{output: ctr, section: findings, text: 'no value'}]\n",
            "must contain {value}",
        ),
        (
            "name: bad\ntitle: T\nprocedure: {code: a, scheme: LN, meaning: m}\nfields: [{output: laa950_percent, text: 'x {value}', unit: mL}]\n",
            "differs from output",
        ),
        ("name: bad\ntitle: T\nprocedure: {code: a}\n", "'procedure' must have"),
        ("name: [unclosed\n", "cannot be read as YAML"),
    ],
)
def test_a_broken_template_file_is_refused_naming_the_problem(tmp_path: Path, content: str, problem: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    outputs = {s.name: s for a in discover_analyses().values() for s in a.outputs}
    with pytest.raises(TemplateError, match=problem.replace("{", r"\{").replace("}", r"\}").replace("(", r"\(")):
        parse_template(path, outputs)


def test_a_department_folder_overrides_a_shipped_template(tmp_path: Path) -> None:
    (tmp_path / "chest_xray.yaml").write_text(
        "name: chest_xray\ntitle: Our chest film\nmodalities: [DX]\nprocedure: {code: '36643-5', scheme: LN, meaning: XR Chest 2 Views}\n"
        "sections: {technique: 'PA film.'}\nfields: [{output: ctr, section: impression, text: 'CTR {value:.3f}'}]\n"
    )
    library = TemplateLibrary(discover_analyses(), tmp_path)
    filled = prefill(library.get("chest_xray"), [_finding("ctr", 0.5)])
    assert library.get("chest_xray").title == "Our chest film"
    assert filled.sections["impression"] == "CTR 0.500"


def test_report_moves_through_its_statuses_with_who_and_when_and_is_audited(store: ReportStore, library: TemplateLibrary) -> None:
    report = store.create(STUDY, library.get("chest_xray"), [_finding("ctr", 0.58)], DOCTOR)
    assert report.status == "draft" and report.pending_phrases
    report = store.transition(report.id, "preliminary", DOCTOR)
    with pytest.raises(ReportError, match="impression is empty"):
        store.sign(report.id, DOCTOR, confirm=True)
    store.edit_section(report.id, "impression", "Cardiomegaly.", DOCTOR)
    with pytest.raises(ReportError, match="not yet accepted"):
        store.sign(report.id, DOCTOR, confirm=True)
    store.accept_phrases(report.id, None, DOCTOR)
    with pytest.raises(ReportError, match="confirmation"):
        store.sign(report.id, DOCTOR, confirm=False)
    signed = store.sign(report.id, DOCTOR, confirm=True)
    assert (signed.status, signed.signed_by) == ("final", "dr.house") and signed.signed_at is not None
    assert [(e["from"], e["to"], e["who"]) for e in store.events(report.id)] == [
        ("", "draft", "dr.house"),
        ("draft", "preliminary", "dr.house"),
        ("preliminary", "final", "dr.house"),
    ]
    actions = [e.action for e in events(store.engine, target=f"report:{report.id}", limit=50)]
    assert {"report.create", "report.edit", "report.accept_ai", "report.status", "report.sign"} <= set(actions)


def test_a_signed_report_is_read_only_and_amending_keeps_the_signed_version(store: ReportStore, library: TemplateLibrary) -> None:
    report = store.create(STUDY, library.get("chest_xray"), [], DOCTOR)
    store.edit_section(report.id, "impression", "Normal chest.", DOCTOR)
    store.sign(report.id, DOCTOR, confirm=True)
    with pytest.raises(ReportLocked, match="read-only"):
        store.edit_section(report.id, "impression", "changed", DOCTOR)
    with pytest.raises(ReportLocked):
        store.transition(report.id, "draft", DOCTOR)
    with pytest.raises(IllegalTransition, match="only by signing"):
        store.transition(report.id, "final", DOCTOR)
    with pytest.raises(ReportError, match="reason"):
        store.amend(report.id, DOCTOR, reason=" ")
    amended = store.amend(report.id, DOCTOR, reason="laterality corrected")
    assert (amended.status, amended.version) == ("draft", 2)
    store.edit_section(report.id, "impression", "Small left effusion.", DOCTOR)
    final = store.sign(report.id, DOCTOR, confirm=True)
    assert (final.status, final.version) == ("amended", 2)
    [kept] = store.versions(report.id)
    assert (kept["version"], kept["status"], kept["sections"]["impression"]) == (1, "final", "Normal chest.")
    assert store.get(report.id).sections["impression"] == "Small left effusion."


def test_only_a_radiologist_writes_or_signs_a_report(store: ReportStore, library: TemplateLibrary) -> None:
    with pytest.raises(RoleRefused, match="radiologist"):
        store.create(STUDY, library.get("chest_xray"), [], TECH)
    report = store.create(STUDY, library.get("chest_xray"), [], DOCTOR)
    store.edit_section(report.id, "impression", "Normal.", DOCTOR)
    with pytest.raises(RoleRefused):
        store.sign(report.id, TECH, confirm=True)
    assert store.get(report.id).status == "draft"


def test_removing_an_ai_phrase_drops_it_and_bad_edits_are_refused(store: ReportStore, library: TemplateLibrary) -> None:
    report = store.create(STUDY, library.get("chest_xray"), [_finding("ctr", 0.58)], DOCTOR)
    with pytest.raises(ReportError, match="unknown section"):
        store.edit_section(report.id, "summary", "x", DOCTOR)
    with pytest.raises(ReportError, match="at most"):
        store.edit_section(report.id, "findings", "x" * 20_001, DOCTOR)
    with pytest.raises(ReportError, match="no AI phrase"):
        store.accept_phrases(report.id, ["nope"], DOCTOR)
    edited = store.edit_section(report.id, "findings", "Heart size normal.", DOCTOR)
    assert edited.ai_phrases == []
    with pytest.raises(ReportError, match="already has report"):
        store.create(STUDY, library.get("chest_xray"), [], DOCTOR)
