#!/usr/bin/env bash
# The data-parallel optimizer update at ZeRO stages 0, 1 and 2 on the same job (bench/zero_bench.cpp):
# time per update and per-rank memory, with stage 0 (whole optimizer state on every rank) as the
# baseline. Usage: bench/zero_stages.sh [RANKS] [MILLION_PARAMETERS] [STEPS]   (default 2 50 10)
set -euo pipefail
cd "$(dirname "$0")/.."
ranks=${1:-2}
millions=${2:-50}
steps=${3:-10}
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for stage in 0 1 2; do
  OMP_WAIT_POLICY=PASSIVE mpirun --allow-run-as-root --oversubscribe -np "$ranks" \
    build/bench/bench_zero "$stage" "$millions" "$steps" | sort | tee -a "$out"
done
python3 - "$out" <<'PY'
import re, sys
pattern = r"zero_stage (\d), .* update ([\d.]+) ms/step, optimizer state (\d+) MiB, peak RSS (\d+) MiB"
rows = [r for r in (re.search(pattern, l) for l in open(sys.argv[1])) if r]  # skips the "compute:" lines
by_stage = {}
for r in rows:
    s = by_stage.setdefault(int(r[1]), {"ms": [], "rss": []})
    s["ms"].append(float(r[2])); s["rss"].append(float(r[4]))
base_ms, base_rss = max(by_stage[0]["ms"]), max(by_stage[0]["rss"])
for stage in (1, 2):
    s = by_stage[stage]
    print(f"stage {stage} / stage 0: update time {max(s['ms']) / base_ms:.2f}x, peak RSS per rank {max(s['rss']) / base_rss:.2f}x")
PY
