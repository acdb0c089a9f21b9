"""Small helpers shared by RadPilot's tests (import as ``from tests.helpers import ...``)."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn, TypeVar

import pytest

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parent.parent
REQUIRE_SERVICES_ENV = "RADPILOT_REQUIRE_SERVICES"
SHARED_DATA_ENV = "RADPILOT_SHARED_DATA"


def services_required() -> bool:
    """True when a missing peer or data set must fail the run (CI sets RADPILOT_REQUIRE_SERVICES=1)."""
    return os.environ.get(REQUIRE_SERVICES_ENV, "").strip() == "1"


def require_or_skip(reason: str) -> NoReturn:
    """Fail (in CI, RADPILOT_REQUIRE_SERVICES=1) or skip (elsewhere) because ``reason``."""
    if services_required():
        pytest.fail(f"{reason} (required because {REQUIRE_SERVICES_ENV}=1)", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago (bind to port 0, then release)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def shared_data_path() -> Path:
    """The shared reference data folder: $RADPILOT_SHARED_DATA or ``<repo>/../shared/data``."""
    configured = os.environ.get(SHARED_DATA_ENV)
    return Path(configured) if configured else REPO_ROOT.parent / "shared" / "data"


def subprocess_env(**extra: str) -> dict[str, str]:
    """The current environment with TCP_NODELAY=1 (dcmtk and Orthanc disable Nagle only then)."""
    env = dict(os.environ)
    env["TCP_NODELAY"] = "1"
    env.update(extra)
    return env


def wait_for(
    predicate: Callable[[], T],
    timeout_s: float,
    what: str,
    *,
    interval_s: float = 0.05,
    diagnostics: Callable[[], str] | None = None,
) -> T:
    """Call ``predicate`` every ``interval_s`` until it returns something truthy, and return that.

    After ``timeout_s`` raise an AssertionError naming ``what`` (the test fails, it does not hang),
    followed by ``diagnostics()`` when given (e.g. the logs of the processes being waited on).
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    details = diagnostics() if diagnostics is not None else ""
    raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}{details}")
