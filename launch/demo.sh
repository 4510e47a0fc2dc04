#!/usr/bin/env bash
# `make demo`: set-up, build, then the miniature DeepSeek-R1 recipe as one pipeline on 2 MPI ranks
# (configs/demo/pipeline.yaml):
#   1. cold-start SFT of a tiny Qwen2 on worked addition solutions, 2. eval on 200 held-out 4-5 digit
#   problems (pass@1 over 4 samples, pass@4, cons@4), 3. GRPO with accuracy + format rewards on fresh
#   hard problems (a fixed number of steps), 4. eval, 5. rejection sampling from the GRPO model,
#   6. SFT of a fresh student on the kept samples, 7. eval; then one table.
# Everything lands in runs/demo/<stage>/ and runs/demo/summary.json.
# KEEP=1 keeps an earlier runs/demo: complete stages are skipped, an interrupted one resumes.
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/build.sh
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
[ "${KEEP:-0}" = 1 ] || rm -rf runs/demo

build/launch/grpo pipeline --config configs/demo/pipeline.yaml ranks="${RANKS:-2}"

python3 - <<'PY'
import json
summary = json.load(open("runs/demo/summary.json"))
stages = {s["name"]: s for s in summary["stages"]}
rows = [("after SFT", "eval_sft"), ("after GRPO", "eval_grpo"), ("student", "eval_student")]
print("\nheld-out 4-5 digit additions (200 problems x 4 samples, temperature 0.6, top-p 0.95)")
print(f"{'':14}{'pass@1':>9}{'pass@4':>9}{'cons@4':>9}{'format':>9}")
for label, name in rows:
    m = stages[name]["metrics"]
    print(f"{label:14}{m['eval/pass@1']:9.3f}{m['eval/pass@4']:9.3f}{m['eval/cons@4']:9.3f}{m['eval/format']:9.3f}")
before, after = stages["eval_sft"]["metrics"]["eval/pass@1"], stages["eval_grpo"]["metrics"]["eval/pass@1"]
student = stages["eval_student"]["metrics"]["eval/pass@1"]
print(f"pass@1 {100*before:.1f}% -> {100*after:.1f}% ({100*(after-before):+.1f} points) after "
      f"{stages['grpo']['metrics']['last_step']} GRPO steps; the student distilled from the GRPO model: "
      f"{100*student:.1f}%; {summary['seconds']:.0f} s for the stages run this time")
PY
