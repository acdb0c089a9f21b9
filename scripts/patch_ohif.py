#!/usr/bin/env python3
"""Mend known defects of the pinned OHIF build in place; idempotent (install_ohif.sh runs it on every call).

Each mend (``MENDS``) names the defect, why it matters, the text it replaces and what replaces it:

* VOI LUT Function (cornerstone3D issue 2844, OHIF issue 6239, open upstream): the image loader takes
  ``voiLUTFunction[0]`` of what its metadata provider returns as a string, so "LINEAR" becomes "L", the VOI
  range throws "Invalid VOI LUT function", and OHIF shows a black viewport and "Something went wrong" for every
  image that carries (0028,1056): many DX, CR and MG modalities write LINEAR, SIGMOID or LINEAR_EXACT there.
  The mend takes the first value of a list and a string whole.
* Presentation LUT Shape: OHIF inverts MONOCHROME1 and never reads (2050,0020), so a MONOCHROME2 image whose
  Presentation LUT Shape is INVERSE (written by CR/DX devices and by processing that inverted the stored
  values) is shown as a negative. PS3.3 C.11.6: INVERSE asks for one inversion of the presentation values,
  the same one MONOCHROME1 means (radpilot.dicom.grayscale.is_inverted reads it so for RadPilot's own
  images). The mend makes OHIF's metadata provider report such an image's pixel module as MONOCHROME1, the
  one switch every OHIF/cornerstone path (stack, volume, thumbnail, image loader) takes its polarity from;
  MONOCHROME1 with INVERSE stays one inversion, as OHIF already shows it.

A mended bundle gets a new content-hashed name, written into every file of the build that names it
(index.html, the service worker's precache list): RadPilot serves hashed names as immutable for a year,
so a browser that kept the defective bundle would otherwise go on using it.
Exit status 1 when a mend finds neither its defect nor itself in place (a different OHIF build).
"""

from __future__ import annotations

import hashlib
import re
import sys
from pathlib import Path
from typing import NamedTuple


class Mend(NamedTuple):
    name: str
    defect: re.Pattern[str]
    replacement: str


VOI_LUT_FUNCTION = Mend(
    name="VOI LUT Function",
    defect=re.compile(r"\(voiLutModule\.voiLUTFunction\?\.length &&\s*voiLutModule\.voiLUTFunction\[0\]\)"),
    replacement="[].concat(voiLutModule.voiLUTFunction ?? [])[0]",
)
PRESENTATION_LUT_SHAPE = Mend(
    name="Presentation LUT Shape",
    defect=re.compile(r"photometricInterpretation: instance\.PhotometricInterpretation,"),
    replacement=(
        "photometricInterpretation: (instance.PhotometricInterpretation === 'MONOCHROME2' && "
        "String([].concat(instance.PresentationLUTShape ?? [])[0] ?? '').trim() === 'INVERSE' "
        "? 'MONOCHROME1' : instance.PhotometricInterpretation),"
    ),
)
MENDS = (VOI_LUT_FUNCTION, PRESENTATION_LUT_SHAPE)

BUNDLE_NAME = re.compile(r"^(?P<stem>.+\.bundle\.)(?P<hash>[0-9a-f]{8,})\.js$")
TEXT_SUFFIXES = {".html", ".js", ".json", ".webmanifest"}


def mend(dist: Path, mends: tuple[Mend, ...] = MENDS) -> dict[str, list[str]]:
    """Mend every bundle in ``dist`` that has one of the defects: {new bundle name: names of the mends applied}."""
    mended: dict[str, list[str]] = {}
    for bundle in sorted(dist.glob("*.bundle.*.js")):
        name = BUNDLE_NAME.match(bundle.name)
        if name is None:
            continue
        text = bundle.read_text(encoding="utf-8")
        applied = []
        for each in mends:
            text, count = each.defect.subn(each.replacement, text)
            if count:
                applied.append(each.name)
        if not applied:
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
        mended[renamed.name] = applied
    return mended


def missing(dist: Path, mends: tuple[Mend, ...] = MENDS) -> list[str]:
    """The names of the mends that are in place in no bundle of ``dist``."""
    texts = [bundle.read_text(encoding="utf-8") for bundle in dist.glob("*.bundle.*.js")]
    return [each.name for each in mends if not any(each.replacement in text for text in texts)]


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        sys.stderr.write("usage: patch_ohif.py OHIF_DIST_FOLDER\n")
        return 2
    dist = Path(argv[1])
    for bundle, applied in mend(dist).items():
        sys.stderr.write(f"[patch_ohif] {', '.join(applied)} mended in {bundle}\n")
    absent = missing(dist)
    if absent:
        sys.stderr.write(f"[patch_ohif] not found in {dist} (a different OHIF build?): {', '.join(absent)}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
