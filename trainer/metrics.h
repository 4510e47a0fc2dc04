#pragma once
// Training metrics: one JSON object per step in metrics.jsonl, and TensorBoard event files
// (records framed with masked CRC-32C, scalar summaries) that TensorBoard reads directly.

#include <cstdint>
#include <fstream>
#include <map>
#include <string>

namespace grpo {

class TensorBoardWriter {
 public:
  explicit TensorBoardWriter(const std::string& directory);  // writes events.out.tfevents.<time>.<host>
  void add_scalars(int64_t step, const std::map<std::string, double>& scalars);
  void flush() { out_.flush(); }
  const std::string& path() const { return path_; }

 private:
  void write_record(const std::string& payload);
  std::string path_;
  std::ofstream out_;
};

class MetricsWriter {
 public:
  explicit MetricsWriter(const std::string& run_dir);
  void log(int64_t step, const std::map<std::string, double>& scalars);

 private:
  std::ofstream jsonl_;
  TensorBoardWriter tensorboard_;
};

}  // namespace grpo
