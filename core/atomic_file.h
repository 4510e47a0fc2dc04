#pragma once
// Durable whole-file writes: a reader sees the old file or the new one, never a torn mix.

#include <string>
#include <string_view>

#include "core/status.h"

namespace grpo {

// Writes `contents` to a temporary file beside `path`, fsyncs it, renames it over `path`
// and fsyncs the directory. On failure `path` is untouched and the temporary file removed.
Status write_file_atomic(const std::string& path, std::string_view contents);

// Reads a whole file; the error names the path and the OS reason.
StatusOr<std::string> read_file(const std::string& path);

}  // namespace grpo
