#!/usr/bin/env bash
# Runs a grpo verb on N local ranks: launch/mpirun.sh N sft|train|eval --config FILE [overrides]
# Adds what OpenMPI needs on these machines (root, more ranks than cores) and a passive OpenMP
# wait policy.
set -euo pipefail
ranks=$1
shift
args=(-np "$ranks" --oversubscribe -x OMP_WAIT_POLICY=PASSIVE)
[ "$(id -u)" -eq 0 ] && args+=(--allow-run-as-root)
exec mpirun "${args[@]}" "$(dirname "$0")/../build/launch/grpo" "$@"
