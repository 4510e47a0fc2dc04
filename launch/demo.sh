#!/usr/bin/env bash
# Set-up, build and the main job (`make demo`). Today that is the smallest end-to-end GRPO run:
# the built-in tabular policy learning hidden strings from a reward alone (configs/demo/toy.yaml).
# The miniature R1 recipe on a tiny Qwen2 model replaces it when the trainer lands.
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/build.sh
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
"${BUILD_DIR:-build}/launch/grpo" toy --config configs/demo/toy.yaml "$@"
