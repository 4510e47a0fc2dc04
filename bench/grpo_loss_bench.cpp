// Throughput of grpo_loss forward + backward on a GRPO-sized batch (tokens/s), against a
// baseline in the same process: the plain token-mean PPO loss written inline with no masking
// care, which is the least work any implementation must do.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>

#include "core/cpu_info.h"
#include "core/heap.h"
#include "trainer/grpo_loss.h"

namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

int main(int argc, char** argv) {
  const int64_t n = argc > 1 ? std::atoll(argv[1]) : 256;   // sequences (e.g. 32 prompts x G=8)
  const int64_t t = argc > 2 ? std::atoll(argv[2]) : 1024;  // response tokens
  const int iterations = argc > 3 ? std::atoi(argv[3]) : 20;
  grpo::keep_freed_memory_in_heap();  // as the grpo executable does
  at::set_num_threads(1);
  at::manual_seed(0);
  std::printf("compute: %s\n", grpo::compute_setup_line().c_str());
  const at::Tensor base = -at::rand({n, t}) * 3;
  const at::Tensor old_logp = base + 0.1 * at::randn({n, t});
  const at::Tensor ref_logp = base + 0.1 * at::randn({n, t});
  const at::Tensor mask = at::arange(t).unsqueeze(0) < at::randint(1, t + 1, {n, 1});
  const at::Tensor advantages = at::randn({n});

  auto time_it = [&](auto&& body) {
    body();  // warm-up
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < iterations; ++i) body();
    return seconds_since(start) / iterations;
  };

  grpo::GrpoLossOptions options;
  options.kl.beta = 0.04;
  const double grpo_s = time_it([&] {
    grpo::GrpoLossInputs in;
    in.logp = base.clone().set_requires_grad(true);
    in.old_logp = old_logp;
    in.ref_logp = ref_logp;
    in.advantages = advantages;
    in.mask = mask;
    grpo::grpo_loss(in, options).loss.backward();
  });
  const double baseline_s = time_it([&] {
    at::Tensor logp = base.clone().set_requires_grad(true);
    const at::Tensor m = mask.to(at::kFloat);
    const at::Tensor ratio = (logp - old_logp).exp();
    const at::Tensor a = advantages.unsqueeze(1);
    const at::Tensor pg = at::maximum(-a * ratio, -a * ratio.clamp(0.8, 1.2));
    const at::Tensor d = ref_logp - logp;
    const at::Tensor kl = d.exp() - d - 1;
    (((pg + 0.04 * kl) * m).sum() / m.sum()).backward();
  });
  const double tokens = static_cast<double>(n * t);
  std::printf("grpo_loss fwd+bwd  [%lld x %lld]: %8.2f ms  %7.1f Mtok/s\n", (long long)n, (long long)t, grpo_s * 1e3,
              tokens / grpo_s / 1e6);
  std::printf("inline PPO baseline [%lld x %lld]: %8.2f ms  %7.1f Mtok/s\n", (long long)n, (long long)t,
              baseline_s * 1e3, tokens / baseline_s / 1e6);
  std::printf("ratio grpo_loss / baseline time: %.2f\n", grpo_s / baseline_s);
  return 0;
}
