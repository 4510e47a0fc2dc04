// The ZeRO-3 weight sync of the disaggregated layout (trainer/disaggregated.h send_weight_shards),
// through the trainer's own entry points (start_training_run, send_policy, receive_weights) under
// mpirun: trainer ranks first, the last --rollout-ranks=K ranks roll out. ctest runs it on 2 + 1,
// 3 + 1 (uneven shard padding) and 2 + 2 ranks. For two syncs (the starting weights, then after
// every master changed), in fp32 and bf16:
// - every rollout rank's weights equal the trainers' element for element, compared here against the
//   trainers' shards gathered whole (independently of the sync's own checksums);
// - no trainer rank allocates more than one unit's shard while it sends (the CPU allocator records
//   every allocation), so trainer rank 0 never holds the whole model;
// - each trainer rank sends its shards (1/N of the model plus padding), each rollout rank receives
//   N shards of every unit, and the logged bytes say so;
// - a shard changed on the way stops every rank with an error naming the rollout rank, the unit and
//   the trainer rank it came from.

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>

#include "core/config.h"
#include "dist/communicator.h"
#include "models/decoder.h"
#include "models/tokenizer.h"
#include "rollout/engine.h"
#include "tests/support/tracking_allocator.h"
#include "trainer/disaggregated.h"
#include "trainer/fsdp.h"
#include "trainer/train_common.h"

