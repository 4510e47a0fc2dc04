#include "rewards/builtin_rewards.h"

#include <algorithm>
#include <cctype>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <stdexcept>

#include <fmt/format.h>

#include "core/utf8.h"
#include "rewards/code_reward.h"
#include "rewards/math_grader.h"
#include "rewards/plugin_rewards.h"

namespace grpo {
namespace {

// ---- math -------------------------------------------------------------------------------------

class MathReward final : public Reward {
 public:
  static StatusOr<std::unique_ptr<Reward>> create(const nlohmann::json& options) {
    RewardOptions o("math", options);
    auto r = std::make_unique<MathReward>();
    r->answer_field_ = o.string("answer_field", "answer");
    r->correct_ = o.number("correct", 1.0);
    r->incorrect_ = o.number("incorrect", 0.0);
    r->no_answer_ = o.number("no_answer", 0.0);
    if (Status s = o.finish(); !s.is_ok()) return s;
    return std::unique_ptr<Reward>(std::move(r));
  }

  std::vector<std::string> missing_fields(const nlohmann::json& fields) const override {
    const auto it = fields.find(answer_field_);
    const bool missing = it == fields.end() || it->is_null() || (it->is_string() && it->get<std::string>().empty());
    return missing ? std::vector<std::string>{answer_field_} : std::vector<std::string>{};
  }

  RewardScore score(const RewardSample& sample) const override {
    if (!missing_fields(sample.fields).empty())
      throw std::runtime_error(fmt::format("sample has no gold answer field '{}'", answer_field_));
    const auto it = sample.fields.find(answer_field_);
    const std::string gold = gold_answer(it->is_string() ? it->get<std::string>() : it->dump());
    RewardScore result;
    const auto answer = extract_final_answer(sample.completion);
    result.components["answer_found"] = answer ? 1.0 : 0.0;
    if (!answer) {
      result.score = no_answer_;
      result.components["correct"] = 0.0;
      result.reason = "no final answer found";
      return result;
    }
    const MathVerdict verdict = math_equivalent(*answer, gold);
    result.components["correct"] = verdict.equivalent ? 1.0 : 0.0;
    result.score = verdict.equivalent ? correct_ : incorrect_;
    result.reason = fmt::format("answer '{}' vs gold '{}': {} ({})", *answer, gold,
                                verdict.equivalent ? "correct" : "wrong", verdict.reason);
    return result;
  }

 private:
  std::string answer_field_;
  double correct_ = 1, incorrect_ = 0, no_answer_ = 0;
};

// ---- format -----------------------------------------------------------------------------------

class FormatReward final : public Reward {
 public:
  static StatusOr<std::unique_ptr<Reward>> create(const nlohmann::json& options) {
    RewardOptions o("format", options);
    auto r = std::make_unique<FormatReward>();
    const std::string mode = o.string("mode", "strict");
    r->require_answer_tags_ = o.boolean("answer_tags", true);
    r->prompt_opens_think_ = o.boolean("prompt_opens_think", false);
    if (Status s = o.finish(); !s.is_ok()) return s;
    if (mode != "strict" && mode != "lenient")
      return Status::error(fmt::format("reward 'format': option 'mode' must be strict or lenient, got '{}'", mode));
    r->strict_ = mode == "strict";
    return std::unique_ptr<Reward>(std::move(r));
  }

