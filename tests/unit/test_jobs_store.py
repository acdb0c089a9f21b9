"""Job rows on SQLite and PostgreSQL: idempotent submit, priority claim, retries, cancel, leases, one result set."""

# ruff: noqa: F811 - fixtures imported from tests.unit.jobs_support are parameters here

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text

from radpilot.db import Base
from radpilot.engine.job_store import ClaimStatus, JobStore
from radpilot.engine.jobs import ErrorKind, JobOutput, JobState, Priority, SupersedeConflictError
from tests.unit.jobs_support import (  # noqa: F401 - fixtures
    LEASE_S,
    FakeClock,
    clock,
    database_url,
    instances,
    jobs_postgres_url,
    jobs_sqlite_template,
    make_spec,
    store,
)


def claim(store: JobStore, worker: str = "host:1:w1"):  # noqa: ANN201 - JobRecord
    job = store.claim_next(worker, LEASE_S)
    assert job is not None, "expected a due queued job"
    return job


def test_migration_matches_the_models(store: JobStore) -> None:
    tables = {"job", "result_set"}

    def mine(obj: object, name: str | None, type_: str, reflected: bool, compare_to: object) -> bool:
        table = obj if type_ == "table" else getattr(obj, "table", None)
        return table is None or table.name in tables

    with store.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"include_object": mine})
        assert compare_metadata(context, Base.metadata) == []


def test_submit_is_idempotent(store: JobStore) -> None:
    first = store.submit(make_spec(1))
    again = store.submit(make_spec(1, instances=list(reversed(instances(1)))))
    assert first.created and not again.created
    assert again.job.id == first.job.id
    assert first.job.state is JobState.QUEUED and first.job.attempts == 0
    assert first.job.input_sop_uids == tuple(sorted(uid for uid, _ in instances(1)))
    done = claim(store)
    assert store.complete(done.id, "host:1:w1", JobOutput(["2.25.1"]))
    changed = store.submit(make_spec(1, instances=instances(1, changed=2), supersedes_job_id=first.job.id))
    new_version = store.submit(make_spec(1, analysis_version="1.1.0", supersedes_job_id=changed.job.id))
    assert changed.created and new_version.created
    assert len({first.job.id, changed.job.id, new_version.job.id}) == 3
    assert store.submit(make_spec(1)).job.state is JobState.DONE  # a done job is returned, not re-run
    assert len(store.list()) == 3


def test_failed_or_cancelled_job_is_requeued_only_with_retry(store: JobStore) -> None:
    job = store.submit(make_spec(1)).job
    claim(store)
    store.fail(job.id, "host:1:w1", "no lung found", ErrorKind.PERMANENT)
    plain = store.submit(make_spec(1))
    assert not plain.created and not plain.requeued and plain.job.state is JobState.FAILED
    retried = store.submit(make_spec(1), retry=True)
    assert retried.requeued and not retried.created and retried.job.id == job.id
    assert retried.job.state is JobState.QUEUED
    assert (retried.job.attempts, retried.job.error, retried.job.error_kind) == (0, None, None)

    other = store.submit(make_spec(2)).job
    assert store.cancel(other.id)
    assert store.submit(make_spec(2), retry=True).job.state is JobState.QUEUED
    assert not store.submit(make_spec(2), retry=True).requeued  # already queued: left alone


def test_claim_takes_stat_first_then_oldest(store: JobStore, clock: FakeClock) -> None:
    order = [
        (1, Priority.ROUTINE),
        (2, Priority.BACKGROUND),
        (3, Priority.ROUTINE),
        (4, Priority.URGENT),
        (5, Priority.STAT),
        (6, Priority.ROUTINE),
        (7, Priority.STAT),
    ]
    ids = {}
    for series, priority in order:
        ids[series] = store.submit(make_spec(series, priority=priority)).job.id
        clock.advance(1)
    claimed = [claim(store).id for _ in order]
    assert claimed == [ids[s] for s in (5, 7, 4, 1, 3, 6, 2)]
    assert store.claim_next("host:1:w1", LEASE_S) is None


