#include "dist/communicator.h"

#include <mpi.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <limits>
#include <map>
#include <memory>
#include <utility>

#include <ATen/ATen.h>

#include "dist/collective_watchdog.h"

#if GRPO_LINK_NCCL
#include "dist/nccl_communicator.h"
#endif

namespace grpo {
namespace {

bool launched_by_mpi() {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS"})
    if (std::getenv(name) != nullptr) return true;
  return false;
}

MPI_Datatype mpi_type(at::ScalarType type) {
  switch (type) {
    case at::kFloat: return MPI_FLOAT;
    case at::kDouble: return MPI_DOUBLE;
    case at::kLong: return MPI_INT64_T;
    case at::kInt: return MPI_INT32_T;
    case at::kByte: return MPI_UINT8_T;
    case at::kChar: return MPI_INT8_T;
    default: TORCH_CHECK(false, "communicator: unsupported dtype ", type);
  }
}

// Gathers, broadcasts and the reduce-scatter ring's messages only move bits: a 16-bit float
// travels as 16-bit integers (the sums of the ring are ATen's, which add bf16 in fp32).
MPI_Datatype mpi_transfer_type(at::ScalarType type) {
  if (type == at::kBFloat16 || type == at::kHalf) return MPI_UINT16_T;
  return mpi_type(type);
}

// MPI_SUM for bf16 sent as 16 bits: each pair is added in fp32 and rounded back once, as ATen's
// bf16 add does.
void bfloat16_sum(void* in, void* inout, int* length, MPI_Datatype*) {
  const auto* a = static_cast<const c10::BFloat16*>(in);
  auto* b = static_cast<c10::BFloat16*>(inout);
  for (int i = 0; i < *length; ++i) b[i] = c10::BFloat16(static_cast<float>(a[i]) + static_cast<float>(b[i]));
}

MPI_Op bfloat16_sum_op() {
  static MPI_Op op = [] {
    MPI_Op created;
    MPI_Op_create(&bfloat16_sum, /*commute=*/1, &created);
    return created;
  }();
  return op;
}

// MPI counts are ints. In-place collectives on larger buffers go in pieces; the gathers refuse
// them with a clear error. Nothing is truncated silently.
constexpr int64_t kMaxMpiCount = std::numeric_limits<int>::max();

int mpi_count(int64_t n, const char* op) {
  TORCH_CHECK(n <= kMaxMpiCount, op, ": ", n, " elements per rank exceed MPI's int count (", kMaxMpiCount, ")");
  return static_cast<int>(n);
}

template <typename Collective>
void in_pieces(const at::Tensor& tensor, Collective&& collective) {
  auto* base = static_cast<char*>(tensor.data_ptr());
  for (int64_t offset = 0; offset < tensor.numel(); offset += kMaxMpiCount)
    collective(base + offset * tensor.element_size(), static_cast<int>(std::min(kMaxMpiCount, tensor.numel() - offset)));
}

class LocalCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  void all_reduce_sum(at::Tensor&) override {}
  void all_reduce_sum(std::vector<double>&) override {}
  void broadcast(at::Tensor&, int) override {}
  void all_gather_into(at::Tensor& out, const at::Tensor& local) override {
    check_gather_shape(out, local, 1);
    out.copy_(local.unsqueeze(0));
  }
  void gather_into(at::Tensor& out, const at::Tensor& local, int) override {
    check_gather_shape(out, local, 1);
    out.copy_(local.unsqueeze(0));
  }
  at::Tensor reduce_scatter_sum(const at::Tensor& tensor) override { return tensor.clone(); }
  std::unique_ptr<Communicator> split(int) override { return std::make_unique<LocalCommunicator>(); }
  void barrier() override {}
  [[noreturn]] void abort(int exit_code) override { std::exit(exit_code); }
};

class MpiCommunicator final : public Communicator {
 public:
  MpiCommunicator() {
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (!initialized) {
      int provided = 0;
      MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided);
    }
    // Errors abort the job (all ranks) instead of returning codes nobody checks.
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_ARE_FATAL);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
  }
  // A sub-communicator (from split); freed with this object.
  explicit MpiCommunicator(MPI_Comm comm) : comm_(comm) {
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
    // The members' ranks in the job, so that a watchdog message names them as the launcher does.
    MPI_Group group, world_group;
    MPI_Comm_group(comm_, &group);
    MPI_Comm_group(MPI_COMM_WORLD, &world_group);
    std::vector<int> local(static_cast<size_t>(size_));
    for (int r = 0; r < size_; ++r) local[static_cast<size_t>(r)] = r;
    world_ranks_.resize(local.size());
    MPI_Group_translate_ranks(group, size_, local.data(), world_group, world_ranks_.data());
    MPI_Group_free(&group);
    MPI_Group_free(&world_group);
  }
  ~MpiCommunicator() override {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (comm_ != MPI_COMM_WORLD && !finalized) MPI_Comm_free(&comm_);
  }
  std::unique_ptr<Communicator> split(int color) override {
    MPI_Comm sub;
    MPI_Comm_split(comm_, color, rank_, &sub);  // ranks keep their order
    return std::make_unique<MpiCommunicator>(sub);
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }

  void all_reduce_sum(at::Tensor& tensor) override {
    TORCH_CHECK(tensor.is_contiguous(), "all_reduce_sum: needs a contiguous tensor");
    if (size_ == 1) return;
    if (!tensor.device().is_cpu()) return staged(tensor, [&](at::Tensor& host) { all_reduce_sum(host); });
    const bool bfloat16 = tensor.scalar_type() == at::kBFloat16;
    const MPI_Datatype type = bfloat16 ? MPI_UINT16_T : mpi_type(tensor.scalar_type());
    const MPI_Op op = bfloat16 ? bfloat16_sum_op() : MPI_SUM;
    const CollectiveWatch watch = watched("all_reduce_sum");
    in_pieces(tensor, [&](void* data, int count) { MPI_Allreduce(MPI_IN_PLACE, data, count, type, op, comm_); });
  }
  void all_reduce_sum(std::vector<double>& values) override {
    if (size_ == 1 || values.empty()) return;
    const CollectiveWatch watch = watched("all_reduce_sum");
    MPI_Allreduce(MPI_IN_PLACE, values.data(), mpi_count(static_cast<int64_t>(values.size()), "all_reduce_sum"),
                  MPI_DOUBLE, MPI_SUM, comm_);
  }
  void broadcast(at::Tensor& tensor, int root) override {
    TORCH_CHECK(tensor.is_contiguous(), "broadcast: needs a contiguous tensor");
    if (size_ == 1) return;
    if (!tensor.device().is_cpu()) return staged(tensor, [&](at::Tensor& host) { broadcast(host, root); });
    const MPI_Datatype type = mpi_transfer_type(tensor.scalar_type());
    const CollectiveWatch watch = watched("broadcast");
    in_pieces(tensor, [&](void* data, int count) { MPI_Bcast(data, count, type, root, comm_); });
  }
  void all_gather_into(at::Tensor& out, const at::Tensor& local) override {
    check_gather_shape(out, local, size_);
    if (!local.device().is_cpu()) {
      at::Tensor host = at::empty(out.sizes(), out.options().device(at::kCPU));  // written whole: nothing to copy in
      all_gather_into(host, local.to(at::kCPU));
      out.copy_(host);
      return;
    }
    const at::Tensor send = local.contiguous();
    const int count = mpi_count(send.numel(), "all_gather");
    const MPI_Datatype type = mpi_transfer_type(send.scalar_type());
    const CollectiveWatch watch = watched("all_gather");
    MPI_Allgather(send.data_ptr(), count, type, out.data_ptr(), count, type, comm_);
  }
  // MPI_Iallgather: Open MPI moves the data while either side is inside an MPI call (the
  // reduce-scatter of the unit in between, at the latest the wait), so on CPU this keeps the
  // prefetch's order and memory without promising overlap. Device tensors are staged (blocking).
  std::unique_ptr<PendingCollective> start_all_gather_into(at::Tensor& out, const at::Tensor& local) override {
    check_gather_shape(out, local, size_);
    if (!local.device().is_cpu() || size_ == 1) return Communicator::start_all_gather_into(out, local);
    auto pending = std::make_unique<MpiPendingGather>(*this, out, local.contiguous());
    const int count = mpi_count(pending->send.numel(), "all_gather");
    const MPI_Datatype type = mpi_transfer_type(pending->send.scalar_type());
    MPI_Iallgather(pending->send.data_ptr(), count, type, pending->out.data_ptr(), count, type, comm_, &pending->request);
    return pending;
  }
  void gather_into(at::Tensor& out, const at::Tensor& local, int root) override {
    TORCH_CHECK(root >= 0 && root < size_, "gather: root ", root, " of ", size_, " ranks");
    if (rank_ == root) check_gather_shape(out, local, size_);
    if (!local.device().is_cpu()) {
      at::Tensor host;
      if (rank_ == root) host = at::empty(out.sizes(), out.options().device(at::kCPU));  // written whole
      gather_into(host, local.to(at::kCPU), root);
      if (rank_ == root) out.copy_(host);
      return;
    }
    const at::Tensor send = local.contiguous();
    const int count = mpi_count(send.numel(), "gather");
    const MPI_Datatype type = mpi_transfer_type(send.scalar_type());
    const CollectiveWatch watch = watched("gather");
    MPI_Gather(send.data_ptr(), count, type, rank_ == root ? out.data_ptr() : nullptr, count, type, root, comm_);
  }
  at::Tensor reduce_scatter_sum(const at::Tensor& tensor) override {
    if (!tensor.device().is_cpu()) return reduce_scatter_sum(tensor.to(at::kCPU)).to(tensor.device());
    const at::Tensor send = tensor.contiguous();
    TORCH_CHECK(send.numel() % size_ == 0, "reduce_scatter_sum: ", send.numel(), " elements over ", size_, " ranks");
    const int64_t chunk = send.numel() / size_;
    if (size_ == 1) return send.clone();
    // A ring: at step s this rank passes its running sum of chunk (rank - s - 1) to the right and
    // adds its own part to the sum of chunk (rank - s - 2) arriving from the left; after size - 1
    // steps it holds the whole sum of its own chunk. Open MPI 4.1's MPI_Reduce_scatter_block took
    // 3x as long as an all-reduce of the same buffer on one node (docs/performance.md); this takes
    // about half, with two chunk-sized buffers.
    const int right = (rank_ + 1) % size_, left = (rank_ + size_ - 1) % size_;
    const MPI_Datatype type = mpi_transfer_type(send.scalar_type());
    const int count = mpi_count(chunk, "reduce_scatter_sum");
    at::Tensor outgoing, incoming = at::empty({chunk}, send.options());
    const CollectiveWatch watch = watched("reduce_scatter_sum");
    for (int s = 0; s + 1 < size_; ++s) {
      const int64_t send_index = (rank_ - s - 1 + 2 * size_) % size_, recv_index = (rank_ - s - 2 + 2 * size_) % size_;
      const at::Tensor to_send = s == 0 ? send.narrow(0, send_index * chunk, chunk) : outgoing;
      MPI_Sendrecv(to_send.data_ptr(), count, type, right, 0, incoming.data_ptr(), count, type, left, 0, comm_,
                   MPI_STATUS_IGNORE);
      incoming.add_(send.narrow(0, recv_index * chunk, chunk));
      if (!outgoing.defined() && s + 2 < size_) outgoing = at::empty({chunk}, send.options());
      std::swap(incoming, outgoing);
    }
    return outgoing;
  }
  void barrier() override {
    const CollectiveWatch watch = watched("barrier");
    MPI_Barrier(comm_);
  }
  [[noreturn]] void abort(int exit_code) override {
    MPI_Abort(MPI_COMM_WORLD, exit_code);
    std::exit(exit_code);
  }

 private:
  struct MpiPendingGather final : PendingCollective {
    MpiPendingGather(const MpiCommunicator& owner, at::Tensor out, at::Tensor send)
        : owner(owner), out(std::move(out)), send(std::move(send)) {}
    ~MpiPendingGather() override { wait(); }
    void wait() override {
      if (request == MPI_REQUEST_NULL) return;
      const CollectiveWatch watch = owner.watched("all_gather (prefetched)");
      MPI_Wait(&request, MPI_STATUS_IGNORE);
    }
    const MpiCommunicator& owner;
    at::Tensor out, send;
    MPI_Request request = MPI_REQUEST_NULL;
  };

  // MPI here is not assumed CUDA-aware: a device tensor is copied to the host, moved, copied back.
  template <typename Collective>
  static void staged(at::Tensor& tensor, Collective&& collective) {
    at::Tensor host = tensor.to(at::kCPU).contiguous();
    collective(host);
    tensor.copy_(host);
  }

  // A deadline on one blocking call (set_collective_timeout). On expiry, called from the
  // watchdog's thread while this one is still blocked in MPI: MPI_Abort asks the launcher to end
  // every rank, a stopped one included (SIGKILL needs no cooperation).
  CollectiveWatch watched(const char* collective) const {
    return CollectiveWatch(collective, rank_, size_, [](const std::string&) { MPI_Abort(MPI_COMM_WORLD, 1); },
                           world_ranks_);
  }

  MPI_Comm comm_ = MPI_COMM_WORLD;
  int rank_ = 0, size_ = 1;
  std::vector<int> world_ranks_;  // a sub-communicator's members' ranks in the job (empty for the world)
};

