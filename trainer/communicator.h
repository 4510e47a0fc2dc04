#pragma once
// Collective operations between ranks. The MPI implementation moves CPU tensors; with one process
// (no launcher) every operation is local. A CUDA build would add an NCCL implementation whose id is
// broadcast over MPI; this build has none (docs/architecture.md).
// Lives in trainer/, not core/, because it moves tensors and core stays free of LibTorch.

#include <cstdint>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

namespace grpo {

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // In place over every rank: sum of a contiguous CPU float/double tensor.
  virtual void all_reduce_sum(at::Tensor& tensor) = 0;
  virtual void all_reduce_sum(std::vector<double>& values) = 0;
  virtual void broadcast(at::Tensor& tensor, int root) = 0;
  // Concatenation of every rank's `local` (same shape on every rank) along a new first dim.
  virtual at::Tensor all_gather(const at::Tensor& local) = 0;
  // Each rank keeps its 1/size slice of the sum (the FSDP gradient step); numel divisible by size.
  virtual at::Tensor reduce_scatter_sum(const at::Tensor& tensor) = 0;
  virtual void barrier() = 0;
  // Ends every rank of the job now (after the caller logged why); never returns.
  [[noreturn]] virtual void abort(int exit_code) = 0;
};

// The process-wide communicator: MPI when started by mpirun/srun (initialized on first use),
// else a single rank.
Communicator& world();
// Finalizes MPI if it was initialized (call once, at the end of main).
void shutdown_world();

}  // namespace grpo