def test_transient_failures_back_off_then_fail_with_a_message(store: JobStore, clock: FakeClock) -> None:
    job = store.submit(make_spec(1, max_attempts=3)).job
    for attempt, delay in ((1, 2.0), (2, 4.0)):
        running = claim(store)
        assert running.attempts == attempt
        queued = store.fail(job.id, "host:1:w1", "the GPU is busy", ErrorKind.TRANSIENT)
        assert queued.state is JobState.QUEUED and queued.error_kind is ErrorKind.TRANSIENT
        assert queued.next_attempt_at == clock() + timedelta(seconds=delay)
        assert f"tried again in {delay:g} s" in queued.error and "The GPU is busy." in queued.error
        clock.advance(delay - 0.5)
        assert store.claim_next("host:1:w1", LEASE_S) is None, "claimed before its backoff delay"
        clock.advance(0.5)
    claim(store)
    failed = store.fail(job.id, "host:1:w1", "the GPU is busy", ErrorKind.TRANSIENT)
    assert failed.state is JobState.FAILED and failed.attempts == 3 and failed.finished_at == clock()
    assert failed.error == ("lung_ct_quant failed 3 times with a temporary problem and was given up. Last error: the GPU is busy.")


def test_permanent_failure_fails_at_once(store: JobStore) -> None:
    job = store.submit(make_spec(1, max_attempts=5)).job
    claim(store)
    failed = store.fail(job.id, "host:1:w1", "the series has no pixel data", ErrorKind.PERMANENT)
    assert failed.state is JobState.FAILED and failed.attempts == 1
    assert failed.error_kind is ErrorKind.PERMANENT
    assert failed.error == "lung_ct_quant cannot process this series: the series has no pixel data."
    assert store.fail(job.id, "host:1:w1", "again", ErrorKind.PERMANENT) is None  # no longer running


def test_cancel(store: JobStore) -> None:
    queued = store.submit(make_spec(1)).job
    assert store.cancel(queued.id)
    assert store.get(queued.id).state is JobState.CANCELLED
    assert store.get(queued.id).error == "Cancelled by an administrator"
    assert not store.cancel(queued.id)
    assert not store.cancel(999_999)
    assert store.claim_next("host:1:w1", LEASE_S) is None

    running = store.submit(make_spec(2)).job
    claim(store)
    assert store.cancel(running.id, reason="study withdrawn by the radiographer")
    assert not store.heartbeat(running.id, "host:1:w1", LEASE_S)
    assert not store.complete(running.id, "host:1:w1", JobOutput(["2.25.9"]))
    assert store.result_sets() == []
    assert store.get(running.id).state is JobState.CANCELLED


def test_completing_twice_records_one_result_set(store: JobStore) -> None:
    job = store.submit(make_spec(1)).job
    claim(store, "host:1:w1")
    assert store.complete(job.id, "host:1:w1", JobOutput(["2.25.1.1"], {"nodules": 2}))
    assert not store.complete(job.id, "host:2:w2", JobOutput(["2.25.1.2"]))
    sets = store.result_sets()
    recorded = [(s["job_id"], s["worker_id"], s["sop_instance_uids"]) for s in sets]
    assert recorded == [(job.id, "host:1:w1", ["2.25.1.1"])]
    done = store.get(job.id)
    assert done.state is JobState.DONE and done.result == {"sop_instance_uids": ["2.25.1.1"], "details": {"nodules": 2}}