std::unique_ptr<Communicator>& instance() {
  static std::unique_ptr<Communicator> communicator;
  return communicator;
}

std::map<int, std::unique_ptr<Communicator>>& cuda_instances() {
  static std::map<int, std::unique_ptr<Communicator>> communicators;  // by CUDA device index
  return communicators;
}

int env_int(std::initializer_list<const char*> names, int fallback) {
  for (const char* name : names)
    if (const char* v = std::getenv(name)) return std::atoi(v);
  return fallback;
}

}  // namespace

void check_gather_shape(const at::Tensor& out, const at::Tensor& local, int size) {
  std::vector<int64_t> shape{size};
  for (int64_t d : local.sizes()) shape.push_back(d);
  TORCH_CHECK(out.is_contiguous() && out.sizes() == at::IntArrayRef(shape) && out.scalar_type() == local.scalar_type(),
              "all_gather_into / gather_into: needs a contiguous ", at::IntArrayRef(shape), " ", local.scalar_type(), " tensor, not ",
              out.sizes(), " ", out.scalar_type());
}

std::unique_ptr<Communicator> Communicator::split(int color) {
  TORCH_CHECK(false, "this communicator cannot be split (color ", color, ")");
}

namespace {
class FinishedCollective final : public PendingCollective {
 public:
  void wait() override {}
};
}  // namespace

