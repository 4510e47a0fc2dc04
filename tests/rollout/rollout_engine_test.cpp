// RolloutEngine: versioned weights loaded from another model's tensors sample exactly what that
// model samples, and the per-unit checksums tell equal weights from changed ones.

#include "rollout/engine.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>

namespace grpo {
namespace {

Decoder random_decoder(uint64_t seed) {
  DecoderOptions o;
  o.vocab_size = 50; o.hidden_size = 32; o.intermediate_size = 48; o.num_layers = 2;
  o.num_heads = 4; o.num_kv_heads = 2; o.head_dim = 8; o.qkv_bias = true; o.tie_word_embeddings = true;
  at::manual_seed(seed);
  Decoder model(o);
  at::NoGradGuard no_grad;
  for (auto& p : model->parameters()) p.normal_(0, 0.3);
  return model;
}

GenerationOptions sampling_options() {
  GenerationOptions options;
  options.max_new_tokens = 12;
  options.group_size = 3;
  return options;
}

const std::vector<std::vector<int64_t>> kPrompts = {{1, 2, 3, 4}, {5, 6}};

TEST(RolloutEngine, LoadedWeightsSampleWhatTheirSourceSamples) {
  Decoder trained = random_decoder(1);
  RolloutEngine engine(random_decoder(2), 0);
  const std::vector<uint64_t> seeds = rollout_seeds(4, {0, 1}, 3);
  const RolloutBatch want = generate(trained, kPrompts, sampling_options(), seeds);
  const RolloutBatch before = engine.generate(kPrompts, sampling_options(), seeds);
  EXPECT_EQ(before.policy_version, 0);
  EXPECT_FALSE(before.completion_ids.equal(want.completion_ids)) << "the two models sample alike; the test shows nothing";

  engine.load_weights(7, trained->parameters());
  const RolloutBatch after = engine.generate(kPrompts, sampling_options(), seeds);
  EXPECT_EQ(engine.version(), 7);
  EXPECT_EQ(after.policy_version, 7);
  EXPECT_EQ(want.policy_version, -1);
  EXPECT_TRUE(after.completion_ids.equal(want.completion_ids));
  EXPECT_TRUE(after.sampling_logp.equal(want.sampling_logp));
  // A copy, not a shared tensor: training the source later does not change the engine.
  EXPECT_NE(engine.model()->parameters()[0].data_ptr(), trained->parameters()[0].data_ptr());
}

TEST(RolloutEngine, RejectsTensorsThatDoNotFit) {
  RolloutEngine engine(random_decoder(2), 0);
  std::vector<at::Tensor> tensors = random_decoder(1)->parameters();
  tensors.pop_back();
  EXPECT_THROW(engine.load_weights(1, tensors), c10::Error);
  tensors = random_decoder(1)->parameters();
  tensors[1] = tensors[1].reshape({-1});
  EXPECT_THROW(engine.load_weights(1, tensors), c10::Error);
  EXPECT_EQ(engine.version(), 0);
}

TEST(RolloutEngine, UnitChecksumsMatchEqualWeightsAndFlagTheChangedUnit) {
  Decoder model = random_decoder(1);
  Decoder copy = random_decoder(2);
  RolloutEngine engine(copy, 0);
  engine.load_weights(1, model->parameters());
  const std::vector<double> a = unit_checksums(model, model->parameters());
  ASSERT_EQ(a.size(), model->units().size());
  EXPECT_EQ(a, unit_checksums(copy, copy->parameters()));
  // A swap of two elements inside one tensor keeps the plain sum but not the checksum, and only
  // that unit's changes.
  std::vector<at::Tensor> changed;
  for (const at::Tensor& p : model->parameters()) changed.push_back(p.detach().clone());
  const std::string name = model->units()[2].param_names.front();
  size_t index = 0;
  for (const auto& item : model->named_parameters()) {
    if (item.key() == name) break;
    ++index;
  }
  at::Tensor flat = changed[index].view({-1});
  const at::Tensor first = flat[0].clone();
  flat[0].copy_(flat[1]);
  flat[1].copy_(first);
  const std::vector<double> b = unit_checksums(model, changed);
  for (size_t u = 0; u < a.size(); ++u) {
    if (u == 2) {
      EXPECT_NE(a[u], b[u]);
    } else {
      EXPECT_EQ(a[u], b[u]) << "unit " << u;
    }
  }
}

}  // namespace
}  // namespace grpo
