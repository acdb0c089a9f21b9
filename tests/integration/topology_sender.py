"""A store SCU for the scale-out topology: sends files, records what was acknowledged, retries the rest.

Like a PACS router: when the association fails (the front end was restarted, the
connection dropped) it reconnects and sends again every file not yet acknowledged with
Success, for up to ``--give-up-after`` seconds. Each acknowledged SOP Instance UID is
appended (and flushed) to ``--acknowledged`` as soon as the Success status arrives.

    python -m tests.integration.topology_sender --port 11112 --files list.txt --acknowledged acked.txt
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pydicom
from pynetdicom import AE, StoragePresentationContexts

SUCCESS = 0x0000


def send_all(host: str, port: int, called: str, paths: list[Path], acknowledged: Path, give_up_after_s: float) -> int:
    ae = AE(ae_title="SCALESCU")
    ae.requested_contexts = StoragePresentationContexts[:128]
    remaining = list(paths)
    deadline = time.monotonic() + give_up_after_s
    with open(acknowledged, "a", encoding="ascii") as record:
        while remaining and time.monotonic() < deadline:
            assoc = ae.associate(host, port, ae_title=called)
            if not assoc.is_established:
                time.sleep(0.5)
                continue
            try:
                while remaining and assoc.is_established:
                    ds = pydicom.dcmread(remaining[0])
                    try:
                        status = assoc.send_c_store(ds)
                    except RuntimeError:  # the association ended between the check and the request
                        break
                    if status is not None and "Status" in status and status.Status == SUCCESS:
                        record.write(f"{ds.SOPInstanceUID}\n")
                        record.flush()
                        remaining.pop(0)
                    elif status is not None and "Status" in status:
                        print(f"refused {remaining[0]}: 0x{status.Status:04X}", file=sys.stderr)
                        return 1
                    # no status: the association died mid-request; reconnect and send it again
            finally:
                if assoc.is_established:
                    assoc.release()
    return 0 if not remaining else 2


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--called", default="RADPILOT")
    parser.add_argument("--files", type=Path, required=True)
    parser.add_argument("--acknowledged", type=Path, required=True)
    parser.add_argument("--give-up-after", type=float, default=300.0)
    args = parser.parse_args()
    paths = [Path(line) for line in args.files.read_text().split("\n") if line.strip()]
    return send_all(args.host, args.port, args.called, paths, args.acknowledged, args.give_up_after)


if __name__ == "__main__":
    raise SystemExit(main())
