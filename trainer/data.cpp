#include "trainer/data.h"

#include <algorithm>
#include <map>
#include <numeric>
#include <random>
#include <sstream>

#include <fmt/format.h>

#include "core/jsonl.h"

namespace grpo {
namespace {

std::string field_text(const nlohmann::json& record, const std::string& name) {
  const auto it = record.find(name);
  if (it == record.end() || it->is_null()) return "";
  return it->is_string() ? it->get<std::string>() : it->dump();
}

StatusOr<std::pair<int64_t, int64_t>> parse_range(const std::string& key, const std::string& text) {
  const auto dash = text.find('-');
  try {
    const int64_t lo = std::stoll(text.substr(0, dash));
    const int64_t hi = dash == std::string::npos ? lo : std::stoll(text.substr(dash + 1));
    if (lo < 1 || hi < lo || hi > 17) throw std::out_of_range("range");
    return std::make_pair(lo, hi);
  } catch (...) {
    return Status::error(fmt::format("builtin:addition: '{}={}' must be a digit range like 1-3 (1..17)", key, text));
  }
}

StatusOr<Dataset> builtin_addition(const std::string& query) {
  std::map<std::string, std::string> params{{"n", "1000"}, {"digits", "1-3"}, {"hard_digits", ""}, {"hard_fraction", "0"},
                                            {"seed", "1"}};
  std::stringstream stream(query);
  for (std::string item; std::getline(stream, item, '&');) {
    const auto eq = item.find('=');
    const std::string key = item.substr(0, eq);
    if (eq == std::string::npos || !params.count(key))
      return Status::error(fmt::format("builtin:addition: unknown parameter '{}' (n, digits, hard_digits, hard_fraction, seed)", item));
    params[key] = item.substr(eq + 1);
  }
  auto digits = parse_range("digits", params["digits"]);
  if (!digits) return digits.status();
  std::pair<int64_t, int64_t> hard{0, 0};
  if (!params["hard_digits"].empty()) {
    auto h = parse_range("hard_digits", params["hard_digits"]);
    if (!h) return h.status();
    hard = *h;
  }
  Dataset d;
  try {
    d.examples = make_addition_examples(std::stoll(params["n"]), digits->first, digits->second, std::stoull(params["seed"]),
                                        hard.first, hard.second, std::stod(params["hard_fraction"]));
  } catch (const std::exception&) {
    return Status::error("builtin:addition: n, seed and hard_fraction must be numbers");
  }
  return d;
}

}  // namespace

std::vector<Example> make_addition_examples(int64_t count, int64_t min_digits, int64_t max_digits, uint64_t seed,
                                            int64_t hard_min_digits, int64_t hard_max_digits, double hard_fraction) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  auto number_with_digits = [&](int64_t digits) {
    const int64_t lo = digits == 1 ? 0 : static_cast<int64_t>(std::pow(10, digits - 1));
    const int64_t hi = static_cast<int64_t>(std::pow(10, digits)) - 1;
    return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
  };
  std::vector<Example> out;
  for (int64_t i = 0; i < count; ++i) {
    const bool hard = hard_max_digits > 0 && unit(rng) < hard_fraction;
    const int64_t lo = hard ? hard_min_digits : min_digits, hi = hard ? hard_max_digits : max_digits;
    const int64_t a = number_with_digits(std::uniform_int_distribution<int64_t>(lo, hi)(rng));
    const int64_t b = number_with_digits(std::uniform_int_distribution<int64_t>(lo, hi)(rng));
    const std::string sa = std::to_string(a), sb = std::to_string(b);
    const size_t width = std::max(sa.size(), sb.size());
    std::string steps;
    int carry = 0;
    for (size_t k = 0; k < width; ++k) {
      const int da = k < sa.size() ? sa[sa.size() - 1 - k] - '0' : 0;
      const int db = k < sb.size() ? sb[sb.size() - 1 - k] - '0' : 0;
      const int sum = da + db + carry;
      steps += fmt::format("{}{}+{}+{}={}", k ? "," : "", da, db, carry, sum);
      carry = sum / 10;
    }
    Example e;
    e.id = fmt::format("add-{}-{}", seed, i);
    e.prompt = fmt::format("{}+{}=", a, b);
    e.answer = std::to_string(a + b);
    e.response = fmt::format("<think>{}</think><answer>{}</answer>", steps, a + b);
    e.fields = {{"answer", e.answer}, {"digits", static_cast<int64_t>(width)}};
    out.push_back(std::move(e));
  }
  return out;
}

