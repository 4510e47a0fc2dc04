// The built-in demo models of other sizes and architectures (distillation students): shapes,
// parameter counts by hand, and errors that name model.path.

#include <gtest/gtest.h>

#include <string>

#include "tests/support/policies.h"
#include "trainer/policy.h"

namespace grpo {
namespace {

int64_t parameter_count(const Policy& policy, int64_t* biases = nullptr) {
  int64_t total = 0;
  for (const auto& item : policy.model->named_parameters()) {
    total += item.value().numel();
    const std::string& name = item.key();
    if (biases && name.size() > 5 && name.compare(name.size() - 5, 5, ".bias") == 0) ++*biases;
  }
  return total;
}

Policy load(const std::string& path) { return testing::load_test_policy(path); }

TEST(BuiltinModels, TheDemoModelKeepsItsShape) {
  // embeddings 261x128 (tied head); per layer q 128x128+128, k and v 128x64+64, o 128x128,
  // MLP 3x128x336, two norms of 128; a final norm.
  const int64_t layer = (128 * 128 + 128) + 2 * (128 * 64 + 64) + 128 * 128 + 3 * 128 * 336 + 2 * 128;
  EXPECT_EQ(parameter_count(load("builtin:demo-qwen2")), 261 * 128 + 4 * layer + 128);
}

TEST(BuiltinModels, AStudentOfAnotherSize) {
  const Policy student = load("builtin:demo-qwen2?layers=2&hidden=96&intermediate=256&heads=4&kv_heads=2");
  const DecoderOptions& o = student.model->options();
  EXPECT_EQ(o.num_layers, 2);
  EXPECT_EQ(o.hidden_size, 96);
  EXPECT_EQ(o.head_dim, 24);
  const int64_t layer = (96 * 96 + 96) + 2 * (96 * 48 + 48) + 96 * 96 + 3 * 96 * 256 + 2 * 96;
  EXPECT_EQ(parameter_count(student), 261 * 96 + 2 * layer + 96);
  // The tokenizer is the teacher's, so the teacher's text means the same to it.
  EXPECT_EQ(student.tokenizer->encode("<think>1+2=3</think>"), load("builtin:demo-qwen2").tokenizer->encode("<think>1+2=3</think>"));
}

TEST(BuiltinModels, ALlamaStudentHasNoAttentionBiases) {
  int64_t biases = 0;
  const Policy llama = load("builtin:demo-llama?layers=2");
  EXPECT_EQ(llama.model->options().architecture, DecoderArchitecture::kLlama);
  const int64_t layer = 2 * 128 * 128 + 2 * 128 * 64 + 3 * 128 * 336 + 2 * 128;
  EXPECT_EQ(parameter_count(llama, &biases), 261 * 128 + 2 * layer + 128);
  EXPECT_EQ(biases, 0);
}

TEST(BuiltinModels, BadSizesNameModelPath) {
  for (const char* path : {"builtin:demo-qwen2?depth=3", "builtin:demo-qwen2?layers=0", "builtin:demo-qwen2?hidden=90",
                           "builtin:demo-gpt"}) {
    ModelConfig config;
    config.path = path;
    StatusOr<Policy> policy = load_policy(config, 1);
    ASSERT_FALSE(policy) << path;
    EXPECT_NE(policy.status().message().find("model.path"), std::string::npos) << policy.status().message();
  }
}

}  // namespace
}  // namespace grpo
