"""tests.helpers: skip-or-fail policy, free ports, shared data location."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from tests.helpers import free_port, require_or_skip, shared_data_path, subprocess_env


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
