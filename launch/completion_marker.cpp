#include "launch/completion_marker.h"

#include <ctime>
#include <filesystem>

#include <fmt/format.h>

#include "core/atomic_file.h"

namespace grpo {
namespace {

std::string utc_now() {
  const std::time_t now = std::time(nullptr);
  std::tm parts{};
  gmtime_r(&now, &parts);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &parts);
  return text;
}

std::string marker_path(const std::string& dir) { return (std::filesystem::path(dir) / kCompletionMarkerName).string(); }

}  // namespace

Status write_completion_marker(const std::string& dir, CompletionRecord record) {
  if (record.finished.empty()) record.finished = utc_now();
  const nlohmann::json json = {{"verb", record.verb},
                               {"finished", record.finished},
                               {"seconds", record.seconds},
                               {"outputs", record.outputs},
                               {"metrics", record.metrics}};
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return Status::error(fmt::format("cannot create '{}': {}", dir, ec.message()));
  return write_file_atomic(marker_path(dir), json.dump(2) + "\n");
}

StatusOr<std::optional<CompletionRecord>> read_completion_marker(const std::string& dir) {
  const std::string path = marker_path(dir);
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return std::optional<CompletionRecord>();
  StatusOr<std::string> text = read_file(path);
  if (!text) return text.status();
  try {
    const nlohmann::json json = nlohmann::json::parse(*text);
    CompletionRecord record;
    record.verb = json.at("verb").get<std::string>();
    record.finished = json.value("finished", "");
    record.seconds = json.value("seconds", 0.0);
    const nlohmann::json outputs = json.value("outputs", nlohmann::json::object());
    for (const auto& [name, value] : outputs.items())
      record.outputs[name] = value.is_string() ? value.get<std::string>() : value.dump();
    record.metrics = json.value("metrics", nlohmann::json::object());
    return std::optional<CompletionRecord>(std::move(record));
  } catch (const std::exception& e) {
    return Status::error(fmt::format("{}: not a completion record (JSON with verb, finished, outputs): {}", path, e.what()));
  }
}

Status remove_completion_marker(const std::string& dir) {
  std::error_code ec;
  std::filesystem::remove(marker_path(dir), ec);
  if (ec) return Status::error(fmt::format("cannot remove '{}': {}", marker_path(dir), ec.message()));
  return Status::ok();
}

}  // namespace grpo