namespace grpo {
namespace {

namespace fs = std::filesystem;
using testing::TrackingAllocator;

int rollout_ranks_flag = 1;  // --rollout-ranks=K

// Tied embeddings larger than any layer, so one unit and the whole model differ clearly; every
// layer's 27820 elements leave a padded last shard on 3 ranks.
DecoderOptions model_options() {
  DecoderOptions o;
  o.architecture = DecoderArchitecture::kQwen2;
  o.vocab_size = 1001;
  o.hidden_size = 60;
  o.intermediate_size = 100;
  o.num_layers = 4;
  o.num_heads = 3;
  o.num_kv_heads = 1;
  o.head_dim = 20;
  o.qkv_bias = true;
  o.tie_word_embeddings = true;
  o.max_position_embeddings = 128;
  return o;
}

// Scalars and flags (collective handshakes, checksums) held beside the model state.
constexpr int64_t kSmallTensors = 64 << 10;

TrackingAllocator& tracker() {
  static TrackingAllocator* instance = [] {
    auto* t = new TrackingAllocator(c10::GetCPUAllocator());
    c10::SetCPUAllocator(t, /*priority=*/100);
    return t;
  }();
  return *instance;
}

Config config_for(const fs::path& model_dir, const fs::path& run_dir, int rollout_ranks, const std::string& dtype) {
  const std::string yaml =
      "model: {path: \"" + model_dir.string() + "\", dtype: " + dtype + "}\n"
      "data: {train_path: \"builtin:addition?n=8&digits=1-2&seed=5\"}\n"
      "reward: {functions: [{name: language, options: {language: en}}]}\n"
      "trainer: {zero_stage: 3, threads: 1, steps: 2, rollout_ranks: " + std::to_string(rollout_ranks) +
      ", run_dir: \"" + run_dir.string() + "\"}\n"
      "checkpoint: {resume: none}\n";
  StatusOr<Config> config = parse_config(yaml, "weight_sync_test");
  EXPECT_TRUE(config.is_ok()) << config.status().message();
  return *config;
}

// Every parameter in named_parameters() order, flattened end to end in `dtype`.
at::Tensor flat_parameters(const std::vector<at::Tensor>& params, at::ScalarType dtype) {
  std::vector<at::Tensor> flat;
  for (const at::Tensor& p : params) flat.push_back(p.detach().to(dtype).reshape({-1}));
  return at::cat(flat);
}

// A model directory under a work directory named by rank 0's pid (shared by broadcast) and `tag`,
// written by rank 0 and visible to every rank on return.
fs::path write_shared_model(Communicator& comm, const std::string& tag) {
  at::Tensor id = at::full({1}, static_cast<double>(::getpid()), at::kDouble);
  comm.broadcast(id, 0);
  const fs::path work = fs::temp_directory_path() / ("grpo_weight_sync_" + std::to_string(id.item<int64_t>()) + "_" + tag);
  const fs::path model_dir = work / "model";
  if (comm.rank() == 0) {
    Decoder whole(model_options());
    fs::create_directories(model_dir);
    EXPECT_TRUE(save_decoder(whole, model_dir.string()).is_ok());
    std::ofstream(model_dir / "tokenizer.json") << Tokenizer::byte_level_json({{256, "<|endoftext|>", true}});
  }
  comm.barrier();
  return work;
}

void check_sync_from_shard_owners(const std::string& dtype_name) {
  Communicator& comm = world();
  const int rollout_ranks = rollout_ranks_flag;
  ASSERT_GT(comm.size(), rollout_ranks) << "run under mpirun with more ranks than --rollout-ranks";
  const int trainers = comm.size() - rollout_ranks;
  const at::ScalarType dtype = dtype_name == "bfloat16" ? at::kBFloat16 : at::kFloat;
  const int64_t element = dtype == at::kBFloat16 ? 2 : 4;
  const fs::path work = write_shared_model(comm, dtype_name);
  const fs::path model_dir = work / "model";

  tracker();  // installed before the model is loaded, so its tensors are counted as held
  auto run = start_training_run(config_for(model_dir, work / "run", rollout_ranks, dtype_name), "grpo");
  ASSERT_TRUE(run->layout);
  ASSERT_EQ(weight_source(*run), WeightSource::kShardOwners);
  const bool rollout = run->layout->rollout;
  ASSERT_EQ(rollout, comm.rank() >= trainers);
  const std::string where = (rollout ? "rollout rank " : "trainer rank ") + std::to_string(comm.rank());

  // The sizes the sync must respect, from the layout ZeRO-3 cuts on `trainers` ranks.
  int64_t model_elements = 0, largest_unit = 0, largest_shard = 0, shard_elements = 0;
  bool padded = false;
  for (const DecoderUnit& unit : run->policy.model->units()) {
    int64_t numel = 0;
    for (const auto& shape : unit.shapes) numel += c10::multiply_integers(shape);
    const int64_t shard = (numel + trainers - 1) / trainers;
    model_elements += numel;
    largest_unit = std::max(largest_unit, numel);
    largest_shard = std::max(largest_shard, shard);
    shard_elements += shard;
    padded = padded || numel % trainers != 0;
  }
  ASSERT_LT(2 * largest_unit, model_elements);
  if (trainers == 3) {
    ASSERT_TRUE(padded) << "no unit leaves padding on 3 ranks: the test does not exercise it";
  }

  std::unique_ptr<RolloutEngine> engine;
  if (rollout) {
    engine = std::make_unique<RolloutEngine>(run->policy.model, -1);
    // Loaded from the trainers' own files: cleared, so that the first sync must bring every weight.
    at::NoGradGuard no_grad;
    for (at::Tensor& p : engine->model()->parameters()) p.zero_();
  }
  at::Tensor previous;
  for (int64_t version = 0; version < 2; ++version) {
    if (version > 0 && !rollout) {  // an update: every master moves, differently on every rank
      at::NoGradGuard no_grad;
      at::manual_seed(100 + comm.rank());
      for (const at::Tensor& master : run->sharded->master_shards()) {
        at::Tensor m = master;
        m.add_(at::randn(m.sizes(), m.options()) * 0.01);
      }
    }
    tracker().reset();
    const WeightSyncStats stats = rollout ? receive_weights(comm, *run->layout, *engine, version, weight_source(*run))
                                          : send_policy(*run, comm);
    const int64_t largest = tracker().largest(), peak = tracker().peak_above_baseline();
    const std::string when = where + ", sync of version " + std::to_string(version);

    EXPECT_EQ(stats.bytes, shard_elements * trainers * element) << when << ": bytes each rollout rank receives";
    EXPECT_GE(stats.bytes, model_elements * element) << when;
    if (rollout) {
      EXPECT_EQ(engine->version(), version) << when;
      EXPECT_EQ(stats.sent_bytes, 0) << when;
    } else {
      // Its own shards, once: about 1/N of the model, never the whole of it.
      EXPECT_EQ(stats.sent_bytes, shard_elements * element) << when;
      EXPECT_LT(stats.sent_bytes, model_elements * element / trainers + 64 * element) << when;
      // Its shard of one unit (the cast of it, in bf16) in flight at a time.
      EXPECT_LE(largest, largest_shard * element) << when << ": an allocation larger than a shard";
      EXPECT_LE(peak, largest_shard * element + kSmallTensors) << when << ": held more than a shard at once";
      EXPECT_LT(peak, largest_unit * 4) << when << ": held a whole unit";
    }

    // The truth, apart from the sync: the trainers' shards gathered whole on trainer 0, cast as
    // they travel, and sent to every rank; each rollout rank compares its engine's weights.
    std::vector<at::Tensor> whole;
    if (!rollout) whole = run->sharded->whole_from_shards(run->sharded->master_shards(), /*root_only=*/true);
    at::Tensor expected = comm.rank() == 0 ? flat_parameters(whole, dtype) : at::empty({model_elements}, dtype);
    comm.broadcast(expected, 0);
    if (rollout) {
      const at::Tensor held = flat_parameters(engine->model()->parameters(), dtype);
      ASSERT_EQ(held.numel(), model_elements);
      EXPECT_TRUE(at::equal(held, expected)) << when << ": the rollout weights differ from the trainers' by up to "
                                             << (held.to(at::kFloat) - expected.to(at::kFloat)).abs().max().item<float>();
      if (previous.defined()) {
        EXPECT_FALSE(at::equal(held, previous)) << when << ": the update did not reach the rollout rank";
      }
      previous = held;
    }
  }
  run.reset();
  comm.barrier();
  if (comm.rank() == 0) fs::remove_all(work);
}

TEST(WeightSync, Float32FromTheShardOwners) { check_sync_from_shard_owners("float32"); }
TEST(WeightSync, Bfloat16FromTheShardOwners) { check_sync_from_shard_owners("bfloat16"); }

// Forwards everything to `inner`, except that one element of what gather_into delivers to the root
// changes on the way: a transfer gone wrong.
class CorruptingCommunicator final : public Communicator {
 public:
  CorruptingCommunicator(std::unique_ptr<Communicator> inner, int64_t gather_call, int64_t row, int64_t element)
      : inner_(std::move(inner)), gather_call_(gather_call), row_(row), element_(element) {}
  int rank() const override { return inner_->rank(); }
  int size() const override { return inner_->size(); }
  void all_reduce_sum(at::Tensor& t) override { inner_->all_reduce_sum(t); }
  void all_reduce_sum(std::vector<double>& v) override { inner_->all_reduce_sum(v); }
  void broadcast(at::Tensor& t, int root) override { inner_->broadcast(t, root); }
  void all_gather_into(at::Tensor& out, const at::Tensor& local) override { inner_->all_gather_into(out, local); }
  void gather_into(at::Tensor& out, const at::Tensor& local, int root) override {
    inner_->gather_into(out, local, root);
    if (rank() == root && gather_calls_++ == gather_call_) {
      at::NoGradGuard no_grad;
      at::Tensor cell = out[row_][element_];
      cell.add_(1.0);
    }
  }
  at::Tensor reduce_scatter_sum(const at::Tensor& t) override { return inner_->reduce_scatter_sum(t); }
  void barrier() override { inner_->barrier(); }
  [[noreturn]] void abort(int code) override {
    inner_->abort(code);
    std::abort();  // the inner abort does not return either; this tells the compiler so
  }

