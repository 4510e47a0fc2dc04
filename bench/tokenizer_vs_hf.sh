#!/usr/bin/env bash
# Encode throughput of grpo-cpp's tokenizer and Hugging Face tokenizers on one corpus, one thread.
# Usage: bench/tokenizer_vs_hf.sh [TOKENIZER_DIR]   (default ../shared/fixtures/tokenizers/qwen3)
# Installs the npm package `tokenizers` into build/bench-node on first use.
set -euo pipefail
cd "$(dirname "$0")/.."
tokenizer_dir=${1:-../shared/fixtures/tokenizers/qwen3}
corpus=build/bench-corpus.jsonl
python3 - "$corpus" <<'PY'
import json, sys
out = open(sys.argv[1], "w")
def walk(v):
    if isinstance(v, str): out.write(json.dumps(v) + "\n")
    elif isinstance(v, dict): [walk(x) for x in v.values()]
    elif isinstance(v, list): [walk(x) for x in v]
for path in ["../shared/data/gsm8k/test.jsonl", "../shared/data/math500/test.jsonl",
             "../shared/data/humaneval/HumanEval.jsonl"]:
    for line in open(path):
        if line.strip(): walk(json.loads(line))
PY
ours=$(OMP_NUM_THREADS=1 build/bench/bench_tokenizer "$tokenizer_dir" "$corpus")
echo "$ours"
if [ ! -d build/bench-node/node_modules/tokenizers ]; then
  npm install --silent --prefix build/bench-node tokenizers@0.23.2 >/dev/null
fi
theirs=$(NODE_PATH=build/bench-node/node_modules node bench/tokenizer_hf.js "$tokenizer_dir" "$corpus")
echo "$theirs"
a=$(echo "$ours" | sed -n 's/^encode, cold cache: \([0-9.]*\) MB.*/\1/p')
b=$(echo "$theirs" | sed -n 's/^hf tokenizers encode: \([0-9.]*\) MB.*/\1/p')
python3 -c "print(f'ratio grpo-cpp / hf tokenizers (cold cache): {float(\"$a\")/float(\"$b\"):.2f}')"
