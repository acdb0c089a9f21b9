"""The long schemathesis run: every /api and /dicomweb operation of the OpenAPI schema, in process, per role.

The same checks as the short run in CI (tests/unit/test_api_schema_fuzz.py): no server
error (5xx or an exception), and a documented response body conforms to its schema.
Random (not derandomized) examples, as many per operation as asked.

Usage: .venv/bin/python benchmarks/fuzz_api.py [--examples 50]
Writes benchmarks/results/fuzz_api.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from radpilot.archive import Archive  # noqa: E402
from radpilot.config import Settings  # noqa: E402
from radpilot.engine.service import Engine  # noqa: E402
from radpilot.security.principal import Role  # noqa: E402
from radpilot.web.app import create_app  # noqa: E402
from tests.factories import make_ct_series, to_part10_bytes  # noqa: E402
from tests.fixtures.auth import auth_headers, bearer_token  # noqa: E402
from tests.fuzz_support import fuzz_api  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
ROLES = (Role.ADMINISTRATOR, Role.RADIOLOGIST, Role.TECHNOLOGIST, Role.RESEARCHER)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=50, help="examples per operation and role")
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    warnings.simplefilter("ignore")
    runs = []
    with tempfile.TemporaryDirectory(prefix="radpilot-fuzz-api-") as folder:
        root = Path(folder)
        settings = Settings(data_dir=root / "data", ohif_dir=root / "no-ohif", workers=0, analysis_enabled=False)
        archive = Archive(root / "dicom", f"sqlite:///{root / 'index.sqlite3'}", durability="none")
        for ds in make_ct_series(3):
            archive.store_file_bytes(to_part10_bytes(ds))
        app = create_app(settings, archive)
        app.state.engine = Engine(settings, archive)
        for role in ROLES:
            started = time.monotonic()
            report = fuzz_api(app, auth_headers(bearer_token(archive.engine, role)), args.examples, derandomize=False)
            elapsed = time.monotonic() - started
            runs.append(
                {
                    "role": role.value,
                    "operations": report.operations,
                    "requests": report.requests,
                    "seconds": round(elapsed, 2),
                    "requests_per_s": round(report.requests / elapsed, 1),
                    "findings": len(report.failures),
                    "failures": report.failures,
                }
            )
            print(f"{role.value}: {report.requests} requests, {len(report.failures)} findings", file=sys.stderr)
        archive.close()
    result = {
        "benchmark": "fuzz_api",
        "examples_per_operation": args.examples,
        "runs": runs,
        "requests": sum(r["requests"] for r in runs),
        "findings": sum(r["findings"] for r in runs),
        "python": platform.python_version(),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "fuzz_api.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
