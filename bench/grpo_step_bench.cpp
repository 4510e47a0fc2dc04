// One GRPO training step, exactly what the plain-PyTorch baseline of issue 11 times, so the two
// can run side by side: 8 prompts x G = 8, prompt 32 + completion 128 random ids; one reference
// forward (no grad); one policy forward with selective log-softmax (log-softmax of the completion
// positions, gathered at the sampled ids); the clipped loss with the k3 KL at beta 0.04,
// token-mean; backward; AdamW. old log-probs are the policy's own, detached (one update per batch).
// Training tokens/s = rows x completion / median step time over the timed steps after warm-up.
//
// Usage: bench_grpo_step SHAPE [threads] [steps] [warmup]
//   SHAPE: demo-2.9m | DIR (a Hugging Face model directory, e.g. ../shared/fixtures/models/qwen2-tiny)

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <ATen/Parallel.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "core/heap.h"
#include "trainer/grpo_loss.h"
#include "trainer/optimizer.h"
#include "trainer/policy.h"

namespace {

using grpo::Decoder;

constexpr int64_t kPrompts = 8, kGroup = 8, kPromptLength = 32, kCompletionLength = 128;

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

// User + system CPU seconds of the process: on a machine shared with other jobs, CPU time per step
// moves less than wall time (with T threads, wall >= cpu / T).
double cpu_seconds() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_utime.tv_sec + usage.ru_stime.tv_sec + 1e-6 * (usage.ru_utime.tv_usec + usage.ru_stime.tv_usec);
}

grpo::DecoderOptions demo_shape() {  // the 2.9M shape of ../shared/notes/cpu-performance.md
  grpo::DecoderOptions o;
  o.vocab_size = 64; o.hidden_size = 256; o.intermediate_size = 688; o.num_layers = 4;
  o.num_heads = 4; o.num_kv_heads = 2; o.head_dim = 64; o.qkv_bias = true; o.tie_word_embeddings = true;
  return o;
}

Decoder make_model(const std::string& which) {
  if (which == "demo-2.9m") {
    Decoder model(demo_shape());
    at::NoGradGuard no_grad;
    for (auto& p : model->parameters()) p.normal_(0, 0.02);
    return model;
  }
  auto loaded = grpo::load_decoder(which, "float32");
  if (!loaded) {
    std::fprintf(stderr, "%s\n", loaded.status().message().c_str());
    std::exit(1);
  }
  return *loaded;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string which = argc > 1 ? argv[1] : "demo-2.9m";
  const int threads = argc > 2 ? std::atoi(argv[2]) : 2;
  const int steps = argc > 3 ? std::atoi(argv[3]) : 5;
  const int warmup = argc > 4 ? std::atoi(argv[4]) : 1;
  grpo::keep_freed_memory_in_heap();  // as the grpo executable does
  at::set_num_threads(threads);
  at::manual_seed(0);

  Decoder policy = make_model(which);
  Decoder reference = make_model(which);
  {
    at::NoGradGuard no_grad;
    auto dst = reference->parameters();
    auto src = policy->parameters();
    for (size_t i = 0; i < dst.size(); ++i) dst[i].copy_(src[i]);
  }
  policy->train();
  reference->eval();
  int64_t params = 0;
  for (const auto& p : policy->parameters()) params += p.numel();

  const int64_t rows = kPrompts * kGroup, vocab = policy->options().vocab_size;
  const at::Tensor prompt_ids = at::randint(0, vocab, {rows, kPromptLength}, at::kLong);
  const at::Tensor completion_ids = at::randint(0, vocab, {rows, kCompletionLength}, at::kLong);
  const at::Tensor prompt_mask = at::ones({rows, kPromptLength}, at::kBool);
  const at::Tensor completion_mask = at::ones({rows, kCompletionLength}, at::kBool);
  const at::Tensor rewards = at::randint(0, 2, {rows}, at::kFloat);

  grpo::OptimizerConfig adam;
  adam.lr = 1e-6;
  grpo::AdamW optimizer(policy->parameters(), adam);
  grpo::GrpoLossOptions loss_options;
  loss_options.kl.beta = 0.04;
  loss_options.kl.estimator = grpo::KlEstimator::kK3;
  loss_options.aggregation.mode = grpo::LossAggregation::kTokenMean;
  grpo::AdvantageOptions advantage_options;

  std::printf("model %s: %.2fM parameters, float32, %d thread(s); %lld prompts x G=%lld, prompt %lld + completion %lld\n",
              which.c_str(), params / 1e6, threads, (long long)kPrompts, (long long)kGroup, (long long)kPromptLength,
              (long long)kCompletionLength);
  std::vector<double> times, cpu_times;
  for (int step = 0; step < warmup + steps; ++step) {
    const double t0 = now(), c0 = cpu_seconds();
    at::Tensor ref_logp;
    {
      at::NoGradGuard no_grad;
      ref_logp = grpo::completion_logprobs(reference, prompt_ids, prompt_mask, completion_ids, completion_mask, 1.0);
    }
    const at::Tensor logp =
        grpo::completion_logprobs(policy, prompt_ids, prompt_mask, completion_ids, completion_mask, 1.0);
    grpo::GrpoLossInputs inputs;
    inputs.logp = logp;
    inputs.old_logp = logp.detach();
    inputs.ref_logp = ref_logp;
    inputs.advantages = grpo::group_advantages(rewards, kGroup, advantage_options);
    inputs.mask = completion_mask;
    const grpo::GrpoLossResult result = grpo::grpo_loss(inputs, loss_options);
    optimizer.zero_grad();
    result.loss.backward();
    optimizer.step(adam.lr);
    const double loss = result.loss.item<double>();  // the step is done when its loss is known
    const double seconds = now() - t0, cpu = cpu_seconds() - c0;
    std::printf("step %d%s: %.3f s (%.3f CPU s), loss %.6f\n", step, step < warmup ? " (warm-up)" : "", seconds, cpu, loss);
    if (step >= warmup) {
      times.push_back(seconds);
      cpu_times.push_back(cpu);
    }
  }
  std::sort(times.begin(), times.end());
  std::sort(cpu_times.begin(), cpu_times.end());
  const double median = times[times.size() / 2], median_cpu = cpu_times[cpu_times.size() / 2];
  std::printf("median step %.3f s: %.0f training tokens/s; median CPU %.3f s per step (%.0f tokens per CPU-second)\n",
              median, rows * kCompletionLength / median, median_cpu, rows * kCompletionLength / median_cpu);
  return 0;
}
