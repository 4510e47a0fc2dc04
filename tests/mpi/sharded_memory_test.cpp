// At ZeRO stage 3 no rank builds a full-size tensor while loading or saving: the CPU allocator is
// wrapped to record every allocation, and the trainer's own entry points (start_training_run,
// save_training_checkpoint, export_final) run under mpirun on 2 ranks. While a rank loads a model
// from a Hugging Face directory, writes a checkpoint, or resumes from one, no allocation may exceed
// its largest unit shard and the bytes it holds at once stay at its shards (1/N of the model
// state); while it exports, it holds at most one whole unit at a time, never the whole model.

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "core/config.h"
#include "dist/communicator.h"
#include "models/decoder.h"
#include "models/tokenizer.h"
#include "tests/support/tracking_allocator.h"
#include "trainer/checkpoint.h"
#include "trainer/fsdp.h"
#include "trainer/train_common.h"

namespace grpo {
namespace {

namespace fs = std::filesystem;

using testing::TrackingAllocator;

// Tied embeddings larger than any layer: the embedding matrix is twice the root unit's shard on 2
// ranks, and the root unit well under half the model, so "one unit at a time" and "the whole
// model" differ clearly.
DecoderOptions model_options() {
  DecoderOptions o;
  o.architecture = DecoderArchitecture::kQwen2;
  o.vocab_size = 2048;
  o.hidden_size = 64;
  o.intermediate_size = 128;
  o.num_layers = 16;
  o.num_heads = 4;
  o.num_kv_heads = 2;
  o.head_dim = 16;
  o.qkv_bias = true;
  o.tie_word_embeddings = true;
  o.max_position_embeddings = 128;
  return o;
}

struct Sizes {
  int64_t model_bytes = 0;       // the whole model in fp32
  int64_t largest_unit = 0;      // one whole unit
  int64_t largest_shard = 0;     // one unit's shard on `ranks` ranks
  int64_t shards = 0;            // all of a rank's shards
};

Sizes sizes_of(Decoder& model, int64_t ranks) {  // `model` allocated
  Sizes s;
  for (const DecoderUnit& unit : model->units()) {
    int64_t numel = 0;
    for (const at::Tensor& p : unit.params) numel += p.numel();  // an allocated model: full sizes
    const int64_t shard = (numel + ranks - 1) / ranks;
    s.model_bytes += 4 * numel;
    s.largest_unit = std::max(s.largest_unit, 4 * numel);
    s.largest_shard = std::max(s.largest_shard, 4 * shard);
    s.shards += 4 * shard;
  }
  return s;
}

// Scalars and flags (collective handshakes, step counters) held beside the model state.
constexpr int64_t kSmallTensors = 64 << 10;

Config config_for(const fs::path& model_dir, const fs::path& run_dir, const std::string& resume) {
  const std::string yaml = "model: {path: \"" + model_dir.string() + "\"}\n"
                           "data: {train_path: \"builtin:addition?n=8&digits=1-2&seed=5\"}\n"
                           "trainer: {zero_stage: 3, threads: 1, steps: 1, run_dir: \"" + run_dir.string() + "\"}\n"
                           "checkpoint: {resume: " + resume + ", keep_last: 2}\n";
  StatusOr<Config> config = parse_config(yaml, "sharded_memory_test");
  EXPECT_TRUE(config.is_ok()) << config.status().message();
  return *config;
}

// The CPU allocator of this process, wrapped once (the tests below share it).
TrackingAllocator& tracking_allocator() {
  static TrackingAllocator* tracker = [] {
    static TrackingAllocator installed(c10::GetCPUAllocator());
    c10::SetCPUAllocator(&installed, /*priority=*/100);
    return &installed;
  }();
  return *tracker;
}

TEST(ShardedMemory, NoRankBuildsAFullSizeTensorWhileLoadingOrSaving) {
  Communicator& comm = world();
  ASSERT_EQ(comm.size(), 2) << "run under mpirun -np 2";
  // One directory for both ranks: rank 0's pid, shared by broadcast.
  at::Tensor id = at::full({1}, static_cast<double>(::getpid()), at::kDouble);
  comm.broadcast(id, 0);
  const fs::path work = fs::temp_directory_path() / ("grpo_sharded_memory_" + std::to_string(id.item<int64_t>()));
  const fs::path model_dir = work / "model", run_dir = work / "run";
  Decoder whole(model_options());
  const Sizes sizes = sizes_of(whole, comm.size());
  if (comm.rank() == 0) {
    fs::create_directories(model_dir);
    ASSERT_TRUE(save_decoder(whole, model_dir.string()).is_ok());
    std::ofstream(model_dir / "tokenizer.json") << Tokenizer::byte_level_json({{256, "<|endoftext|>", true}});
  }
  whole = Decoder(nullptr);
  comm.barrier();
  ASSERT_LT(2 * sizes.largest_unit, sizes.model_bytes);

  TrackingAllocator& tracker = tracking_allocator();
  const std::string where = "rank " + std::to_string(comm.rank());

  tracker.reset();
  auto run = start_training_run(config_for(model_dir, run_dir, "none"), "sft");
  // Masters and two AdamW moments: three times this rank's shards, plus one shard in flight.
  EXPECT_LE(tracker.largest(), sizes.largest_shard) << where << ": loading built a tensor larger than a shard";
  EXPECT_LE(tracker.peak_above_baseline(), 3 * sizes.shards + sizes.largest_shard + kSmallTensors) << where << ": loading";

  run->step = 1;
  tracker.reset();
  save_training_checkpoint(*run, "sft", nlohmann::json::object());
  EXPECT_LE(tracker.largest(), sizes.largest_shard) << where << ": saving built a tensor larger than a shard";
  EXPECT_LE(tracker.peak_above_baseline(), sizes.largest_shard + kSmallTensors) << where << ": saving";

  tracker.reset();
  export_final(*run);
  // One unit gathered (and its cast, when it is one) at a time.
  EXPECT_LE(tracker.peak_above_baseline(), 2 * sizes.largest_unit + kSmallTensors) << where << ": exporting";
  EXPECT_LT(tracker.peak_above_baseline(), sizes.model_bytes) << where << ": exporting held a whole model";
  run.reset();
  comm.barrier();

  tracker.reset();
  auto resumed = start_training_run(config_for(model_dir, run_dir, "auto"), "sft");
  EXPECT_EQ(resumed->step, 1);
  EXPECT_LE(tracker.largest(), sizes.largest_shard) << where << ": resuming built a tensor larger than a shard";
  EXPECT_LE(tracker.peak_above_baseline(), 3 * sizes.shards + sizes.largest_shard + kSmallTensors) << where << ": resuming";
  resumed.reset();
  comm.barrier();
  if (comm.rank() == 0) fs::remove_all(work);
}

// Prefetching the next unit's all-gather (trainer/fsdp.h) holds at most one more whole unit than
// gathering each unit when it is needed, gives the same loss and gradients bit for bit, and every
// prefetched unit is the next one asked for; one started for a unit that does not come next is
// waited for and dropped.
TEST(ShardedMemory, PrefetchHoldsAtMostOneMoreUnitAndChangesNothing) {
  Communicator& comm = world();
  ASSERT_EQ(comm.size(), 2) << "run under mpirun -np 2";
  TrackingAllocator& tracker = tracking_allocator();
  const at::Tensor ids = at::arange(3, 3 + 2 * 12, at::kLong).view({2, 12}).remainder(2048);
  const at::Tensor mask = at::ones({2, 12}, at::kLong);
  struct Pass {
    double loss = 0;
    std::vector<at::Tensor> grads;
    int64_t peak = 0;
    ShardedDecoder::PrefetchCounts counts;
  };
  auto pass = [&](bool prefetch) {
    at::manual_seed(5);
    Decoder model(model_options());
    ShardOptions options;
    options.prefetch = prefetch;
    auto sharded = shard(model, comm, options);
    EXPECT_EQ(sharded->prefetching(), prefetch);
    Pass out;
    tracker.reset();
    const at::Tensor logp = at::log_softmax(sharded->model()->forward(ids, mask), -1);
    const at::Tensor loss = -logp.narrow(1, 0, 11).gather(2, ids.narrow(1, 1, 11).unsqueeze(2)).mean();
    loss.backward();
    out.peak = tracker.peak_above_baseline();
    out.loss = loss.item<double>();
    for (const at::Tensor& m : sharded->master_shards()) out.grads.push_back(m.grad().clone());
    out.counts = sharded->prefetch_counts();
    // A layer called on its own starts the next layer's gather; the next pass asks for the root first.
    at::NoGradGuard no_grad;
    sharded->model()->call_unit(1, at::zeros({1, 1, 64}), [](const at::Tensor& x) { return x; });
    sharded->model()->forward(ids, mask);
    const ShardedDecoder::PrefetchCounts after = sharded->prefetch_counts();
    EXPECT_EQ(after.wasted - out.counts.wasted, prefetch ? 1 : 0);
    return out;
  };
  const Pass plain = pass(false), prefetched = pass(true);
  const std::string where = "rank " + std::to_string(comm.rank());
  EXPECT_EQ(prefetched.loss, plain.loss) << where;
  ASSERT_EQ(prefetched.grads.size(), plain.grads.size());
  for (size_t u = 0; u < plain.grads.size(); ++u) EXPECT_TRUE(prefetched.grads[u].equal(plain.grads[u])) << where << ", unit " << u;
  const int64_t layers = model_options().num_layers;
  EXPECT_EQ(prefetched.counts.used, 2 * layers + 1) << where;  // forward L + 1, backward L
  EXPECT_EQ(prefetched.counts.wasted, 0) << where;
  EXPECT_EQ(plain.counts.used + plain.counts.wasted, 0) << where;
  Decoder whole(model_options());
  const Sizes sizes = sizes_of(whole, comm.size());
  EXPECT_LE(prefetched.peak, plain.peak + sizes.largest_unit) << where;
  // A prefetch that left every unit whole would exceed that bound: the model is over twice its largest unit.
  EXPECT_GT(sizes.model_bytes, 2 * sizes.largest_unit);
}

}  // namespace
}  // namespace grpo

int main(int argc, char** argv) {
  testing::InitGoogleTest(&argc, argv);
  const int failed = RUN_ALL_TESTS();
  grpo::shutdown_world();
  return failed;
}
