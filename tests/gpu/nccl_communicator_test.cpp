// The NCCL communicator. On a machine without a GPU (CI) only the build is checked: the NCCL
// library loaded at run time is the one the header promised. With a CUDA LibTorch and a GPU, the
// collectives are checked against hand-computed values and against MPI on the host, and the
// training verbs run on CUDA with gradients over NCCL. Several GPUs:
//   mpirun -np 2 build/tests/nccl_communicator_test

#include <nccl.h>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "tests/support/run_command.h"
#include "tests/support/run_weights.h"
#include "dist/communicator.h"
#include "dist/nccl_communicator.h"

namespace grpo {
namespace {

namespace fs = std::filesystem;

TEST(NcclBuild, LoadedLibraryMatchesTheHeader) {
  EXPECT_EQ(nccl_version(), fmt::format("{}.{}.{}", NCCL_MAJOR, NCCL_MINOR, NCCL_PATCH));
}

// Skips unless CUDA tensors can exist and a device is visible; returns this rank's device.
#define REQUIRE_GPU()                                                                                 \
  if (!at::hasCUDA()) GTEST_SKIP() << "LibTorch without CUDA: no CUDA tensors to move";               \
  if (nccl_visible_devices() == 0) GTEST_SKIP() << "no CUDA device visible";                          \
  const int device = local_rank() % nccl_visible_devices()

TEST(NcclCollectives, MatchHandComputedValues) {
  REQUIRE_GPU();
  Communicator& bootstrap = world();
  std::unique_ptr<Communicator> nccl = make_nccl_communicator(bootstrap, device);
  const int rank = nccl->rank(), size = nccl->size();
  const auto on_gpu = at::TensorOptions().device(at::kCUDA, device);

  // all_reduce: rank r holds (r + 1) * [0, 1, ..., 9]; the sum is size(size+1)/2 * [0..9].
  for (at::ScalarType type : {at::kFloat, at::kDouble, at::kBFloat16, at::kLong}) {
    at::Tensor t = (at::arange(10, on_gpu.dtype(at::kLong)) * (rank + 1)).to(type);
    nccl->all_reduce_sum(t);
    const at::Tensor expected = (at::arange(10, at::kLong) * (size * (size + 1) / 2)).to(type);
    EXPECT_TRUE(at::equal(t.cpu(), expected)) << "dtype " << type;
  }
  // broadcast from the last rank.
  at::Tensor b = at::full({7}, static_cast<double>(rank), on_gpu.dtype(at::kFloat));
  nccl->broadcast(b, size - 1);
  EXPECT_TRUE(at::equal(b.cpu(), at::full({7}, static_cast<double>(size - 1), at::kFloat)));
  // all_gather: row r is rank r's tensor.
  const at::Tensor gathered = nccl->all_gather(at::full({2, 3}, static_cast<double>(rank), on_gpu.dtype(at::kFloat)));
  ASSERT_EQ(gathered.sizes(), (std::vector<int64_t>{size, 2, 3}));
  for (int r = 0; r < size; ++r) EXPECT_TRUE(at::equal(gathered[r].cpu(), at::full({2, 3}, double(r), at::kFloat)));
  // gather to the last rank: row r is rank r's tensor there; the others receive nothing.
  at::Tensor to_root = rank == size - 1 ? at::full({size, 4}, -1.0, on_gpu.dtype(at::kBFloat16)) : at::Tensor();
  nccl->gather_into(to_root, at::full({4}, static_cast<double>(rank), on_gpu.dtype(at::kBFloat16)), size - 1);
  if (rank == size - 1) {
    for (int r = 0; r < size; ++r)
      EXPECT_TRUE(at::equal(to_root[r].cpu(), at::full({4}, double(r), at::kBFloat16))) << "gathered row " << r;
  } else {
    EXPECT_FALSE(to_root.defined());
  }
  // reduce_scatter: every rank sends [0, 1, ..., 4*size-1]; rank r keeps size * its slice.
  const at::Tensor all = at::arange(4 * size, on_gpu.dtype(at::kFloat));
  const at::Tensor mine = nccl->reduce_scatter_sum(all);
  EXPECT_TRUE(at::equal(mine.cpu(), at::arange(4 * rank, 4 * rank + 4, at::kFloat) * size));
  // CPU tensors and host values go to the bootstrap communicator.
  at::Tensor host = at::ones({3}, at::kFloat);
  nccl->all_reduce_sum(host);
  EXPECT_TRUE(at::equal(host, at::full({3}, static_cast<double>(size), at::kFloat)));
  std::vector<double> values{1.5};
  nccl->all_reduce_sum(values);
  EXPECT_DOUBLE_EQ(values[0], 1.5 * size);
  nccl->barrier();
}

TEST(NcclCollectives, AgreeWithMpiOnTheHost) {
  REQUIRE_GPU();
  std::unique_ptr<Communicator> nccl = make_nccl_communicator(world(), device);
  // A gradient-sized buffer with values that differ by rank.
  const at::Tensor local = at::randn({1 << 20}, at::TensorOptions().dtype(at::kFloat)) * (nccl->rank() + 1);
  at::Tensor on_host = local.clone();
  world().all_reduce_sum(on_host);
  at::Tensor on_device = local.to(at::Device(at::kCUDA, device));
  nccl->all_reduce_sum(on_device);
  EXPECT_LE((on_device.cpu() - on_host).abs().max().item<double>(), 1e-5 * nccl->size());
}

// split(color) groups ranks by parity: each group's sum of (rank + 1) over CUDA tensors is the hand
// value for its members only, and the group's ranks are numbered 0.. in world order.
TEST(NcclCollectives, SplitGroupsRanksByColor) {
  REQUIRE_GPU();
  std::unique_ptr<Communicator> nccl = make_nccl_communicator(world(), device);
  const int rank = nccl->rank(), size = nccl->size(), color = rank % 2;
  std::unique_ptr<Communicator> group = nccl->split(color);
  double expected = 0;
  int members = 0;
  for (int r = color; r < size; r += 2, ++members) expected += r + 1;
  EXPECT_EQ(group->size(), members);
  EXPECT_EQ(group->rank(), rank / 2);
  at::Tensor t = at::full({3}, static_cast<double>(rank + 1), at::TensorOptions().dtype(at::kFloat).device(at::kCUDA, device));
  group->all_reduce_sum(t);
  EXPECT_TRUE(at::allclose(t.cpu(), at::full({3}, expected, at::kFloat))) << "color " << color;
}

// A started all-gather (ZeRO-3's prefetch, on the communicator's side stream) gives the blocking
// one's rows, with work queued on the current stream between the start and the wait, and with the
// caller's reference to the sent tensor dropped at once (the handle keeps it alive).
TEST(NcclCollectives, StartedAllGatherMatchesTheBlockingOne) {
  REQUIRE_GPU();
  std::unique_ptr<Communicator> nccl = make_nccl_communicator(world(), device);
  const int rank = nccl->rank(), size = nccl->size();
  const auto on_gpu = at::TensorOptions().device(at::kCUDA, device);
  for (at::ScalarType type : {at::kFloat, at::kBFloat16}) {
    at::Tensor out = at::empty({size, 1 << 16}, on_gpu.dtype(type));
    std::unique_ptr<PendingCollective> pending;
    {
      const at::Tensor local = (at::arange(1 << 16, on_gpu.dtype(at::kFloat)).remainder(251) + 1000 * rank).to(type);
      pending = nccl->start_all_gather_into(out, local);
    }
    const at::Tensor busy = at::matmul(at::randn({1024, 1024}, on_gpu), at::randn({1024, 1024}, on_gpu));
    pending->wait();
    const at::Tensor expected = nccl->all_gather((at::arange(1 << 16, on_gpu.dtype(at::kFloat)).remainder(251) + 1000 * rank).to(type));
    EXPECT_TRUE(at::equal(out.cpu(), expected.cpu())) << "dtype " << type;
    EXPECT_TRUE(at::isfinite(busy).all().item<bool>());
  }
}

TEST(NcclCollectives, RejectATensorOnAnotherDevice) {
  REQUIRE_GPU();
  if (nccl_visible_devices() < 2) GTEST_SKIP() << "needs two devices";
  std::unique_ptr<Communicator> nccl = make_nccl_communicator(world(), device);
  at::Tensor other = at::ones({4}, at::TensorOptions().device(at::kCUDA, (device + 1) % nccl_visible_devices()));
  EXPECT_THROW(nccl->all_reduce_sum(other), c10::Error);
}

// The training verbs on CUDA, launched as a user would (one rank per visible GPU, up to 2).
const char* kSft =
    "model: {path: \"builtin:demo-qwen2\", device: cuda}\n"
    "data: {train_path: \"builtin:addition?n=64&digits=1-3&seed=5\"}\n"
    "optimizer: {lr: 0.1, eps: 1.0}\n"
    "trainer: {steps: 3, prompts_per_step: 8, seed: 3, threads: 1}\n"
    "checkpoint: {every_steps: 0, resume: none}\n";

using testing::final_weights;

// A fresh directory for one GPU training test.
fs::path work_dir(const std::string& name) {
  const fs::path work = fs::temp_directory_path() / fmt::format("grpo_gpu_{}_{}", name, ::getpid());
  fs::create_directories(work);
  return work;
}

// The training tests launch their own ranks (one per visible GPU, at most 2).
#define REQUIRE_GPU_AND_ONE_PROCESS()                                                                  \
  REQUIRE_GPU();                                                                                       \
  (void)device;                                                                                        \
  if (world().size() > 1) GTEST_SKIP() << "launches its own ranks; run it from a single process";     \
  const int ranks = std::min(2, nccl_visible_devices())

TEST(GpuTraining, SftOnCudaOverNcclMatchesCpu) {
  REQUIRE_GPU_AND_ONE_PROCESS();
  const fs::path work = work_dir("sft");
  std::ofstream(work / "sft.yaml") << kSft;
  const std::string launch = fmt::format("timeout 300 {} --allow-run-as-root --oversubscribe -np {} {} sft --config {} ",
                                         GRPO_MPIEXEC, ranks, GRPO_BINARY, (work / "sft.yaml").string());
  const testing::CommandResult gpu = testing::run_command(launch + "trainer.run_dir=" + (work / "cuda").string());
  ASSERT_EQ(gpu.exit_code, 0) << gpu.output;
  EXPECT_NE(gpu.output.find("gradients over NCCL"), std::string::npos) << gpu.output;
  const testing::CommandResult cpu =
      testing::run_command(launch + "model.device=cpu trainer.run_dir=" + (work / "cpu").string());
  ASSERT_EQ(cpu.exit_code, 0) << cpu.output;
  const TensorMap a = final_weights(work / "cuda"), b = final_weights(work / "cpu");
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [name, t] : a) EXPECT_LE((t - b.at(name)).abs().max().item<double>(), 1e-4) << name;
}

TEST(GpuTraining, GrpoStepsOnCudaOverNccl) {
  REQUIRE_GPU_AND_ONE_PROCESS();
  const fs::path work = work_dir("grpo");
  std::ofstream(work / "grpo.yaml")
      << "model: {path: \"builtin:demo-qwen2\", device: cuda}\n"
         "data: {train_path: \"builtin:addition?n=64&digits=1-3&seed=5\"}\n"
         "rollout: {max_new_tokens: 20, temperature: 1.0}\n"
         "reward: {functions: [{name: language, options: {language: en, empty_score: 0.0}}]}\n"
         "grpo: {group_size: 4, updates_per_batch: 2, kl: {beta: 0.01}}\n"
         "optimizer: {lr: 1.0e-3}\n"
         "trainer: {steps: 2, prompts_per_step: 4, seed: 3, threads: 1}\n"
         "checkpoint: {every_steps: 1, resume: none}\n";
  const testing::CommandResult r = testing::run_command(
      fmt::format("timeout 300 {} --allow-run-as-root --oversubscribe -np {} {} train --config {} trainer.run_dir={}",
                  GRPO_MPIEXEC, ranks, GRPO_BINARY, (work / "grpo.yaml").string(), (work / "run").string()));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("gradients over NCCL"), std::string::npos) << r.output;
  std::ifstream metrics(work / "run" / "metrics.jsonl");
  int steps = 0;
  for (std::string line; std::getline(metrics, line); ++steps)
    EXPECT_EQ(line.find("NaN"), std::string::npos) << line;
  EXPECT_EQ(steps, 2);
  for (const auto& [name, t] : final_weights(work / "run")) EXPECT_TRUE(at::isfinite(t).all().item<bool>()) << name;
}

