#include "trainer/metrics.h"

#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/crc32c.h"

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

}  // namespace

TensorBoardWriter::TensorBoardWriter(const std::string& directory) {
  std::filesystem::create_directories(directory);
  char host[256] = "localhost";
  ::gethostname(host, sizeof host - 1);
  path_ = fmt::format("{}/events.out.tfevents.{}.{}", directory, static_cast<int64_t>(wall_clock()), host);
  out_.open(path_, std::ios::binary | std::ios::app);
  const std::string version = "brain.Event:2";
  write_record(event(wall_clock(), 0, &version, nullptr));
  out_.flush();
}

void TensorBoardWriter::write_record(const std::string& payload) {
  std::string header;
  fixed64(header, payload.size());
  std::string framed = header;
  fixed32(framed, masked_crc32c(crc32c(header)));
  framed += payload;
  fixed32(framed, masked_crc32c(crc32c(payload)));
  out_.write(framed.data(), static_cast<std::streamsize>(framed.size()));
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
  write_record(event(wall_clock(), step, nullptr, &summary));
  out_.flush();
}

MetricsWriter::MetricsWriter(const std::string& run_dir)
    : jsonl_(run_dir + "/metrics.jsonl", std::ios::app), tensorboard_(run_dir + "/tensorboard") {}

void MetricsWriter::log(int64_t step, const std::map<std::string, double>& scalars) {
  nlohmann::json line = scalars;
  line["step"] = step;
  jsonl_ << line.dump() << "\n";
  jsonl_.flush();
  tensorboard_.add_scalars(step, scalars);
}

}  // namespace grpo
