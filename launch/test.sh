#!/usr/bin/env bash
# Set-up, build and the whole test suite: what CI runs (`make test`).
# Extra arguments go to ctest, e.g. `launch/test.sh -L fixtures`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/build.sh
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
ctest --test-dir "${BUILD_DIR:-build}" --output-on-failure -j "$(nproc)" --timeout 600 "$@"
