#!/usr/bin/env bash
# One pass of the GPU checks on a lent GPU machine, from the repository root, writing logs under
# $OUT (or gpu-out/), most important first: build against PyTorch's CUDA LibTorch, the GPU tests
# (kernels/cuda against their references, NCCL), bf16 decode throughput at the Qwen2.5-0.5B shape
# with the CUDA kernels off and on (GRPO_CUDA_KERNELS), GRPO runs on CUDA with them off and on
# (stage 0 fp32, stage 3 bf16), and the CPU unit/fixture suites against LibTorch 2.x.
# Needs .gpu-kit/debs (bench/gpu/build_on_gpu_host.sh; ignored by git, so a device call carries it)
# and, for fixture tests, a copy of ../shared/fixtures under shared/fixtures (shared/ travels).
# Results: docs/performance.md ("GPU"); the kernels' status: docs/models.md ("Kernels").
set -uo pipefail
out=${OUT:-gpu-out}; mkdir -p "$out"
step() { echo "=== $* ($(date +%T))"; }
# Tests find peer fixtures at ../shared (GRPO_SHARED_DIR); point it at the copy that travelled.
[ -e ../shared ] || ln -s "$PWD/shared" ../shared
step build
bash bench/gpu/build_on_gpu_host.sh .gpu-kit/debs build-gpu > "$out/build.log" 2>&1
echo "build rc=$?"; grep -E "error:|FAILED" "$out/build.log" | head -20
source build-gpu/env.sh
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
build-gpu/launch/grpo version

step "GPU tests (ctest -L gpu)"
ctest --test-dir build-gpu -L gpu --output-on-failure --timeout 240 > "$out/gpu_tests.log" 2>&1
grep -E "tests passed|Failed|Passed|\*\*\*" "$out/gpu_tests.log" | tail -25

step "bf16 decode, Qwen2.5-0.5B shape, random weights: CUDA kernels off, then on"
for kernels in 0 1; do
  GRPO_CUDA_KERNELS=$kernels GRPO_BENCH_DEVICE=cuda GRPO_BENCH_DTYPE=bfloat16 GRPO_BENCH_BASELINE_STEPS=0 \
    GRPO_BENCH_TOP_P=0.95 timeout 150 build-gpu/bench/bench_generation qwen2.5-0.5b 8 32 128 2 8 32 2>&1 |
    tee "$out/decode_kernels_$kernels.log" | tail -6
done

step "GRPO on CUDA: stage 0 fp32 with the CUDA kernels off and on, stage 3 bf16 with them on"
cat > /tmp/gpu-grpo.yaml <<'YAML'
model: {path: "builtin:demo-qwen2", device: cuda}
data: {train_path: "builtin:addition?n=256&digits=1-3&seed=5"}
rollout: {max_new_tokens: 24, temperature: 1.0}
reward: {functions: [{name: language, options: {language: en, empty_score: 0.0}}]}
grpo: {group_size: 4, updates_per_batch: 2, kl: {beta: 0.01}}
optimizer: {lr: 1.0e-3}
trainer: {steps: 4, prompts_per_step: 8, seed: 3, threads: 1, micro_batch_size: 8}
checkpoint: {every_steps: 2, resume: none}
logging: {every_steps: 1}
YAML
for variant in "0 trainer.zero_stage=0" "1 trainer.zero_stage=0" "1 trainer.zero_stage=3 trainer.param_dtype=bfloat16"; do
  kernels=${variant%% *}; overrides=${variant#* }
  log="$out/train_kernels${kernels}_$(echo $overrides | tr ' =.' '___').log"
  rm -rf /tmp/gpu-run
  GRPO_CUDA_KERNELS=$kernels timeout 120 build-gpu/launch/grpo train --config /tmp/gpu-grpo.yaml $overrides \
    trainer.run_dir=/tmp/gpu-run > "$log" 2>&1
  echo "kernels $kernels $overrides: rc=$?"; grep -E "step 4/4|error|Error" "$log" | tail -3
  python3 - "kernels $kernels $overrides" /tmp/gpu-run/metrics.jsonl <<'PY' || true
import json, sys
rows = [json.loads(l) for l in open(sys.argv[2])]
print(sys.argv[1], [(r.get("step"), round(r.get("loss", 0), 5), round(r.get("grad_norm", 0), 4), round(r.get("mismatch/logp_abs_max", -1), 6)) for r in rows])
print("  s/step", [round(r.get("step_s", 0), 3) for r in rows])
PY
done

step "std::filesystem binding (pytorch/pytorch#133437): the library a test binary's calls bind to"
bash tests/launch/libstdcxx_first_test.sh build-gpu/launch/grpo build-gpu/tests/models_test
LD_DEBUG=bindings build-gpu/tests/models_test --gtest_filter='Safetensors.*' --gtest_brief=1 2>&1 |
  grep "models_test \[0\].*_ZNSt10filesystem" | head -3 | cut -c1-240

step "CPU unit and fixture suites against LibTorch 2.x"
export OMP_WAIT_POLICY=PASSIVE
timeout 150 ctest --test-dir build-gpu --output-on-failure -L "unit|fixtures" -E "Sandbox|code_reward|code_hacking|math_grading|tokenizer|CudaEmulation" -j 16 \
  --timeout 100 > "$out/cpu_suites.log" 2>&1
grep -E "tests passed|Failed|\*\*\*" "$out/cpu_suites.log" | tail -25
step done
