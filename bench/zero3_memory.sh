#!/usr/bin/env bash
# Peak RSS per rank, step time and stage 3's all-gather / reduce-scatter time of one SFT step and
# one GRPO step at ZeRO stages 0-3, fp32 and bf16, on a randomly initialized Qwen2-style model
# written as a Hugging Face directory (the demo's byte tokenizer; the weights are a repeated random
# pattern: only sizes matter here). Not a test. "bf16" means model.dtype=bfloat16 at stages 0-2 (bf16
# parameters, gradients and moments) and trainer.param_dtype=bfloat16 at stage 3 (fp32 master shards
# and moments, bf16 gathered parameters).
# Usage: bench/zero3_memory.sh [SHAPE] [RANKS] [ROWS]
#   SHAPE: qwen2.5-0.5b (default: hidden 896, 24 layers, vocab 151,936, 494M parameters) or
#          small (hidden 512, 8 layers, vocab 32,000)
#   ROWS:  "VERB:STAGE:DTYPE ..." (default: sft and train at stages 0-3, float32 and bfloat16)
# A watchdog stops a row whose ranks together exceed GRPO_BENCH_CAP_GIB (default: the memory
# available at the start less 3 GiB) so that a row that cannot fit does not take the machine down.
set -euo pipefail
cd "$(dirname "$0")/.."
shape=${1:-qwen2.5-0.5b}; ranks=${2:-2}
rows=${3:-"sft:0:float32 sft:1:float32 sft:2:float32 sft:3:float32 sft:0:bfloat16 sft:1:bfloat16 sft:2:bfloat16 sft:3:bfloat16
train:0:float32 train:1:float32 train:2:float32 train:3:float32 train:0:bfloat16 train:1:bfloat16 train:2:bfloat16 train:3:bfloat16"}
available_kib=$(awk '/MemAvailable/ {print $2}' /proc/meminfo)
cap_kib=$(( ${GRPO_BENCH_CAP_GIB:-$(( available_kib / 1048576 - 3 ))} * 1048576 ))
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
grpo=$PWD/build/launch/grpo
# The demo's tokenizer files, from a one-step SFT export.
$grpo sft --config configs/demo/sft.yaml model.path=builtin:demo-qwen2 trainer.steps=1 trainer.run_dir="$work/demo" \
  checkpoint.resume=none > /dev/null 2>&1
mkdir -p "$work/model"
cp "$work/demo/final/tokenizer.json" "$work/demo/final/tokenizer_config.json" "$work/model/"
python3 - "$work/model" "$shape" <<'PY'
import array, json, random, struct, sys
out, shape = sys.argv[1], sys.argv[2]
if shape == "qwen2.5-0.5b":  # Qwen/Qwen2.5-0.5B's config.json
    hidden, inter, layers, heads, kv, head_dim, vocab, theta = 896, 4864, 24, 14, 2, 64, 151936, 1000000.0
elif shape == "small":
    hidden, inter, layers, heads, kv, head_dim, vocab, theta = 512, 1408, 8, 8, 2, 64, 32000, 10000.0
else:
    sys.exit(f"unknown shape {shape} (qwen2.5-0.5b, small)")
config = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": hidden,
          "intermediate_size": inter, "num_hidden_layers": layers, "num_attention_heads": heads,
          "num_key_value_heads": kv, "head_dim": head_dim, "vocab_size": vocab, "rms_norm_eps": 1e-6,
          "rope_theta": theta, "max_position_embeddings": 512, "tie_word_embeddings": True,
          "torch_dtype": "float32", "eos_token_id": 260, "hidden_act": "silu"}
json.dump(config, open(f"{out}/config.json", "w"))
shapes = {"model.embed_tokens.weight": [vocab, hidden], "model.norm.weight": [hidden]}
for i in range(layers):
    p = f"model.layers.{i}."
    shapes.update({p + "self_attn.q_proj.weight": [heads * head_dim, hidden], p + "self_attn.q_proj.bias": [heads * head_dim],
                   p + "self_attn.k_proj.weight": [kv * head_dim, hidden], p + "self_attn.k_proj.bias": [kv * head_dim],
                   p + "self_attn.v_proj.weight": [kv * head_dim, hidden], p + "self_attn.v_proj.bias": [kv * head_dim],
                   p + "self_attn.o_proj.weight": [hidden, heads * head_dim],
                   p + "mlp.gate_proj.weight": [inter, hidden], p + "mlp.up_proj.weight": [inter, hidden],
                   p + "mlp.down_proj.weight": [hidden, inter],
                   p + "input_layernorm.weight": [hidden], p + "post_attention_layernorm.weight": [hidden]})
