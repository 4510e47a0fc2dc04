#pragma once
// Code-point level UTF-8 reading and writing, shared by tokenizers and rewards.

#include <cstdint>
#include <string>
#include <string_view>

namespace grpo {

// Decodes one code point at `pos` and advances pos; returns U+FFFD and advances by one byte on
// invalid or truncated input.
uint32_t next_code_point(std::string_view text, size_t& pos);
void append_utf8(std::string& out, uint32_t code_point);

}  // namespace grpo
