#!/usr/bin/env bash
# The demo's SFT -> eval -> GRPO -> eval (configs/demo/pipeline.yaml's first four stages) over several
# seeds, then one table of held-out pass@1 per seed. Not a CI test: about 6 minutes per seed on an
# idle 2-core machine.
#   bash bench/demo_seeds.sh            # seeds 1 2 3, 2 ranks, into runs/demo_seeds/
#   SEEDS="1 2 3 4" RANKS=2 bash bench/demo_seeds.sh
# Each seed sets trainer.seed of both training stages (data order, sampling, initialization); a
# seed's directory that is already complete is skipped, so an interrupted sweep continues.
set -euo pipefail
cd "$(dirname "$0")/.."
grpo=${GRPO:-build/launch/grpo}
seeds=${SEEDS:-1 2 3}
out=${OUT:-runs/demo_seeds}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
mkdir -p "$out"
demo=$(pwd)/configs/demo
for seed in $seeds; do
  cat > "$out/pipeline-seed-$seed.yaml" <<YAML
run_dir: $out/seed-$seed
ranks: ${RANKS:-2}
stages:
  - {name: sft, verb: sft, config: $demo/sft.yaml, set: {trainer.seed: $seed}}
  - {name: eval_sft, verb: eval, config: $demo/sft.yaml, set: {model.path: "\${sft.final}"}}
  - {name: grpo, verb: train, config: $demo/grpo.yaml, set: {model.path: "\${sft.final}", trainer.seed: $((seed + 1))}}
  - {name: eval_grpo, verb: eval, config: $demo/grpo.yaml, set: {model.path: "\${grpo.final}"}}
YAML
  "$grpo" pipeline --config "$out/pipeline-seed-$seed.yaml"
done

python3 - "$out" $seeds <<'PY'
import json, sys
out, seeds = sys.argv[1], sys.argv[2:]
print(f"\n{'seed':>6}{'SFT pass@1':>12}{'GRPO pass@1':>13}{'gain':>8}{'minutes':>9}")
gains = []
for seed in seeds:
    summary = json.load(open(f"{out}/seed-{seed}/summary.json"))
    m = {s["name"]: s["metrics"] for s in summary["stages"]}
    before, after = m["eval_sft"]["eval/pass@1"], m["eval_grpo"]["eval/pass@1"]
    gains.append(100 * (after - before))
    minutes = sum(s.get("verb_seconds") or s["seconds"] for s in summary["stages"]) / 60  # the verbs' own time
    print(f"{seed:>6}{100*before:11.1f}%{100*after:12.1f}%{gains[-1]:+8.1f}{minutes:9.1f}")
print(f"gain over {len(gains)} seeds: mean {sum(gains)/len(gains):+.1f} points, min {min(gains):+.1f}")
PY