std::unique_ptr<PendingCollective> Communicator::start_all_gather_into(at::Tensor& out, const at::Tensor& local) {
  all_gather_into(out, local);
  return std::make_unique<FinishedCollective>();
}

at::Tensor Communicator::all_gather(const at::Tensor& local) {
  std::vector<int64_t> shape{size()};
  for (int64_t d : local.sizes()) shape.push_back(d);
  at::Tensor out = at::empty(shape, local.options().memory_format(at::MemoryFormat::Contiguous));
  all_gather_into(out, local);
  return out;
}

std::vector<std::string> all_gather_strings(Communicator& comm, const std::string& local) {
  const at::Tensor lengths = comm.all_gather(at::full({1}, static_cast<int64_t>(local.size()), at::kLong));
  const int64_t longest = lengths.max().item<int64_t>();
  std::vector<std::string> gathered(static_cast<size_t>(comm.size()));
  if (longest == 0) return gathered;
  at::Tensor mine = at::zeros({longest}, at::kByte);  // padded to the longest: all_gather needs one shape
  if (!local.empty()) std::memcpy(mine.data_ptr(), local.data(), local.size());
  const at::Tensor all = comm.all_gather(mine);
  for (int r = 0; r < comm.size(); ++r)
    gathered[static_cast<size_t>(r)].assign(static_cast<const char*>(all[r].data_ptr()),
                                            static_cast<size_t>(lengths[r][0].item<int64_t>()));
  return gathered;
}

