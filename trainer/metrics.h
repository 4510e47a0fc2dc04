#pragma once
// Training metrics: one JSON object per step in metrics.jsonl, a few decoded samples per step in
// samples.jsonl, and TensorBoard event files (records framed with masked CRC-32C, scalar summaries)
// that TensorBoard reads directly.
//
// Every step appears once: a writer that starts at step S (0 for a fresh run, the checkpoint's step
// for a resumed one) first drops what an interrupted run logged after S from all three.
// A failed write (disk full, quota, I/O error) is a warning the first time; when
// kFailedWritesBeforeError writes of one file fail in a row, the writer throws and the run stops.

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace grpo {

inline constexpr int kFailedWritesBeforeError = 3;

// An append-only log file. A failed append is rolled back to the last whole record, so a reader
// never sees half a line; failures are counted as above.
class LogFile {
 public:
  explicit LogFile(std::string path);
  ~LogFile();
  LogFile(const LogFile&) = delete;
  LogFile& operator=(const LogFile&) = delete;

  void append(const std::string& bytes);  // throws after kFailedWritesBeforeError failures in a row
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  int fd_ = -1;
  int open_errno_ = 0;
  int failures_in_a_row_ = 0;
};

class TensorBoardWriter {
 public:
  // Writes a new events.out.tfevents.<time>.<host>.<pid> in `directory`.
  explicit TensorBoardWriter(const std::string& directory);
  void add_scalars(int64_t step, const std::map<std::string, double>& scalars);
  const std::string& path() const { return file_.path(); }

 private:
  LogFile file_;
};

// Rewrites the event files in `directory` without the events after `last_step`; returns how many
// events were dropped.
int64_t trim_tensorboard_events(const std::string& directory, int64_t last_step);
// Rewrites a JSON-lines file without the rows whose "step" is after `last_step`; returns how many
// rows were dropped. A missing file, or one that is not a regular file, is left alone.
int64_t trim_jsonl_steps(const std::string& path, int64_t last_step);

class MetricsWriter {
 public:
  // `start_step`: the step the run starts from; later rows of an earlier attempt are dropped first.
  MetricsWriter(const std::string& run_dir, int64_t start_step);
  void log(int64_t step, const std::map<std::string, double>& scalars);
  void log_samples(const std::vector<nlohmann::json>& rows);  // each row carries its "step"

 private:
  // Built after the trimming, so pointers.
  std::unique_ptr<LogFile> jsonl_;
  std::unique_ptr<LogFile> samples_;
  std::unique_ptr<TensorBoardWriter> tensorboard_;
};

}  // namespace grpo
