#include "core/jsonl.h"

#include <fstream>

#include <fmt/format.h>

namespace grpo {

StatusOr<JsonlRecords> read_jsonl(const std::string& path, bool skip_malformed) {
  std::ifstream in(path);
  if (!in) return Status::error(fmt::format("cannot open '{}'", path));
  JsonlRecords result;
  int64_t line_number = 0;
  for (std::string line; std::getline(in, line);) {
    ++line_number;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    try {
      result.records.push_back(nlohmann::json::parse(line));
      result.line_numbers.push_back(line_number);
    } catch (const nlohmann::json::exception& e) {
      const std::string error = fmt::format("{}:{}: malformed JSON line: {}", path, line_number, e.what());
      if (!skip_malformed) return Status::error(error);
      if (result.skipped_lines++ == 0) result.first_skipped_error = error;
    }
  }
  if (in.bad()) return Status::error(fmt::format("cannot read '{}'", path));
  return result;
}

}  // namespace grpo
