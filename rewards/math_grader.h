#pragma once
// Final-answer extraction and equivalence for math rewards. The rules, and where they differ from
// OpenAI's PRM800K grader and Math-Verify, are in docs/rewards.md.

#include <optional>
#include <string>
#include <string_view>

namespace grpo {

// The final answer of a completion: the last \boxed{...}/\fbox{...} (nested braces), else the
// last <answer>...</answer> (a \boxed inside it wins), else the text after the last "the answer
// is", else the number after a GSM8K-style "####".
std::optional<std::string> extract_final_answer(std::string_view completion);

// The content of the last \boxed{...} or \fbox{...}, braces balanced.
std::optional<std::string> last_boxed(std::string_view text);

// A gold answer as datasets store it: GSM8K solutions end with "#### 72"; anything else is
// taken as the answer itself.
std::string gold_answer(std::string_view gold_field);

struct MathVerdict {
  bool equivalent = false;
  std::string reason;  // how the decision was reached, for logs and tests
};

// Is `candidate` mathematically the same answer as `gold`?
MathVerdict math_equivalent(std::string_view candidate, std::string_view gold);

// The string normalization applied before parsing (exposed for tests and the docs).
std::string normalize_math_answer(std::string_view answer);

}  // namespace grpo
