#!/usr/bin/env bash
# `make demo`: set-up, build, then a miniature DeepSeek-R1 recipe from nothing on 2 MPI ranks:
#   1. cold-start SFT of a tiny Qwen2 on worked addition solutions (configs/demo/sft.yaml)
#   2. evaluate on 200 held-out 4-5 digit problems (pass@1 over 4 samples, pass@4, cons@4)
#   3. GRPO with accuracy + format rewards on fresh hard problems (configs/demo/grpo.yaml)
#   4. evaluate again, and print the before/after table
# Everything lands in runs/demo/ (metrics.jsonl, tensorboard/, samples.jsonl, checkpoints, eval.json).
# KEEP=1 keeps an earlier runs/demo and resumes where it stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/build.sh
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
grpo=build/launch/grpo
ranks=${RANKS:-2}
mpi=(mpirun -np "$ranks" --oversubscribe)
[ "$(id -u)" -eq 0 ] && mpi+=(--allow-run-as-root)
[ "${KEEP:-0}" = 1 ] || rm -rf runs/demo

start=$(date +%s)
echo "== 1/4 cold-start SFT =="
"${mpi[@]}" "$grpo" sft --config configs/demo/sft.yaml --resume auto
echo "== 2/4 evaluate the SFT model =="
"${mpi[@]}" "$grpo" eval --config configs/demo/sft.yaml model.path=runs/demo/sft/final eval.output=runs/demo/eval_sft.json
echo "== 3/4 GRPO =="
"${mpi[@]}" "$grpo" train --config configs/demo/grpo.yaml --resume auto
echo "== 4/4 evaluate the GRPO model =="
"${mpi[@]}" "$grpo" eval --config configs/demo/grpo.yaml model.path=runs/demo/grpo/final eval.output=runs/demo/eval_grpo.json
elapsed=$(( $(date +%s) - start ))

python3 - "$elapsed" <<'PY'
import json, sys
sft_run, grpo_run = json.load(open("runs/demo/eval_sft.json")), json.load(open("runs/demo/eval_grpo.json"))
before, after = sft_run["datasets"][0], grpo_run["datasets"][0]
print()
print(f"held-out 4-5 digit additions ({after['problems']} problems x {grpo_run['samples_per_problem']} samples, "
      f"temperature {grpo_run['temperature']}, top-p {grpo_run['top_p']})")
print(f"{'':14}{'pass@1':>9}{'pass@4':>9}{'cons@4':>9}{'format':>9}")
for name, r in (("after SFT", before), ("after GRPO", after)):
    print(f"{name:14}{r['pass@1']:9.3f}{r['pass@4']:9.3f}{r['cons@4']:9.3f}{r['format_ok']:9.3f}")
gain = 100 * (after["pass@1"] - before["pass@1"])
print(f"pass@1 {100*before['pass@1']:.1f}% -> {100*after['pass@1']:.1f}% ({gain:+.1f} points) in {int(sys.argv[1])} s")
json.dump({"before": before, "after": after, "seconds": int(sys.argv[1])}, open("runs/demo/summary.json", "w"), indent=2)
PY
