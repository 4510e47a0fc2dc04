#include "trainer/metrics.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <stdexcept>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/atomic_file.h"
#include "core/crc32c.h"
#include "core/logging.h"

namespace grpo {
namespace {

// Protocol-buffer wire encoding, just what an Event with scalar summaries needs.
void varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7F) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}
void key(std::string& out, int field, int wire) { varint(out, static_cast<uint64_t>(field << 3 | wire)); }
void fixed64(std::string& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>(v >> (8 * i)));
}
void fixed32(std::string& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>(v >> (8 * i)));
}
void bytes_field(std::string& out, int field, const std::string& bytes) {
  key(out, field, 2);
  varint(out, bytes.size());
  out += bytes;
}

std::string event(double wall_time, int64_t step, const std::string* file_version, const std::string* summary) {
  std::string e;
  uint64_t bits;
  std::memcpy(&bits, &wall_time, 8);
  key(e, 1, 1);  // wall_time: double
  fixed64(e, bits);
  key(e, 2, 0);  // step: int64
  varint(e, static_cast<uint64_t>(step));
  if (file_version) bytes_field(e, 3, *file_version);
  if (summary) bytes_field(e, 5, *summary);
  return e;
}

double wall_clock() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string framed_record(const std::string& payload) {
  std::string header;
  fixed64(header, payload.size());
  std::string framed = header;
  fixed32(framed, masked_crc32c(crc32c(header)));
  framed += payload;
  fixed32(framed, masked_crc32c(crc32c(payload)));
  return framed;
}

// The step of an Event payload (field 2), 0 when absent; -1 when the payload does not parse.
int64_t event_step(const std::string& payload) {
  size_t pos = 0;
  auto read_varint = [&](uint64_t* v) {
    *v = 0;
    for (int shift = 0; shift < 64 && pos < payload.size(); shift += 7) {
      const auto byte = static_cast<unsigned char>(payload[pos++]);
      *v |= static_cast<uint64_t>(byte & 0x7F) << shift;
      if (!(byte & 0x80)) return true;
    }
    return false;
  };
  int64_t step = 0;
  while (pos < payload.size()) {
    uint64_t tag = 0, value = 0;
    if (!read_varint(&tag)) return -1;
    switch (tag & 7) {
      case 0:
        if (!read_varint(&value)) return -1;
        if ((tag >> 3) == 2) step = static_cast<int64_t>(value);
        break;
      case 1: pos += 8; break;
      case 2:
        if (!read_varint(&value)) return -1;
        pos += value;
        break;
      case 5: pos += 4; break;
      default: return -1;
    }
  }
  return pos == payload.size() ? step : -1;
}

bool is_regular_file(const std::string& path) {
  std::error_code ec;
  return std::filesystem::is_regular_file(path, ec);  // follows links: /dev/full is not one
}

}  // namespace

LogFile::LogFile(std::string path) : path_(std::move(path)) {
  fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd_ < 0) open_errno_ = errno;
}

LogFile::~LogFile() {
  if (fd_ >= 0) ::close(fd_);
}

void LogFile::append(const std::string& bytes) {
  int error = open_errno_;
  if (fd_ >= 0) {
    const off_t whole = ::lseek(fd_, 0, SEEK_END);
    size_t done = 0;
    while (done < bytes.size()) {
      const ssize_t n = ::write(fd_, bytes.data() + done, bytes.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        error = n < 0 ? errno : ENOSPC;
        break;
      }
      done += static_cast<size_t>(n);
    }
    if (done == bytes.size()) {
      error = 0;
    } else if (whole >= 0 && is_regular_file(path_)) {
      // A torn record would corrupt every later read of the file: roll back to the last whole one.
      [[maybe_unused]] const int rolled_back = ::ftruncate(fd_, whole);
    }
  }
  if (error == 0) {
    if (failures_in_a_row_ > 0) log_info("{}: writing again after {} failed write(s)", path_, failures_in_a_row_);
    failures_in_a_row_ = 0;
    return;
  }
  ++failures_in_a_row_;
  if (failures_in_a_row_ >= kFailedWritesBeforeError)
    throw std::runtime_error(fmt::format("cannot write {}: {} ({} writes in a row failed; stopping the run)", path_,
                                         std::strerror(error), failures_in_a_row_));
  if (failures_in_a_row_ == 1)
    log_warn("cannot write {}: {}; this step's record is lost, and the run stops if {} writes in a row fail", path_,
             std::strerror(error), kFailedWritesBeforeError);
}

TensorBoardWriter::TensorBoardWriter(const std::string& directory)
    : file_([&] {
        std::filesystem::create_directories(directory);
        char host[256] = "localhost";
        ::gethostname(host, sizeof host - 1);
        return fmt::format("{}/events.out.tfevents.{}.{}.{}", directory, static_cast<int64_t>(wall_clock()), host,
                           ::getpid());
      }()) {
  const std::string version = "brain.Event:2";
  file_.append(framed_record(event(wall_clock(), 0, &version, nullptr)));
}

