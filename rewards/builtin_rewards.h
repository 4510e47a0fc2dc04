#pragma once
// The built-in rewards: math, format, language, length, code. Each one's options and scoring
// rule are documented in docs/rewards.md.

#include <functional>
#include <string>

#include "rewards/reward.h"

namespace grpo {

void register_builtin_rewards(const std::function<void(const std::string&, RewardFactory)>& add);

// The chain of thought of a completion: the text inside <think>...</think> (from the start when
// the prompt opened the tag), or the whole completion when there is no tag.
std::string chain_of_thought(const std::string& completion);

// Share of the words of `text` written in `language`'s scripts (letters only; each Han or kana
// character counts as a word). -1 when the text has no words.
double language_share(const std::string& text, const std::string& language);

}  // namespace grpo
