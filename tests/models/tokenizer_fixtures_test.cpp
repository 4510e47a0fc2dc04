// Every tokenizer directory in GRPO_TOKENIZER_FIXTURES (default ../shared/fixtures/tokenizers):
// ids, ids with special tokens, decodes and decode-only cases from Hugging Face tokenizers, and
// the chat-template renders. 100% of cases must match.

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "models/chat_template.h"
#include "models/tokenizer.h"
#include "tests/support/fixtures.h"

namespace grpo {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::string fixture_dir() { return testing::shared_path("GRPO_TOKENIZER_FIXTURES", "fixtures/tokenizers"); }

std::vector<std::string> tokenizer_dirs() {
  return testing::sorted_entries(fixture_dir(), [](const fs::directory_entry& e) {
    return e.is_directory() && fs::exists(e.path() / "expected.jsonl") && fs::exists(e.path() / "tokenizer.json");
  });
}

std::vector<json> read_cases(const std::string& dir) {
  std::vector<json> cases;
  std::ifstream in(dir + "/expected.jsonl");
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) cases.push_back(json::parse(line));
  return cases;
}

class TokenizerFixture : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    StatusOr<Tokenizer> tokenizer = Tokenizer::load(GetParam());
    ASSERT_TRUE(tokenizer.is_ok()) << tokenizer.status().message();
    tokenizer_ = std::make_unique<Tokenizer>(*tokenizer);
    cases_ = read_cases(GetParam());
    ASSERT_FALSE(cases_.empty());
  }
  std::unique_ptr<Tokenizer> tokenizer_;
  std::vector<json> cases_;
};

TEST(TokenizerFixtures, DirectoryHoldsTokenizers) { EXPECT_FALSE(tokenizer_dirs().empty()) << fixture_dir(); }

TEST_P(TokenizerFixture, EncodeAndDecodeEveryString) {
  int checked = 0, failed = 0;
  for (const json& c : cases_) {
    if (c["kind"] != "encode") continue;
    ++checked;
    const std::string text = c["text"];
    const auto ids = tokenizer_->encode(text);
    const auto ids_special = tokenizer_->encode(text, true);
    const auto want_ids = c["ids"].get<std::vector<int64_t>>();
    const auto want_special = c["ids_special"].get<std::vector<int64_t>>();
    bool ok = ids == want_ids && ids_special == want_special;
    ok = ok && tokenizer_->decode(want_ids) == c["decoded"].get<std::string>();
    ok = ok && tokenizer_->decode(want_special) == c["decoded_special"].get<std::string>();
    ok = ok && tokenizer_->decode(want_special, true) == c["decoded_skip_special"].get<std::string>();
    if (!ok && failed++ < 8) {
      ADD_FAILURE() << c["id"] << " text " << json(text).dump() << "\n got ids " << json(ids).dump() << "\nwant ids "
                    << json(want_ids).dump() << "\n got special " << json(ids_special).dump() << "\n decoded "
                    << json(tokenizer_->decode(want_ids)).dump() << "\n    want " << c["decoded"].dump();
    }
  }
  EXPECT_EQ(failed, 0) << "of " << checked << " encode cases";
  EXPECT_GT(checked, 0);
}

TEST_P(TokenizerFixture, DecodeOnlyCases) {
  int failed = 0;
  for (const json& c : cases_) {
    if (c["kind"] != "decode") continue;
    const std::string got = tokenizer_->decode(c["ids"].get<std::vector<int64_t>>(), c.value("skip_special_tokens", false));
    if (got != c["decoded"].get<std::string>() && failed++ < 8)
      ADD_FAILURE() << c["id"] << ": got " << json(got).dump() << " want " << c["decoded"].dump();
  }
  EXPECT_EQ(failed, 0);
}

TEST_P(TokenizerFixture, ChatTemplatesRenderAndEncode) {
  StatusOr<ChatTemplate> chat = ChatTemplate::from_tokenizer(*tokenizer_);
  ASSERT_TRUE(chat.is_ok()) << chat.status().message();
  int checked = 0;
  for (const json& c : cases_) {
    if (c["kind"] != "chat") continue;
    ++checked;
    std::vector<ChatMessage> messages;
    for (const auto& m : c["messages"]) messages.push_back({m["role"], m["content"]});
    ChatOptions options;
    options.add_generation_prompt = c["add_generation_prompt"];
    if (c.contains("template_kwargs") && c["template_kwargs"].contains("enable_thinking"))
      options.enable_thinking = c["template_kwargs"]["enable_thinking"].get<bool>();
    StatusOr<std::string> rendered = chat->render(messages, options);
    ASSERT_TRUE(rendered.is_ok()) << c["id"] << ": " << rendered.status().message();
    EXPECT_EQ(*rendered, c["rendered"].get<std::string>()) << c["id"];
    EXPECT_EQ(tokenizer_->encode(*rendered), c["ids"].get<std::vector<int64_t>>()) << c["id"];
    EXPECT_EQ(tokenizer_->decode(c["ids"].get<std::vector<int64_t>>()), c["decoded"].get<std::string>()) << c["id"];
  }
  EXPECT_GT(checked, 0);
}

INSTANTIATE_TEST_SUITE_P(HuggingFace, TokenizerFixture, ::testing::ValuesIn(tokenizer_dirs()), testing::fixture_case_name);
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(TokenizerFixture);

}  // namespace
}  // namespace grpo
