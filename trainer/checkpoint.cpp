#include "trainer/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <ctime>
#include <filesystem>
#include <optional>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "core/atomic_file.h"
#include "core/config.h"
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

// step-<N> exactly (N all digits): set-aside names such as step-7.set-aside-1700000000 are not
// checkpoints.
std::optional<int64_t> step_of(const std::string& name) {
  if (name.size() <= 5 || name.rfind("step-", 0) != 0 || name.size() > 5 + 18) return std::nullopt;
  for (size_t i = 5; i < name.size(); ++i)
    if (name[i] < '0' || name[i] > '9') return std::nullopt;
  return std::stoll(name.substr(5));
}

std::vector<std::pair<int64_t, fs::path>> checkpoints_in(const std::string& dir) {
  std::vector<std::pair<int64_t, fs::path>> found;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return found;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::optional<int64_t> step = step_of(entry.path().filename().string());
    if (step && entry.is_directory(ec)) found.emplace_back(*step, entry.path());
  }
  std::sort(found.begin(), found.end());
  return found;
}

// A manifest or state.json of the wrong shape (a string where a size belongs, ...) makes the
// checkpoint corrupt, like a bad checksum; nlohmann's type errors must not escape.
StatusOr<CheckpointContents> read_verified(const std::string& path) {
  StatusOr<std::string> manifest_text = read_file(path + "/manifest.json");
  if (!manifest_text) return Status::error(fmt::format("{}: no manifest.json (incomplete checkpoint)", path));
  const auto manifest = nlohmann::json::parse(*manifest_text, nullptr, false);
  if (!manifest.is_object() || !manifest.contains("files") || !manifest["files"].is_object())
    return Status::error(fmt::format("{}: unreadable manifest", path));
  CheckpointContents c;
  for (const auto& [name, info] : manifest["files"].items()) {
    if (!info.is_object() || !info.contains("bytes") || !info["bytes"].is_number_unsigned() ||
        !info.contains("crc32c") || !info["crc32c"].is_number_unsigned())
      return Status::error(fmt::format("{}: manifest entry '{}' needs unsigned integers bytes and crc32c (corrupt)", path, name));
    StatusOr<std::string> bytes = read_file(path + "/" + name);
    if (!bytes) return Status::error(fmt::format("{}: {} listed in the manifest is missing", path, name));
    if (bytes->size() != info["bytes"].get<uint64_t>() || crc32c(*bytes) != info["crc32c"].get<uint64_t>())
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
  if (!c.state.is_object() || !c.state.contains("step") || !c.state["step"].is_number_integer())
    return Status::error(fmt::format("{}: bad state.json (no integer step)", path));
  c.step = c.state["step"].get<int64_t>();
  return c;
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
  // A failed attempt (a full disk) must not leave its partial copy taking space.
  struct RemoveUnlessCommitted {
    fs::path path;
    bool committed = false;
    ~RemoveUnlessCommitted() {
      std::error_code ignored;
      if (!committed) fs::remove_all(path, ignored);
    }
  } temp_guard{temp_dir};

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
  temp_guard.committed = true;
  fsync_path(checkpoints_dir, true);

  // Keep the newest keep_last up to this step, this one always; remove older ones and abandoned
  // temporaries. Later-numbered checkpoints are not this run's to judge.
  std::vector<std::pair<int64_t, fs::path>> up_to_now;
  for (auto& entry : checkpoints_in(checkpoints_dir))
    if (entry.first <= c.step) up_to_now.push_back(std::move(entry));
  const size_t keep = static_cast<size_t>(std::max<int64_t>(keep_last, 1));
  for (size_t i = 0; i + keep < up_to_now.size(); ++i) fs::remove_all(up_to_now[i].second, ec);
  for (const auto& entry : fs::directory_iterator(checkpoints_dir))
    if (entry.path().filename().string().rfind(".step-", 0) == 0) fs::remove_all(entry.path(), ec);
  return Status::ok();
}

StatusOr<CheckpointContents> load_checkpoint(const std::string& path) {
  try {
    return read_verified(path);
  } catch (const nlohmann::json::exception& e) {
    return Status::error(fmt::format("{}: malformed manifest or state ({})", path, e.what()));
  }
}

std::vector<int64_t> checkpoint_steps(const std::string& checkpoints_dir) {
  std::vector<int64_t> steps;
  for (const auto& entry : checkpoints_in(checkpoints_dir)) steps.push_back(entry.first);
  return steps;
}

StatusOr<std::vector<std::string>> set_aside_checkpoints_after(const std::string& checkpoints_dir, int64_t step) {
  std::vector<std::string> moved;
  const auto now = static_cast<int64_t>(std::time(nullptr));
  for (const auto& [n, path] : checkpoints_in(checkpoints_dir)) {
    if (n <= step) continue;
    fs::path target = path;
    target += fmt::format(".set-aside-{}", now);
    for (int i = 1; fs::exists(target); ++i) target.replace_filename(fmt::format("step-{}.set-aside-{}-{}", n, now, i));
    std::error_code ec;
    fs::rename(path, target, ec);
    if (ec) return Status::error(fmt::format("cannot set aside '{}': {}", path.string(), ec.message()));
    moved.push_back(path.string() + " -> " + target.string());
  }
  if (!moved.empty()) fsync_path(checkpoints_dir, true);
  return moved;
}

std::vector<std::string> changed_essentials(const Config& before, const Config& now) {
  std::vector<std::string> changed;
  auto compare = [&](const char* key, const auto& old_value, const auto& new_value) {
    if (old_value != new_value) changed.push_back(fmt::format("{}: {} -> {}", key, old_value, new_value));
  };
  compare("model.path", before.model.path, now.model.path);
  compare("model.chat_template", before.model.chat_template, now.model.chat_template);
  compare("data.train_path", before.data.train_path, now.data.train_path);
  compare("trainer.prompts_per_step", before.trainer.prompts_per_step, now.trainer.prompts_per_step);
  compare("trainer.seed", before.trainer.seed, now.trainer.seed);
  compare("grpo.group_size", before.grpo.group_size, now.grpo.group_size);
  compare("grpo.updates_per_batch", before.grpo.updates_per_batch, now.grpo.updates_per_batch);
  compare("grpo.kl.beta", before.grpo.kl.beta, now.grpo.kl.beta);
  compare("optimizer.lr", before.optimizer.lr, now.optimizer.lr);
  compare("rollout.temperature", before.rollout.temperature, now.rollout.temperature);
  compare("rollout.max_new_tokens", before.rollout.max_new_tokens, now.rollout.max_new_tokens);
  std::vector<std::string> old_rewards, new_rewards;
  for (const auto& f : before.reward.functions) old_rewards.push_back(fmt::format("{}x{}", f.label.empty() ? f.name : f.label, f.weight));
  for (const auto& f : now.reward.functions) new_rewards.push_back(fmt::format("{}x{}", f.label.empty() ? f.name : f.label, f.weight));
  compare("reward.functions", fmt::format("[{}]", fmt::join(old_rewards, ", ")), fmt::format("[{}]", fmt::join(new_rewards, ", ")));
  return changed;
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