// ZeRO-3 over NCCL with the next unit's gather prefetched on the side stream trains the same SFT
// weights as without it.
TEST(GpuTraining, Stage3PrefetchOnCudaMatchesNoPrefetch) {
  REQUIRE_GPU_AND_ONE_PROCESS();
  const fs::path work = work_dir("prefetch");
  std::ofstream(work / "sft.yaml") << kSft;
  const std::string launch =
      fmt::format("timeout 300 {} --allow-run-as-root --oversubscribe -np {} {} sft --config {} trainer.zero_stage=3 ",
                  GRPO_MPIEXEC, ranks, GRPO_BINARY, (work / "sft.yaml").string());
  const testing::CommandResult on = testing::run_command(launch + "trainer.prefetch=on trainer.run_dir=" + (work / "on").string());
  ASSERT_EQ(on.exit_code, 0) << on.output;
  const testing::CommandResult off = testing::run_command(launch + "trainer.prefetch=off trainer.run_dir=" + (work / "off").string());
  ASSERT_EQ(off.exit_code, 0) << off.output;
  const TensorMap a = final_weights(work / "on"), b = final_weights(work / "off");
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [name, t] : a) EXPECT_LE((t - b.at(name)).abs().max().item<double>(), 1e-6) << name;
  std::ifstream metrics(work / "on" / "metrics.jsonl");
  std::string line, last;
  while (std::getline(metrics, line)) last = line;
  const nlohmann::json m = nlohmann::json::parse(last);
  EXPECT_GT(m.value("zero3_prefetch_used", 0.0), 0.0) << last;
  EXPECT_EQ(m.value("zero3_prefetch_wasted", -1.0), 0.0) << last;
}

class FinalizeMpi : public ::testing::Environment {
 public:
  void TearDown() override { shutdown_world(); }
};
const auto* const kFinalize = ::testing::AddGlobalTestEnvironment(new FinalizeMpi);

}  // namespace
}  // namespace grpo
