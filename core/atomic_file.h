#pragma once
// Durable whole-file writes: a reader sees the old file or the new one, never a torn mix.

#include <string>
#include <string_view>

#include "core/status.h"

namespace grpo {

// Writes `contents` to a temporary file beside `path`, fsyncs it, renames it over `path`
// and fsyncs the directory. On failure `path` is untouched and the temporary file removed.
Status write_file_atomic(const std::string& path, std::string_view contents);

// Streams a file into place: bytes go to a temporary file beside `path`; commit() fsyncs it,
// renames it over `path` and fsyncs the directory. Destroyed without commit, it removes the
// temporary file and leaves `path` untouched. Errors are sticky: the first one is returned.
class AtomicFileWriter {
 public:
  explicit AtomicFileWriter(std::string path);
  ~AtomicFileWriter();
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;

  void write(const void* data, size_t size);
  Status commit();

 private:
  std::string path_;
  std::string temp_path_;
  int fd_ = -1;
  Status status_;
  bool committed_ = false;
};

// Reads a whole file; the error names the path and the OS reason.
StatusOr<std::string> read_file(const std::string& path);

}  // namespace grpo
