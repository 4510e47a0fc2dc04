// Rollout throughput: prefill and decode tokens/s of the generation engine for B prompts x G
// samples, against a baseline in the same process: the same model decoding without a KV cache
// (every step recomputes the whole sequence), which is what the cache exists to avoid.
//
// Usage: [GRPO_BENCH_G=8] [GRPO_BENCH_TOP_P=1] [GRPO_BENCH_DEVICE=cpu|cuda] [GRPO_BENCH_DTYPE=float32|bfloat16]
//        bench_generation SHAPE [threads] [prompt_len] [new_tokens] [batches...]
//   SHAPE: qwen2.5-0.5b | demo-2.9m | DIR (a Hugging Face model directory)
// "decode" is the engine's generate() of new_tokens minus its generate() of one token (prefill,
// the weights' packing for the decode kernels and the first draw), per token after each row's
// first: the decode steps alone. "prefill" is the prompts' prefill through the engine's path.
// Both run with the inference weights prepared beforehand (DecoderImpl::set_fused_inference).
// The last line is the process's peak resident memory (e.g. to show it linear in new_tokens).
// The "CPU" columns divide the same token counts by the process's CPU time (both threads) instead
// of wall time: on a machine shared with other work they move far less than the wall figures.

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <ATen/Parallel.h>
#include <sys/resource.h>
#include <time.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "core/cpu_info.h"
#include "core/heap.h"
#include "rollout/engine.h"

