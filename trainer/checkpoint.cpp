#include "trainer/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>

#include <fmt/format.h>

#include "core/atomic_file.h"
#include "core/crc32c.h"

namespace grpo {
namespace {

namespace fs = std::filesystem;

void fsync_path(const std::string& path, bool directory) {
  const int fd = ::open(path.c_str(), (directory ? O_RDONLY | O_DIRECTORY : O_RDONLY) | O_CLOEXEC);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

std::vector<std::pair<int64_t, fs::path>> checkpoints_in(const std::string& dir) {
  std::vector<std::pair<int64_t, fs::path>> found;
  if (!fs::is_directory(dir)) return found;
  for (const auto& entry : fs::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    if (!entry.is_directory() || name.rfind("step-", 0) != 0) continue;
    try {
      found.emplace_back(std::stoll(name.substr(5)), entry.path());
    } catch (...) {
    }
  }
  std::sort(found.begin(), found.end());
  return found;
}

}  // namespace

Status save_checkpoint(const std::string& checkpoints_dir, const CheckpointContents& c, int64_t keep_last) {
  std::error_code ec;
  fs::create_directories(checkpoints_dir, ec);
  const fs::path final_dir = fs::path(checkpoints_dir) / fmt::format("step-{}", c.step);
  const fs::path temp_dir = fs::path(checkpoints_dir) / fmt::format(".step-{}.tmp.{}", c.step, ::getpid());
  fs::remove_all(temp_dir, ec);
  fs::create_directories(temp_dir, ec);
  if (ec) return Status::error(fmt::format("cannot create '{}': {}", temp_dir.string(), ec.message()));

  std::map<std::string, std::string> files = c.files;
  nlohmann::json state = c.state;
  state["step"] = c.step;
  files["state.json"] = state.dump(2) + "\n";
  for (const auto& [name, text] : files)
    if (Status s = write_file_atomic((temp_dir / name).string(), text); !s.is_ok()) return s;
  if (Status s = write_safetensors((temp_dir / "model.safetensors").string(), c.model); !s.is_ok()) return s;
  if (Status s = write_safetensors((temp_dir / "optimizer.safetensors").string(), c.optimizer); !s.is_ok()) return s;

  // The manifest, last: every file's size and checksum.
  nlohmann::json manifest = {{"format", "grpo-cpp checkpoint v1"}, {"step", c.step}, {"files", nlohmann::json::object()}};
  for (const auto& entry : fs::directory_iterator(temp_dir)) {
    StatusOr<std::string> bytes = read_file(entry.path().string());
    if (!bytes) return bytes.status();
    manifest["files"][entry.path().filename().string()] = {{"bytes", bytes->size()}, {"crc32c", crc32c(*bytes)}};
  }
  if (Status s = write_file_atomic((temp_dir / "manifest.json").string(), manifest.dump(2) + "\n"); !s.is_ok()) return s;
  fsync_path(temp_dir.string(), true);

  fs::remove_all(final_dir, ec);  // an older incomplete attempt at the same step
  fs::rename(temp_dir, final_dir, ec);
  if (ec) return Status::error(fmt::format("cannot commit checkpoint '{}': {}", final_dir.string(), ec.message()));
  fsync_path(checkpoints_dir, true);

  // Keep the newest keep_last; remove older ones and abandoned temporaries.
  auto all = checkpoints_in(checkpoints_dir);
  for (size_t i = 0; i + static_cast<size_t>(keep_last) < all.size(); ++i) fs::remove_all(all[i].second, ec);
  for (const auto& entry : fs::directory_iterator(checkpoints_dir))
    if (entry.path().filename().string().rfind(".step-", 0) == 0) fs::remove_all(entry.path(), ec);
  return Status::ok();
}

StatusOr<CheckpointContents> load_checkpoint(const std::string& path) {
  StatusOr<std::string> manifest_text = read_file(path + "/manifest.json");
  if (!manifest_text) return Status::error(fmt::format("{}: no manifest.json (incomplete checkpoint)", path));
  const auto manifest = nlohmann::json::parse(*manifest_text, nullptr, false);
  if (!manifest.is_object() || !manifest.contains("files")) return Status::error(fmt::format("{}: unreadable manifest", path));
  CheckpointContents c;
  for (const auto& [name, info] : manifest["files"].items()) {
    StatusOr<std::string> bytes = read_file(path + "/" + name);
    if (!bytes) return Status::error(fmt::format("{}: {} listed in the manifest is missing", path, name));
    if (bytes->size() != info["bytes"].get<size_t>() || crc32c(*bytes) != info["crc32c"].get<uint32_t>())
      return Status::error(fmt::format("{}: {} does not match its checksum (corrupt)", path, name));
    if (name != "model.safetensors" && name != "optimizer.safetensors") c.files[name] = *bytes;
  }
  StatusOr<TensorMap> model = read_safetensors(path + "/model.safetensors");
  if (!model) return model.status();
  StatusOr<TensorMap> optimizer = read_safetensors(path + "/optimizer.safetensors");
  if (!optimizer) return optimizer.status();
  c.model = std::move(model).value();
  c.optimizer = std::move(optimizer).value();
  c.state = nlohmann::json::parse(c.files["state.json"], nullptr, false);
  if (!c.state.is_object() || !c.state.contains("step")) return Status::error(fmt::format("{}: bad state.json", path));
  c.step = c.state["step"];
  return c;
}

std::optional<CheckpointContents> load_latest_checkpoint(const std::string& checkpoints_dir,
                                                         std::vector<std::string>* skipped, std::string* path) {
  auto all = checkpoints_in(checkpoints_dir);
  for (auto it = all.rbegin(); it != all.rend(); ++it) {
    StatusOr<CheckpointContents> c = load_checkpoint(it->second.string());
    if (c) {
      if (path) *path = it->second.string();
      return std::move(c).value();
    }
    if (skipped) skipped->push_back(c.status().message());
  }
  return std::nullopt;
}

}  // namespace grpo
