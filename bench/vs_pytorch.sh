#!/usr/bin/env bash
# grpo-cpp beside plain PyTorch on one machine in one session, runs alternated round by round:
# the GRPO step (bench_grpo_step vs bench/grpo_step_pytorch.py, demo 2.9M) and sampling
# (bench_generation vs bench/generation_pytorch.py: demo 2.9M at 1/16/64 rows x 128 new tokens,
# and the Qwen2.5-0.5B shape at 16 rows x 16 new tokens), float32, top-p 0.95, 2 threads each.
# Prints every run's result line, then the medians and their ratios.
#
# Usage: bench/vs_pytorch.sh [BUILD_DIR] [ROUNDS]      (needs python3-torch: apt install python3-torch)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build} rounds=${2:-3}
python=/usr/bin/python3  # Debian's python3-torch lives in the system interpreter
"$python" -c 'import torch' 2>/dev/null || { echo "vs_pytorch: $python cannot import torch (apt install python3-torch)" >&2; exit 1; }
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE} GRPO_BENCH_G=1 GRPO_BENCH_TOP_P=0.95 GRPO_BENCH_BASELINE_STEPS=0
tmp=$(mktemp -d)
generation() {  # ours|pytorch SHAPE NEW_TOKENS ROWS...: lines "name shape rows prefill decode"
  local who=$1 shape=$2 new=$3
  shift 3
  if [ "$who" = ours ]; then
    "$build/bench/bench_generation" "$shape" 2 32 "$new" "$@" | awk -v s="$shape" '$1 ~ /^[0-9]+$/ {print "ours", s, $2, $3, $4}'
  else
    "$python" bench/generation_pytorch.py "$shape" 2 32 "$new" 0.95 "$@" | awk -v s="$shape" '$1 ~ /^[0-9]+$/ {print "pytorch", s, $1, $2, $3}'
  fi
}
for ((round = 0; round < rounds; ++round)); do
  echo "step ours $("$build/bench/bench_grpo_step" demo-2.9m 2 5 1 | tail -1 | awk '{print $5}')" | tee -a "$tmp/runs"
  echo "step pytorch $("$python" bench/grpo_step_pytorch.py 2 5 1 | tail -1 | awk '{print $5}')" | tee -a "$tmp/runs"
  for who in ours pytorch; do
    generation "$who" demo-2.9m 128 1 16 64 | sed 's/^/gen /' | tee -a "$tmp/runs"
    generation "$who" qwen2.5-0.5b 16 16 | sed 's/^/gen /' | tee -a "$tmp/runs"
  done
done
"$python" - "$tmp/runs" <<'PY'
import collections, statistics, sys
step, gen = collections.defaultdict(list), collections.defaultdict(lambda: ([], []))
for line in open(sys.argv[1]):
    f = line.split()
    if f[0] == "step":
        step[f[1]].append(float(f[2]))
    else:
        prefill, decode = gen[(f[1], f[2], int(f[3]))]
        prefill.append(float(f[4])); decode.append(float(f[5]))
m = statistics.median
print(f"GRPO step, demo 2.9M, training tok/s: ours {m(step['ours']):.0f}, PyTorch {m(step['pytorch']):.0f}, "
      f"ratio {m(step['ours']) / m(step['pytorch']):.2f}")
for (who, shape, rows) in sorted(k for k in gen if k[0] == "ours"):
    ours, theirs = gen[("ours", shape, rows)], gen[("pytorch", shape, rows)]
    print(f"{shape} {rows} rows: prefill tok/s ours {m(ours[0]):.0f}, PyTorch {m(theirs[0]):.0f}, ratio "
          f"{m(ours[0]) / m(theirs[0]):.2f}; decode ours {m(ours[1]):.0f}, PyTorch {m(theirs[1]):.0f}, "
          f"ratio {m(ours[1]) / m(theirs[1]):.2f}")
PY