Communicator& world() {
  auto& c = instance();
  if (!c) {
    if (launched_by_mpi()) c = std::make_unique<MpiCommunicator>();
    else c = std::make_unique<LocalCommunicator>();
  }
  return *c;
}

Communicator& communicator_for(const at::Device& device) {
  if (!device.is_cuda() || !nccl_linked()) return world();
  const int index = device.has_index() ? device.index() : 0;
  auto& c = cuda_instances()[index];
#if GRPO_LINK_NCCL
  if (!c) c = make_nccl_communicator(world(), index);
#endif
  return *c;
}

bool nccl_linked() {
#if GRPO_LINK_NCCL
  return true;
#else
  return false;
#endif
}

std::string nccl_build_summary() {
#if GRPO_LINK_NCCL
  return "linked, NCCL " + nccl_version() + ", " + std::to_string(nccl_visible_devices()) + " visible device(s)";
#elif GRPO_HAVE_NCCL
  return "compiled, not linked (this LibTorch has no CUDA, so there are no CUDA tensors to move)";
#else
  return "not built (no CUDA toolkit with NCCL found at configure time)";
#endif
}

int local_rank() {
  return std::max(0, env_int({"OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID", "PMI_LOCAL_RANK"}, 0));
}

int local_size() {
  return std::max(1, env_int({"OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "SLURM_NTASKS_PER_NODE"}, 1));
}

void shutdown_world() {
  cuda_instances().clear();
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (initialized && !finalized) MPI_Finalize();
}

}  // namespace grpo
