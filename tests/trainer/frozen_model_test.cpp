// Which teachers on-policy distillation accepts (check_teacher_matches): the student's vocabulary
// and tokenization in another size or architecture, and not a same-sized vocabulary with other ids
// or a shorter context; each refusal names both models.

#include <gtest/gtest.h>

#include <string>

#include "tests/support/policies.h"
#include "trainer/frozen_model.h"

namespace grpo {
namespace {

Policy load(const std::string& path) { return testing::load_test_policy(path); }

const char* kStudent = "builtin:demo-llama?layers=1&hidden=32&intermediate=64&heads=2&kv_heads=1";
const char* kTeacher = "builtin:demo-qwen2";

TEST(TeacherCheck, AnotherSizeAndArchitectureWithTheSameTokenizerIsAccepted) {
  const Status s = check_teacher_matches(load(kStudent), load(kTeacher), kStudent, kTeacher);
  EXPECT_TRUE(s.is_ok()) << s.message();
}

TEST(TeacherCheck, SameSizedVocabularyWithOtherIdsIsRefused) {
  Policy teacher = load(kTeacher);
  // The demo tokenizer with <think> and </think> trading ids: 261 tokens either way.
  std::vector<AddedToken> added;
  int64_t id = 256;
  for (const char* tag : {"</think>", "<think>", "<answer>", "</answer>"}) added.push_back({id++, tag});
  added.push_back({id++, "<|endoftext|>", /*special=*/true});
  StatusOr<Tokenizer> swapped = Tokenizer::from_json(Tokenizer::byte_level_json(added), teacher.tokenizer_config_json, "swapped");
  ASSERT_TRUE(swapped) << swapped.status().message();
  ASSERT_EQ(swapped->vocab_size(), teacher.tokenizer->vocab_size());
  teacher.tokenizer = *swapped;
  const Status s = check_teacher_matches(load(kStudent), teacher, kStudent, "swapped-teacher");
  ASSERT_FALSE(s.is_ok());
  EXPECT_NE(s.message().find("tokenize the same text differently"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("swapped-teacher"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find(kStudent), std::string::npos) << s.message();
}

TEST(TeacherCheck, AShorterContextIsRefused) {
  const std::string short_teacher = "builtin:demo-qwen2?context=256";
  const Status s = check_teacher_matches(load(kStudent), load(short_teacher), kStudent, short_teacher);
  ASSERT_FALSE(s.is_ok());
  EXPECT_NE(s.message().find("256"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("512"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find(short_teacher), std::string::npos) << s.message();
}

}  // namespace
}  // namespace grpo
