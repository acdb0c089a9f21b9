"""Small helpers shared by RadPilot's tests (import as ``from tests.helpers import ...``)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import IO, NoReturn, TypeVar

import httpx
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


# Series-complete quiet period of the end-to-end tests: long enough that a PACS's C-STORE
# sub-operations on a loaded 2-core CI machine never pause that long mid-series (2 s did).
QUIET_PERIOD_S = 5.0


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


def start_serve(
    data_dir: Path,
    *,
    dicom_port: int,
    http_port: int,
    workers: int = 0,
    output: IO[str] | int = subprocess.PIPE,
    own_process_group: bool = False,
    env: dict[str, str] | None = None,
) -> subprocess.Popen:
    """``radpilot serve`` as a real process on ``data_dir``, returned once ``/api/health`` answers.

    ``output`` receives its stdout and stderr (default a pipe, read when it exits early);
    ``own_process_group`` starts it in a new session, so a test can signal the whole group
    the way systemd and a terminal do; ``env`` adds ``RADPILOT_*`` settings.
    """
    process = subprocess.Popen(
        [
            str(REPO_ROOT / ".venv" / "bin" / "radpilot"),
            "serve",
            "--data-dir",
            str(data_dir),
            "--dicom-port",
            str(dicom_port),
            "--http-port",
            str(http_port),
            "--workers",
            str(workers),
        ],
        env=subprocess_env(**(env or {})),
        stdout=output,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=own_process_group,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{http_port}/api/health", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.2)
        if process.poll() is not None:
            early = process.stdout.read() if process.stdout is not None else "(see its log)"
            raise AssertionError(f"radpilot serve exited early: {early}")
    if own_process_group:
        os.killpg(process.pid, signal.SIGKILL)
    else:
        process.kill()
    raise AssertionError("radpilot serve did not start within 60 s")


def dciodvfy_errors(path: Path) -> list[str]:
    """The error lines ``dciodvfy -new`` (Debian dicom3tools) reports for the DICOM file at ``path``."""
    if shutil.which("dciodvfy") is None:
        require_or_skip("dciodvfy (Debian dicom3tools) is not installed")
    report = subprocess.run(["dciodvfy", "-new", str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (report.stdout + report.stderr).splitlines() if line.startswith("Error")]


def api_token(data_dir: Path, role: str = "administrator", name: str = "bench") -> dict[str, str]:
    """``Authorization: Bearer ...`` for a RadPilot whose data folder (SQLite index) is ``data_dir``.

    The token is written straight into that node's database, as `radpilot tokens create` does.
    """
    from radpilot.db import make_engine, migrate
    from radpilot.security.tokens import create_token

    engine = make_engine(f"sqlite:///{(data_dir / 'index.sqlite3').resolve()}")
    try:
        migrate(engine)
        return {"Authorization": f"Bearer {create_token(engine, name, role, by='benchmark')}"}
    finally:
        engine.dispose()


def load_script(path: Path, name: str) -> ModuleType:
    """A script that is not in a package (a training script) imported as module ``name``."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module
