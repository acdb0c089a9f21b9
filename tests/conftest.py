"""Top-level test configuration: shared fixtures and the real-peer fixture plugins.

Real peers (Orthanc, PostgreSQL, dcmtk) are started by the plugins in
``tests/fixtures``. When one is missing the test is skipped, unless
RADPILOT_REQUIRE_SERVICES=1 (CI), where it fails instead: see
:func:`tests.helpers.require_or_skip`.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import require_or_skip, shared_data_path

# dcmtk tools and Orthanc (built on dcmtk) disable Nagle's algorithm only when the
# environment says so; every subprocess started from the tests inherits this.
os.environ["TCP_NODELAY"] = "1"

pytest_plugins = [
    "tests.fixtures.orthanc",
    "tests.fixtures.postgres",
    "tests.fixtures.dcmtk",
    "tests.fixtures.radpilot",
    "tests.fixtures.redis",
    "tests.fixtures.mllp",
    "tests.fixtures.fhir_server",
]


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """The shared reference data folder (never copied into the repository)."""
    path = shared_data_path()
    if not path.is_dir():
        require_or_skip(f"shared data folder {path} is absent (set RADPILOT_SHARED_DATA)")
    return path


@pytest.fixture(scope="session")
def jsrt_dir(shared_data_dir: Path) -> Path:
    """The JSRT/SCR chest radiograph set (research use only)."""
    path = shared_data_dir / "cxr-jsrt"
    if not (path / "metadata.csv").is_file():
        require_or_skip(f"JSRT data {path} is absent")
    return path
