#!/usr/bin/env bash
# Interleaved runs of two bench_generation binaries (e.g. before and after an engine change) on
# the same arguments, printing each run's line per batch and the medians of both with their ratio.
# A loaded machine shifts both alike when runs alternate; compare the ratio, not the raw numbers.
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
    "$bin" "$@" | awk -v w="$which" '$1 ~ /^[0-9]+$/ {print w, $1, $2, $3, $4}' | tee -a "$tmp/runs"
  done
done
# Medians per (binary, prompts): prefill and decode tokens/s.
python3 - "$tmp/runs" <<'PY'
import sys, statistics, collections
runs = collections.defaultdict(lambda: ([], []))
for line in open(sys.argv[1]):
    which, prompts, rows, prefill, decode = line.split()
    runs[(which, int(prompts), int(rows))][0].append(float(prefill))
    runs[(which, int(prompts), int(rows))][1].append(float(decode))
print(f"{'prompts':>8} {'rows':>6} {'prefill old':>12} {'prefill new':>12} {'ratio':>6} {'decode old':>11} {'decode new':>11} {'ratio':>6}")
for (which, prompts, rows) in sorted(k for k in runs if k[0] == 'old'):
    o, n = runs[('old', prompts, rows)], runs[('new', prompts, rows)]
    po, pn, do, dn = (statistics.median(x) for x in (o[0], n[0], o[1], n[1]))
    print(f"{prompts:>8} {rows:>6} {po:>12.0f} {pn:>12.0f} {pn/po:>6.2f} {do:>11.0f} {dn:>11.0f} {dn/do:>6.2f}")
PY
rm -rf "$tmp"