def test_on_record_writes_in_the_result_set_transaction(store: JobStore) -> None:
    job = store.submit(make_spec(1)).job
    claim(store, "host:1:w1")

    def failing(session, record, output) -> None:  # noqa: ANN001
        session.execute(text("UPDATE job SET rule = 'forwarded' WHERE id = :id"), {"id": record.id})
        raise RuntimeError("outbox unavailable")

    with pytest.raises(RuntimeError, match="outbox unavailable"):
        store.complete(job.id, "host:1:w1", JobOutput(["2.25.1"]), on_record=failing)
    unchanged = store.get(job.id)
    assert (unchanged.state, unchanged.rule, store.result_sets()) == (JobState.RUNNING, "chest ct", [])

    def forwarding(session, record, output) -> None:  # noqa: ANN001
        session.execute(text("UPDATE job SET rule = 'forwarded' WHERE id = :id"), {"id": record.id})

    assert store.complete(job.id, "host:1:w1", JobOutput(["2.25.1"]), on_record=forwarding)
    assert store.get(job.id).rule == "forwarded" and len(store.result_sets()) == 1
    assert not store.complete(job.id, "host:2:w2", JobOutput(["2.25.2"]), on_record=failing)  # refused before the hook


@pytest.mark.parametrize("first", ["slow", "new"])
def test_slow_worker_and_its_replacement_record_one_result_set(store: JobStore, clock: FakeClock, first: str) -> None:
    job = store.submit(make_spec(1)).job
    claim(store, "host:1:slow")
    clock.advance(LEASE_S + 1)
    assert [j.id for j in store.reap_expired().requeued] == [job.id]
    assert claim(store, "host:2:new").attempts == 2
    second = "new" if first == "slow" else "slow"
    assert store.complete(job.id, f"host:{1 if first == 'slow' else 2}:{first}", JobOutput([f"2.25.{first}"]))
    assert not store.complete(job.id, f"host:{1 if second == 'slow' else 2}:{second}", JobOutput([f"2.25.{second}"]))
    assert [s["sop_instance_uids"] for s in store.result_sets()] == [[f"2.25.{first}"]]
    assert store.get(job.id).state is JobState.DONE


def test_expired_lease_requeues_the_job_and_counts_the_attempt(store: JobStore, clock: FakeClock) -> None:
    job = store.submit(make_spec(1)).job
    claim(store, "host:1:w1")
    clock.advance(LEASE_S - 2)
    assert store.heartbeat(job.id, "host:1:w1", LEASE_S)
    assert not store.heartbeat(job.id, "host:2:w2", LEASE_S)
    clock.advance(LEASE_S - 2)
    assert store.reap_expired().requeued == []  # renewed: still alive
    clock.advance(3)
    requeued = store.reap_expired().requeued
    assert [j.id for j in requeued] == [job.id]
    assert requeued[0].state is JobState.QUEUED and requeued[0].attempts == 1
    assert "(host:1:w1) stopped responding" in requeued[0].error
    assert store.reap_expired().requeued == []
    assert claim(store, "host:2:w2").attempts == 2


def test_expired_lease_on_the_last_attempt_fails_the_job(store: JobStore, clock: FakeClock) -> None:
    job = store.submit(make_spec(1, max_attempts=1)).job
    claim(store)
    clock.advance(LEASE_S + 1)
    failed = store.reap_expired().failed
    assert [j.id for j in failed] == [job.id]
    assert failed[0].state is JobState.FAILED and "given up" in failed[0].error


def test_expired_lease_past_the_time_limit_is_a_timeout(store: JobStore, clock: FakeClock) -> None:
    job = store.submit(make_spec(1, timeout_s=20)).job
    claim(store)
    for _ in range(2):
        clock.advance(LEASE_S - 1)
        store.heartbeat(job.id, "host:1:w1", LEASE_S)
    clock.advance(LEASE_S + 1)
    failed = store.reap_expired().failed
    assert failed[0].error_kind is ErrorKind.TIMEOUT
    assert failed[0].error == "lung_ct_quant exceeded its 20 s time limit and was stopped."


def test_dead_worker_jobs_are_requeued_at_once(store: JobStore) -> None:
    job = store.submit(make_spec(1)).job
    claim(store, "host:1:w1")
    assert store.reap_dead_worker("host:9:other").requeued == []
    assert [j.id for j in store.reap_dead_worker("host:1:w1").requeued] == [job.id]


def test_release_requeues_without_counting_the_attempt(store: JobStore) -> None:
    job = store.submit(make_spec(1)).job
    claim(store, "host:1:w1")
    assert store.release("host:1:w1") == 1
    released = store.get(job.id)
    assert released.state is JobState.QUEUED and released.attempts == 0


