"""The long fuzz run of the ingest path: structure-aware mutations of valid DICOM into Archive.store_file_bytes.

The same mutations and contract as the short run in CI (tests/unit/test_ingest_fuzz.py,
tests/fuzz_support.py), for as many examples or seconds as asked, with a random seed
(printed, so a finding can be reproduced with ``--seed``). Each finding (an exception
that escaped, a temporary or partial file left, a refusal without reason) is kept under
benchmarks/results/fuzz_ingest_findings/ as the input bytes.

Generation is hypothesis', guided by the file's structure and shared with the CI run.
atheris 3.0.0 would install here (a cp311 wheel exists) for coverage-guided fuzzing; no
atheris target is written yet.

Usage: .venv/bin/python benchmarks/fuzz_ingest.py [--examples 5000] [--seconds 0] [--seed N]
Writes benchmarks/results/fuzz_ingest.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import platform
import random
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, seed, settings

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.fuzz_support import check_ingest, mutated_part10, open_fuzz_archive  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"


class _Stop(Exception):
    """The time budget is spent."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=5000, help="examples to run (the run stops at whichever limit comes first)")
    parser.add_argument("--seconds", type=float, default=0.0, help="time budget in seconds (0: no limit)")
    parser.add_argument("--seed", type=int, default=None, help="hypothesis seed (default: random, printed)")
    args = parser.parse_args()
    run_seed = args.seed if args.seed is not None else random.randrange(2**32)
    logging.disable(logging.WARNING)  # each refusal logs a warning: thousands of them
    warnings.simplefilter("ignore")
    findings_dir = RESULTS / "fuzz_ingest_findings"
    outcomes: Counter[str] = Counter()
    findings: Counter[str] = Counter()
    kept: dict[str, str] = {}
    started = time.monotonic()

    with tempfile.TemporaryDirectory(prefix="radpilot-fuzz-") as folder:
        archive = open_fuzz_archive(Path(folder))

        @seed(run_seed)
        @settings(
            max_examples=args.examples,
            database=None,
            deadline=None,
            phases=[Phase.generate],  # every example new; a finding is kept as bytes, not shrunk
            suppress_health_check=list(HealthCheck),
        )
        @given(mutated_part10())
        def ingest(data: bytes) -> None:
            if args.seconds and time.monotonic() - started > args.seconds:
                raise _Stop
            try:
                outcomes[check_ingest(archive, data).outcome.value] += 1
            except Exception as exc:  # noqa: BLE001 - every escape is a finding to record, not to stop at
                key = f"{type(exc).__name__}: {str(exc)[:120]}"
                findings[key] += 1
                if key not in kept:
                    findings_dir.mkdir(parents=True, exist_ok=True)
                    name = hashlib.sha256(data).hexdigest()[:16] + ".dcm"
                    (findings_dir / name).write_bytes(data)
                    kept[key] = name
                    print(f"FINDING {key}\n{traceback.format_exc(limit=-4)}", file=sys.stderr)

        try:
            ingest()
        except _Stop:
            pass
        archive.close()

    elapsed = time.monotonic() - started
    executions = sum(outcomes.values()) + sum(findings.values())
    result = {
        "benchmark": "fuzz_ingest",
        "seed": run_seed,
        "executions": executions,
        "seconds": round(elapsed, 2),
        "executions_per_s": round(executions / elapsed, 1) if elapsed else None,
        "outcomes": dict(outcomes),
        "findings": sum(findings.values()),
        "distinct_findings": [{"error": key, "count": count, "input": kept[key]} for key, count in findings.most_common()],
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "fuzz_ingest.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
