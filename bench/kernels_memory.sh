#!/usr/bin/env bash
# Sweeps bench_kernels (one fresh process per configuration) and prints JSON lines for the
# memory tables of docs/performance.md. Configurations whose plain path would not fit in the
# memory left on a shared machine are skipped (PLAIN_MAX_TOKENS, PLAIN_MAX_LENGTH).
# Usage: bash bench/kernels_memory.sh [BUILD_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
bench=${1:-build}/bench/bench_kernels
vocab=${VOCAB:-151936} hidden=${HIDDEN:-64}
for tokens in 256 1024 4096 32768; do
  $bench logprobs chunked "$tokens" "$vocab" "$hidden"
  if [ "$tokens" -le "${PLAIN_MAX_TOKENS:-1024}" ]; then $bench logprobs plain "$tokens" "$vocab" "$hidden"; fi
done
for length in 2048 8192 32768; do
  if [ "$length" -le "${BLOCKWISE_MAX_LENGTH:-32768}" ]; then $bench attention blockwise "$length" 4 2 32; fi
  if [ "$length" -le "${PLAIN_MAX_LENGTH:-8192}" ]; then $bench attention bias "$length" 4 2 32; fi
done