def test_claim_by_id(store: JobStore, clock: FakeClock) -> None:
    job = store.submit(make_spec(1)).job
    assert store.claim(999_999, "host:1:w1", LEASE_S).status is ClaimStatus.MISSING
    claimed = store.claim(job.id, "host:1:w1", LEASE_S)
    assert claimed.status is ClaimStatus.CLAIMED and claimed.job.worker_id == "host:1:w1"
    assert store.claim(job.id, "host:2:w2", LEASE_S).status is ClaimStatus.BUSY
    store.fail(job.id, "host:1:w1", "the GPU is busy", ErrorKind.TRANSIENT)
    not_due = store.claim(job.id, "host:2:w2", LEASE_S)
    assert not_due.status is ClaimStatus.NOT_DUE and not_due.due_in_s == pytest.approx(2.0)
    clock.advance(2)
    assert store.claim(job.id, "host:2:w2", LEASE_S).status is ClaimStatus.CLAIMED
    store.complete(job.id, "host:2:w2", JobOutput())
    assert store.claim(job.id, "host:3:w3", LEASE_S).status is ClaimStatus.FINISHED


def test_concurrent_claims_take_each_job_once(store: JobStore) -> None:
    ids = {store.submit(make_spec(series)).job.id for series in range(12)}
    claimed: list[int] = []
    lock = threading.Lock()

    def worker(name: str) -> None:
        while (job := store.claim_next(name, LEASE_S)) is not None:
            with lock:
                claimed.append(job.id)

    threads = [threading.Thread(target=worker, args=(f"host:{n}:w{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(claimed) == sorted(ids)


def test_supersede_cancels_the_queued_older_job(store: JobStore) -> None:
    old = store.submit(make_spec(1)).job
    grown = store.submit(make_spec(1, instances=instances(1, count=5), supersedes_job_id=old.id)).job
    assert grown.supersedes_job_id == old.id
    cancelled = store.get(old.id)
    assert cancelled.state is JobState.CANCELLED and f"Superseded by job {grown.id}" in cancelled.error
    with pytest.raises(ValueError, match="does not exist"):
        store.submit(make_spec(2, supersedes_job_id=424242))


def test_list_and_stats(store: JobStore, clock: FakeClock) -> None:
    for series, priority in ((1, Priority.STAT), (2, Priority.ROUTINE), (3, Priority.ROUTINE)):
        store.submit(make_spec(series, priority=priority))
    clock.advance(30)
    job = claim(store)
    store.complete(job.id, "host:1:w1", JobOutput())
    stats = store.stats(backend="embedded")
    assert stats.counts[JobState.QUEUED] == 2 and stats.counts[JobState.DONE] == 1 and stats.total == 3
    assert stats.queued_by_priority == {Priority.ROUTINE: 2}
    assert stats.oldest_queued_age_s == pytest.approx(30)
    assert [j.id for j in store.list(state="done")] == [job.id]
    assert len(store.list(limit=2)) == 2


def test_latest_done_job_is_the_last_finished_of_that_analysis_on_that_series(store: JobStore, clock: FakeClock) -> None:
    series_uid = make_spec(1).series_instance_uid
    assert store.latest_done_job("lung_ct_quant", series_uid) is None
    first = store.submit(make_spec(1)).job
    other_analysis = store.submit(make_spec(1, analysis="liver_ct")).job
    for job_id in (first.id, other_analysis.id):
        assert claim(store).id == job_id
        clock.advance(1)
        assert store.complete(job_id, "host:1:w1", JobOutput([f"2.25.{job_id}"]))
    grown = store.submit(make_spec(1, instances=instances(1, count=4), supersedes_job_id=first.id)).job
    assert claim(store).id == grown.id
    clock.advance(1)
    assert store.complete(grown.id, "host:1:w1", JobOutput([f"2.25.{grown.id}"]))
    still_queued = store.submit(make_spec(1, instances=instances(1, count=5), supersedes_job_id=grown.id)).job

    latest = store.latest_done_job("lung_ct_quant", series_uid)
    assert latest is not None and latest.id == grown.id and latest.id != still_queued.id
    assert store.latest_done_job("liver_ct", series_uid).id == other_analysis.id
    assert store.latest_done_job("lung_ct_quant", make_spec(2).series_instance_uid) is None


def test_supersede_cancels_a_running_older_job_and_refuses_its_result(store: JobStore) -> None:
    old = store.submit(make_spec(1)).job
    running = claim(store)
    assert running.id == old.id
    assert store.job_to_supersede("lung_ct_quant", old.series_instance_uid).id == old.id
    grown = store.submit(make_spec(1, instances=instances(1, count=5), supersedes_job_id=old.id)).job
    cancelled = store.get(old.id)
    assert cancelled.state is JobState.CANCELLED and f"Superseded by job {grown.id}" in cancelled.error
    assert not store.complete(old.id, "host:1:w1", JobOutput(["2.25.1.9"])), "a superseded job's late output must not be recorded"
    assert store.result_sets(old.id) == []


def test_job_to_supersede_is_the_newest_open_or_done_job_of_that_analysis_on_that_series(store: JobStore) -> None:
    series_uid = make_spec(1).series_instance_uid
    assert store.job_to_supersede("lung_ct_quant", series_uid) is None
    first = store.submit(make_spec(1)).job
    assert store.job_to_supersede("lung_ct_quant", series_uid).id == first.id
    store.submit(make_spec(1, analysis="liver_ct"))
    assert store.job_to_supersede("lung_ct_quant", series_uid).id == first.id
    store.cancel(first.id)
    assert store.job_to_supersede("lung_ct_quant", series_uid) is None, "a cancelled job has nothing to supersede"


def test_a_supersede_of_a_job_that_is_no_longer_the_newest_is_refused_and_writes_nothing(store: JobStore) -> None:
    first = store.submit(make_spec(1)).job
    newer = store.submit(make_spec(1, instances=instances(1, count=5), supersedes_job_id=first.id)).job
    with pytest.raises(SupersedeConflictError, match=f"to supersede job {first.id}, but the newest job there is {newer.id}"):
        store.submit(make_spec(1, instances=instances(1, count=4), supersedes_job_id=first.id))
    assert [job.id for job in store.list()] == [newer.id, first.id]
    assert store.get(newer.id).state is JobState.QUEUED, "the refused submit must not cancel the newest job"


def test_a_second_job_on_a_series_that_supersedes_nothing_is_refused(store: JobStore) -> None:
    first = store.submit(make_spec(1)).job
    with pytest.raises(SupersedeConflictError, match=f"supersede job None, but the newest job there is {first.id}"):
        store.submit(make_spec(1, instances=instances(1, count=5)))
    assert store.submit(make_spec(1, analysis="liver_ct")).created, "another analysis on the series is its own chain"
    assert store.submit(make_spec(1)).job.id == first.id, "resubmitting the same input is still idempotent"


def test_concurrent_submits_on_one_series_form_one_chain_with_one_current_job(store: JobStore) -> None:
    series_uid = make_spec(1).series_instance_uid
    refused: list[int] = []
    lock = threading.Lock()

    def router(count: int) -> None:
        while True:
            previous = store.job_to_supersede("lung_ct_quant", series_uid)
            try:
                store.submit(make_spec(1, instances=instances(1, count=count), supersedes_job_id=previous.id if previous else None))
                return
            except SupersedeConflictError:
                with lock:
                    refused.append(count)

    threads = [threading.Thread(target=router, args=(count,)) for count in range(3, 11)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    jobs = sorted(store.list(), key=lambda job: job.id)
    assert len(jobs) == 8
    assert [job.supersedes_job_id for job in jobs] == [None] + [job.id for job in jobs[:-1]], "each job supersedes the one before it"
    assert [job.state for job in jobs] == [JobState.CANCELLED] * 7 + [JobState.QUEUED]
