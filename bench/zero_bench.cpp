// The optimizer update of one data-parallel step at a ZeRO stage: gradient reduction, global-norm
// clipping, AdamW and (stages 1, 2) the parameter all-gather, on a model-sized set of parameters.
// Prints the update time and this rank's optimizer-state bytes and peak RSS; bench/zero_stages.sh
// runs the three stages under mpirun and prints their ratios to stage 0.
// Usage: mpirun -np 2 build/bench/bench_zero STAGE [MILLION_PARAMETERS] [STEPS]

#include <sys/resource.h>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>

#include "core/cpu_info.h"
#include "core/heap.h"
#include "dist/communicator.h"
#include "trainer/distributed_optimizer.h"

int main(int argc, char** argv) {
  using namespace grpo;
  const int stage = argc > 1 ? std::atoi(argv[1]) : 0;
  const double millions = argc > 2 ? std::atof(argv[2]) : 50;
  const int steps = argc > 3 ? std::atoi(argv[3]) : 10;
  at::set_num_threads(1);
  keep_freed_memory_in_heap();  // as the grpo executable does
  Communicator& comm = world();
  if (comm.rank() == 0) std::printf("compute: %s\n", compute_setup_line().c_str());
  // Decoder-like tensors: 24 blocks of (4 x d*d) plus an embedding, about `millions` in all.
  const auto total = static_cast<int64_t>(millions * 1e6);
  const int64_t d = 512, per_block = 4 * d * d, blocks = std::max<int64_t>(1, total / per_block / 2);
  std::vector<at::Tensor> params;
  for (int64_t b = 0; b < blocks; ++b) params.push_back(at::randn({4 * d, d}).set_requires_grad(true));
  params.push_back(at::randn({std::max<int64_t>(1, total - blocks * per_block) / d, d}).set_requires_grad(true));
  int64_t numel = 0;
  for (const at::Tensor& p : params) numel += p.numel();

  OptimizerConfig options;
  options.max_grad_norm = 1.0;
  DistributedAdamW optimizer(params, options, comm, stage);
  double seconds = 0;
  for (int step = 0; step <= steps; ++step) {
    for (at::Tensor& p : params) p.mutable_grad() = at::full_like(p, 1e-3 * (comm.rank() + 1));
    comm.barrier();
    const auto start = std::chrono::steady_clock::now();
    optimizer.step(1e-4);
    comm.barrier();
    if (step > 0) seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();  // step 0 warms up
  }
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  std::printf("rank %d: zero_stage %d, %.1fM parameters, update %.1f ms/step, optimizer state %.0f MiB, peak RSS %.0f MiB\n",
              comm.rank(), stage, numel / 1e6, 1e3 * seconds / steps,
              2.0 * optimizer.state_numel() * 4 / (1 << 20), usage.ru_maxrss / 1024.0);
  shutdown_world();
  return 0;
}
