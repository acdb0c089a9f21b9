"""Job queue types without a database: idempotency keys, priorities, specs, backoff, error classes, Celery settings."""

from __future__ import annotations

import re

import pytest

from radpilot.engine.jobs import (
    ErrorKind,
    JobOutput,
    PermanentJobError,
    Priority,
    RetryPolicy,
    TransientJobError,
    idempotency_key,
)
from radpilot.engine.worker import WorkerConfig, classify, describe, load_object, worker_identity, worker_pid
from tests.unit.jobs_support import instances, make_spec


def test_idempotency_key_ignores_order_but_not_content_or_version() -> None:
    pairs = instances(1)
    key = idempotency_key("lung_ct_quant", "1.0.0", pairs)
    assert re.fullmatch("[0-9a-f]{64}", key), key
    assert idempotency_key("lung_ct_quant", "1.0.0", list(reversed(pairs))) == key
    assert idempotency_key("lung_ct_quant", "1.0.0", pairs + pairs[:1]) == key  # a repeat is the same input
    assert idempotency_key("lung_ct_quant", "1.0.1", pairs) != key
    assert idempotency_key("liver_ct_volume", "1.0.0", pairs) != key
    assert idempotency_key("lung_ct_quant", "1.0.0", instances(1, changed=0)) != key
    assert idempotency_key("lung_ct_quant", "1.0.0", pairs[:2]) != key


def test_idempotency_key_is_the_one_stored_by_earlier_versions() -> None:
    # Job rows keep their key: a different key for the same input would run a stored study's analysis again.
    key = idempotency_key("lung_ct_quant", "1.0.0", [("1.2.4", "cd"), ("1.2.3", "ab")])
    assert key == "9541a0da3ab5f0dcfa01f96eb8c8e79667a552b504134fa8f11733c898e07de6"


@pytest.mark.parametrize(
    ("analysis", "version", "pairs", "message"),
    [
        ("lung", "1", [], "at least one input instance"),
        ("", "1", [("1.2.3", "ab")], "name and version"),
        ("lung", "1", [("1.2.3", "")], "lacks"),
        ("lung", "1", [("1.2.3", "aa"), ("1.2.3", "bb")], "given twice with different content"),
    ],
)
def test_idempotency_key_refuses_bad_input(analysis: str, version: str, pairs: list, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        idempotency_key(analysis, version, pairs)


def test_priority_parsing_and_order() -> None:
    assert Priority.parse("stat") is Priority.STAT and Priority.parse("0") is Priority.STAT
    assert Priority.parse(5) is Priority.ROUTINE
    assert sorted([Priority.ROUTINE, Priority.BACKGROUND, Priority.STAT]) == [Priority.STAT, Priority.ROUTINE, Priority.BACKGROUND]
    assert all(0 <= p <= 9 for p in Priority)  # Redis message priorities
    with pytest.raises(ValueError, match="unknown job priority 'asap'; valid: stat"):
        Priority.parse("asap")


def test_job_spec_checks_and_key() -> None:
    spec = make_spec(1, priority="stat")
    assert spec.priority is Priority.STAT
    assert spec.key == idempotency_key("lung_ct_quant", "1.0.0", instances(1))
    assert spec.sop_instance_uids == sorted(uid for uid, _ in instances(1))
    with pytest.raises(ValueError, match="max_attempts"):
        make_spec(1, max_attempts=0)
    with pytest.raises(ValueError, match="timeout_s"):
        make_spec(1, timeout_s=0)
    repeated = make_spec(1, instances=instances(1) + instances(1)[:1])
    assert repeated.sop_instance_uids == spec.sop_instance_uids  # an instance given twice is one input
    assert repeated.key == spec.key


def test_retry_policy_backs_off_exponentially_with_a_cap() -> None:
    policy = RetryPolicy(base_s=2, factor=2, cap_s=10)
    assert [policy.delay_s(n) for n in range(1, 6)] == [2, 4, 8, 10, 10]
    with pytest.raises(ValueError):
        RetryPolicy(base_s=-1)


def test_worker_config_defaults_follow_the_lease() -> None:
    config = WorkerConfig(lease_s=9)
    assert (config.heartbeat_s, config.reap_interval_s) == (3, 4.5)
    with pytest.raises(ValueError, match="shorter than lease_s"):
        WorkerConfig(lease_s=5, heartbeat_s=5)


def test_exceptions_are_classified() -> None:
    assert classify(TransientJobError("busy")) is ErrorKind.TRANSIENT
    assert classify(ConnectionResetError("peer reset")) is ErrorKind.TRANSIENT
    assert classify(PermanentJobError("no lung")) is ErrorKind.PERMANENT
    assert classify(ValueError("bad shape")) is ErrorKind.PERMANENT
    assert describe(PermanentJobError("no lung in the field of view")) == "no lung in the field of view"
    assert describe(ValueError("bad shape")) == "ValueError: bad shape"
    assert describe(RuntimeError()) == "unexpected RuntimeError"


def test_worker_identity_and_runner_loading() -> None:
    identity = worker_identity("embedded-0", pid=4242)
    assert identity.endswith(":4242:embedded-0") and worker_pid(identity) == 4242
    assert worker_pid("celery") is None
    assert load_object("tests.integration.job_runners:sleepy_runner").__name__ == "sleepy_runner"
    with pytest.raises(ValueError, match="module:attribute"):
        load_object("no_colon")
    with pytest.raises(ImportError, match="has no attribute"):
        load_object("tests.integration.job_runners:nothing_here")
    assert JobOutput(["1.2"], {"a": 1}).as_json() == {"sop_instance_uids": ["1.2"], "details": {"a": 1}}


def test_celery_app_settings() -> None:
    from radpilot.engine.queue_celery import JOB_TASK_NAME, make_celery_app

    app = make_celery_app(
        "redis://127.0.0.1:1/0",
        "sqlite:///unused.sqlite3",
        config=WorkerConfig(lease_s=5, retry=RetryPolicy(cap_s=4)),
        visibility_timeout_s=10,
    )
    conf = app.conf
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1
    options = conf.broker_transport_options
    assert options["visibility_timeout"] == 10 and options["priority_steps"] == list(range(10))
    assert JOB_TASK_NAME in app.tasks
    with pytest.raises(ValueError, match="must exceed the longest retry delay"):
        make_celery_app("redis://127.0.0.1:1/0", "sqlite:///unused.sqlite3", visibility_timeout_s=60)
