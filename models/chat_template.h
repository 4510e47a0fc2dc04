#pragma once
// Chat templates, rendered by hand-written C++ equivalents of the Jinja templates they replace
// (full Jinja is not supported). Supported: `qwen3` (Qwen3's tokenizer_config.json template),
// `deepseek_v3` (DeepSeek-V3's), and `r1_zero` (the DeepSeek-R1-Zero training prompt).
// A tokenizer's own template is recognized by its exact text; anything else is an error that
// names the supported templates.

#include <optional>
#include <string>
#include <vector>

#include "core/status.h"
#include "models/tokenizer.h"

namespace grpo {

struct ChatMessage {
  std::string role;     // system, user, assistant, tool
  std::string content;
  std::optional<std::string> reasoning_content = std::nullopt;  // qwen3: the assistant's thinking, if given apart
};

struct ChatOptions {
  bool add_generation_prompt = true;      // end with the opening of an assistant turn
  std::optional<bool> enable_thinking;    // qwen3: false closes an empty <think> block
};

enum class ChatTemplateKind { kQwen3, kDeepSeekV3, kR1Zero };

class ChatTemplate {
 public:
  // The tokenizer's own chat template, if it is one of the supported ones.
  static StatusOr<ChatTemplate> from_tokenizer(const Tokenizer& tokenizer);
  // A supported template by name (qwen3, deepseek_v3, r1_zero); `bos_token` for those that write it.
  static StatusOr<ChatTemplate> named(const std::string& name, const std::string& bos_token = "");

  StatusOr<std::string> render(const std::vector<ChatMessage>& messages, const ChatOptions& options = {}) const;
  ChatTemplateKind kind() const { return kind_; }

 private:
  ChatTemplate(ChatTemplateKind kind, std::string bos_token) : kind_(kind), bos_token_(std::move(bos_token)) {}
  ChatTemplateKind kind_;
  std::string bos_token_;
};

// The DeepSeek-R1-Zero instruction that precedes the user's question (DeepSeek-R1 report, Table 1).
extern const char* const kR1ZeroPreamble;

}  // namespace grpo