namespace {

using grpo::Decoder;
using grpo::DecoderOptions;

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

double cpu_now() {
  timespec t{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

DecoderOptions shape(const std::string& name) {
  DecoderOptions o;
  if (name == "qwen2.5-0.5b") {
    o.vocab_size = 151936; o.hidden_size = 896; o.intermediate_size = 4864; o.num_layers = 24;
    o.num_heads = 14; o.num_kv_heads = 2; o.head_dim = 64; o.rope_theta = 1e6; o.qkv_bias = true;
    o.tie_word_embeddings = true;
  } else {  // demo-2.9m: the shape ../shared/notes/cpu-performance.md measured HF generate on
    o.vocab_size = 64; o.hidden_size = 256; o.intermediate_size = 688; o.num_layers = 4;
    o.num_heads = 4; o.num_kv_heads = 2; o.head_dim = 64; o.qkv_bias = true; o.tie_word_embeddings = true;
  }
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string which = argc > 1 ? argv[1] : "demo-2.9m";
  const int threads = argc > 2 ? std::atoi(argv[2]) : 1;
  const int64_t prompt_len = argc > 3 ? std::atoll(argv[3]) : 32;
  const int64_t new_tokens = argc > 4 ? std::atoll(argv[4]) : 128;
  std::vector<int64_t> batches;
  for (int i = 5; i < argc; ++i) batches.push_back(std::atoll(argv[i]));
  if (batches.empty()) batches = {1, 16, 64};
  const char* group_env = std::getenv("GRPO_BENCH_G");  // samples per prompt (default 8)
  const int64_t group = group_env ? std::atoll(group_env) : 8;
  grpo::keep_freed_memory_in_heap();  // as the grpo executable does
  at::set_num_threads(threads);
  at::manual_seed(0);
  std::printf("compute: %s\n", grpo::compute_setup_line().c_str());

  Decoder model{nullptr};
  if (which == "qwen2.5-0.5b" || which == "demo-2.9m") {
    model = Decoder(shape(which));
    at::NoGradGuard no_grad;
    for (auto& p : model->parameters()) p.normal_(0, 0.02);
  } else {
    auto loaded = grpo::load_decoder(which, "float32");
    if (!loaded) {
      std::fprintf(stderr, "%s\n", loaded.status().message().c_str());
      return 1;
    }
    model = *loaded;
  }
  // GRPO_BENCH_DEVICE (cpu, cuda) and GRPO_BENCH_DTYPE (float32, bfloat16) place the model.
  const char* device_env = std::getenv("GRPO_BENCH_DEVICE");
  const char* dtype_env = std::getenv("GRPO_BENCH_DTYPE");
  const std::string device_name = device_env ? device_env : "cpu", dtype_name = dtype_env ? dtype_env : "float32";
  const at::Device device(device_name);
  model->to(device, dtype_name == "bfloat16" ? at::kBFloat16 : at::kFloat);
  int64_t params = 0;
  for (const auto& p : model->parameters()) params += p.numel();
  std::printf("model %s: %.2fM parameters, %s on %s, %d thread(s), prompt %lld + %lld new tokens, G=%lld\n",
              which.c_str(), params / 1e6, dtype_name.c_str(), device_name.c_str(), threads, (long long)prompt_len,
              (long long)new_tokens, (long long)group);
  if (!device.is_cpu()) {  // first-use costs (kernel loading, allocator) stay out of the timings
    at::NoGradGuard no_grad;
    grpo::GenerationOptions warm;
    warm.max_new_tokens = 4;
    warm.group_size = 1;
    grpo::generate(model, {std::vector<int64_t>(prompt_len, 1)}, warm, grpo::rollout_seeds(0, {0}, 1));
  }
  std::printf("%-10s %8s %14s %14s %16s %8s %18s %18s\n", "prompts", "rows", "prefill tok/s", "decode tok/s",
              "no-cache tok/s", "speedup", "prefill tok/CPU-s", "decode tok/CPU-s");

  const int64_t vocab = model->options().vocab_size;
  for (int64_t b : batches) {
    std::vector<std::vector<int64_t>> prompts;
    for (int64_t i = 0; i < b; ++i) {
      const at::Tensor ids = at::randint(1, vocab, {prompt_len}, at::kLong);
      prompts.emplace_back(ids.data_ptr<int64_t>(), ids.data_ptr<int64_t>() + prompt_len);
    }
    std::vector<uint64_t> keys(b);
    for (int64_t i = 0; i < b; ++i) keys[i] = i;
    grpo::GenerationOptions options;
    const char* top_p_env = std::getenv("GRPO_BENCH_TOP_P");  // e.g. 0.95, as the HF comparison sampled
    if (top_p_env) options.sampling.top_p = std::atof(top_p_env);
    options.max_new_tokens = new_tokens;
    options.group_size = group;
    const auto seeds = grpo::rollout_seeds(1, keys, group);

    at::NoGradGuard no_grad;
    // The engine's inference path for the whole measurement, its weights prepared (packed) once
    // beforehand, as a trainer's generate() prepares them once per policy version.
    model->set_fused_inference(true);
    model->forward(at::zeros({1, 1}, at::kLong).to(device)).sum().item<double>();
    // Prefill alone, as the engine needs it (every position's keys and values, the last position's
    // logits), to split the engine's time into prefill and decode.
    double t0 = now(), c0 = cpu_now();
    {
      at::Tensor ids = at::empty({b, prompt_len}, at::kLong);
      for (int64_t i = 0; i < b; ++i) ids[i].copy_(at::tensor(prompts[i], at::kLong));
      grpo::KvCache cache = model->make_cache(b, prompt_len + 1);
      const at::Tensor h = model->hidden(ids.to(device), at::Tensor(), &cache);
      model->logits_from_hidden(h.narrow(1, prompt_len - 1, 1)).sum().item<double>();  // waits for the device
    }
    const double prefill_s = now() - t0, prefill_cpu = cpu_now() - c0;
    grpo::GenerationOptions first_only = options;
    first_only.max_new_tokens = 1;
    t0 = now();
    c0 = cpu_now();
    grpo::generate(model, prompts, first_only, seeds);
    const double first_s = now() - t0, first_cpu = cpu_now() - c0;
    t0 = now();
    c0 = cpu_now();
    const grpo::RolloutBatch out = grpo::generate(model, prompts, options, seeds);
    const double total_s = now() - t0, total_cpu = cpu_now() - c0;
    const double decode_s = std::max(1e-9, total_s - first_s), decode_cpu = std::max(1e-9, total_cpu - first_cpu);
    const double rows = static_cast<double>(b * group);
    const double generated = std::max(1.0, out.completion_mask.sum().item<double>() - rows);
    model->set_fused_inference(false);

    // Baseline: a few steps of cache-free decoding of the same rows (full recompute per token).
    // GRPO_BENCH_BASELINE_STEPS=0 skips it (it is slow on large models by design).
    const char* steps_env = std::getenv("GRPO_BENCH_BASELINE_STEPS");
    const int64_t baseline_steps = std::min<int64_t>(new_tokens, steps_env ? std::atoll(steps_env) : 8);
    if (baseline_steps == 0) {
      std::printf("%-10lld %8lld %14.0f %14.0f %16s %8s %18.0f %18.0f\n", (long long)b, (long long)(b * group),
                  b * prompt_len / prefill_s, generated / decode_s, "-", "-", b * prompt_len / prefill_cpu,
                  generated / decode_cpu);
      std::fflush(stdout);
      continue;
    }
    at::Tensor seq = at::randint(1, vocab, {b * group, prompt_len}, at::kLong).to(device);
    t0 = now();
    for (int64_t s = 0; s < baseline_steps; ++s) {
      const at::Tensor next = model->forward(seq).select(1, -1).argmax(-1, true);
      seq = at::cat({seq, next}, 1);
    }
    seq.sum().item<int64_t>();  // waits for the device
    const double baseline_tps = rows * baseline_steps / (now() - t0);
    const double decode_tps = generated / decode_s;
    std::printf("%-10lld %8lld %14.0f %14.0f %16.0f %7.1fx %18.0f %18.0f\n", (long long)b, (long long)(b * group),
                b * prompt_len / prefill_s, decode_tps, baseline_tps, decode_tps / baseline_tps,
                b * prompt_len / prefill_cpu, generated / decode_cpu);
    std::fflush(stdout);
  }
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  std::printf("peak RSS %.0f MiB\n", usage.ru_maxrss / 1024.0);
  return 0;
}
