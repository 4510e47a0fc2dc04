#include "dist/nccl_communicator.h"

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <cstdlib>
#include <cstring>
#include <memory>
#include <stdexcept>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include "dist/collective_watchdog.h"

#if GRPO_TORCH_CUDA
#include <c10/cuda/CUDAStream.h>
#endif

namespace grpo {
namespace {

void check_cuda(cudaError_t result, const char* call) {
  if (result != cudaSuccess) throw std::runtime_error(fmt::format("{}: {}", call, cudaGetErrorString(result)));
}

void check_nccl(ncclResult_t result, const char* call, ncclComm_t comm = nullptr) {
  if (result == ncclSuccess) return;
  const char* detail = ncclGetLastError(comm);
  throw std::runtime_error(fmt::format("{}: {}{}{}", call, ncclGetErrorString(result), detail && *detail ? ": " : "",
                                       detail ? detail : ""));
}

ncclDataType_t nccl_type(at::ScalarType type) {
  switch (type) {
    case at::kFloat: return ncclFloat32;
    case at::kDouble: return ncclFloat64;
    case at::kHalf: return ncclFloat16;
    case at::kBFloat16: return ncclBfloat16;
    case at::kLong: return ncclInt64;
    case at::kInt: return ncclInt32;
    case at::kByte: return ncclUint8;
    case at::kChar: return ncclInt8;
    default: TORCH_CHECK(false, "NCCL communicator: unsupported dtype ", type);
  }
}

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(Communicator& bootstrap, int device) : bootstrap_(bootstrap), device_(device) {
    check_cuda(cudaSetDevice(device), "cudaSetDevice");
    ncclUniqueId id;
    std::memset(&id, 0, sizeof id);
    if (bootstrap.rank() == 0) check_nccl(ncclGetUniqueId(&id), "ncclGetUniqueId");
    at::Tensor bytes = at::zeros({static_cast<int64_t>(sizeof id)}, at::kByte);
    std::memcpy(bytes.data_ptr(), &id, sizeof id);
    bootstrap.broadcast(bytes, 0);
    std::memcpy(&id, bytes.data_ptr(), sizeof id);
    check_nccl(ncclCommInitRank(&comm_, bootstrap.size(), id, bootstrap.rank()), "ncclCommInitRank");
  }
  ~NcclCommunicator() override {
    if (side_stream_ != nullptr) cudaStreamSynchronize(side_stream_);
    if (comm_ != nullptr) ncclCommDestroy(comm_);
    if (side_stream_ != nullptr) cudaStreamDestroy(side_stream_);
  }

  int rank() const override { return bootstrap_.rank(); }
  int size() const override { return bootstrap_.size(); }

