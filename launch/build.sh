#!/usr/bin/env bash
# Installs dependencies (launch/setup.sh), configures and builds grpo-cpp into build/.
# Environment: BUILD_DIR (default build), BUILD_TYPE (default Release), JOBS (default nproc).
set -euo pipefail
cd "$(dirname "$0")/.."

bash launch/setup.sh
build_dir=${BUILD_DIR:-build}
generator=()
command -v ninja >/dev/null 2>&1 && generator=(-G Ninja)
if [ ! -f "$build_dir/CMakeCache.txt" ]; then
  cmake -S . -B "$build_dir" "${generator[@]}" -DCMAKE_BUILD_TYPE="${BUILD_TYPE:-Release}"
fi
start=$(date +%s)
cmake --build "$build_dir" -j "${JOBS:-$(nproc)}"
echo "build: $(( $(date +%s) - start )) s"