  RewardScore score(const RewardSample& sample) const override {
    const std::string text = prompt_opens_think_ ? "<think>" + sample.completion : sample.completion;
    RewardScore result;
    auto count = [&](const std::string& tag) {
      size_t n = 0;
      for (size_t pos = 0; (pos = text.find(tag, pos)) != std::string::npos; pos += tag.size()) ++n;
      return n;
    };
    const size_t think_open = text.find("<think>"), think_close = text.find("</think>");
    const bool think = think_open != std::string::npos && think_close != std::string::npos && think_open < think_close &&
                       text.find_first_not_of(" \t\r\n", think_open + 7) < think_close;
    bool answer = false;
    if (think) {
      const std::string after = text.substr(think_close + 8);
      if (require_answer_tags_) {
        const size_t a_open = after.find("<answer>"), a_close = after.find("</answer>");
        answer = a_open != std::string::npos && a_close != std::string::npos && a_open < a_close &&
                 after.find_first_not_of(" \t\r\n", a_open + 8) < a_close;
      } else {
        answer = after.find_first_not_of(" \t\r\n") != std::string::npos;
      }
    }
    bool well_formed = think && answer;
    if (strict_ && well_formed) {
      // Strict: exactly one of each tag, nothing before <think>, nothing after </answer>.
      static const std::regex with_answer(R"(^\s*<think>[\s\S]*?</think>\s*<answer>[\s\S]*?</answer>\s*$)");
      static const std::regex without_answer(R"(^\s*<think>[\s\S]*?</think>[\s\S]+$)");
      well_formed = count("<think>") == 1 && count("</think>") == 1 &&
                    std::regex_match(text, require_answer_tags_ ? with_answer : without_answer);
      if (require_answer_tags_) well_formed = well_formed && count("<answer>") == 1 && count("</answer>") == 1;
    }
    result.components["think"] = think ? 1.0 : 0.0;
    result.components["answer"] = answer ? 1.0 : 0.0;
    result.score = well_formed ? 1.0 : 0.0;
    result.reason = well_formed ? "well formed" : !think ? "no <think>...</think> block" : !answer ? "no answer after </think>"
                                                                                                   : "extra text or repeated tags";
    return result;
  }

 private:
  bool strict_ = true, require_answer_tags_ = true, prompt_opens_think_ = false;
};

// ---- language consistency ----------------------------------------------------------------------

enum class Script { kNone, kLatin, kHan, kHiragana, kKatakana, kHangul, kCyrillic, kGreek, kArabic, kHebrew,
                    kDevanagari, kThai, kOtherLetter };

Script script_of(uint32_t cp) {
  if ((cp >= 'A' && cp <= 'Z') || (cp >= 'a' && cp <= 'z')) return Script::kLatin;
  if (cp < 0xC0) return Script::kNone;
  if ((cp >= 0xC0 && cp <= 0x24F && cp != 0xD7 && cp != 0xF7) || (cp >= 0x1E00 && cp <= 0x1EFF)) return Script::kLatin;
  if ((cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0x3400 && cp <= 0x4DBF) || (cp >= 0xF900 && cp <= 0xFAFF) ||
      (cp >= 0x20000 && cp <= 0x2FFFF))
    return Script::kHan;
  if (cp >= 0x3040 && cp <= 0x309F) return Script::kHiragana;
  if ((cp >= 0x30A0 && cp <= 0x30FF) || (cp >= 0x31F0 && cp <= 0x31FF)) return Script::kKatakana;
  if ((cp >= 0xAC00 && cp <= 0xD7AF) || (cp >= 0x1100 && cp <= 0x11FF) || (cp >= 0x3130 && cp <= 0x318F)) return Script::kHangul;
  if (cp >= 0x0400 && cp <= 0x04FF) return Script::kCyrillic;
  if (cp >= 0x0370 && cp <= 0x03FF) return Script::kGreek;
  if (cp >= 0x0600 && cp <= 0x06FF) return Script::kArabic;
  if (cp >= 0x0590 && cp <= 0x05FF) return Script::kHebrew;
  if (cp >= 0x0900 && cp <= 0x097F) return Script::kDevanagari;
  if (cp >= 0x0E00 && cp <= 0x0E7F) return Script::kThai;
  if (cp >= 0x2000 && cp <= 0x2BFF) return Script::kNone;   // punctuation, symbols, arrows, math
  if (cp >= 0x3000 && cp <= 0x303F) return Script::kNone;   // CJK punctuation
  if (cp >= 0xFF00 && cp <= 0xFFEF) return Script::kNone;   // full-width forms
  if (cp >= 0x1F000) return Script::kNone;                  // emoji and pictographs
  return Script::kOtherLetter;
}

std::vector<Script> scripts_of_language(const std::string& language) {
  static const std::map<std::string, std::vector<Script>> table = {
      {"zh", {Script::kHan}},
      {"ja", {Script::kHan, Script::kHiragana, Script::kKatakana}},
      {"ko", {Script::kHangul}},
      {"ru", {Script::kCyrillic}}, {"uk", {Script::kCyrillic}}, {"bg", {Script::kCyrillic}}, {"sr", {Script::kCyrillic}},
      {"el", {Script::kGreek}}, {"ar", {Script::kArabic}}, {"fa", {Script::kArabic}}, {"he", {Script::kHebrew}},
      {"hi", {Script::kDevanagari}}, {"th", {Script::kThai}},
  };
  const std::string base = language.substr(0, language.find_first_of("-_"));
  const auto it = table.find(base);
  if (it != table.end()) return it->second;
  // Latin-script languages.
  static const std::set<std::string> latin = {"en", "fr", "de", "es", "it", "pt", "nl", "sv", "da", "no", "nb", "fi", "pl",
                                              "cs", "sk", "ro", "hu", "tr", "vi", "id", "ms", "ca", "hr", "sl", "et",
                                              "lv", "lt", "sw", "tl"};
  if (latin.count(base)) return {Script::kLatin};
  return {};
}

class LanguageReward final : public Reward {
 public:
  static StatusOr<std::unique_ptr<Reward>> create(const nlohmann::json& options) {
    RewardOptions o("language", options);
    auto r = std::make_unique<LanguageReward>();
    r->language_ = o.string("language", "");
    r->language_field_ = o.string("language_field", "language");
    r->empty_score_ = o.number("empty_score", 0.0);
    if (Status s = o.finish(); !s.is_ok()) return s;
    if (!r->language_.empty() && scripts_of_language(r->language_).empty())
      return Status::error(fmt::format("reward 'language': unknown language '{}'", r->language_));
    return std::unique_ptr<Reward>(std::move(r));
  }

