#!/usr/bin/env bash
# Builds RadPilot's native C-STORE receiver (radpilot/pacs/_dcmtk_store*.so, used by settings.dicom_store_port)
# from radpilot/pacs/native/dcmtk_store.cpp against Debian's dcmtk (libdcmtk-dev) with pybind11.
# Usage: scripts/build_native.sh [PYTHON]   (make setup runs it with .venv/bin/python)
# Without g++ or the dcmtk headers it says so and builds nothing: RadPilot runs without the store port.
set -euo pipefail
cd "$(dirname "$0")/.."
py="${1:-.venv/bin/python}"
src=radpilot/pacs/native/dcmtk_store.cpp
suffix="$("$py" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')"
out="radpilot/pacs/_dcmtk_store${suffix}"
if ! command -v g++ >/dev/null || [ ! -f /usr/include/dcmtk/dcmnet/dimse.h ]; then
    echo "setup: native store receiver not built (needs g++ and libdcmtk-dev); dicom_store_port is unavailable" >&2
    exit 0
fi
if [ -f "$out" ] && [ "$out" -nt "$src" ] && [ "$out" -nt "$0" ]; then
    exit 0
fi
includes="$("$py" -m pybind11 --includes)"
echo "setup: building the native store receiver ($out)"
# shellcheck disable=SC2086 # the include flags are several words
g++ -O2 -shared -fPIC -std=c++17 -Wall -Wextra $includes "$src" -o "$out.tmp" -ldcmnet -ldcmdata -loflog -lofstd
mv "$out.tmp" "$out"
