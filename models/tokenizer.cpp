#include "models/tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <array>
#include <limits>
#include <mutex>
#include <stdexcept>
#include <unordered_map>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/atomic_file.h"
#include "models/unicode_text.h"

namespace grpo {
namespace {

using nlohmann::json;

// A compiled PCRE2 pattern in UTF + Unicode-property mode (what Oniguruma gives HF tokenizers).
class Regex {
 public:
  static std::shared_ptr<Regex> compile(const std::string& pattern, std::string& error) {
    int code = 0;
    PCRE2_SIZE offset = 0;
    pcre2_code* compiled = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                         PCRE2_UTF | PCRE2_UCP | PCRE2_NO_UTF_CHECK, &code, &offset, nullptr);
    if (compiled == nullptr) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(code, message, sizeof message);
      error = fmt::format("regex error at offset {}: {}", offset, reinterpret_cast<const char*>(message));
      return nullptr;
    }
    auto regex = std::shared_ptr<Regex>(new Regex(compiled));
    regex->jit_ = pcre2_jit_compile(compiled, PCRE2_JIT_COMPLETE) == 0;
    return regex;
  }
  ~Regex() { pcre2_code_free(code_); }

  // [begin, end) byte ranges of every non-overlapping match, left to right.
  std::vector<std::pair<size_t, size_t>> find_all(std::string_view text) const {
    std::vector<std::pair<size_t, size_t>> matches;
    pcre2_match_data* data = pcre2_match_data_create_from_pattern(code_, nullptr);
    size_t start = 0;
    while (start <= text.size()) {
      const auto subject = reinterpret_cast<PCRE2_SPTR>(text.data());
      const int rc = jit_ ? pcre2_jit_match(code_, subject, text.size(), start, 0, data, nullptr)
                          : pcre2_match(code_, subject, text.size(), start, PCRE2_NO_UTF_CHECK, data, nullptr);
      if (rc < 0) break;
      const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(data);
      if (ov[1] == ov[0]) {  // an empty match: step over one code point
        if (ov[0] >= text.size()) break;
        size_t next = ov[0];
        next_code_point(text, next);
        start = next;
        continue;
      }
      matches.emplace_back(ov[0], ov[1]);
      start = ov[1];
    }
    pcre2_match_data_free(data);
    return matches;
  }

 private:
  explicit Regex(pcre2_code* code) : code_(code) {}
  pcre2_code* code_;
  bool jit_ = false;
};

enum class SplitBehavior { kIsolated, kRemoved, kMergedWithPrevious, kMergedWithNext };

struct PreTokenizerStep {
  enum class Kind { kSplit, kByteLevel, kDigits } kind = Kind::kSplit;
  std::shared_ptr<Regex> regex;  // Split, ByteLevel with use_regex, Digits
  SplitBehavior behavior = SplitBehavior::kIsolated;
  bool add_prefix_space = false;
};

constexpr const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// The steps of one tokenizer.json pipeline stage (normalizer, pre_tokenizer, decoder,
// post_processor) in order, nested `Sequence`s flattened; none when the stage is absent or null.
void flatten_steps(const json& step, const char* list_key, std::vector<json>& out) {
  if (step.at("type") == "Sequence") {
    for (const json& inner : step.at(list_key)) flatten_steps(inner, list_key, out);
  } else {
    out.push_back(step);
  }
}

std::vector<json> pipeline_steps(const json& root, const char* stage, const char* list_key) {
  std::vector<json> steps;
  if (root.contains(stage) && !root[stage].is_null()) flatten_steps(root[stage], list_key, steps);
  return steps;
}

std::string escape_literal(const std::string& text) {
  std::string out;
  for (char c : text) {
    if (std::string_view("\\^$.|?*+()[]{}-").find(c) != std::string_view::npos) out.push_back('\\');
    out.push_back(c);
  }
  return out;
}

