// `grpo tokenize`: token ids of strings, JSON lines in and out.

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/jsonl.h"
#include "launch/commands.h"
#include "models/tokenizer.h"

namespace grpo {

const char* const kTokenizeUsage =
    "grpo tokenize --tokenizer DIR --input strings.jsonl [--field text] [--special]\n\n"
    "Each input line is a JSON string or an object whose FIELD (default \"text\") is the string.\n"
    "Prints {\"ids\": [...], \"tokens\": [...]} per line. --special adds BOS/EOS as transformers does.";

int run_tokenize(const Arguments& args) {
  StatusOr<Tokenizer> tokenizer = Tokenizer::load(args.required("--tokenizer"));
  if (!tokenizer) throw UsageError(tokenizer.status().message());
  const std::string input = args.required("--input");
  const std::string field = args.value("--field").value_or("text");
  StatusOr<JsonlRecords> records = read_jsonl(input);
  if (!records) throw UsageError(records.status().message());
  for (size_t i = 0; i < records->records.size(); ++i) {
    const nlohmann::json& r = records->records[i];
    std::string text;
    if (r.is_string()) {
      text = r.get<std::string>();
    } else if (r.is_object() && r.contains(field) && r[field].is_string()) {
      text = r[field].get<std::string>();
    } else {
      throw UsageError(fmt::format("{}:{}: expected a JSON string or an object with string field \"{}\"", input,
                                   records->line_numbers[i], field));
    }
    const auto ids = tokenizer->encode(text, args.has_flag("--special"));
    std::vector<std::string> tokens;
    for (int64_t id : ids) tokens.push_back(tokenizer->id_to_token(id));
    fmt::print("{}\n", nlohmann::json{{"ids", ids}, {"tokens", tokens}}.dump());
  }
  return 0;
}

}  // namespace grpo
