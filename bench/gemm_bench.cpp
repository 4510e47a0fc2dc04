// float32 matrix product throughput of the BLAS LibTorch loaded, with its error against the same
// product in float64, so that a faster kernel set (OPENBLAS_CORETYPE=...) is only trusted when it is
// as accurate as the one the library chose.
//
// Usage: [OPENBLAS_CORETYPE=Haswell] bench_gemm [M] [K] [N] [threads] [repeats]   (default 1024 2048 2048 1 5)
//
// Then the same product as a layer's inference, y = x W^T with W [N, K]: at::linear (the BLAS,
// which packs W on every call) against kernels/packed_linear (W packed once), in the same run.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "core/cpu_info.h"
#include "core/heap.h"
#include "kernels/packed_linear.h"

int main(int argc, char** argv) {
  const int64_t m = argc > 1 ? std::atoll(argv[1]) : 1024;
  const int64_t k = argc > 2 ? std::atoll(argv[2]) : 2048;
  const int64_t n = argc > 3 ? std::atoll(argv[3]) : 2048;
  const int threads = argc > 4 ? std::atoi(argv[4]) : 1;
  const int repeats = argc > 5 ? std::atoi(argv[5]) : 5;
  grpo::keep_freed_memory_in_heap();  // as the grpo executable does
  at::set_num_threads(threads);
  at::manual_seed(0);
  std::printf("compute: %s\n", grpo::compute_setup_line().c_str());

  const at::Tensor a = at::randn({m, k});
  const at::Tensor b = at::randn({k, n});
  at::Tensor c = at::mm(a, b);  // warm-up: thread pool, page faults
  std::vector<double> seconds;
  for (int r = 0; r < repeats; ++r) {
    const auto start = std::chrono::steady_clock::now();
    at::mm_out(c, a, b);
    seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  std::sort(seconds.begin(), seconds.end());
  const double median = seconds[seconds.size() / 2];
  const at::Tensor reference = at::mm(a.to(at::kDouble), b.to(at::kDouble));
  const double relative_error =
      ((c.to(at::kDouble) - reference).norm() / reference.norm()).item<double>();
  std::printf("sgemm %lldx%lldx%lld, %d thread(s): median %.2f ms, %.1f GFLOP/s (best %.1f), relative error vs float64 %.2e\n",
              (long long)m, (long long)k, (long long)n, threads, median * 1e3, 2.0 * m * k * n / median / 1e9,
              2.0 * m * k * n / seconds.front() / 1e9, relative_error);

  // Inference layout: x [M, K], W [N, K]; alternate the two so that drift hits both.
  const at::Tensor x = at::randn({m, k});
  const at::Tensor w = at::randn({n, k});
  const auto pack_start = std::chrono::steady_clock::now();
  const grpo::PackedLinear packed(w, {});
  const double pack_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - pack_start).count();
  const auto median_of = [&](auto&& body) {
    std::vector<double> s;
    for (int r = 0; r < repeats; ++r) {
      const auto start = std::chrono::steady_clock::now();
      body();
      s.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    }
    std::sort(s.begin(), s.end());
    return s[s.size() / 2];
  };
  at::Tensor y_blas = at::linear(x, w), y_packed = packed(x);  // warm-up
  double blas = 0, fast = 0;
  for (int round = 0; round < 3; ++round) {
    blas += median_of([&] { y_blas = at::linear(x, w); });
    fast += median_of([&] { y_packed = packed(x); });
  }
  const double flop = 2.0 * m * k * n * 3;
  std::printf("x W^T %lldx%lld times [%lld, %lld]: at::linear %.1f GFLOP/s, PackedLinear %.1f GFLOP/s (%s), ratio %.2f, max |diff| %.2e; packing W took %.1f ms (%.2f GB/s)\n",
              (long long)m, (long long)k, (long long)n, (long long)k, flop / blas / 1e9, flop / fast / 1e9,
              packed.packed() ? "AVX-512 kernel" : "fallback: at::linear", blas / fast,
              (y_blas - y_packed).abs().max().item<double>(), pack_s * 1e3, 4.0 * n * k / pack_s / 1e9);
  return 0;
}
