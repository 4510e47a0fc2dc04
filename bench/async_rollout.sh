#!/usr/bin/env bash
# The demo GRPO step on 3 ranks in three layouts: colocated (every rank generates, then trains),
# 1 rollout + 2 trainer ranks on-policy (rollout.max_staleness 0) and one-step-off (1). Prints the
# median step time, the overlap fraction (time both roles are busy / step time), the weight-sync
# time per step and per MB (the transfer, apart from waiting for the rollout rank to be ready), and
# the time the trainers wait for a batch; the first step (warm-up, pipeline fill) is left out, and
# the last from the sync columns (nothing is sent after it). docs/training.md "Layouts" explains the model.
# Usage: bench/async_rollout.sh [STEPS] [MODEL]   (default 6, runs/demo/sft/final from `make demo`;
# without it, builtin:demo-qwen2 with a reward an untrained model varies on)
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${1:-6}
model=${2:-runs/demo/sft/final}
# Without the SFT checkpoint a random model never earns the demo's math reward: no group would carry
# signal and nothing would train, so the untrained model gets a reward that varies.
reward=()
if [ ! -d "$model" ]; then
  model=builtin:demo-qwen2
  reward=("reward.functions=[{name: language, options: {language: en, empty_score: 0.0}}]" grpo.filter_zero_std_groups=false)
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
common=(train --config configs/demo/grpo.yaml "model.path=$model" "trainer.steps=$steps" trainer.max_seconds=0
        checkpoint.every_steps=0 logging.every_steps=1000 "${reward[@]}")
for layout in colocated async0 async1; do
  extra=()
  case $layout in
    async0) extra=(trainer.rollout_ranks=1 rollout.max_staleness=0) ;;
    async1) extra=(trainer.rollout_ranks=1 rollout.max_staleness=1) ;;
  esac
  OMP_WAIT_POLICY=PASSIVE mpirun --allow-run-as-root --oversubscribe -np 3 build/launch/grpo "${common[@]}" \
    "${extra[@]}" "trainer.run_dir=$work/$layout" > "$work/$layout.log" 2>&1 || { cat "$work/$layout.log"; exit 1; }
done
python3 - "$work" <<'PY'
import json, statistics, sys
work = sys.argv[1]
print(f"{'layout':<26} {'step s':>7} {'rollout s':>9} {'train s':>8} {'wait s':>7} {'overlap':>8} {'sync s':>7} {'sync s/MB':>9} {'sync wait s':>11}")
for layout, name in [("colocated", "colocated (3 ranks)"), ("async0", "1+2, staleness 0"), ("async1", "1+2, staleness 1")]:
    rows = [json.loads(l) for l in open(f"{work}/{layout}/metrics.jsonl")]
    rows.sort(key=lambda r: r["step"])
    body = rows[1:] if len(rows) > 2 else rows
    med = lambda key: statistics.median(r.get(key, 0.0) for r in body)
    # Busy together: the trainers' train_s of step t and the rollout ranks' work on the batch they
    # sample meanwhile (batch t+1 when one step off; none otherwise).
    overlap = []
    for a, b in zip(rows[1:], rows[2:]):
        both = min(a["train_s"], b["rollout_s"] + b["reward_s"]) if layout == "async1" else 0.0
        overlap.append(both / a["step_s"])
    sync = statistics.median(r["weight_sync_s"] for r in body if r.get("weight_sync_mb", 0.0) > 0) if layout != "colocated" else 0.0
    mb = statistics.median(r.get("weight_sync_mb", 0.0) for r in body if r.get("weight_sync_mb", 0.0) > 0) if layout != "colocated" else 0.0
    per_mb = sync / mb if mb else 0.0
    print(f"{name:<26} {med('step_s'):>7.2f} {med('rollout_s') + med('reward_s'):>9.2f} {med('train_s'):>8.2f} "
          f"{med('batch_wait_s'):>7.2f} {statistics.median(overlap) if overlap else 0.0:>8.2f} {sync:>7.3f} {per_mb:>9.4f} "
          f"{med('weight_sync_wait_s'):>11.3f}")
    if mb: print(f"{'':<26} weight sync payload {mb:.2f} MB per rollout rank per step")
PY
