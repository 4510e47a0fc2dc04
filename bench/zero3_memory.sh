#!/usr/bin/env bash
# Peak RSS per rank and step time of SFT steps at ZeRO stages 0-3 (fp32) and 3 with bf16 compute,
# on a randomly initialized Qwen2-style model written as a Hugging Face directory (the demo's byte
# tokenizer; weights are a repeated random pattern: only sizes matter here). Not a test.
# Usage: bench/zero3_memory.sh [RANKS] [HIDDEN] [LAYERS] [VOCAB] [STEPS]   (default 2 512 8 32000 2)
set -euo pipefail
cd "$(dirname "$0")/.."
ranks=${1:-2}; hidden=${2:-512}; layers=${3:-8}; vocab=${4:-32000}; steps=${5:-2}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
grpo=build/launch/grpo
# The demo's tokenizer files, from a one-step SFT export.
$grpo sft --config configs/demo/sft.yaml model.path=builtin:demo-qwen2 trainer.steps=1 trainer.run_dir="$work/demo" \
  checkpoint.resume=none > /dev/null 2>&1
mkdir -p "$work/model"
cp "$work/demo/final/tokenizer.json" "$work/demo/final/tokenizer_config.json" "$work/model/"
python3 - "$work/model" "$hidden" "$layers" "$vocab" <<'PY'
import array, json, random, struct, sys
out, hidden, layers, vocab = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
heads, kv, head_dim, inter = hidden // 64, max(1, hidden // 256), 64, int(hidden * 2.75)
config = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": hidden,
          "intermediate_size": inter, "num_hidden_layers": layers, "num_attention_heads": heads,
          "num_key_value_heads": kv, "head_dim": head_dim, "vocab_size": vocab, "rms_norm_eps": 1e-6,
          "rope_theta": 10000.0, "max_position_embeddings": 512, "tie_word_embeddings": True,
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
pattern = array.array("f", [random.gauss(0, 0.02) for _ in range(4096)]).tobytes()
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
print(f"model: {offset / 4 / 1e6:.1f}M parameters")
PY
for variant in "0 float32" "1 float32" "2 float32" "3 float32" "3 bfloat16"; do
  set -- $variant
  mpirun --allow-run-as-root --oversubscribe -np "$ranks" /usr/bin/time -f "rank peak RSS %M KiB" \
    $grpo sft --config configs/demo/sft.yaml model.path="$work/model" trainer.steps="$steps" trainer.threads=1 \
    trainer.prompts_per_step=8 trainer.zero_stage="$1" trainer.param_dtype="$2" checkpoint.every_steps=0 \
    checkpoint.resume=none trainer.run_dir="$work/run_$1_$2" > "$work/log" 2>&1 || { tail "$work/log"; exit 1; }
  rss=$(grep "rank peak RSS" "$work/log" | awk '{printf "%.0f ", $4 / 1024}')
  step=$(grep -o "[0-9.]* s/step" "$work/log" | tail -1)
  echo "zero_stage $1 $2: peak RSS per rank (MiB) $rss| last $step"
done