random.seed(0)
pattern = array.array("f", [random.gauss(0, 0.02) for _ in range(1 << 16)]).tobytes()
header, offset = {}, 0
for name, shape in shapes.items():
    n = 1
    for d in shape: n *= d
    header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + 4 * n]}
    offset += 4 * n
text = json.dumps(header).encode()
text += b" " * (-len(text) % 8)
with open(f"{out}/model.safetensors", "wb") as f:
    f.write(struct.pack("<Q", len(text)) + text)
    for name, shape in shapes.items():
        left = header[name]["data_offsets"][1] - header[name]["data_offsets"][0]
        while left > 0:
            chunk = pattern[: min(left, len(pattern))]
            f.write(chunk); left -= len(chunk)
print(f"model {sys.argv[2]}: {offset / 4 / 1e6:.1f}M parameters")
PY
# One short step each: 2 prompts (one per rank); GRPO samples 2 x 16 tokens per prompt with a
# reward that varies for an untrained model, and no KL term (no reference model).
cat > "$work/grpo.yaml" <<'YAML'
data: {train_path: "builtin:addition?n=64&digits=1-3&seed=5"}
rollout: {max_new_tokens: 16, temperature: 1.0}
reward: {functions: [{name: language, options: {language: en, empty_score: 0.0}}]}
grpo: {group_size: 2, kl: {beta: 0.0}}
optimizer: {lr: 1.0e-5}
trainer: {steps: 1, prompts_per_step: 2, seed: 3, threads: 1}
checkpoint: {every_steps: 0, resume: none}
YAML
cat > "$work/sft.yaml" <<'YAML'
data: {train_path: "builtin:addition?n=64&digits=1-3&seed=5"}
optimizer: {lr: 1.0e-5}
trainer: {steps: 1, prompts_per_step: 2, seed: 3, threads: 1}
checkpoint: {every_steps: 0, resume: none}
YAML
echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), $ranks ranks, cap $((cap_kib / 1048576)) GiB"
echo "| step | stage | dtype | peak RSS per rank (MiB) | step s | all-gather s | reduce-scatter s |"
echo "|---|---|---|---|---|---|---|"
for row in $rows; do
  IFS=: read -r verb stage dtype <<< "$row"
  if [ "$stage" = 3 ]; then precision="model.dtype=float32 trainer.param_dtype=$dtype"; else precision="model.dtype=$dtype"; fi
  config=$work/grpo.yaml; [ "$verb" = sft ] && config=$work/sft.yaml
  run_dir=$work/run_${verb}_${stage}_${dtype}
  # The export at the end is not part of a step; only the step's own figures are read below.
  mpirun --allow-run-as-root --oversubscribe -np "$ranks" /usr/bin/time -f "rank peak RSS %M KiB" \
    "$grpo" "$verb" --config "$config" model.path="$work/model" trainer.zero_stage="$stage" $precision \
    trainer.run_dir="$run_dir" > "$work/log" 2>&1 &
  launcher=$!
  status=""
  while kill -0 "$launcher" 2> /dev/null; do
    total=$(ps -eo rss=,args= | grep -F "trainer.run_dir=$run_dir" | grep -v -e grep -e mpirun -e /usr/bin/time | awk '{s += $1} END {print s + 0}' || true)
    if [ "$total" -gt "$cap_kib" ]; then
      status="stopped: the ranks together passed $((cap_kib / 1048576)) GiB"
      kill "$launcher"
      break
    fi
    sleep 1
  done
  wait "$launcher" || [ -n "$status" ] || status="failed: $(grep -m1 -i error "$work/log" | cut -c1-120)"
  if [ -n "$status" ]; then
    echo "| $verb | $stage | $dtype | $status | | | |"
    continue
  fi
  rss=$(grep "rank peak RSS" "$work/log" | awk '{printf "%s%.0f", (n++ ? " / " : ""), $4 / 1024}' || true)
  read -r step gather scatter < <(python3 -c '
import json, sys
m = [json.loads(l) for l in open(sys.argv[1])][-1]
f = lambda k: f"{m[k]:.1f}" if k in m else "-"
print(f("step_s"), f("zero3_gather_s"), f("zero3_reduce_scatter_s"))' "$run_dir/metrics.jsonl")
  echo "| $verb | $stage | $dtype | $rss | $step | $gather | $scatter |"
done
