"""tests.helpers: skip-or-fail policy, free ports, shared data location, waiting for a condition."""

from __future__ import annotations

import itertools
import os
import socket
from pathlib import Path

import pytest

from tests.helpers import free_port, require_or_skip, shared_data_path, subprocess_env, wait_for


def test_require_or_skip_skips_outside_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RADPILOT_REQUIRE_SERVICES", raising=False)
    with pytest.raises(pytest.skip.Exception, match="peer gone"):
        require_or_skip("peer gone")


def test_require_or_skip_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RADPILOT_REQUIRE_SERVICES", "1")
    with pytest.raises(pytest.fail.Exception, match="peer gone"):
        require_or_skip("peer gone")


def test_free_port_can_be_bound_on_loopback() -> None:
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", port))


def test_shared_data_path_honours_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RADPILOT_SHARED_DATA", str(tmp_path))
    assert shared_data_path() == tmp_path


def test_tcp_nodelay_is_set_for_subprocesses() -> None:
    assert os.environ["TCP_NODELAY"] == "1"
    assert subprocess_env()["TCP_NODELAY"] == "1"


def test_shared_data_dir_fixture(shared_data_dir: Path) -> None:
    assert (shared_data_dir / "README.md").is_file()


def test_wait_for_returns_the_first_truthy_value() -> None:
    calls = itertools.count(1)
    assert wait_for(lambda: next(calls) >= 3 and "ready", 5, "the third call", interval_s=0.001) == "ready"
    assert next(calls) == 4  # polled exactly until it was true


def test_wait_for_fails_naming_what_it_waited_for() -> None:
    with pytest.raises(AssertionError, match=r"timed out after 0.05 s waiting for the peer\nlog tail"):
        wait_for(lambda: [], 0.05, "the peer", interval_s=0.01, diagnostics=lambda: "\nlog tail")


def test_a_node_whose_free_port_is_taken_before_it_binds_starts_again_on_other_ports(
    radpilot_factory, monkeypatch: pytest.MonkeyPatch
) -> None:  # noqa: ANN001
    from tests.fixtures import radpilot as fixtures

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    real = fixtures._free_port
    calls = itertools.count()
    monkeypatch.setattr(fixtures, "_free_port", lambda: port if next(calls) == 1 else real())  # the first HTTP port
    try:
        node = radpilot_factory()
    finally:
        taken.close()
    assert node.settings.http_port != port
    assert node.settings.data_dir.parent.name == "node0-again"