// Applies one Split to `piece`, appending the resulting pieces.
void split_piece(const std::string& piece, const Regex& regex, SplitBehavior behavior, std::vector<std::string>& out) {
  const auto matches = regex.find_all(piece);
  size_t last = 0;
  std::string carry;  // MergedWithNext: a delimiter waiting for the next piece
  auto emit = [&](std::string text) {
    if (!text.empty()) out.push_back(std::move(text));
  };
  for (const auto& [begin, end] : matches) {
    std::string before = piece.substr(last, begin - last);
    std::string match = piece.substr(begin, end - begin);
    switch (behavior) {
      case SplitBehavior::kIsolated:
        emit(std::move(before));
        emit(std::move(match));
        break;
      case SplitBehavior::kRemoved:
        emit(std::move(before));
        break;
      case SplitBehavior::kMergedWithPrevious:
        emit(before + match);
        break;
      case SplitBehavior::kMergedWithNext:
        emit(carry + before);
        carry = std::move(match);
        break;
    }
    last = end;
  }
  emit(carry + piece.substr(last));
}

std::optional<std::string> token_content(const json& value) {
  if (value.is_string()) return value.get<std::string>();
  if (value.is_object() && value.contains("content")) return value["content"].get<std::string>();
  return std::nullopt;
}

}  // namespace

struct Tokenizer::Impl {
  std::unordered_map<std::string, int64_t> vocab;
  std::vector<std::string> id_to_token;
  std::unordered_map<uint64_t, std::pair<int32_t, int64_t>> merges;  // (left, right) -> (rank, merged id)
  bool ignore_merges = false;
  std::optional<int64_t> unk_id;

  std::vector<AddedToken> added;  // longest content first, so the first match at a position is the longest
  std::array<std::vector<size_t>, 256> added_by_first_byte;  // indices into `added`
  std::vector<bool> special_ids;
  std::vector<UnicodeForm> normalizers;
  std::vector<PreTokenizerStep> pre_tokenizer;
  bool byte_level_decoder = false;

  std::vector<int64_t> prefix_ids, suffix_ids;  // added by encode(add_special_tokens)
  std::string bos_token, eos_token, pad_token, chat_template;

  mutable std::mutex cache_mutex;
  mutable std::unordered_map<std::string, std::vector<int64_t>> cache;

  // Splits text on added tokens with `normalized == want_normalized`; each part is
  // (text, added token id or -1).
  std::vector<std::pair<std::string, int64_t>> split_added(const std::string& text, bool want_normalized) const;
  std::string normalize(std::string text) const {
    for (UnicodeForm form : normalizers) text = unicode_normalize(text, form);
    return text;
  }
  std::vector<std::string> pre_tokenize(const std::string& text) const;
  void bpe(const std::string& piece, std::vector<int64_t>& out) const;
};

std::vector<std::pair<std::string, int64_t>> Tokenizer::Impl::split_added(const std::string& text,
                                                                          bool want_normalized) const {
  std::vector<std::pair<std::string, int64_t>> parts;
  size_t plain_start = 0, pos = 0;
  auto is_space = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; };
  while (pos < text.size()) {
    const AddedToken* found = nullptr;
    for (size_t index : added_by_first_byte[static_cast<unsigned char>(text[pos])]) {
      const AddedToken& token = added[index];
      if (token.normalized != want_normalized) continue;
      if (text.compare(pos, token.content.size(), token.content) == 0) {
        found = &token;
        break;
      }
    }
    if (found == nullptr) {
      ++pos;
      continue;
    }
    size_t begin = pos, end = pos + found->content.size();
    if (found->lstrip)
      while (begin > plain_start && is_space(text[begin - 1])) --begin;
    if (found->rstrip)
      while (end < text.size() && is_space(text[end])) ++end;
    if (begin > plain_start) parts.emplace_back(text.substr(plain_start, begin - plain_start), -1);
    parts.emplace_back(found->content, found->id);
    plain_start = pos = end;
  }
  if (plain_start < text.size()) parts.emplace_back(text.substr(plain_start), -1);
  return parts;
}

std::vector<std::string> Tokenizer::Impl::pre_tokenize(const std::string& text) const {
  std::vector<std::string> pieces{text};
  for (const PreTokenizerStep& step : pre_tokenizer) {
    std::vector<std::string> next;
    for (std::string& piece : pieces) {
      if (step.kind == PreTokenizerStep::Kind::kByteLevel) {
        if (step.add_prefix_space && piece.rfind(' ', 0) != 0) piece.insert(piece.begin(), ' ');
        std::vector<std::string> parts;
        if (step.regex) {
          split_piece(piece, *step.regex, SplitBehavior::kIsolated, parts);
        } else {
          parts.push_back(piece);
        }
        for (const std::string& part : parts) next.push_back(to_byte_level(part));
      } else {
        split_piece(piece, *step.regex, step.behavior, next);
      }
    }
    pieces = std::move(next);
  }
  return pieces;
}

