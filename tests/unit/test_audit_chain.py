"""The hash-chained audit trail: verify finds edited, inserted and deleted rows; export writes JSON lines and DICOM audit XML."""

from __future__ import annotations

import json
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import Engine, text
from typer.testing import CliRunner

from radpilot.cli import app
from radpilot.db import make_engine, migrate
from radpilot.db.schema import alembic_config
from radpilot.security.atna import audit_xml, event_code, syslog_message
from radpilot.security.audit import events_since, record, verify_chain


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    url = f"sqlite:///{tmp_path / 'index.sqlite3'}" if request.param == "sqlite" else request.getfixturevalue("fresh_postgres_url")
    engine = make_engine(url)
    migrate(engine)
    yield engine
    engine.dispose()


def _fill(engine: Engine, n: int = 5) -> None:
    for i in range(n):
        record(
            engine,
            who=f"user{i}",
            action="dimse.store",
            target=f"1.2.3.{i}",
            details={"instances": i, "peer": "CT01"},
            source=f"CT01@127.0.0.1:{4000 + i}",
        )


def test_an_untouched_chain_verifies(engine: Engine) -> None:
    _fill(engine)
    report = verify_chain(engine)
    assert report.ok and report.checked == 5


def test_an_edited_row_is_named(engine: Engine) -> None:
    _fill(engine)
    with engine.begin() as connection:
        connection.execute(text("UPDATE audit_event SET who = 'mallory' WHERE seq = 3"))
    report = verify_chain(engine)
    assert not report.ok
    assert any("seq 3" in p and "edited" in p for p in report.problems), report.problems


def test_a_deleted_row_is_found_in_the_middle_and_at_the_end(engine: Engine) -> None:
    _fill(engine)
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM audit_event WHERE seq = 2"))
    problems = verify_chain(engine).problems
    assert any("seq 3" in p and "deleted" in p for p in problems), problems
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM audit_event WHERE seq = 5"))
    problems = verify_chain(engine).problems
    assert any("chain head" in p for p in problems), problems


def test_an_inserted_row_is_found(engine: Engine) -> None:
    _fill(engine, 3)
    # A forged row appended with a plausible hash but without the head row knowing of it.
    with engine.begin() as connection:
        last = connection.execute(text("SELECT hash, at FROM audit_event WHERE seq = 3")).one()
        connection.execute(
            text(
                "INSERT INTO audit_event (at, who, action, target, reason, details, seq, outcome, source, prev_hash, hash) "
                "VALUES (:at, 'mallory', 'dimse.store', '9.9', '', '{}', 4, 'success', '', :prev, :hash)"
            ),
            {"at": last.at, "prev": last.hash, "hash": "f" * 64},
        )
    problems = verify_chain(engine).problems
    assert any("seq 4" in p and "edited" in p for p in problems) and any("chain head" in p for p in problems), problems


def test_concurrent_writers_extend_one_chain(engine: Engine) -> None:
    def write(worker: int) -> None:
        for i in range(10):
            record(engine, who=f"w{worker}", action="web.page", target=f"/ui/studies/{i}", source="127.0.0.1")

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    report = verify_chain(engine)
    assert report.ok, report.problems
    assert [e.seq for e in events_since(engine)] == list(range(1, 41))


def test_rows_written_before_the_chain_are_chained_by_the_migration(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'old.sqlite3'}")
    with engine.begin() as connection:
        config = alembic_config(engine)
        config.attributes["connection"] = connection
        command.upgrade(config, "0006")
        for i in range(3):
            connection.execute(
                text(
                    "INSERT INTO audit_event (at, who, action, target, reason, details) VALUES (:at, 'ops', 'model.activate', :t, 'r', :d)"
                ),
                {"at": f"2026-11-2{i} 10:00:00.000000", "t": f"model{i}", "d": json.dumps({"version": i})},
            )
    migrate(engine)
    record(engine, who="ops", action="model.deactivate", target="model0")
    report = verify_chain(engine)
    assert report.ok and report.checked == 4, report.problems


def test_record_refuses_an_unknown_outcome(engine: Engine) -> None:
    with pytest.raises(ValueError, match="outcome"):
        record(engine, who="a", action="web.page", target="/ui", outcome="maybe")


def test_events_map_to_dicom_audit_messages() -> None:
    assert event_code("dimse.store")[0] == "110104"
    assert event_code("auth.login.failed")[:3] == ("110114", "User Authentication", "E")
    assert event_code("dicomweb.wado.series")[0] == "110103"
    assert event_code("something.else")[0] == "110100"


def test_export_writes_json_lines_and_dicom_audit_xml(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    engine = make_engine(f"sqlite:///{data_dir.mkdir() or data_dir / 'index.sqlite3'}")
    migrate(engine)
    record(engine, who="alice", action="auth.login.failed", target="alice", outcome="failure", source="10.1.2.3", reason="bad password")
    record(engine, who="CT01", action="dimse.store", target="1.2.840.1", source="CT01@127.0.0.1:4001")
    runner = CliRunner()
    result = runner.invoke(app, ["audit", "export", "--out", str(tmp_path / "out"), "--since", "2000-01-01", "--data-dir", str(data_dir)])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in (tmp_path / "out" / "audit.jsonl").read_text().splitlines()]
    assert [line["action"] for line in lines] == ["auth.login.failed", "dimse.store"] and lines[0]["outcome"] == "failure"
    messages = [ET.fromstring(line) for line in (tmp_path / "out" / "audit.xml").read_text().splitlines()]
    login, store = messages
    assert login.find("EventIdentification").get("EventOutcomeIndicator") == "4"
    assert login.find("EventIdentification/EventID").get("csd-code") == "110114"
    assert login.find("EventIdentification/EventTypeCode").get("csd-code") == "110122"
    assert login.find("ActiveParticipant").get("NetworkAccessPointID") == "10.1.2.3"
    assert store.find("ActiveParticipant").get("AlternativeUserID") == "CT01"
    assert store.find("AuditSourceIdentification").get("AuditSourceID") == "RADPILOT"
    assert store.find("ParticipantObjectIdentification").get("ParticipantObjectID") == "1.2.840.1"
    future = runner.invoke(app, ["audit", "export", "--out", str(tmp_path / "o2"), "--since", "2999-01-01", "--data-dir", str(data_dir)])
    assert json.loads(future.stdout)["events"] == 0
    bad = runner.invoke(app, ["audit", "export", "--out", str(tmp_path / "o3"), "--since", "yesterday", "--data-dir", str(data_dir)])
    assert bad.exit_code == 2
    verify = runner.invoke(app, ["audit", "verify", "--data-dir", str(data_dir)])
    assert verify.exit_code == 0 and json.loads(verify.stdout)["checked"] == 2
    with engine.begin() as connection:
        connection.execute(text("UPDATE audit_event SET outcome = 'success' WHERE seq = 1"))
    tampered = runner.invoke(app, ["audit", "verify", "--data-dir", str(data_dir)])
    assert tampered.exit_code == 1 and "edited" in tampered.output
    event = events_since(engine)[0]
    framed = syslog_message(event, "RADPILOT", hostname="h")
    assert framed.startswith(b"<85>1 ") and b"<AuditMessage>" in framed
    assert "<AuditMessage>" in audit_xml(event, "RADPILOT")