 private:
  std::unique_ptr<Communicator> inner_;
  int64_t gather_call_, row_, element_, gather_calls_ = 0;
};

// One element of trainer rank 1's shard of unit 1 (the first layer) arrives changed at the first
// rollout rank: every rank stops with the same error naming that rollout rank, the unit and the
// trainer rank.
TEST(WeightSync, AShardThatArrivesChangedStopsEveryRankNamingIt) {
  Communicator& comm = world();
  const int trainers = comm.size() - rollout_ranks_flag;
  const fs::path work = write_shared_model(comm, "bad");
  const fs::path model_dir = work / "model";
  auto run = start_training_run(config_for(model_dir, work / "run", rollout_ranks_flag, "float32"), "grpo");
  RolloutLayout& layout = *run->layout;
  if (comm.rank() == trainers)  // the first rollout rank, the root of the shards' gather
    layout.shard_owners =
        std::make_unique<CorruptingCommunicator>(std::move(layout.shard_owners), /*unit=*/1, /*trainer=*/1, 5);
  std::string error;
  try {
    if (layout.rollout) {
      RolloutEngine engine(run->policy.model, -1);
      receive_weights(comm, layout, engine, 0, weight_source(*run));
    } else {
      send_policy(*run, comm);
    }
  } catch (const std::exception& e) {
    error = e.what();
  }
  const std::string rank = "rank " + std::to_string(comm.rank());
  EXPECT_NE(error.find("weight sync: rollout rank " + std::to_string(trainers) +
                       " holds different weights than the trainers in unit 1 (model.layers.0), in trainer rank 1's "
                       "shard"),
            std::string::npos)
      << rank << ": " << error;
  run.reset();
  comm.barrier();
  if (comm.rank() == 0) fs::remove_all(work);
}

}  // namespace
}  // namespace grpo

int main(int argc, char** argv) {
  testing::InitGoogleTest(&argc, argv);
  for (int i = 1; i < argc; ++i)
    if (std::strncmp(argv[i], "--rollout-ranks=", 16) == 0) grpo::rollout_ranks_flag = std::atoi(argv[i] + 16);
  const int failed = RUN_ALL_TESTS();
  grpo::shutdown_world();
  return failed;
}
