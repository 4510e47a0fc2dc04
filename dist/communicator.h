#pragma once
// Collective operations between ranks. The MPI implementation moves CPU tensors (and stages any
// other device's tensors through host memory); bf16 travels as 16 bits and MPI's sums add it in
// fp32, rounding each partial sum to bf16 once (as ATen's bf16 add); with one process (no launcher) every operation is
// local. CUDA tensors go through NCCL (dist/nccl_communicator.h) when the build links it.
// Lives in dist/, below models/ and rollout/, so that any role can move tensors; core stays free of LibTorch.

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

namespace grpo {

// A collective started without waiting for it (Communicator::start_all_gather_into). Its buffers
// are kept alive by the handle until wait() or destruction, which waits.
class PendingCollective {
 public:
  virtual ~PendingCollective() = default;
  // After wait(), the output may be read: on the host for MPI (blocks until the data is there); on
  // CUDA the work queued next on the current stream runs after it (the host does not block).
  virtual void wait() = 0;
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // In place over every rank: sum of a contiguous tensor.
  virtual void all_reduce_sum(at::Tensor& tensor) = 0;
  virtual void all_reduce_sum(std::vector<double>& values) = 0;
  virtual void broadcast(at::Tensor& tensor, int root) = 0;
  // Concatenation of every rank's `local` (same shape on every rank) along a new first dim.
  at::Tensor all_gather(const at::Tensor& local);
  // The same into `out`, contiguous [size, local's shape...] on local's device: a buffer kept
  // between steps spares a model-sized allocation each time.
  virtual void all_gather_into(at::Tensor& out, const at::Tensor& local) = 0;
  // all_gather_into started now and finished by the handle's wait(), so that work issued in between
  // (the current unit's compute) overlaps the transfer: ZeRO-3's prefetch of the next unit. Every rank
  // must start it in the same order relative to its other collectives. The default waits at once.
  virtual std::unique_ptr<PendingCollective> start_all_gather_into(at::Tensor& out, const at::Tensor& local);
  // Every rank's `local` (same shape on every rank) to `root` only: on `root`, `out` (contiguous
  // [size, local's shape...] on local's device) receives them in rank order; elsewhere `out` is not
  // touched and may be undefined. The ZeRO-3 shards' way to a rollout rank: each rank sends its
  // part once, and no rank but `root` receives anything.
  virtual void gather_into(at::Tensor& out, const at::Tensor& local, int root) = 0;
  // Each rank keeps its 1/size slice of the sum (the FSDP gradient step); numel divisible by size.
  virtual at::Tensor reduce_scatter_sum(const at::Tensor& tensor) = 0;
  virtual void barrier() = 0;
  // A communicator over the ranks that pass the same `color` (every rank must call it together),
  // ranked in this one's order: e.g. trainer ranks apart from rollout ranks.
  virtual std::unique_ptr<Communicator> split(int color);
  // Ends every rank of the job now (after the caller logged why); never returns.
  [[noreturn]] virtual void abort(int exit_code) = 0;
};

// Checks all_gather_into's `out` (for implementations).
void check_gather_shape(const at::Tensor& out, const at::Tensor& local, int size);

// Rank `rank`'s contiguous share [begin, end) of `items` cut over `ranks` as evenly as integers
// allow. Every role that splits a step's prompts, groups or problems over ranks uses it, so the
// checks made before a run see the split the run makes.
struct ItemShare {
  int64_t begin = 0, end = 0;
  int64_t size() const { return end - begin; }
};
inline ItemShare share_of(int64_t items, int64_t rank, int64_t ranks) {
  return {items * rank / ranks, items * (rank + 1) / ranks};
}

// Every rank's `local` bytes (any length, empty included), in rank order; every rank must call it
// together. For serialized records (JSON rows, encoded batches) that differ in size between ranks.
std::vector<std::string> all_gather_strings(Communicator& comm, const std::string& local);

// The process-wide communicator: MPI when started by mpirun/srun (initialized on first use),
// else a single rank.
Communicator& world();
// The communicator for tensors on `device`, created on first use (every rank must ask together):
// world() for CPU; for CUDA, NCCL bootstrapped over world() when this build links NCCL, else
// world() itself, which stages CUDA tensors through host memory.
Communicator& communicator_for(const at::Device& device);
// True when CUDA tensors move over NCCL in this build.
bool nccl_linked();
// One line for `grpo version`: linked (with NCCL's version), compiled only, or not built.
std::string nccl_build_summary();

// This process's index among the ranks on its node, and their number (launcher environment; 0 and 1
// without one). Picks each rank's CUDA device and its share of the cores.
int local_rank();
int local_size();

// The collective watchdog (dist/collective_watchdog.h): a rank that waits longer than `seconds`
// in one blocking collective or barrier logs it and aborts the whole job; 0 (the default) waits
// forever. Process-wide; set it before the first collective that should be covered.
void set_collective_timeout(double seconds);
// What this rank is doing ("step 12"), named in the watchdog's message.
void set_collective_context(std::string context);

// Releases the device communicators, then finalizes MPI if it was initialized (call once, at the
// end of main).
void shutdown_world();

}  // namespace grpo