void Tokenizer::Impl::bpe(const std::string& piece, std::vector<int64_t>& out) const {
  if (ignore_merges) {
    if (auto it = vocab.find(piece); it != vocab.end()) {
      out.push_back(it->second);
      return;
    }
  }
  {
    std::lock_guard<std::mutex> lock(cache_mutex);
    if (auto it = cache.find(piece); it != cache.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int64_t> symbols;
  for (size_t pos = 0; pos < piece.size();) {
    const size_t start = pos;
    next_code_point(piece, pos);
    const auto it = vocab.find(piece.substr(start, pos - start));
    if (it != vocab.end()) {
      symbols.push_back(it->second);
    } else if (unk_id) {
      symbols.push_back(*unk_id);
    } else {
      throw std::runtime_error(fmt::format("tokenizer: symbol '{}' is not in the vocabulary and there is no unk_token",
                                           piece.substr(start, pos - start)));
    }
  }
  // Apply the lowest-ranked merge, leftmost first, until none applies.
  while (symbols.size() > 1) {
    int32_t best_rank = std::numeric_limits<int32_t>::max();
    size_t best = 0;
    int64_t merged = -1;
    for (size_t i = 0; i + 1 < symbols.size(); ++i) {
      const uint64_t key = (static_cast<uint64_t>(symbols[i]) << 32) | static_cast<uint32_t>(symbols[i + 1]);
      const auto it = merges.find(key);
      if (it != merges.end() && it->second.first < best_rank) {
        best_rank = it->second.first;
        best = i;
        merged = it->second.second;
      }
    }
    if (merged < 0) break;
    symbols[best] = merged;
    symbols.erase(symbols.begin() + static_cast<std::ptrdiff_t>(best) + 1);
  }
  out.insert(out.end(), symbols.begin(), symbols.end());
  std::lock_guard<std::mutex> lock(cache_mutex);
  if (cache.size() > 200000) cache.clear();
  cache.emplace(piece, std::move(symbols));
}

StatusOr<Tokenizer> Tokenizer::load(const std::string& dir) {
  StatusOr<std::string> tokenizer_json = read_file(dir + "/tokenizer.json");
  if (!tokenizer_json) return tokenizer_json.status();
  StatusOr<std::string> config_json = read_file(dir + "/tokenizer_config.json");
  return from_json(*tokenizer_json, config_json ? *config_json : std::string(), dir + "/tokenizer.json");
}

StatusOr<Tokenizer> Tokenizer::from_json(const std::string& tokenizer_text, const std::string& config_text,
                                         const std::string& source) {
  auto impl = std::make_shared<Impl>();
  json root, config;
  try {
    root = json::parse(tokenizer_text);
    if (!config_text.empty()) config = json::parse(config_text);
  } catch (const json::exception& e) {
    return Status::error(fmt::format("{}: invalid JSON: {}", source, e.what()));
  }
  auto fail = [&](const std::string& what) { return Status::error(fmt::format("{}: {}", source, what)); };

  try {
    // Model.
    const json& model = root.at("model");
    if (model.value("type", std::string("BPE")) != "BPE")
      return fail(fmt::format("model type '{}' is not supported (BPE)", model.value("type", std::string())));
    if (model.value("byte_fallback", false)) return fail("BPE byte_fallback is not supported");
    for (const auto& [token, id] : model.at("vocab").items()) impl->vocab.emplace(token, id.get<int64_t>());
    impl->ignore_merges = model.value("ignore_merges", false);
    int64_t max_id = -1;
    for (const auto& [token, id] : impl->vocab) max_id = std::max(max_id, id);
    for (const auto& token : root.value("added_tokens", json::array())) max_id = std::max(max_id, token.at("id").get<int64_t>());
    impl->id_to_token.assign(static_cast<size_t>(max_id + 1), std::string());
    for (const auto& [token, id] : impl->vocab) impl->id_to_token[static_cast<size_t>(id)] = token;
    int32_t rank = 0;
    for (const auto& merge : model.at("merges")) {
      std::string left, right;
      if (merge.is_array()) {
        left = merge.at(0).get<std::string>();
        right = merge.at(1).get<std::string>();
      } else {
        const std::string text = merge.get<std::string>();
        const auto space = text.find(' ');
        if (space == std::string::npos) return fail(fmt::format("merge {} is not 'left right'", rank));
        left = text.substr(0, space);
        right = text.substr(space + 1);
      }
      const auto l = impl->vocab.find(left), r = impl->vocab.find(right), m = impl->vocab.find(left + right);
      if (l == impl->vocab.end() || r == impl->vocab.end() || m == impl->vocab.end())
        return fail(fmt::format("merge {} ('{}' '{}') uses a token that is not in the vocabulary", rank, left, right));
      const uint64_t key = (static_cast<uint64_t>(l->second) << 32) | static_cast<uint32_t>(r->second);
      impl->merges.emplace(key, std::make_pair(rank, m->second));
      ++rank;
    }
    if (model.contains("unk_token") && model["unk_token"].is_string()) {
      const auto it = impl->vocab.find(model["unk_token"].get<std::string>());
      if (it != impl->vocab.end()) impl->unk_id = it->second;
    }

    // Added tokens.
    impl->special_ids.assign(impl->id_to_token.size(), false);
    for (const auto& t : root.value("added_tokens", json::array())) {
      AddedToken token;
      token.id = t.at("id");
      token.content = t.at("content");
      token.special = t.value("special", false);
      token.normalized = t.value("normalized", false);
      token.lstrip = t.value("lstrip", false);
      token.rstrip = t.value("rstrip", false);
      if (t.value("single_word", false)) return fail(fmt::format("added token '{}': single_word is not supported", token.content));
      impl->id_to_token[static_cast<size_t>(token.id)] = token.content;
      impl->special_ids[static_cast<size_t>(token.id)] = token.special;
      impl->vocab[token.content] = token.id;
      impl->added.push_back(token);
    }
    std::stable_sort(impl->added.begin(), impl->added.end(),
                     [](const AddedToken& a, const AddedToken& b) { return a.content.size() > b.content.size(); });
    for (size_t i = 0; i < impl->added.size(); ++i)
      if (!impl->added[i].content.empty())
        impl->added_by_first_byte[static_cast<unsigned char>(impl->added[i].content[0])].push_back(i);

    // Normalizer.
    for (const json& n : pipeline_steps(root, "normalizer", "normalizers")) {
      const std::string type = n.at("type");
      if (type == "NFC") {
        impl->normalizers.push_back(UnicodeForm::kNfc);
      } else if (type == "NFD") {
        impl->normalizers.push_back(UnicodeForm::kNfd);
      } else if (type == "NFKC") {
        impl->normalizers.push_back(UnicodeForm::kNfkc);
      } else if (type == "NFKD") {
        impl->normalizers.push_back(UnicodeForm::kNfkd);
      } else {
        return fail(fmt::format("normalizer '{}' is not supported (NFC, NFD, NFKC, NFKD, Sequence)", type));
      }
    }

    // Pre-tokenizer.
    bool has_byte_level = false;
    for (const json& p : pipeline_steps(root, "pre_tokenizer", "pretokenizers")) {
      const std::string type = p.at("type");
      PreTokenizerStep step;
      std::string error;
      if (type == "Split") {
        if (p.value("invert", false)) return fail("Split with invert is not supported");
        const json& pattern = p.at("pattern");
        const std::string regex = pattern.contains("Regex") ? pattern["Regex"].get<std::string>()
                                                            : escape_literal(pattern.at("String").get<std::string>());
        step.regex = Regex::compile(regex, error);
        const std::string behavior = p.at("behavior");
        if (behavior == "Isolated") step.behavior = SplitBehavior::kIsolated;
        else if (behavior == "Removed") step.behavior = SplitBehavior::kRemoved;
        else if (behavior == "MergedWithPrevious") step.behavior = SplitBehavior::kMergedWithPrevious;
        else if (behavior == "MergedWithNext") step.behavior = SplitBehavior::kMergedWithNext;
        else return fail(fmt::format("Split behavior '{}' is not supported", behavior));
      } else if (type == "ByteLevel") {
        step.kind = PreTokenizerStep::Kind::kByteLevel;
        step.add_prefix_space = p.value("add_prefix_space", false);
        if (p.value("use_regex", true)) step.regex = Regex::compile(kGpt2Pattern, error);
        has_byte_level = true;
      } else if (type == "Digits") {
        step.kind = PreTokenizerStep::Kind::kDigits;
        step.regex = Regex::compile(p.value("individual_digits", false) ? R"(\p{N})" : R"(\p{N}+)", error);
      } else {
        return fail(fmt::format("pre_tokenizer '{}' is not supported (Sequence, Split, ByteLevel, Digits)", type));
      }
      if (!error.empty()) return fail(fmt::format("pre_tokenizer {}: {}", type, error));
      impl->pre_tokenizer.push_back(step);
    }
    if (!has_byte_level) return fail("only byte-level BPE tokenizers are supported (no ByteLevel pre_tokenizer)");

    // Decoder.
    for (const json& d : pipeline_steps(root, "decoder", "decoders")) {
      const std::string type = d.at("type");
      if (type == "ByteLevel") impl->byte_level_decoder = true;
      else return fail(fmt::format("decoder '{}' is not supported (ByteLevel, Sequence)", type));
    }

    // Special tokens added by encode(add_special_tokens): transformers rebuilds the post-processor
    // of Llama-class fast tokenizers from tokenizer_config.json; others use tokenizer.json's.
    if (!config.is_null()) {
      impl->bos_token = token_content(config.value("bos_token", json())).value_or("");
      impl->eos_token = token_content(config.value("eos_token", json())).value_or("");
      impl->pad_token = token_content(config.value("pad_token", json())).value_or("");
      impl->chat_template = config.value("chat_template", std::string());
    }
    const std::string tokenizer_class = config.is_null() ? "" : config.value("tokenizer_class", std::string());
    const bool llama_class = tokenizer_class == "LlamaTokenizerFast" || tokenizer_class == "LlamaTokenizer" ||
                             tokenizer_class == "CodeLlamaTokenizerFast" || tokenizer_class == "GemmaTokenizerFast";
    auto id_of = [&](const std::string& token) -> std::optional<int64_t> {
      const auto it = impl->vocab.find(token);
      return it == impl->vocab.end() ? std::nullopt : std::optional<int64_t>(it->second);
    };
    if (llama_class && (config.contains("add_bos_token") || config.contains("add_eos_token"))) {
      if (config.value("add_bos_token", false) && id_of(impl->bos_token)) impl->prefix_ids.push_back(*id_of(impl->bos_token));
      if (config.value("add_eos_token", false) && id_of(impl->eos_token)) impl->suffix_ids.push_back(*id_of(impl->eos_token));
    } else {
      for (const json& p : pipeline_steps(root, "post_processor", "processors")) {
        const std::string type = p.at("type");
        if (type == "TemplateProcessing") {
          bool after_sequence = false;
          for (const auto& item : p.at("single")) {
            if (item.contains("Sequence")) {
              after_sequence = true;
              continue;
            }
            const std::string name = item.at("SpecialToken").at("id");
            for (const auto& id : p.at("special_tokens").at(name).at("ids"))
              (after_sequence ? impl->suffix_ids : impl->prefix_ids).push_back(id.get<int64_t>());
          }
        } else if (type != "ByteLevel") {
          return fail(fmt::format("post_processor '{}' is not supported (ByteLevel, TemplateProcessing, Sequence)", type));
        }
      }
    }
  } catch (const json::exception& e) {
    return fail(fmt::format("unexpected structure: {}", e.what()));
  }
  return Tokenizer(std::move(impl));
}

std::string Tokenizer::byte_level_json(const std::vector<AddedToken>& added) {
  json vocab = json::object();
  const auto& alphabet = byte_level_alphabet();
  for (int b = 0; b < 256; ++b) {
    std::string token;
    append_utf8(token, alphabet[static_cast<size_t>(b)]);
    vocab[token] = b;
  }
  json added_tokens = json::array();
  for (const AddedToken& t : added)
    added_tokens.push_back({{"id", t.id}, {"content", t.content}, {"special", t.special}, {"normalized", t.normalized},
                            {"lstrip", t.lstrip}, {"rstrip", t.rstrip}});
  const json tokenizer = {{"version", "1.0"},
                          {"added_tokens", added_tokens},
                          {"normalizer", nullptr},
                          {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}},
                          {"post_processor", nullptr},
                          {"decoder", {{"type", "ByteLevel"}}},
                          {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", json::array()}}}};
  return tokenizer.dump();
}

Tokenizer Tokenizer::byte_level() {
  StatusOr<Tokenizer> result = from_json(byte_level_json(), "", "builtin:bytes");
  if (!result) throw std::logic_error(result.status().message());
  return *result;
}

std::vector<int64_t> Tokenizer::encode(std::string_view text, bool add_special_tokens) const {
  std::vector<int64_t> ids;
  if (add_special_tokens) ids = impl_->prefix_ids;
  for (auto& [raw, raw_id] : impl_->split_added(std::string(text), /*want_normalized=*/false)) {
    if (raw_id >= 0) {
      ids.push_back(raw_id);
      continue;
    }
    for (auto& [part, part_id] : impl_->split_added(impl_->normalize(std::move(raw)), /*want_normalized=*/true)) {
      if (part_id >= 0) {
        ids.push_back(part_id);
        continue;
      }
      for (const std::string& piece : impl_->pre_tokenize(part)) impl_->bpe(piece, ids);
    }
  }
  if (add_special_tokens) ids.insert(ids.end(), impl_->suffix_ids.begin(), impl_->suffix_ids.end());
  return ids;
}

std::string Tokenizer::decode(const std::vector<int64_t>& ids, bool skip_special_tokens) const {
  std::string bytes;
  for (int64_t id : ids) {
    if (id < 0 || id >= vocab_size()) continue;
    if (skip_special_tokens && impl_->special_ids[static_cast<size_t>(id)]) continue;
    const std::string& token = impl_->id_to_token[static_cast<size_t>(id)];
    if (!impl_->byte_level_decoder) {
      bytes += token;
      continue;
    }
    // A token whose characters are all in the byte alphabet stands for those bytes; any other
    // token (an added token such as "<｜User｜>") stands for its own UTF-8 text.
    std::string decoded;
    bool all_bytes = true;
    for (size_t pos = 0; pos < token.size() && all_bytes;) {
      const int byte = byte_level_byte(next_code_point(token, pos));
      if (byte < 0) all_bytes = false;
      else decoded.push_back(static_cast<char>(byte));
    }
    bytes += all_bytes ? decoded : token;
  }
  return utf8_lossy(bytes);
}

std::optional<int64_t> Tokenizer::token_to_id(std::string_view token) const {
  const auto it = impl_->vocab.find(std::string(token));
  return it == impl_->vocab.end() ? std::nullopt : std::optional<int64_t>(it->second);
}

std::string Tokenizer::id_to_token(int64_t id) const {
  return id >= 0 && id < vocab_size() ? impl_->id_to_token[static_cast<size_t>(id)] : std::string();
}

int64_t Tokenizer::vocab_size() const { return static_cast<int64_t>(impl_->id_to_token.size()); }
bool Tokenizer::is_special(int64_t id) const {
  return id >= 0 && id < vocab_size() && impl_->special_ids[static_cast<size_t>(id)];
}
std::optional<int64_t> Tokenizer::bos_id() const { return impl_->bos_token.empty() ? std::nullopt : token_to_id(impl_->bos_token); }
std::optional<int64_t> Tokenizer::eos_id() const { return impl_->eos_token.empty() ? std::nullopt : token_to_id(impl_->eos_token); }
std::optional<int64_t> Tokenizer::pad_id() const { return impl_->pad_token.empty() ? std::nullopt : token_to_id(impl_->pad_token); }
const std::string& Tokenizer::bos_token() const { return impl_->bos_token; }
const std::string& Tokenizer::eos_token() const { return impl_->eos_token; }
const std::string& Tokenizer::chat_template() const { return impl_->chat_template; }

}  // namespace grpo