  void all_reduce_sum(at::Tensor& tensor) override {
    if (!on_device(tensor, "all_reduce_sum")) return bootstrap_.all_reduce_sum(tensor);
    check_nccl(ncclAllReduce(tensor.data_ptr(), tensor.data_ptr(), static_cast<size_t>(tensor.numel()),
                             nccl_type(tensor.scalar_type()), ncclSum, comm_, stream()),
               "ncclAllReduce", comm_);
  }
  void all_reduce_sum(std::vector<double>& values) override { bootstrap_.all_reduce_sum(values); }
  void broadcast(at::Tensor& tensor, int root) override {
    if (!on_device(tensor, "broadcast")) return bootstrap_.broadcast(tensor, root);
    check_nccl(ncclBroadcast(tensor.data_ptr(), tensor.data_ptr(), static_cast<size_t>(tensor.numel()),
                             nccl_type(tensor.scalar_type()), root, comm_, stream()),
               "ncclBroadcast", comm_);
  }
  void all_gather_into(at::Tensor& out, const at::Tensor& local) override {
    if (!local.is_cuda()) return bootstrap_.all_gather_into(out, local);
    check_gather_shape(out, local, size());
    const at::Tensor send = local.contiguous();
    on_device(send, "all_gather");
    on_device(out, "all_gather");
    check_nccl(ncclAllGather(send.data_ptr(), out.data_ptr(), static_cast<size_t>(send.numel()),
                             nccl_type(send.scalar_type()), comm_, stream()),
               "ncclAllGather", comm_);
  }
  // The all-gather runs on a side stream that first waits for what the current stream has queued
  // (the cast of the shard); wait() makes the current stream wait for the gather, without blocking
  // the host. The handle keeps both buffers alive until then, so the caching allocator cannot hand
  // their memory to other work while the side stream still uses it. NCCL runs the operations of
  // one communicator in the order they were issued, whatever their streams. Compiled in CI, not yet
  // run on a GPU.
  std::unique_ptr<PendingCollective> start_all_gather_into(at::Tensor& out, const at::Tensor& local) override {
    if (!local.is_cuda()) return bootstrap_.start_all_gather_into(out, local);
    check_gather_shape(out, local, size());
    auto pending = std::make_unique<NcclPendingGather>(out, local.contiguous());
    on_device(pending->send, "all_gather");
    on_device(pending->out, "all_gather");
    check_cuda(cudaSetDevice(device_), "cudaSetDevice");
    if (side_stream_ == nullptr)
      check_cuda(cudaStreamCreateWithFlags(&side_stream_, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
    check_cuda(cudaEventCreateWithFlags(&pending->inputs_ready, cudaEventDisableTiming), "cudaEventCreateWithFlags");
    check_cuda(cudaEventCreateWithFlags(&pending->done, cudaEventDisableTiming), "cudaEventCreateWithFlags");
    check_cuda(cudaEventRecord(pending->inputs_ready, stream()), "cudaEventRecord");
    check_cuda(cudaStreamWaitEvent(side_stream_, pending->inputs_ready, 0), "cudaStreamWaitEvent");
    check_nccl(ncclAllGather(pending->send.data_ptr(), pending->out.data_ptr(), static_cast<size_t>(pending->send.numel()),
                             nccl_type(pending->send.scalar_type()), comm_, side_stream_),
               "ncclAllGather (prefetch)", comm_);
    check_cuda(cudaEventRecord(pending->done, side_stream_), "cudaEventRecord");
    pending->consumer = stream();
    return pending;
  }
  // NCCL has no gather: the root receives each rank's part point to point, in one group (its own
  // part is a device copy). Compiled in CI, not yet run on a GPU.
  void gather_into(at::Tensor& out, const at::Tensor& local, int root) override {
    if (!local.is_cuda()) return bootstrap_.gather_into(out, local, root);
    TORCH_CHECK(root >= 0 && root < size(), "gather: root ", root, " of ", size(), " ranks");
    const at::Tensor send = local.contiguous();
    on_device(send, "gather");
    const size_t count = static_cast<size_t>(send.numel());
    const ncclDataType_t type = nccl_type(send.scalar_type());
    if (rank() != root) {
      check_nccl(ncclSend(send.data_ptr(), count, type, root, comm_, stream()), "ncclSend", comm_);
      return;
    }
    check_gather_shape(out, local, size());
    on_device(out, "gather");
    const size_t bytes = count * static_cast<size_t>(send.element_size());
    check_cuda(cudaMemcpyAsync(static_cast<char*>(out.data_ptr()) + static_cast<size_t>(root) * bytes, send.data_ptr(),
                               bytes, cudaMemcpyDeviceToDevice, stream()),
               "cudaMemcpyAsync");
    check_nccl(ncclGroupStart(), "ncclGroupStart", comm_);
    for (int r = 0; r < size(); ++r) {
      if (r == root) continue;
      check_nccl(ncclRecv(static_cast<char*>(out.data_ptr()) + static_cast<size_t>(r) * bytes, count, type, r, comm_,
                          stream()),
                 "ncclRecv", comm_);
    }
    check_nccl(ncclGroupEnd(), "ncclGroupEnd", comm_);
  }
  at::Tensor reduce_scatter_sum(const at::Tensor& tensor) override {
    if (!tensor.is_cuda()) return bootstrap_.reduce_scatter_sum(tensor);
    const at::Tensor send = tensor.contiguous();
    on_device(send, "reduce_scatter_sum");
    TORCH_CHECK(send.numel() % size() == 0, "reduce_scatter_sum: ", send.numel(), " elements over ", size(), " ranks");
    at::Tensor out = at::empty({send.numel() / size()}, send.options());
    check_nccl(ncclReduceScatter(send.data_ptr(), out.data_ptr(), static_cast<size_t>(out.numel()),
                                 nccl_type(send.scalar_type()), ncclSum, comm_, stream()),
               "ncclReduceScatter", comm_);
    return out;
  }
  void barrier() override {
    // Device work first, so that "after the barrier" also holds for what NCCL has queued. A peer
    // that never joins a queued NCCL collective blocks it here: on the watchdog's deadline the
    // communicator is aborted (freeing the kernel) and the bootstrap ends the job.
    {
      const CollectiveWatch watch("barrier (NCCL work queued before it)", rank(), size(), [this](const std::string&) {
        ncclCommAbort(comm_);
        bootstrap_.abort(1);
      });
      check_cuda(cudaStreamSynchronize(stream()), "cudaStreamSynchronize");
    }
    bootstrap_.barrier();
  }
  // Collective over this communicator's ranks, like MPI's split: the host sub-communicator of the
  // same color bootstraps the group's own NCCL communicator on this rank's device, and the result
  // owns it (trainer and rollout roles, the weight sync's groups).
  std::unique_ptr<Communicator> split(int color) override {
    std::unique_ptr<Communicator> host = bootstrap_.split(color);
    auto sub = std::make_unique<NcclCommunicator>(*host, device_);
    sub->owned_bootstrap_ = std::move(host);
    return sub;
  }
  [[noreturn]] void abort(int exit_code) override {
    // Frees ranks blocked inside an NCCL kernel before the bootstrap ends the job.
    if (comm_ != nullptr) ncclCommAbort(comm_);
    comm_ = nullptr;
    bootstrap_.abort(exit_code);
    std::exit(exit_code);  // not reached: the bootstrap's abort ends the process
  }

 private:
  struct NcclPendingGather final : PendingCollective {
    NcclPendingGather(at::Tensor out, at::Tensor send) : out(std::move(out)), send(std::move(send)) {}
    ~NcclPendingGather() override {
      if (!waited && done != nullptr) cudaStreamWaitEvent(consumer, done, 0);  // no throwing here
      if (inputs_ready != nullptr) cudaEventDestroy(inputs_ready);
      if (done != nullptr) cudaEventDestroy(done);  // released by CUDA once the event has completed
    }
    void wait() override {
      if (waited || done == nullptr) return;
      waited = true;
      check_cuda(cudaStreamWaitEvent(consumer, done, 0), "cudaStreamWaitEvent");
    }
    at::Tensor out, send;
    cudaEvent_t inputs_ready = nullptr, done = nullptr;
    cudaStream_t consumer = nullptr;
    bool waited = false;
  };

  // True for a CUDA tensor this communicator can move; false for a CPU tensor (the bootstrap's).
  bool on_device(const at::Tensor& tensor, const char* op) const {
    if (!tensor.is_cuda()) return false;
    TORCH_CHECK(tensor.is_contiguous(), op, ": needs a contiguous tensor");
    TORCH_CHECK(tensor.device().index() == device_, op, ": tensor on cuda:", tensor.device().index(),
                ", this rank's communicator is on cuda:", device_);
    return true;
  }
  cudaStream_t stream() const {
#if GRPO_TORCH_CUDA
    // The stream LibTorch queues this device's work on, so collectives are ordered with it.
    return c10::cuda::getCurrentCUDAStream(static_cast<c10::DeviceIndex>(device_)).stream();
#else
    return nullptr;  // the legacy default stream
#endif
  }

  Communicator& bootstrap_;
  int device_;
  ncclComm_t comm_ = nullptr;
  cudaStream_t side_stream_ = nullptr;  // prefetched all-gathers (start_all_gather_into)
  std::unique_ptr<Communicator> owned_bootstrap_;  // set for a split's result: bootstrap_ refers to it
};

}  // namespace

std::unique_ptr<Communicator> make_nccl_communicator(Communicator& bootstrap, int cuda_device) {
  return std::make_unique<NcclCommunicator>(bootstrap, cuda_device);
}

std::string nccl_version() {
  int version = 0;
  if (ncclGetVersion(&version) != ncclSuccess) return "unknown";
  // NCCL >= 2.9 encodes major*10000 + minor*100 + patch.
  return fmt::format("{}.{}.{}", version / 10000, (version / 100) % 100, version % 100);
}

int nccl_visible_devices() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) return 0;
  return count;
}

}  // namespace grpo
