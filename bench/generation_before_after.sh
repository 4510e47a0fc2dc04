#!/usr/bin/env bash
# Interleaved runs of two bench_generation binaries (e.g. before and after an engine change) on
# the same arguments, printing each run's line per batch and the medians of both with their ratio.
# A loaded machine shifts both alike when runs alternate; compare the ratio, not the raw numbers.
# The "CPU" ratios use tokens per second of process CPU time, which the load moves far less than
# wall time (both binaries must print the CPU columns: built from 2026-11-30 on).
#
# Usage: bench/generation_before_after.sh OLD_BIN NEW_BIN REPEATS [bench_generation args...]
# e.g.   git worktree add /tmp/before HEAD~3 && (build /tmp/before's bench_generation) &&
#        GRPO_BENCH_G=1 GRPO_BENCH_BASELINE_STEPS=0 bench/generation_before_after.sh \
#            /tmp/before/build/bench/bench_generation build/bench/bench_generation 3 demo-2.9m 2 32 128 16 64
set -euo pipefail
old=$1 new=$2 repeats=$3
shift 3
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
tmp=$(mktemp -d)
for ((i = 0; i < repeats; ++i)); do
  for which in old new; do
    bin=$old
    [ "$which" = new ] && bin=$new
    "$bin" "$@" | awk -v w="$which" '$1 ~ /^[0-9]+$/ {print w, $1, $2, $3, $4, $7, $8}' | tee -a "$tmp/runs"
  done
done
# Medians per (binary, prompts): prefill and decode tokens per wall second and per CPU second.
python3 - "$tmp/runs" <<'PY'
import sys, statistics, collections
runs = collections.defaultdict(lambda: [[], [], [], []])
for line in open(sys.argv[1]):
    which, prompts, rows, *values = line.split()
    for column, value in zip(runs[(which, int(prompts), int(rows))], values):
        column.append(float(value))
names = ["prefill tok/s", "decode tok/s", "prefill tok/CPU-s", "decode tok/CPU-s"]
print(f"{'prompts':>8} {'rows':>6} {'measure':>18} {'old':>9} {'new':>9} {'new/old':>8}")
for (which, prompts, rows) in sorted(k for k in runs if k[0] == 'old'):
    o, n = runs[('old', prompts, rows)], runs[('new', prompts, rows)]
    for name, old, new in zip(names, o, n):
        mo, mn = statistics.median(old), statistics.median(new)
        print(f"{prompts:>8} {rows:>6} {name:>18} {mo:>9.0f} {mn:>9.0f} {mn/mo:>8.2f}")
PY
rm -rf "$tmp"
