// Time of one sampling step (filters + draw + the sampled tokens' log-probs) on [rows, vocab]
// logits, against the previous sampler written inline: a float64 softmax, a full-vocabulary sort
// for top-p, a float64 CDF and a [rows, vocab] log-softmax; and the engine's draw
// (sample_tokens_with_logprobs: kernels/token_sampling.h where it applies) against the ATen chain.
//
// Usage: bench_sampler [rows] [vocab] [threads] [top_p] [iterations] [top_k]
// (top_k, default 0 = off, applies to the chain and the engine's draw; the previous sampler had none.)

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "core/heap.h"
#include "rollout/sampler.h"

namespace {

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

// The sampler before issue 11, top-p only.
at::Tensor previous_sampler(const at::Tensor& logits, double top_p, const at::Tensor& uniforms, at::Tensor* logp) {
  at::Tensor probs = at::softmax(logits.to(at::kDouble), -1);
  auto [sorted, order] = probs.sort(-1, /*descending=*/true);
  const at::Tensor before = sorted.cumsum(-1) - sorted;
  const at::Tensor drop_sorted = before >= top_p * sorted.sum(-1, true);
  probs = probs.masked_fill(at::zeros_like(drop_sorted).scatter(-1, order, drop_sorted), 0.0);
  probs = probs / probs.sum(-1, true);
  const at::Tensor cdf = probs.cumsum(-1);
  const at::Tensor tokens =
      at::searchsorted(cdf, uniforms.unsqueeze(1), false, true).squeeze(1).clamp_max(probs.size(-1) - 1);
  *logp = at::log_softmax(logits, -1).gather(1, tokens.unsqueeze(1)).squeeze(1);
  return tokens;
}

}  // namespace

int main(int argc, char** argv) {
  const int64_t rows = argc > 1 ? std::atoll(argv[1]) : 16;
  const int64_t vocab = argc > 2 ? std::atoll(argv[2]) : 151936;
  const int threads = argc > 3 ? std::atoi(argv[3]) : 2;
  const double top_p = argc > 4 ? std::atof(argv[4]) : 0.95;
  const int iterations = argc > 5 ? std::atoi(argv[5]) : 20;
  const int64_t top_k = argc > 6 ? std::atoll(argv[6]) : 0;
  grpo::keep_freed_memory_in_heap();  // as the grpo executable does
  at::set_num_threads(threads);
  at::manual_seed(0);
  const at::Tensor logits = 3 * at::randn({rows, vocab});
  grpo::SamplingOptions options;
  options.top_p = top_p;
  options.top_k = top_k;
  std::vector<double> previous, current, engine;
  for (int i = 0; i < iterations; ++i) {
    const at::Tensor uniforms = at::rand({rows}, at::kDouble);
    double t0 = now();
    at::Tensor logp;
    previous_sampler(logits, top_p, uniforms, &logp);
    previous.push_back(now() - t0);
    t0 = now();
    const at::Tensor tokens = grpo::sample_next_tokens(logits, options, uniforms);
    grpo::sampling_logprobs(logits, tokens, 1.0);
    current.push_back(now() - t0);
    t0 = now();
    grpo::sample_tokens_with_logprobs(logits, options, uniforms);
    engine.push_back(now() - t0);
  }
  std::sort(previous.begin(), previous.end());
  std::sort(current.begin(), current.end());
  std::sort(engine.begin(), engine.end());
  const double p = previous[previous.size() / 2] * 1e3, c = current[current.size() / 2] * 1e3,
               e = engine[engine.size() / 2] * 1e3;
  std::printf("sampling [%lld x %lld], top_k %lld, top_p %.2f, %d thread(s): previous (no top-k) %.2f ms, ATen chain "
              "%.2f ms (%.1fx), engine's draw %.2f ms (%.1fx the chain), medians of %d\n",
              (long long)rows, (long long)vocab, (long long)top_k, top_p, threads, p, c, p / c, e, c / e, iterations);
  return 0;
}
