// The decoder's unit seam and trainer/fsdp.h in one process (the multi-rank runs are in
// tests/mpi/distributed_test.cpp): units cover every parameter once, the seam sees every unit's
// computation, and the wrappers (activation checkpointing; ZeRO-3 on one rank) give the plain
// model's loss and gradients.

#include "trainer/fsdp.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <set>

#include <unistd.h>

#include "trainer/distributed_optimizer.h"

namespace grpo {
namespace {

namespace fs = std::filesystem;

DecoderOptions tiny(bool tied) {
  DecoderOptions o;
  o.architecture = DecoderArchitecture::kQwen2;
  o.vocab_size = 37;
  o.hidden_size = 16;
  o.intermediate_size = 24;
  o.num_layers = 3;
  o.num_heads = 4;
  o.num_kv_heads = 2;
  o.head_dim = 4;
  o.qkv_bias = true;
  o.tie_word_embeddings = tied;
  o.max_position_embeddings = 64;
  return o;
}

Decoder make_decoder(bool tied) {
  at::manual_seed(11);
  Decoder d(tiny(tied));
  at::NoGradGuard no_grad;
  for (auto& p : d->parameters()) p.normal_(0, 0.3);  // norms too, so they carry gradient signal
  return d;
}

// A loss that reads every unit: mean log-prob of the next token, on a left-padded batch.
at::Tensor loss_of(Decoder& d) {
  const at::Tensor ids = at::tensor({3, 5, 7, 9, 11, 2, 0, 4, 6, 8, 10, 12}, at::kLong).view({2, 6});
  const at::Tensor mask = at::tensor({1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1}, at::kLong).view({2, 6});
  const at::Tensor logp = at::log_softmax(d->forward(ids, mask), -1);
  return -logp.narrow(1, 0, 5).gather(2, ids.narrow(1, 1, 5).unsqueeze(2)).mean();
}

at::Tensor three_tokens() { return at::tensor({1, 2, 3}, at::kLong).view({1, 3}); }

std::map<std::string, at::Tensor> gradients(Decoder& d) {
  std::map<std::string, at::Tensor> out;
  for (const auto& item : d->named_parameters()) out[item.key()] = item.value().grad().clone();
  return out;
}

TEST(DecoderUnits, EveryParameterInOneUnitAndTheHeadWithTheEmbeddings) {
  for (bool tied : {true, false}) {
    Decoder d = make_decoder(tied);
    const std::vector<DecoderUnit> units = d->units();
    ASSERT_EQ(units.size(), 4u);
    std::set<std::string> seen;
    for (const DecoderUnit& u : units)
      for (const std::string& name : u.param_names) EXPECT_TRUE(seen.insert(name).second) << name;
    EXPECT_EQ(seen.size(), d->named_parameters().size());
    const std::set<std::string> root(units[0].param_names.begin(), units[0].param_names.end());
    EXPECT_TRUE(root.count("model.embed_tokens.weight"));
    EXPECT_TRUE(root.count("model.norm.weight"));
    EXPECT_EQ(root.count("lm_head.weight"), tied ? 0u : 1u);
    for (const std::string& name : units[2].param_names) EXPECT_EQ(name.rfind("model.layers.1.", 0), 0u) << name;
  }
}

TEST(DecoderUnits, EveryComputationGoesThroughTheSeam) {
  Decoder d = make_decoder(true);
  const at::Tensor plain = d->forward(three_tokens());
  std::vector<size_t> calls;
  d->set_unit_call([&](size_t unit, const at::Tensor& input, const UnitBody& body) {
    calls.push_back(unit);
    return body(input);
  });
  const at::Tensor hooked = d->forward(three_tokens());
  EXPECT_EQ(calls, (std::vector<size_t>{0, 1, 2, 3, 0, 0}));  // embeddings, layers, norm, head
  EXPECT_TRUE(at::equal(plain, hooked));
  // A hook that skips the layers changes the output: the seam is really on the path.
  d->set_unit_call([](size_t unit, const at::Tensor& input, const UnitBody& body) { return unit == 0 ? body(input) : input; });
  EXPECT_FALSE(at::allclose(plain, d->forward(three_tokens())));
}

TEST(Fsdp, ActivationCheckpointingGivesTheSameGradients) {
  for (bool tied : {true, false}) {
    Decoder plain = make_decoder(tied), wrapped = make_decoder(tied);
    const at::Tensor expected_loss = loss_of(plain);
    expected_loss.backward();
    ShardOptions options;
    options.shard_parameters = false;
    options.activation_checkpointing = true;
    auto sharded = shard(wrapped, world(), options);
    const at::Tensor loss = loss_of(wrapped);
    loss.backward();
    EXPECT_NEAR(loss.item<double>(), expected_loss.item<double>(), 1e-6);
    const auto a = gradients(plain), b = gradients(wrapped);
    for (const auto& [name, g] : a) EXPECT_LE((g - b.at(name)).abs().max().item<double>(), 1e-5) << name;
  }
}

TEST(Fsdp, ShardedOnOneRankGivesTheSameLossGradientsAndSteps) {
  for (bool tied : {true, false}) {
    Decoder plain = make_decoder(tied), wrapped = make_decoder(tied);
    OptimizerConfig adam;
    adam.max_grad_norm = 0.5;  // clipping active
    DistributedAdamW plain_optimizer(plain->parameters(), adam, world(), 0);
    auto sharded = shard(wrapped, world(), ShardOptions{});
    DistributedAdamW sharded_optimizer(*sharded, adam, world());
    EXPECT_EQ(wrapped->parameters().front().numel(), 0) << "parameters are released between passes";
    for (int step = 0; step < 3; ++step) {
      plain_optimizer.zero_grad();
      sharded_optimizer.zero_grad();
      const at::Tensor expected = loss_of(plain), loss = loss_of(wrapped);
      expected.backward();
      loss.backward();
      EXPECT_NEAR(loss.item<double>(), expected.item<double>(), 1e-6) << "step " << step;
      EXPECT_NEAR(sharded_optimizer.step(1e-2), plain_optimizer.step(1e-2), 1e-5) << "step " << step;
    }
    const std::vector<at::Tensor> whole = sharded->whole_from_shards(sharded->master_shards());
    const auto params = plain->parameters();
    ASSERT_EQ(whole.size(), params.size());
    for (size_t i = 0; i < params.size(); ++i) EXPECT_LE((whole[i] - params[i]).abs().max().item<double>(), 1e-5) << i;
    // Moments round-trip through whole tensors (what checkpoints hold).
    std::vector<at::Tensor> exp_avg, exp_avg_sq;
    sharded_optimizer.gather_moments(&exp_avg, &exp_avg_sq);
    std::vector<at::Tensor> plain_avg, plain_avg_sq;
    plain_optimizer.gather_moments(&plain_avg, &plain_avg_sq);
    for (size_t i = 0; i < params.size(); ++i) EXPECT_LE((exp_avg[i] - plain_avg[i]).abs().max().item<double>(), 1e-5) << i;
  }
}

TEST(Fsdp, GatherAllHoldsTheWholeModelForGeneration) {
  Decoder plain = make_decoder(true), wrapped = make_decoder(true);
  auto sharded = shard(wrapped, world(), ShardOptions{});
  {
    FullParameters whole(sharded.get());
    EXPECT_EQ(wrapped->parameters().front().sizes(), plain->parameters().front().sizes());
    KvCache cache = wrapped->make_cache(1, 8);
    at::NoGradGuard no_grad;
    EXPECT_TRUE(at::allclose(wrapped->forward(three_tokens(), {}, &cache),
                             plain->forward(three_tokens())));
  }
  EXPECT_EQ(wrapped->parameters().front().numel(), 0);
}

TEST(Fsdp, Bfloat16PassesComputeInBfloat16FromFp32Masters) {
  Decoder wrapped = make_decoder(false);
  ShardOptions options;
  options.param_dtype = at::kBFloat16;
  auto sharded = shard(wrapped, world(), options);
  for (const at::Tensor& m : sharded->master_shards()) EXPECT_EQ(m.scalar_type(), at::kFloat);
  std::vector<at::ScalarType> seen;
  const at::Tensor loss = loss_of(wrapped);
  loss.backward();
  for (const at::Tensor& m : sharded->master_shards()) {
    ASSERT_TRUE(m.grad().defined());
    EXPECT_EQ(m.grad().scalar_type(), at::kFloat);
    EXPECT_GT(m.grad().abs().sum().item<double>(), 0);
  }
  // bf16 compute: close to the fp32 loss, but not equal to it.
  Decoder plain = make_decoder(false);
  const double expected = loss_of(plain).item<double>();
  EXPECT_NEAR(loss.item<double>(), expected, 5e-2);
  EXPECT_NE(loss.item<double>(), expected);
}

// Share of elements where bf16(trained) is more than one bf16 ulp away from bf16(reference).
double share_off_by_more_than_an_ulp(const std::vector<at::Tensor>& trained, const std::vector<at::Tensor>& reference) {
  double off = 0, total = 0;
  for (size_t i = 0; i < reference.size(); ++i) {
    const at::Tensor want = reference[i].detach().to(at::kBFloat16).to(at::kFloat);
    const at::Tensor got = trained[i].detach().to(at::kBFloat16).to(at::kFloat);
    const at::Tensor ulp = at::pow(2.0, at::floor(at::log2(want.abs().clamp_min(1e-30))) - 7);
    off += ((got - want).abs() > ulp * 1.01).sum().item<double>();
    total += static_cast<double>(want.numel());
  }
  return off / total;
}

// llm.c's / FSDP's mixed precision: AdamW steps of lr 1e-5 are below half a bf16 ulp of weights
// near 0.02, so bf16 parameters updated in place never move, while the fp32 master accumulates
// them: after 60 steps bf16(master) matches an fp32 run to within one bf16 ulp (bar the few
// elements whose tiny gradients change sign under bf16 compute); updating bf16 parameters directly
// visibly does not.
TEST(Fsdp, Bfloat16WithFp32MasterTracksAnFp32Run) {
  auto init = [](bool tied) {
    Decoder d = make_decoder(tied);
    at::NoGradGuard no_grad;
    for (auto& p : d->parameters()) p.normal_(0, 0.02);
    return d;
  };
  OptimizerConfig adam;
  adam.max_grad_norm = 0;
  const int steps = 60;
  const double lr = 1e-5;
  auto train = [&](Decoder& d, DistributedAdamW& optimizer) {
    for (int step = 0; step < steps; ++step) {
      optimizer.zero_grad();
      loss_of(d).backward();
      optimizer.step(lr);
    }
  };
  Decoder fp32 = init(false);
  const std::vector<at::Tensor> start = [&] {
    std::vector<at::Tensor> copies;
    for (const at::Tensor& p : fp32->parameters()) copies.push_back(p.detach().clone());
    return copies;
  }();
  DistributedAdamW fp32_optimizer(fp32->parameters(), adam, world(), 0);
  train(fp32, fp32_optimizer);
  // The test can tell: the fp32 run moved most weights by more than a bf16 ulp.
  EXPECT_GT(share_off_by_more_than_an_ulp(start, fp32->parameters()), 0.5);

  Decoder mixed = init(false);
  ShardOptions options;
  options.param_dtype = at::kBFloat16;
  auto sharded = shard(mixed, world(), options);
  DistributedAdamW mixed_optimizer(*sharded, adam, world());
  train(mixed, mixed_optimizer);
  EXPECT_LT(share_off_by_more_than_an_ulp(sharded->whole_from_shards(sharded->master_shards()), fp32->parameters()), 0.02);

  Decoder no_master = init(false);
  no_master->to(at::kBFloat16);
  DistributedAdamW bf16_optimizer(no_master->parameters(), adam, world(), 0);
  train(no_master, bf16_optimizer);
  EXPECT_GT(share_off_by_more_than_an_ulp(no_master->parameters(), fp32->parameters()), 0.5);
}

// Filled from the mapped files of a Hugging Face directory (the decoder deferred, never
// materialized), the masters equal those sharded from the loaded model, and so do the losses.
TEST(Fsdp, ShardsFromMappedFilesEqualShardsOfTheLoadedModel) {
  const fs::path dir = fs::temp_directory_path() / ("grpo_fsdp_mapped_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  Decoder original = make_decoder(/*tied=*/false);
  ASSERT_TRUE(save_decoder(original, dir.string()).is_ok());
  StatusOr<Decoder> loaded = load_decoder(dir.string());
  ASSERT_TRUE(loaded.is_ok());
  Decoder whole = *loaded;
  auto from_model = shard(whole, world(), ShardOptions{});
  StatusOr<MappedDecoder> mapped = map_decoder(dir.string());
  ASSERT_TRUE(mapped.is_ok()) << mapped.status().message();
  Decoder deferred = mapped->model;
  auto from_files = shard(deferred, world(), ShardOptions{}, slices_of(mapped->weights));
  mapped->weights.clear();
  const std::vector<at::Tensor> a = from_model->master_shards(), b = from_files->master_shards();
  ASSERT_EQ(a.size(), b.size());
  for (size_t u = 0; u < a.size(); ++u) EXPECT_TRUE(at::equal(a[u], b[u])) << "unit " << u;
  EXPECT_TRUE(at::equal(loss_of(whole), loss_of(deferred)));
  fs::remove_all(dir);
}

// A unit saved as 3 shards (padded to 12 elements) reads back, range by range, as the flat unit
// with zeros past its end: what a run on another rank count asks for.
TEST(ShardLayout, ReadFlatRangeReassemblesShardsSavedOnAnotherRankCount) {
  ShardLayout saved;
  saved.ranks = 3;
  saved.units.push_back(make_unit_layout("root", {"a", "b"}, {{2, 3}, {4}}, 3));
  ASSERT_EQ(saved.units[0].numel, 10);
  ASSERT_EQ(saved.units[0].shard, 4);
  const at::Tensor flat = at::arange(1, 11, at::kFloat);
  const at::Tensor padded = at::cat({flat, at::zeros({2})});
  std::vector<TensorMap> shards(3);
  for (int r = 0; r < 3; ++r) shards[r][shard_tensor_name("master", saved.units[0])] = padded.narrow(0, 4 * r, 4);
  for (int64_t begin = 0; begin < 12; ++begin)
    for (int64_t count = 1; begin + count <= 12; ++count)
      EXPECT_TRUE(at::equal(read_flat_range(saved, shards, "master", 0, begin, count), padded.narrow(0, begin, count)))
          << begin << " +" << count;
  // Two ranks' shards of 5: exactly the flat unit.
  EXPECT_TRUE(at::equal(at::cat({read_flat_range(saved, shards, "master", 0, 0, 5), read_flat_range(saved, shards, "master", 0, 5, 5)}), flat));
  nlohmann::json json = layout_to_json(saved);
  StatusOr<ShardLayout> back = layout_from_json(json, "manifest.json");
  ASSERT_TRUE(back.is_ok()) << back.status().message();
  EXPECT_TRUE(check_same_units(*back, saved).is_ok());
  json["units"][0]["numel"] = 11;
  back = layout_from_json(json, "manifest.json");
  ASSERT_FALSE(back.is_ok());
  EXPECT_NE(back.status().message().find("manifest.json: unit 'root'"), std::string::npos) << back.status().message();
}

}  // namespace
}  // namespace grpo
