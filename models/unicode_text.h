#pragma once
// UTF-8 helpers for tokenizers: lossy decoding, Unicode normalization, and GPT-2's byte-level
// alphabet (each byte shown as a printable code point).

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "core/utf8.h"

namespace grpo {

// Replaces each maximal invalid subpart with U+FFFD, as Rust's String::from_utf8_lossy and the
// WHATWG decoder do.
std::string utf8_lossy(std::string_view bytes);

enum class UnicodeForm { kNfc, kNfd, kNfkc, kNfkd };
// Normalizes valid UTF-8 text (utf8proc); invalid input is returned unchanged.
std::string unicode_normalize(std::string_view text, UnicodeForm form);

// GPT-2's byte-to-code-point table: printable bytes map to themselves, the rest to U+0100+.
const std::array<uint32_t, 256>& byte_level_alphabet();
// The byte a byte-level code point stands for, or -1.
int byte_level_byte(uint32_t code_point);
// Raw bytes -> their byte-level UTF-8 spelling (a space becomes "Ġ").
std::string to_byte_level(std::string_view bytes);

}  // namespace grpo
