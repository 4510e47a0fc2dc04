// The generation engine on the Hugging Face fixture models (GRPO_MODEL_FIXTURES).

#include "rollout/engine.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "core/atomic_file.h"
#include "kernels/cpu_kernels.h"
#include "tests/support/fixtures.h"

namespace grpo {
namespace {

namespace fs = std::filesystem;

std::string model_fixture(const std::string& name) {
  return testing::shared_path("GRPO_MODEL_FIXTURES", "fixtures/models") + "/" + name;
}

class EngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string dir = model_fixture("qwen2-tiny");
    if (!fs::exists(dir + "/expected.json")) GTEST_SKIP() << "no qwen2-tiny fixture at " << dir;
    StatusOr<Decoder> model = load_decoder(dir, "float32");
    ASSERT_TRUE(model.is_ok()) << model.status().message();
    model_ = *model;
    std::ifstream in(dir + "/expected.json");
    expected_ = nlohmann::json::parse(in);
  }
  Decoder model_{nullptr};
  nlohmann::json expected_;
};

TEST_F(EngineTest, GreedyEqualsTheFixtureContinuation) {
  const auto prompt = expected_["greedy"]["prompt_ids"].get<std::vector<int64_t>>();
  const auto want = expected_["greedy"]["new_token_ids"].get<std::vector<int64_t>>();
  GenerationOptions options;
  options.sampling.temperature = 0;
  options.max_new_tokens = static_cast<int64_t>(want.size());
  options.group_size = 3;
  // A second, longer prompt in the same batch: left padding must not change the first's tokens.
  std::vector<int64_t> other(20, 7);
  const RolloutBatch batch = generate(model_, {prompt, other}, options, rollout_seeds(1, {0, 1}, 3));
  ASSERT_EQ(batch.completion_ids.size(0), 6);
  for (int64_t row = 0; row < 3; ++row) {
    const at::Tensor got = batch.completion_ids[row];
    EXPECT_EQ(std::vector<int64_t>(got.data_ptr<int64_t>(), got.data_ptr<int64_t>() + got.numel()), want) << row;
    EXPECT_EQ(batch.finish_reasons[row], FinishReason::kLength);
  }
  EXPECT_EQ(batch.prompt_index, (std::vector<int64_t>{0, 0, 0, 1, 1, 1}));
}

TEST_F(EngineTest, SampledLogprobsEqualASeparateForwardPass) {
  GenerationOptions options;
  options.sampling.temperature = 0.7;
  options.sampling.top_p = 0.9;
  options.max_new_tokens = 12;
  options.group_size = 4;
  options.stop_token_ids = {5, 9, 17};
  const std::vector<std::vector<int64_t>> prompts{{3, 4, 5, 6}, {100, 200}};
  const RolloutBatch batch = generate(model_, prompts, options, rollout_seeds(7, {0, 1}, 4));
  const int64_t n = batch.completion_ids.size(0);
  const at::Tensor ids = at::cat({batch.prompt_ids, batch.completion_ids}, 1);
  const at::Tensor mask = at::cat({batch.prompt_mask, batch.completion_mask}, 1);
  at::NoGradGuard no_grad;
  const at::Tensor logits = model_->forward(ids, mask);
  const int64_t p = batch.prompt_ids.size(1), c = batch.completion_ids.size(1);
  const at::Tensor predicting = logits.narrow(1, p - 1, c) / 0.7;  // logits that chose each completion token
  const at::Tensor logp = at::log_softmax(predicting, -1).gather(2, batch.completion_ids.unsqueeze(2)).squeeze(2);
  const at::Tensor diff = (logp - batch.sampling_logp).abs().masked_fill(~batch.completion_mask, 0);
  EXPECT_LE(diff.max().item<double>(), 1e-4);
  for (int64_t row = 0; row < n; ++row) {
    const int64_t len = batch.completion_mask[row].sum().item<int64_t>();
    const int64_t last = batch.completion_ids[row][len - 1].item<int64_t>();
    const bool stopped = last == 5 || last == 9 || last == 17;
    EXPECT_EQ(batch.finish_reasons[row], stopped ? FinishReason::kStopToken : FinishReason::kLength);
    if (!stopped) {
      EXPECT_EQ(len, 12);
    }
  }
}

TEST_F(EngineTest, SameSeedSameTokensWhateverTheBatchComposition) {
  GenerationOptions options;
  options.max_new_tokens = 10;
  options.group_size = 2;
  const std::vector<int64_t> prompt{40, 41, 42};
  const RolloutBatch alone = generate(model_, {prompt}, options, rollout_seeds(3, {77}, 2));
  const RolloutBatch mixed =
      generate(model_, {{9, 9, 9, 9, 9, 9}, prompt}, options, rollout_seeds(3, {5, 77}, 2));
  EXPECT_TRUE(at::equal(alone.completion_ids, mixed.completion_ids.narrow(0, 2, 2)));
  // Different seeds give different samples.
  const RolloutBatch other = generate(model_, {prompt}, options, rollout_seeds(4, {77}, 2));
  EXPECT_FALSE(at::equal(alone.completion_ids, other.completion_ids));
}