StatusOr<Dataset> load_dataset(const std::string& source, const DataConfig& mapping) {
  const std::string builtin = "builtin:addition";
  if (source.rfind(builtin, 0) == 0) {
    const std::string rest = source.substr(builtin.size());
    if (!rest.empty() && rest[0] != '?') return Status::error(fmt::format("unknown builtin dataset '{}'", source));
    return builtin_addition(rest.empty() ? "" : rest.substr(1));
  }
  if (source.rfind("builtin:", 0) == 0)
    return Status::error(fmt::format("unknown builtin dataset '{}' (builtin:addition)", source));
  StatusOr<JsonlRecords> records = read_jsonl(source, mapping.skip_malformed);
  if (!records) return records.status();
  Dataset d;
  d.skipped_lines = records->skipped_lines;
  for (size_t i = 0; i < records->records.size(); ++i) {
    const nlohmann::json& r = records->records[i];
    const std::string where = fmt::format("{}:{}", source, records->line_numbers[i]);
    std::string error;
    if (!r.is_object() || !r.contains(mapping.prompt_field)) {
      error = fmt::format("{}: no field '{}' (data.prompt_field)", where, mapping.prompt_field);
    } else if (const nlohmann::json& prompt = r[mapping.prompt_field];
               !prompt.is_string() || prompt.get<std::string>().find_first_not_of(" \t\r\n") == std::string::npos) {
      // Caught here, not when the prompt is first sampled (deep in the tokenizer, mid-run).
      error = fmt::format("{}: field '{}' (data.prompt_field) must be a non-empty string, got {}", where,
                          mapping.prompt_field, prompt.is_string() ? "\"" + prompt.get<std::string>() + "\"" : prompt.dump());
    }
    if (!error.empty()) {
      if (!mapping.skip_malformed) return Status::error(error);
      ++d.skipped_lines;
      continue;
    }
    Example e;
    e.id = r.contains("id") ? field_text(r, "id") : fmt::format("{}#{}", source, records->line_numbers[i]);
    e.source = where;
    e.prompt = field_text(r, mapping.prompt_field);
    e.answer = field_text(r, mapping.answer_field);
    e.response = field_text(r, mapping.response_field);
    e.fields = r;
    // Rewards read the gold answer under one name; a record without one has none, not "" (the
    // load-time field check and the math reward both report it).
    const auto gold = r.find(mapping.answer_field);
    if (gold != r.end() && !gold->is_null()) e.fields["answer"] = e.answer;
    else e.fields.erase("answer");
    d.examples.push_back(std::move(e));
  }
  return d;
}

StatusOr<int64_t> check_examples(Dataset& dataset, const ExampleChecks& checks, const DataConfig& mapping) {
  if (checks.prompt_tokens && checks.max_new_tokens >= checks.context_length)
    return Status::error(fmt::format("rollout.max_new_tokens ({}) leaves no room for a prompt in the model's context of "
                                     "{} tokens (max_position_embeddings)",
                                     checks.max_new_tokens, checks.context_length));
  int64_t dropped = 0;
  std::vector<Example> kept;
  kept.reserve(dataset.examples.size());
  for (Example& e : dataset.examples) {
    const std::string where = e.source.empty() ? fmt::format("example '{}'", e.id) : e.source;
    if (checks.missing_field) {
      const auto [reward, field] = checks.missing_field(e.fields);
      if (!field.empty()) {
        // Rewards name the gold answer "answer"; the file holds it under data.answer_field.
        const std::string name = field == "answer" && mapping.answer_field != "answer"
                                     ? fmt::format("'{}' (data.answer_field)", mapping.answer_field)
                                     : fmt::format("'{}'", field);
        return Status::error(fmt::format("{}: reward '{}' needs field {}, which is missing, null or empty", where,
                                         reward, name));
      }
    }
    if (checks.prompt_tokens) {
      const int64_t length = checks.prompt_tokens(e.prompt);
      if (length + checks.max_new_tokens > checks.context_length) {
        if (checks.overlong == OverlongPrompts::kError)
          return Status::error(fmt::format(
              "{}: prompt of {} tokens + rollout.max_new_tokens {} = {} exceeds the model's context of {} tokens "
              "(max_position_embeddings); shorten it, lower rollout.max_new_tokens, or set data.overlong_prompts: skip",
              where, length, checks.max_new_tokens, length + checks.max_new_tokens, checks.context_length));
        ++dropped;
        continue;
      }
    }
    kept.push_back(std::move(e));
  }
  dataset.examples = std::move(kept);
  return dropped;
}

DataOrder::DataOrder(int64_t size, uint64_t seed, bool shuffle) : size_(size), seed_(seed), shuffle_(shuffle) {
  build_epoch();
}

void DataOrder::build_epoch() {
  order_.resize(static_cast<size_t>(size_));
  std::iota(order_.begin(), order_.end(), int64_t{0});
  if (shuffle_) {
    std::mt19937_64 rng(seed_ * 1000003ULL + static_cast<uint64_t>(epoch_));
    std::shuffle(order_.begin(), order_.end(), rng);
  }
}

std::vector<int64_t> DataOrder::next(int64_t count) {
  std::vector<int64_t> out;
  while (static_cast<int64_t>(out.size()) < count && size_ > 0) {
    if (position_ >= size_) {
      ++epoch_;
      position_ = 0;
      build_epoch();
    }
    out.push_back(order_[static_cast<size_t>(position_++)]);
  }
  return out;
}

void DataOrder::restore(const nlohmann::json& cursor) {
  epoch_ = cursor.at("epoch");
  position_ = cursor.at("position");
  build_epoch();
}

}  // namespace grpo
