#include "models/chat_template.h"

#include <fmt/format.h>

namespace grpo {

const char* const kR1ZeroPreamble =
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. "
    "The assistant first thinks about the reasoning process in the mind and then provides the user with the "
    "answer. The reasoning process and answer are enclosed within <think> </think> and <answer> </answer> tags, "
    "respectively, i.e., <think> reasoning process here </think> <answer> answer here </answer>.";

namespace {

// FNV-1a of the exact template text of each supported tokenizer_config.json.
constexpr uint64_t kQwen3TemplateHash = 0x2bfdb7aa9754484eULL;
constexpr uint64_t kDeepSeekV3TemplateHash = 0xebe3604156dc466aULL;

uint64_t fnv1a(const std::string& text) {
  uint64_t hash = 0xcbf29ce484222325ULL;
  for (unsigned char c : text) {
    hash ^= c;
    hash *= 0x100000001b3ULL;
  }
  return hash;
}

bool starts_with(const std::string& s, const std::string& prefix) { return s.rfind(prefix, 0) == 0; }
bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}
std::string lstrip_newlines(const std::string& s) { return s.substr(std::min(s.find_first_not_of('\n'), s.size())); }
std::string rstrip_newlines(const std::string& s) {
  const auto last = s.find_last_not_of('\n');
  return last == std::string::npos ? "" : s.substr(0, last + 1);
}
// Python's s.split(sep)[0] and s.split(sep)[-1].
std::string before_first(const std::string& s, const std::string& sep) { return s.substr(0, s.find(sep)); }
std::string after_last(const std::string& s, const std::string& sep) {
  const auto pos = s.rfind(sep);
  return pos == std::string::npos ? s : s.substr(pos + sep.size());
}

std::string render_qwen3(const std::vector<ChatMessage>& messages, const ChatOptions& options) {
  std::string out;
  if (!messages.empty() && messages[0].role == "system")
    out += "<|im_start|>system\n" + messages[0].content + "<|im_end|>\n";
  // The last user turn that is not a tool response: thinking is kept only after it.
  size_t last_query = messages.empty() ? 0 : messages.size() - 1;
  for (size_t k = messages.size(); k-- > 0;) {
    const ChatMessage& m = messages[k];
    if (m.role == "user" && !(starts_with(m.content, "<tool_response>") && ends_with(m.content, "</tool_response>"))) {
      last_query = k;
      break;
    }
  }
  for (size_t i = 0; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    const bool last = i + 1 == messages.size();
    if (m.role == "user" || (m.role == "system" && i != 0)) {
      out += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
    } else if (m.role == "assistant") {
      std::string content = m.content, reasoning;
      if (m.reasoning_content) {
        reasoning = *m.reasoning_content;
      } else if (m.content.find("</think>") != std::string::npos) {
        content = lstrip_newlines(after_last(m.content, "</think>"));
        reasoning = lstrip_newlines(after_last(rstrip_newlines(before_first(m.content, "</think>")), "<think>"));
      }
      if (i > last_query && (last || !reasoning.empty())) {
        out += "<|im_start|>assistant\n<think>\n" + lstrip_newlines(rstrip_newlines(reasoning)) + "\n</think>\n\n" +
               lstrip_newlines(content);
      } else {
        out += "<|im_start|>assistant\n" + content;
      }
      out += "<|im_end|>\n";
    } else if (m.role == "tool") {
      if (i == 0 || messages[i - 1].role != "tool") out += "<|im_start|>user";
      out += "\n<tool_response>\n" + m.content + "\n</tool_response>";
      if (last || messages[i + 1].role != "tool") out += "<|im_end|>\n";
    }
  }
  if (options.add_generation_prompt) {
    out += "<|im_start|>assistant\n";
    if (options.enable_thinking == false) out += "<think>\n\n</think>\n\n";
  }
  return out;
}

std::string render_deepseek_v3(const std::vector<ChatMessage>& messages, const ChatOptions& options,
                               const std::string& bos_token) {
  std::string system_prompt;
  bool first_system = true;
  for (const ChatMessage& m : messages) {
    if (m.role != "system") continue;
    system_prompt += (first_system ? "" : "\n\n") + m.content;
    first_system = false;
  }
  std::string out = bos_token + system_prompt;
  bool in_tool_outputs = false, first_output = true;
  for (const ChatMessage& m : messages) {
    if (m.role == "user") {
      in_tool_outputs = false;
      out += "<｜User｜>" + m.content;
    } else if (m.role == "assistant") {
      out += (in_tool_outputs ? "<｜tool▁outputs▁end｜>" : "<｜Assistant｜>") + m.content + "<｜end▁of▁sentence｜>";
      in_tool_outputs = false;
    } else if (m.role == "tool") {
      in_tool_outputs = true;
      out += (first_output ? "<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>" : "\n<｜tool▁output▁begin｜>") + m.content +
             "<｜tool▁output▁end｜>";
      first_output = false;
    }
  }
  if (in_tool_outputs) out += "<｜tool▁outputs▁end｜>";
  if (options.add_generation_prompt && !in_tool_outputs) out += "<｜Assistant｜>";
  return out;
}

}  // namespace

StatusOr<ChatTemplate> ChatTemplate::from_tokenizer(const Tokenizer& tokenizer) {
  const std::string& text = tokenizer.chat_template();
  if (text.empty()) return Status::error("the tokenizer has no chat_template; name one (qwen3, deepseek_v3, r1_zero)");
  const uint64_t hash = fnv1a(text);
  if (hash == kQwen3TemplateHash) return ChatTemplate(ChatTemplateKind::kQwen3, tokenizer.bos_token());
  if (hash == kDeepSeekV3TemplateHash) return ChatTemplate(ChatTemplateKind::kDeepSeekV3, tokenizer.bos_token());
  return Status::error(fmt::format(
      "the tokenizer's chat_template (FNV-1a {:016x}) is not one grpo-cpp renders; supported: qwen3, deepseek_v3, "
      "r1_zero. If it is equivalent to one of them, name that template in the config",
      hash));
}

StatusOr<ChatTemplate> ChatTemplate::named(const std::string& name, const std::string& bos_token) {
  if (name == "qwen3") return ChatTemplate(ChatTemplateKind::kQwen3, bos_token);
  if (name == "deepseek_v3") return ChatTemplate(ChatTemplateKind::kDeepSeekV3, bos_token);
  if (name == "r1_zero") return ChatTemplate(ChatTemplateKind::kR1Zero, bos_token);
  return Status::error(fmt::format("unknown chat template '{}' (supported: qwen3, deepseek_v3, r1_zero)", name));
}

StatusOr<std::string> ChatTemplate::render(const std::vector<ChatMessage>& messages, const ChatOptions& options) const {
  switch (kind_) {
    case ChatTemplateKind::kQwen3:
      return render_qwen3(messages, options);
    case ChatTemplateKind::kDeepSeekV3:
      return render_deepseek_v3(messages, options, bos_token_);
    case ChatTemplateKind::kR1Zero: {
      // "... <answer> answer here </answer>. User: {question}. Assistant:" as in the report.
      if (messages.size() != 1 || messages[0].role != "user")
        return Status::error("the r1_zero template takes exactly one user message");
      std::string out = bos_token_ + kR1ZeroPreamble + " User: " + messages[0].content + ". Assistant:";
      return out;
    }
  }
  return Status::error("unknown chat template kind");
}

}  // namespace grpo