// On a CPU with two threads a decode step runs its rows in two parts, one per thread (engine.cpp,
// decode_forward); every row's arithmetic is its own, so the tokens and log-probs are those of the
// step run whole on one thread. Shared-prefix (G = 8) and single-cache (G = 1) layouts.
TEST_F(EngineTest, DecodeStepSplitOverThreadsEqualsTheWholeStep) {
  if (!avx512_kernels_supported()) GTEST_SKIP() << "no AVX-512F: decode steps are not split on this CPU";
  const int threads = at::get_num_threads();
  for (const int64_t group : {8, 1}) {
    GenerationOptions options;
    options.max_new_tokens = 12;
    options.group_size = group;
    options.stop_token_ids = {5};
    std::vector<std::vector<int64_t>> prompts;
    std::vector<uint64_t> keys;
    for (int64_t p = 0; p < 32 / group; ++p) {
      prompts.push_back(std::vector<int64_t>(static_cast<size_t>(2 + p % 5), 30 + p));
      keys.push_back(static_cast<uint64_t>(p));
    }
    at::set_num_threads(1);
    const RolloutBatch whole = generate(model_, prompts, options, rollout_seeds(11, keys, group));
    at::set_num_threads(2);
    const RolloutBatch split = generate(model_, prompts, options, rollout_seeds(11, keys, group));
    at::set_num_threads(threads);
    EXPECT_TRUE(at::equal(whole.completion_ids, split.completion_ids)) << "G = " << group;
    EXPECT_LE((whole.sampling_logp - split.sampling_logp).abs().max().item<double>(), 1e-6) << "G = " << group;
  }
}

TEST_F(EngineTest, StopStringsEndASampleAndKeepTheCompletingToken) {
  const Tokenizer tokenizer = Tokenizer::byte_level();
  GenerationOptions options;
  options.sampling.temperature = 0;
  options.max_new_tokens = 16;
  const auto prompt = expected_["greedy"]["prompt_ids"].get<std::vector<int64_t>>();
  const auto greedy = expected_["greedy"]["new_token_ids"].get<std::vector<int64_t>>();
  // Greedy token 3 is 207 (< 256, one byte): stop on the text of tokens 2-3 (55, 207).
  ASSERT_LT(greedy[2], 256);
  const std::string stop = tokenizer.decode({greedy[1], greedy[2]});
  options.stop_strings = {stop};
  const RolloutBatch batch = generate(model_, {prompt}, options, {1}, &tokenizer);
  EXPECT_EQ(batch.finish_reasons[0], FinishReason::kStopString);
  EXPECT_EQ(batch.completion_mask[0].sum().item<int64_t>(), 3);
  EXPECT_EQ(batch.completion_ids[0][2].item<int64_t>(), greedy[2]);
}

// Continuous batching: five prompts through two slots, rows ending at different steps (stop
// tokens), equal what each prompt samples alone with the same seeds, whatever the read-back
// interval.
TEST_F(EngineTest, ContinuousBatchingEqualsEachPromptAlone) {
  GenerationOptions options;
  options.sampling.temperature = 1.0;
  options.sampling.top_k = 40;
  options.max_new_tokens = 12;
  options.group_size = 2;
  for (int64_t id = 0; id < 512; id += 12) options.stop_token_ids.push_back(id);
  const std::vector<std::vector<int64_t>> prompts{{3, 4, 5, 6}, {100, 200}, {7, 7, 7, 7, 7, 7, 7}, {42}, {11, 12, 13}};
  const std::vector<uint64_t> keys{10, 11, 12, 13, 14};
  GenerationOptions batched = options;
  batched.max_concurrent_prompts = 2;
  batched.readback_interval = 3;
  const RolloutBatch all = generate(model_, prompts, batched, rollout_seeds(9, keys, 2));
  ASSERT_EQ(all.completion_ids.size(0), 10);
  int64_t stopped_early = 0;
  for (size_t p = 0; p < prompts.size(); ++p) {
    options.readback_interval = 1;
    const RolloutBatch alone = generate(model_, {prompts[p]}, options, rollout_seeds(9, {keys[p]}, 2));
    for (int64_t j = 0; j < 2; ++j) {
      const int64_t row = static_cast<int64_t>(p) * 2 + j;
      EXPECT_EQ(completion_tokens(all, row), completion_tokens(alone, j)) << "prompt " << p << " sample " << j;
      EXPECT_EQ(all.finish_reasons[static_cast<size_t>(row)], alone.finish_reasons[static_cast<size_t>(j)]);
      const int64_t len = alone.completion_mask[j].sum().item<int64_t>();
      EXPECT_LE((all.sampling_logp[row].narrow(0, 0, len) - alone.sampling_logp[j].narrow(0, 0, len)).abs().max().item<double>(),
                1e-5);
      stopped_early += len < 12;
    }
  }
  // The case exercises slots freed at different times.
  EXPECT_GE(stopped_early, 3);
}

TEST_F(EngineTest, StopStringsAreFoundWhateverTheReadBackInterval) {
  const Tokenizer tokenizer = Tokenizer::byte_level();
  GenerationOptions options;
  options.max_new_tokens = 24;
  options.group_size = 4;
  options.stop_strings = {"a", "e", "o"};
  const std::vector<std::vector<int64_t>> prompts{{3, 4, 5, 6}, {100, 200}};
  options.readback_interval = 1;
  const RolloutBatch each_step = generate(model_, prompts, options, rollout_seeds(5, {0, 1}, 4), &tokenizer);
  options.readback_interval = 7;
  const RolloutBatch every_seventh = generate(model_, prompts, options, rollout_seeds(5, {0, 1}, 4), &tokenizer);
  EXPECT_TRUE(at::equal(each_step.completion_ids, every_seventh.completion_ids));
  EXPECT_TRUE(at::equal(each_step.completion_mask, every_seventh.completion_mask));
  EXPECT_EQ(each_step.finish_reasons, every_seventh.finish_reasons);
}

}  // namespace
}  // namespace grpo
