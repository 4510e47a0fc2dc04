#pragma once
// Hugging Face `tokenizer.json` byte-level BPE tokenizers (Qwen2/2.5/3, Llama 3, DeepSeek-V3/R1):
// added and special tokens, Unicode normalizers, Split/ByteLevel/Digits pre-tokenizers (PCRE2
// regexes with Unicode properties), BPE with either merges format and `ignore_merges`,
// TemplateProcessing and the tokenizer_config.json add_bos_token rule, ByteLevel decoding.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace grpo {

struct AddedToken {
  int64_t id = 0;
  std::string content;
  bool special = false;     // dropped by decode(skip_special_tokens = true)
  bool normalized = false;  // matched after the normalizer instead of in the raw text
  bool lstrip = false;      // the match swallows whitespace on its left
  bool rstrip = false;      // ... and on its right
};

class Tokenizer {
 public:
  // Reads DIR/tokenizer.json and, when present, DIR/tokenizer_config.json.
  static StatusOr<Tokenizer> load(const std::string& dir);
  // Same from the files' text; `source` names them in errors.
  static StatusOr<Tokenizer> from_json(const std::string& tokenizer_json, const std::string& config_json,
                                       const std::string& source);

  // A tokenizer with one token per byte (ids 0-255, byte-level spelling, no merges): for tiny
  // test models whose checkpoints ship without a tokenizer (`--tokenizer builtin:bytes`).
  static Tokenizer byte_level();
  // The tokenizer.json text of such a tokenizer with `added` tokens after the 256 bytes.
  static std::string byte_level_json(const std::vector<AddedToken>& added = {});

  // Token ids of `text`. With add_special_tokens, BOS/EOS are added as transformers does:
  // tokenizer.json's post-processor, or add_bos_token/add_eos_token for Llama-class tokenizers.
  std::vector<int64_t> encode(std::string_view text, bool add_special_tokens = false) const;
  // Text of `ids`; bytes that are not valid UTF-8 become U+FFFD.
  std::string decode(const std::vector<int64_t>& ids, bool skip_special_tokens = false) const;

  std::optional<int64_t> token_to_id(std::string_view token) const;
  // The token's string (byte-level form for vocabulary tokens); "" for an unknown id.
  std::string id_to_token(int64_t id) const;
  int64_t vocab_size() const;  // largest id + 1, added tokens included
  bool is_special(int64_t id) const;

  std::optional<int64_t> bos_id() const;
  std::optional<int64_t> eos_id() const;
  std::optional<int64_t> pad_id() const;
  const std::string& bos_token() const;  // "" when there is none
  const std::string& eos_token() const;
  const std::string& chat_template() const;  // tokenizer_config.json's, or ""

  struct Impl;

 private:
  explicit Tokenizer(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<Impl> impl_;
};

}  // namespace grpo