void TensorBoardWriter::add_scalars(int64_t step, const std::map<std::string, double>& scalars) {
  std::string summary;
  for (const auto& [tag, value] : scalars) {
    std::string v;
    bytes_field(v, 1, tag);  // Summary.Value.tag
    key(v, 2, 5);            // Summary.Value.simple_value: float
    const float f = static_cast<float>(value);
    uint32_t bits;
    std::memcpy(&bits, &f, 4);
    fixed32(v, bits);
    bytes_field(summary, 1, v);  // Summary.value
  }
  file_.append(framed_record(event(wall_clock(), step, nullptr, &summary)));
}

int64_t trim_tensorboard_events(const std::string& directory, int64_t last_step) {
  std::error_code ec;
  if (!std::filesystem::is_directory(directory, ec)) return 0;
  int64_t dropped_total = 0;
  for (const auto& entry : std::filesystem::directory_iterator(directory, ec)) {
    const std::string path = entry.path().string();
    if (entry.path().filename().string().rfind("events.out.tfevents.", 0) != 0 || !is_regular_file(path)) continue;
    StatusOr<std::string> bytes = read_file(path);
    if (!bytes) continue;
    std::string kept;
    int64_t dropped = 0;
    size_t pos = 0;
    // Records end at a torn tail (a killed writer): what follows cannot be framed and is dropped.
    while (pos + 12 <= bytes->size()) {
      uint64_t length = 0;
      std::memcpy(&length, bytes->data() + pos, 8);
      if (length > bytes->size() - pos - 12 || pos + 12 + length + 4 > bytes->size()) break;
      const std::string payload = bytes->substr(pos + 12, length);
      if (event_step(payload) <= last_step) kept += bytes->substr(pos, 12 + length + 4);
      else ++dropped;
      pos += 12 + length + 4;
    }
    if (kept.size() == bytes->size()) continue;
    if (Status s = write_file_atomic(path, kept); !s.is_ok()) throw std::runtime_error(s.message());
    dropped_total += dropped;
  }
  return dropped_total;
}

int64_t trim_jsonl_steps(const std::string& path, int64_t last_step) {
  if (!is_regular_file(path)) return 0;
  StatusOr<std::string> text = read_file(path);
  if (!text) throw std::runtime_error(text.status().message());
  std::string kept;
  int64_t dropped = 0;
  size_t begin = 0;
  while (begin < text->size()) {
    size_t end = text->find('\n', begin);
    if (end == std::string::npos) end = text->size();  // a torn last line: dropped below
    const std::string line = text->substr(begin, end - begin);
    const auto row = nlohmann::json::parse(line, nullptr, false);
    const bool whole = end < text->size();
    if (whole && row.is_object() && row.contains("step") && row["step"].is_number_integer() &&
        row["step"].get<int64_t>() <= last_step)
      kept += line + "\n";
    else if (!line.empty())
      ++dropped;
    begin = end + 1;
  }
  if (kept.size() != text->size())
    if (Status s = write_file_atomic(path, kept); !s.is_ok()) throw std::runtime_error(s.message());
  return dropped;
}

MetricsWriter::MetricsWriter(const std::string& run_dir, int64_t start_step) {
  for (const char* name : {"metrics.jsonl", "samples.jsonl"}) {
    if (const int64_t dropped = trim_jsonl_steps(run_dir + "/" + name, start_step); dropped > 0)
      log_warn("{}/{}: dropped {} rows after step {} (logged by an earlier attempt that did not reach its next "
               "checkpoint)", run_dir, name, dropped, start_step);
  }
  if (const int64_t dropped = trim_tensorboard_events(run_dir + "/tensorboard", start_step); dropped > 0)
    log_warn("{}/tensorboard: dropped {} events after step {}", run_dir, dropped, start_step);
  jsonl_ = std::make_unique<LogFile>(run_dir + "/metrics.jsonl");
  samples_ = std::make_unique<LogFile>(run_dir + "/samples.jsonl");
  tensorboard_ = std::make_unique<TensorBoardWriter>(run_dir + "/tensorboard");
}

void MetricsWriter::log(int64_t step, const std::map<std::string, double>& scalars) {
  nlohmann::json line = scalars;
  line["step"] = step;
  jsonl_->append(line.dump() + "\n");
  tensorboard_->add_scalars(step, scalars);
}

void MetricsWriter::log_samples(const std::vector<nlohmann::json>& rows) {
  std::string text;
  for (const nlohmann::json& row : rows) text += row.dump() + "\n";
  if (!text.empty()) samples_->append(text);
}

}  // namespace grpo
