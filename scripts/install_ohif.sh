#!/usr/bin/env bash
# Install the pinned, pre-built OHIF viewer from npm into third_party/ohif/dist/.
#
# Idempotent: does nothing when third_party/ohif/dist/index.html exists and the
# version stamp matches OHIF_VERSION. The tarball's integrity is checked by npm
# (npm pack verifies it against the registry's recorded integrity) and the
# integrity string npm reports is recorded next to the version stamp.
set -euo pipefail

OHIF_VERSION="${OHIF_VERSION:-3.13.2}"
PACKAGE="@ohif/app@${OHIF_VERSION}"

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET="${REPO_ROOT}/third_party/ohif"
DIST="${TARGET}/dist"
STAMP="${TARGET}/VERSION"

log() { echo "[install_ohif] $*" >&2; }

# Known defects of the pinned build, mended in place (scripts/patch_ohif.py says which and why).
mend_known_defects() {
    if ! python3 "${REPO_ROOT}/scripts/patch_ohif.py" "${DIST}"; then
        log "WARNING: OHIF ${OHIF_VERSION} was not mended: images with a VOI LUT Function may show black, MONOCHROME2 with INVERSE as a negative"
    fi
}

if [[ -f "${DIST}/index.html" && -f "${STAMP}" ]] \
    && [[ "$(head -n1 "${STAMP}")" == "${OHIF_VERSION}" ]]; then
    log "OHIF ${OHIF_VERSION} already installed in ${DIST}"
    mend_known_defects
    exit 0
fi

if ! command -v npm >/dev/null 2>&1; then
    log "npm not found: install the Debian package 'npm' (make setup does this as root)"
    exit 1
fi

TMP="$(mktemp -d)"
trap 'rm -rf "${TMP}"' EXIT

log "downloading ${PACKAGE} (about 50 MB)"
# --json gives the filename and the integrity npm verified the tarball against.
(cd "${TMP}" && npm pack "${PACKAGE}" --json --silent > pack.json)

read -r TARBALL INTEGRITY < <(python3 - "${TMP}/pack.json" <<'PY'
import json, sys
info = json.load(open(sys.argv[1]))[0]
print(info["filename"], info.get("integrity", ""))
PY
)
if [[ -z "${INTEGRITY}" || ! -f "${TMP}/${TARBALL}" ]]; then
    log "npm pack did not report an integrity hash or tarball; aborting"
    exit 1
fi
log "tarball ${TARBALL} integrity ${INTEGRITY}"

# Double-check the file on disk against the integrity npm reported (SRI: algo-base64).
if ! python3 - "${TMP}/${TARBALL}" "${INTEGRITY}" <<'PY2'
import base64, hashlib, sys
path, sri = sys.argv[1], sys.argv[2]
algo, _, expected = sri.partition("-")
digest = hashlib.new(algo)
with open(path, "rb") as fh:
    for chunk in iter(lambda: fh.read(1 << 20), b""):
        digest.update(chunk)
sys.exit(0 if base64.b64encode(digest.digest()).decode() == expected else 1)
PY2
then
    log "integrity mismatch for ${TARBALL} (expected ${INTEGRITY})"
    exit 1
fi

mkdir -p "${TMP}/unpacked"
tar -xzf "${TMP}/${TARBALL}" -C "${TMP}/unpacked"
if [[ ! -f "${TMP}/unpacked/package/dist/index.html" ]]; then
    log "unexpected tarball layout: package/dist/index.html missing"
    exit 1
fi

mkdir -p "${TARGET}"
rm -rf "${DIST}" "${DIST}.new"
mv "${TMP}/unpacked/package/dist" "${DIST}.new"
mv "${DIST}.new" "${DIST}"
printf '%s\n%s\n' "${OHIF_VERSION}" "${INTEGRITY}" > "${STAMP}"
mend_known_defects
log "installed OHIF ${OHIF_VERSION} into ${DIST}"
