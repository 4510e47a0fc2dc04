// Peak memory and time of one kernel configuration, forward + backward, in a fresh process (run
// it once per configuration: peak RSS only grows). bench/kernels_memory.sh sweeps the table of
// docs/performance.md.
// Usage: bench_kernels logprobs chunked|plain TOKENS VOCAB HIDDEN
//        bench_kernels attention blockwise|bias LENGTH HEADS KV_HEADS HEAD_DIM
// Prints one JSON line: wall and CPU (user + sys) time of forward + backward, peak RSS and peak
// RSS above the inputs. On a shared machine the CPU time is the steadier figure.

#include <sys/resource.h>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/autograd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <limits>
#include <string>

#include "core/cpu_info.h"
#include "core/heap.h"
#include "kernels/attention.h"
#include "kernels/token_logprobs.h"

namespace {

double peak_rss_mib() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) / 1024.0;
}

double cpu_seconds() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
         1e-6 * static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec);
}

double current_rss_mib() {
  std::ifstream statm("/proc/self/statm");
  long pages = 0, resident = 0;
  statm >> pages >> resident;
  return static_cast<double>(resident) * 4096.0 / (1024.0 * 1024.0);
}

// Today's attention before kernels/attention: full scores plus a [B, 1, T, S] additive bias.
at::Tensor bias_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  const int64_t b = q.size(0), h = q.size(1), t = q.size(2), d = q.size(3), kv = k.size(1);
  const at::Tensor causal = at::arange(t).unsqueeze(0) <= at::arange(t).unsqueeze(1);
  const at::Tensor bias = at::where(causal, at::zeros({}), at::full({}, std::numeric_limits<float>::lowest()))
                              .view({1, 1, t, t})
                              .expand({b, 1, t, t})
                              .contiguous();
  const at::Tensor scores =
      at::matmul(q.reshape({b, kv, (h / kv) * t, d}), k.transpose(2, 3)).view({b, h, t, t}) / std::sqrt(double(d)) + bias;
  const at::Tensor probs = at::softmax(scores, -1, at::kFloat);
  return at::matmul(probs.view({b, kv, (h / kv) * t, t}), v).view({b, h, t, d});
}

}  // namespace

int main(int argc, char** argv) {
  grpo::keep_freed_memory_in_heap();  // as the grpo executable does
  using namespace grpo;
  if (argc < 6) {
    std::fprintf(stderr, "usage: %s logprobs chunked|plain TOKENS VOCAB HIDDEN\n"
                         "       %s attention blockwise|bias LENGTH HEADS KV_HEADS HEAD_DIM\n", argv[0], argv[0]);
    return 2;
  }
  const std::string op = argv[1], impl = argv[2];
  std::printf("compute: %s\n", compute_setup_line().c_str());
  at::manual_seed(0);
  double inputs_mib = 0, cpu_start = 0;
  std::chrono::steady_clock::time_point start;
  if (op == "logprobs") {
    const int64_t tokens = std::atoll(argv[3]), vocab = std::atoll(argv[4]), hidden_size = std::atoll(argv[5]);
    const at::Tensor hidden = at::randn({tokens, hidden_size}).requires_grad_(true);
    const at::Tensor weight = (at::randn({vocab, hidden_size}) * 0.05).requires_grad_(true);
    const at::Tensor targets = at::randint(vocab, {tokens}, at::kLong);
    inputs_mib = current_rss_mib();
    start = std::chrono::steady_clock::now();
    cpu_start = cpu_seconds();
    TokenLogprobsOptions options;
    options.temperature = 0.9;
    const TokenLogprobs out = impl == "plain" ? token_logprobs_unchunked(hidden, weight, targets, {}, options)
                                              : token_logprobs(hidden, weight, targets, {}, options);
    (out.logprobs.sum() + 0.01 * out.entropy.sum()).backward();
  } else if (op == "attention" && argc >= 7) {
    const int64_t length = std::atoll(argv[3]), heads = std::atoll(argv[4]), kv = std::atoll(argv[5]),
                  head_dim = std::atoll(argv[6]);
    const at::Tensor q = at::randn({1, heads, length, head_dim}).requires_grad_(true);
    const at::Tensor k = at::randn({1, kv, length, head_dim}).requires_grad_(true);
    const at::Tensor v = at::randn({1, kv, length, head_dim}).requires_grad_(true);
    inputs_mib = current_rss_mib();
    start = std::chrono::steady_clock::now();
    cpu_start = cpu_seconds();
    const at::Tensor out = impl == "bias" ? bias_attention(q, k, v) : attention_reference(q, k, v, {}, 0);
    out.sum().backward();
  } else {
    std::fprintf(stderr, "unknown op '%s' (logprobs, attention)\n", op.c_str());
    return 2;
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const double peak = peak_rss_mib();
  std::printf("{\"op\": \"%s\", \"impl\": \"%s\", \"args\": \"%s %s %s%s%s\", \"seconds\": %.3f, \"cpu_seconds\": %.3f, "
              "\"peak_rss_mib\": %.0f, \"peak_above_inputs_mib\": %.0f, \"threads\": %d}\n",
              op.c_str(), impl.c_str(), argv[3], argv[4], argv[5], argc > 6 ? " " : "", argc > 6 ? argv[6] : "",
              seconds, cpu_seconds() - cpu_start, peak, peak - inputs_mib, at::get_num_threads());
  return 0;
}
