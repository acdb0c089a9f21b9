"""Claiming studies: exactly one of two radiologists racing wins (SQLite and PostgreSQL), release, read, audit."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from radpilot.archive import Archive
from radpilot.security.audit import events
from radpilot.security.principal import Principal, Role, RoleRefused
from radpilot.worklist.reading import ClaimConflict, StudyNotFound, claim, mark_read, reading_state, release
from tests.unit.worklist_support import store_study

ALICE = Principal("alice", Role.RADIOLOGIST)
BOB = Principal("bob", Role.RADIOLOGIST)
ADMIN = Principal("root", Role.ADMINISTRATOR)


@pytest.fixture(params=["sqlite", "postgresql"])
def archive(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Archive]:
    url = f"sqlite:///{tmp_path / 'index.db'}" if request.param == "sqlite" else request.getfixturevalue("fresh_postgres_url")
    store = Archive(tmp_path / "dicom", url, durability="none")
    yield store
    store.close()


def _claim_after(barrier: threading.Barrier, archive: Archive, uid: str, who: Principal, outcomes: dict) -> None:
    barrier.wait()
    try:
        outcomes[who.name] = claim(archive.engine, uid, who)
    except ClaimConflict as exc:
        outcomes[who.name] = exc


def test_two_radiologists_claiming_at_once_exactly_one_wins(archive: Archive) -> None:
    for round_number in range(5):
        uid, _ = store_study(archive, patient_id=f"RACE{round_number}")
        contenders = [Principal(f"rad{i}", Role.RADIOLOGIST) for i in range(4)]
        barrier = threading.Barrier(len(contenders))
        outcomes: dict[str, object] = {}

        threads = [threading.Thread(target=_claim_after, args=(barrier, archive, uid, p, outcomes)) for p in contenders]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        winners = [name for name, result in outcomes.items() if not isinstance(result, ClaimConflict)]
        assert len(outcomes) == len(contenders) and len(winners) == 1, outcomes
        holder = reading_state(archive.engine, uid)
        assert holder.claimed_by == winners[0] and holder.status == "in_progress"
        assert all(result.holder == winners[0] for result in outcomes.values() if isinstance(result, ClaimConflict))
        assert [e.who for e in events(archive.engine, target=uid, action_prefix="study.claim")] == winners


def test_claim_release_and_read(archive: Archive) -> None:
    uid, _ = store_study(archive, patient_id="P1")
    assert reading_state(archive.engine, uid).status == "unread"
    assert claim(archive.engine, uid, ALICE).claimed_by == "alice"
    assert claim(archive.engine, uid, ALICE).claimed_by == "alice"  # claiming one's own claim again is fine
    with pytest.raises(ClaimConflict, match="being read by alice"):
        claim(archive.engine, uid, BOB)
    with pytest.raises(ClaimConflict):
        release(archive.engine, uid, BOB)
    with pytest.raises(ClaimConflict):
        mark_read(archive.engine, uid, BOB)
    assert release(archive.engine, uid, ALICE).status == "unread"
    claim(archive.engine, uid, BOB)
    assert release(archive.engine, uid, ADMIN, reason="bob went home").claimed_by is None
    claim(archive.engine, uid, ALICE)
    done = mark_read(archive.engine, uid, ALICE)
    assert (done.status, done.read_by, done.claimed_by) == ("read", "alice", None)
    actions = [e.action for e in events(archive.engine, target=uid)]
    assert actions.count("study.claim") == 3 and actions.count("study.release") == 2 and actions.count("study.read") == 1
    assert any(e.reason == "bob went home" and e.who == "root" for e in events(archive.engine, target=uid))


def test_only_radiologists_claim_and_only_known_studies(archive: Archive) -> None:
    uid, _ = store_study(archive, patient_id="P1")
    with pytest.raises(RoleRefused, match="radiologist"):
        claim(archive.engine, uid, Principal("tech", Role.TECHNOLOGIST))
    with pytest.raises(RoleRefused):
        claim(archive.engine, uid, ADMIN)
    with pytest.raises(StudyNotFound, match="not in the archive"):
        claim(archive.engine, "1.2.3.999", ALICE)
