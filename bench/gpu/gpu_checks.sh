#!/usr/bin/env bash
# One pass of the GPU checks on a lent GPU machine, from the repository root, writing logs under
# $OUT (or gpu-out/): build against PyTorch's CUDA LibTorch, the GPU tests, a stage-3 bf16 GRPO
# run on CUDA, bf16 decode throughput at the Qwen2.5-0.5B shape, and the CPU unit/fixture suites
# against LibTorch 2.x. Needs .gpu-kit/debs (bench/gpu/build_on_gpu_host.sh) and, for fixture
# tests, a copy of ../shared/fixtures under shared/fixtures. Results: docs/performance.md.
set -uo pipefail
out=${OUT:-gpu-out}; mkdir -p "$out"
step() { echo "=== $* ($(date +%T))"; }
step build
bash bench/gpu/build_on_gpu_host.sh .gpu-kit/debs build-gpu > "$out/build.log" 2>&1
echo "build rc=$?"; grep -E "error:|FAILED" "$out/build.log" | head -20
source build-gpu/env.sh
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
build-gpu/launch/grpo version

step "GPU tests (ctest -L gpu)"
ctest --test-dir build-gpu -L gpu --output-on-failure --timeout 240 > "$out/gpu_tests.log" 2>&1
grep -E "tests passed|Failed|Passed|\*\*\*" "$out/gpu_tests.log" | tail -25

step "GRPO on CUDA, ZeRO-3, bf16 parameters"
demo="model.path=builtin:demo-qwen2 model.device=cuda data.train_path=builtin:addition?n=256&digits=1-3&seed=5 \
  trainer.steps=4 trainer.prompts_per_step=16 checkpoint.every_steps=2 logging.every_steps=1 trainer.max_seconds=0"
for variant in "trainer.zero_stage=0 trainer.param_dtype=float32" "trainer.zero_stage=3 trainer.param_dtype=bfloat16"; do
  rm -rf /tmp/gpu-run
  timeout 180 build-gpu/launch/grpo train --config configs/demo/grpo.yaml $demo $variant trainer.run_dir=/tmp/gpu-run \
    > "$out/train_$(echo $variant | tr ' =.' '___').log" 2>&1
  echo "$variant: rc=$?"; tail -4 "$out/train_$(echo $variant | tr ' =.' '___').log"
done

step "bf16 decode, Qwen2.5-0.5B shape, random weights"
GRPO_BENCH_DEVICE=cuda GRPO_BENCH_DTYPE=bfloat16 GRPO_BENCH_BASELINE_STEPS=0 timeout 200 \
  build-gpu/bench/bench_generation qwen2.5-0.5b 8 32 128 2 8 32 2>&1 | tee "$out/decode.log" | tail -8

step "CPU unit and fixture suites against LibTorch 2.x"
export GRPO_LOSS_FIXTURES=$PWD/shared/fixtures/grpo GRPO_OFFPOLICY_FIXTURES=$PWD/shared/fixtures/grpo_offpolicy \
  GRPO_MODEL_FIXTURES=$PWD/shared/fixtures/models OMP_WAIT_POLICY=PASSIVE
timeout 240 ctest --test-dir build-gpu -L "unit|fixtures" -E "sandbox|code_reward|math_grading|tokenizer" -j 16 \
  --timeout 120 > "$out/cpu_suites.log" 2>&1
grep -E "tests passed|Failed|\*\*\*" "$out/cpu_suites.log" | tail -25
step done
