#!/usr/bin/env python3
"""Mend known defects of the pinned OHIF build in place; idempotent (install_ohif.sh runs it on every call).

VOI LUT Function (cornerstone3D issue 2844, OHIF issue 6239, open upstream): the image loader takes
``voiLUTFunction[0]`` of what its metadata provider returns as a string, so "LINEAR" becomes "L", the VOI
range throws "Invalid VOI LUT function", and OHIF shows a black viewport and "Something went wrong" for every
image that carries (0028,1056): many DX, CR and MG modalities write LINEAR, SIGMOID or LINEAR_EXACT there.
The mend takes the first value of a list and a string whole.

A mended bundle gets a new content-hashed name, written into every file of the build that names it
(index.html, the service worker's precache list): RadPilot serves hashed names as immutable for a year,
so a browser that kept the defective bundle would otherwise go on using it.
Exit status 1 when a bundle with the defect cannot be found and the mend is not already in place.
"""

from __future__ import annotations

import hashlib
import re
import sys
from pathlib import Path

DEFECT = re.compile(r"\(voiLutModule\.voiLUTFunction\?\.length &&\s*voiLutModule\.voiLUTFunction\[0\]\)")
MEND = "[].concat(voiLutModule.voiLUTFunction ?? [])[0]"
BUNDLE_NAME = re.compile(r"^(?P<stem>.+\.bundle\.)(?P<hash>[0-9a-f]{8,})\.js$")
TEXT_SUFFIXES = {".html", ".js", ".json", ".webmanifest"}


def mend(dist: Path) -> list[str]:
    """Mend every bundle in ``dist`` that has the defect; the new names of those mended."""
    mended = []
    for bundle in sorted(dist.glob("*.bundle.*.js")):
        name = BUNDLE_NAME.match(bundle.name)
        if name is None:
            continue
        text = bundle.read_text(encoding="utf-8")
        text, count = DEFECT.subn(MEND, text)
        if not count:
            continue
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
        renamed = bundle.with_name(f"{name['stem']}{digest}.js")
        renamed.write_text(text, encoding="utf-8")
        for other in dist.iterdir():
            if other.is_file() and other.suffix in TEXT_SUFFIXES and other != renamed:
                content = other.read_text(encoding="utf-8", errors="surrogateescape")
                if bundle.name in content:
                    other.write_text(content.replace(bundle.name, renamed.name), encoding="utf-8", errors="surrogateescape")
        bundle.unlink()
        mended.append(renamed.name)
    return mended


def is_mended(dist: Path) -> bool:
    return any(MEND in bundle.read_text(encoding="utf-8") for bundle in dist.glob("*.bundle.*.js"))


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        sys.stderr.write("usage: patch_ohif.py OHIF_DIST_FOLDER\n")
        return 2
    dist = Path(argv[1])
    mended = mend(dist)
    if mended:
        sys.stderr.write(f"[patch_ohif] VOI LUT Function mended in {', '.join(mended)}\n")
        return 0
    if is_mended(dist):
        return 0
    sys.stderr.write(f"[patch_ohif] the VOI LUT Function defect was not found in {dist}: a different OHIF build?\n")
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
