#pragma once
// JSON Lines input: one JSON value per line; blank lines are ignored. A malformed line is an
// error naming the file and line, or, when skipping is allowed, counted and reported.

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/status.h"

namespace grpo {

struct JsonlRecords {
  std::vector<nlohmann::json> records;
  std::vector<int64_t> line_numbers;   // 1-based line of each record
  int64_t skipped_lines = 0;           // malformed lines skipped (only with skip_malformed)
  std::string first_skipped_error;     // "file:line: ..." of the first skipped line
};

StatusOr<JsonlRecords> read_jsonl(const std::string& path, bool skip_malformed = false);

}  // namespace grpo