  std::vector<std::string> missing_fields(const nlohmann::json& fields) const override {
    if (!language_.empty()) return {};
    const auto it = fields.find(language_field_);
    if (it != fields.end() && it->is_string() && !it->get<std::string>().empty()) return {};
    return {language_field_};
  }

  RewardScore score(const RewardSample& sample) const override {
    std::string language = language_;
    if (const auto it = sample.fields.find(language_field_); it != sample.fields.end() && it->is_string())
      language = it->get<std::string>();
    if (language.empty())
      throw std::runtime_error(fmt::format("no target language: set option 'language' or field '{}'", language_field_));
    if (scripts_of_language(language).empty()) throw std::runtime_error(fmt::format("unknown language '{}'", language));
    const double share = language_share(chain_of_thought(sample.completion), language);
    RewardScore result;
    result.score = share < 0 ? empty_score_ : share;
    result.components["share"] = result.score;
    result.reason = share < 0 ? "no words in the chain of thought" : fmt::format("{:.0f}% {}", 100 * share, language);
    return result;
  }

 private:
  std::string language_, language_field_;
  double empty_score_ = 0;
};

// ---- length (DAPO overlong penalty) -----------------------------------------------------------

class LengthReward final : public Reward {
 public:
  static StatusOr<std::unique_ptr<Reward>> create(const nlohmann::json& options) {
    RewardOptions o("length", options);
    auto r = std::make_unique<LengthReward>();
    r->max_tokens_ = o.integer("max_tokens", 0);
    r->buffer_ = o.integer("buffer", 0);
    r->penalty_ = o.number("penalty", 1.0);
    if (Status s = o.finish(); !s.is_ok()) return s;
    if (r->max_tokens_ <= 0) return Status::error("reward 'length': option 'max_tokens' must be a positive integer");
    if (r->buffer_ <= 0 || r->buffer_ > r->max_tokens_)
      return Status::error("reward 'length': option 'buffer' must be in [1, max_tokens]");
    return std::unique_ptr<Reward>(std::move(r));
  }

