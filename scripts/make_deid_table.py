"""Generate radpilot/dicom/deid/ps315_table_e1_1.json from the DICOM standard's PS3.15 Table E.1-1.

The standard's own DocBook/HTML cannot be downloaded on this project's machines, so the
source is the machine-readable extraction of that table made by innolitics' dicom-standard
parser (``standard/confidentiality_profile_attributes.json`` in its public repository,
generated from the web edition of part 15; the commit that last changed the file says
"Update standard to rev2024b"). Nothing in the table is typed by hand: this script only
renames the columns, normalises the tags and checks that every action is one the
standard defines.

Usage::

    python scripts/make_deid_table.py SOURCE.json --edition 2024b --source-commit SHA > radpilot/dicom/deid/ps315_table_e1_1.json
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

# innolitics' column keys -> the option names RadPilot uses (PS3.15 Table E.1-1 column headings).
COLUMNS = {
    "basicProfile": "basic",
    "rtnSafePrivOpt": "retain_safe_private",
    "rtnUIDsOpt": "retain_uids",
    "rtnDevIdOpt": "retain_device_identity",
    "rtnInstIdOpt": "retain_institution_identity",
    "rtnPatCharsOpt": "retain_patient_characteristics",
    "rtnLongFullDatesOpt": "retain_longitudinal_full_dates",
    "rtnLongModifDatesOpt": "retain_longitudinal_modified_dates",
    "cleanDescOpt": "clean_descriptors",
    "cleanStructContOpt": "clean_structured_content",
    "cleanGraphOpt": "clean_graphics",
}
BASIC_ACTIONS = {"X", "Z", "D", "U", "K", "C", "X/Z", "X/D", "Z/D", "X/Z/D", "X/Z/U*"}
OPTION_ACTIONS = {"K", "C"}
TAG = re.compile(r"^\(([0-9A-F]{4}),([0-9A-F]{4})\)$")
WILDCARD_TAG = re.compile(r"^\(([0-9A-FX]{4}),([0-9A-FX]{4})\)$")


def convert(rows: list[dict[str, str]], edition: str, source: str) -> dict[str, object]:
    attributes = []
    for row in rows:
        raw = row["tag"].upper().strip()
        if raw.startswith("(GGGG,EEEE)"):
            tag = "private"  # "(gggg,eeee) where gggg is odd": every private attribute
        elif TAG.match(raw) or WILDCARD_TAG.match(raw):
            tag = raw[1:5] + raw[6:10]
        else:
            raise SystemExit(f"unrecognised tag {row['tag']!r} for {row['name']!r}")
        actions: dict[str, str] = {}
        for key, name in COLUMNS.items():
            value = row.get(key, "").strip()
            if not value:
                continue
            allowed = BASIC_ACTIONS if name == "basic" else OPTION_ACTIONS
            if value not in allowed:
                raise SystemExit(f"{row['name']} {row['tag']}: action {value!r} in column {key} is not one PS3.15 defines")
            actions[name] = value
        if "basic" not in actions:
            raise SystemExit(f"{row['name']} {row['tag']} has no Basic Profile action")
        attributes.append({"tag": tag, "name": row["name"], "in_std_iod": row.get("stdCompIOD", "") == "Y", **actions})
    attributes.sort(key=lambda a: a["tag"])
    return {
        "title": "PS3.15 Table E.1-1 Application Level Confidentiality Profile Attributes",
        "edition": edition,
        "source": source,
        "generated_by": "scripts/make_deid_table.py",
        "options": [name for name in COLUMNS.values() if name != "basic"],
        "attributes": attributes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="confidentiality_profile_attributes.json of innolitics/dicom-standard")
    parser.add_argument("--edition", required=True, help="DICOM edition the source was parsed from, e.g. 2024b")
    parser.add_argument("--source-commit", required=True, help="commit of innolitics/dicom-standard the file came from")
    args = parser.parse_args()
    rows = json.loads(args.source.read_text(encoding="utf-8"))
    source = f"innolitics/dicom-standard@{args.source_commit}:standard/confidentiality_profile_attributes.json (parsed from DICOM PS3.15 {args.edition} HTML)"
    json.dump(convert(rows, args.edition, source), sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