  RewardScore score(const RewardSample& sample) const override {
    if (sample.completion_tokens < 0) throw std::runtime_error("the length reward needs the completion's token count");
    const int64_t length = sample.completion_tokens, safe = max_tokens_ - buffer_;
    RewardScore result;
    if (length <= safe) result.score = 0.0;
    else if (length <= max_tokens_) result.score = penalty_ * static_cast<double>(safe - length) / static_cast<double>(buffer_);
    else result.score = -penalty_;
    result.components["overlong"] = length > safe ? 1.0 : 0.0;
    result.reason = fmt::format("{} tokens (soft limit {}, hard {})", length, safe, max_tokens_);
    return result;
  }

 private:
  int64_t max_tokens_ = 0, buffer_ = 0;
  double penalty_ = 1.0;
};

}  // namespace

std::string chain_of_thought(const std::string& completion) {
  const size_t open = completion.find("<think>");
  const size_t close = completion.find("</think>");
  if (close != std::string::npos) {
    const size_t start = open != std::string::npos && open < close ? open + 7 : 0;
    return completion.substr(start, close - start);
  }
  if (open != std::string::npos) return completion.substr(open + 7);
  return completion;
}

double language_share(const std::string& text, const std::string& language) {
  const std::vector<Script> target = scripts_of_language(language);
  int64_t target_words = 0, words = 0;
  Script current = Script::kNone;
  int64_t run_length = 0;
  bool after_backslash = false, in_command = false;
  auto close_word = [&] {
    // A single Latin letter is a math variable, not a word; LaTeX command names are not words.
    if (current != Script::kNone && !(current == Script::kLatin && run_length == 1)) {
      ++words;
      if (std::find(target.begin(), target.end(), current) != target.end()) ++target_words;
    }
    current = Script::kNone;
    run_length = 0;
  };
  for (size_t i = 0; i < text.size();) {
    // Markup such as <think> or </answer> is not language.
    if (text[i] == '<') {
      size_t j = i + 1;
      while (j < text.size() && j - i < 32 && (std::isalpha(static_cast<unsigned char>(text[j])) || text[j] == '/' || text[j] == '_')) ++j;
      if (j < text.size() && text[j] == '>' && j > i + 1) {
        close_word();
        i = j + 1;
        continue;
      }
    }
    const uint32_t cp = next_code_point(text, i);
    const Script s = script_of(cp);
    if (in_command) {
      if (s == Script::kLatin && cp < 0x80) continue;
      in_command = false;
    }
    if (cp == '\\') {
      close_word();
      after_backslash = true;
      continue;
    }
    if (after_backslash) {
      after_backslash = false;
      if (s == Script::kLatin && cp < 0x80) {
        in_command = true;
        continue;
      }
    }
    const bool per_character = s == Script::kHan || s == Script::kHiragana || s == Script::kKatakana;
    if (s == Script::kNone || s != current || per_character) close_word();
    if (s != Script::kNone) {
      current = s;
      ++run_length;
      if (per_character) close_word();
    }
  }
  close_word();
  return words == 0 ? -1.0 : static_cast<double>(target_words) / static_cast<double>(words);
}

void register_builtin_rewards(const std::function<void(const std::string&, RewardFactory)>& add) {
  add("math", MathReward::create);
  add("format", FormatReward::create);
  add("language", LanguageReward::create);
  add("length", LengthReward::create);
  add("code", create_code_reward);
  add("plugin", create_plugin_reward);
  add("subprocess", create_subprocess_reward);
}

}  // namespace grpo
