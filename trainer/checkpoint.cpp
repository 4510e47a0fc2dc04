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
#include "dist/communicator.h"

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

struct FileDigest {
  uint64_t bytes = 0;
  uint32_t crc = 0;
};

// Size and CRC-32C of a file read in pieces, so that verifying a model-sized file needs no
// model-sized buffer.
StatusOr<FileDigest> digest_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Status::error(fmt::format("cannot open '{}'", path));
  FileDigest digest;
  std::vector<char> buffer(1 << 20);
  for (;;) {
    const ssize_t n = ::read(fd, buffer.data(), buffer.size());
    if (n < 0) {
      ::close(fd);
      return Status::error(fmt::format("cannot read '{}'", path));
    }
    if (n == 0) break;
    digest.crc = crc32c(buffer.data(), static_cast<size_t>(n), digest.crc);
    digest.bytes += static_cast<uint64_t>(n);
  }
  ::close(fd);
  return digest;
}

bool is_tensor_file(const std::string& name) {
  return name.size() > 12 && name.compare(name.size() - 12, 12, ".safetensors") == 0;
}

std::string shard_file_name(int64_t rank, int64_t ranks) { return fmt::format("shard-{}-of-{}.safetensors", rank, ranks); }

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
    StatusOr<FileDigest> digest = digest_file(path + "/" + name);
    if (!digest) return Status::error(fmt::format("{}: {} listed in the manifest is missing", path, name));
    if (digest->bytes != info["bytes"].get<uint64_t>() || digest->crc != info["crc32c"].get<uint64_t>())
      return Status::error(fmt::format("{}: {} does not match its checksum (corrupt)", path, name));
    if (is_tensor_file(name)) continue;
    StatusOr<std::string> bytes = read_file(path + "/" + name);
    if (!bytes) return bytes.status();
    c.files[name] = *bytes;
  }
  if (manifest.contains("layout")) {
    // Stage 3: each saved rank's shards, resharded by whoever reads them (shard_layout.h).
    StatusOr<ShardLayout> layout = layout_from_json(manifest["layout"], path + "/manifest.json");
    if (!layout) return layout.status();
    for (int64_t r = 0; r < layout->ranks; ++r) {
      const std::string name = shard_file_name(r, layout->ranks);
      if (!manifest["files"].contains(name))
        return Status::error(fmt::format("{}: the manifest lists no {} for its {} ranks (corrupt)", path, name, layout->ranks));
      StatusOr<TensorMap> shard = read_safetensors(path + "/" + name);
      if (!shard) return shard.status();
      c.shards.push_back(std::move(shard).value());
    }
    c.layout = std::move(layout).value();
  } else {
    StatusOr<TensorMap> model = read_safetensors(path + "/model.safetensors");
    if (!model) return model.status();
    StatusOr<TensorMap> optimizer = read_safetensors(path + "/optimizer.safetensors");
    if (!optimizer) return optimizer.status();
    c.model = std::move(model).value();
    c.optimizer = std::move(optimizer).value();
  }
  c.state = nlohmann::json::parse(c.files["state.json"], nullptr, false);
  if (!c.state.is_object() || !c.state.contains("step") || !c.state["step"].is_number_integer())
    return Status::error(fmt::format("{}: bad state.json (no integer step)", path));
  c.step = c.state["step"].get<int64_t>();
  return c;
}

}  // namespace

namespace {

// The small files (config, tokenizer, state.json with the step) into `dir`.
Status write_small_files(const fs::path& dir, const CheckpointContents& c) {
  std::map<std::string, std::string> files = c.files;
  nlohmann::json state = c.state;
  state["step"] = c.step;
  files["state.json"] = state.dump(2) + "\n";
  for (const auto& [name, text] : files)
    if (Status s = write_file_atomic((dir / name).string(), text); !s.is_ok()) return s;
  return Status::ok();
}

// Removes a temporary directory unless the checkpoint in it was committed: a failed attempt (a
// full disk) must not leave its partial copy taking space.
struct RemoveUnlessCommitted {
  fs::path path;
  bool committed = false;
  ~RemoveUnlessCommitted() {
    std::error_code ignored;
    if (!committed) fs::remove_all(path, ignored);
  }
};

// Writes the manifest last (adding every file in `temp_dir` that `manifest` does not list yet),
// renames `temp_dir` to step-<step>, then keeps the newest `keep_last` checkpoints up to this step
// and removes abandoned temporaries. Later-numbered checkpoints are not this run's to judge.
Status commit_checkpoint(const std::string& checkpoints_dir, RemoveUnlessCommitted& temp, int64_t step,
                         nlohmann::json manifest, int64_t keep_last) {
  std::error_code ec;
  const fs::path final_dir = fs::path(checkpoints_dir) / fmt::format("step-{}", step);
  for (const auto& entry : fs::directory_iterator(temp.path)) {
    const std::string name = entry.path().filename().string();
    if (manifest["files"].contains(name)) continue;
    StatusOr<FileDigest> digest = digest_file(entry.path().string());
    if (!digest) return digest.status();
    manifest["files"][name] = {{"bytes", digest->bytes}, {"crc32c", digest->crc}};
  }
  if (Status s = write_file_atomic((temp.path / "manifest.json").string(), manifest.dump(2) + "\n"); !s.is_ok()) return s;
  fsync_path(temp.path.string(), true);

  fs::remove_all(final_dir, ec);  // an older incomplete attempt at the same step
  fs::rename(temp.path, final_dir, ec);
  if (ec) return Status::error(fmt::format("cannot commit checkpoint '{}': {}", final_dir.string(), ec.message()));
  temp.committed = true;
  fsync_path(checkpoints_dir, true);

  std::vector<std::pair<int64_t, fs::path>> up_to_now;
  for (auto& entry : checkpoints_in(checkpoints_dir))
    if (entry.first <= step) up_to_now.push_back(std::move(entry));
  const size_t keep = static_cast<size_t>(std::max<int64_t>(keep_last, 1));
  for (size_t i = 0; i + keep < up_to_now.size(); ++i) fs::remove_all(up_to_now[i].second, ec);
  for (const auto& entry : fs::directory_iterator(checkpoints_dir))
    if (entry.path().filename().string().rfind(".step-", 0) == 0) fs::remove_all(entry.path(), ec);
  return Status::ok();
}

nlohmann::json new_manifest(int64_t step) {
  return {{"format", "grpo-cpp checkpoint v1"}, {"step", step}, {"files", nlohmann::json::object()}};
}

}  // namespace

Status save_checkpoint(const std::string& checkpoints_dir, const CheckpointContents& c, int64_t keep_last) {
  std::error_code ec;
  fs::create_directories(checkpoints_dir, ec);
  RemoveUnlessCommitted temp{fs::path(checkpoints_dir) / fmt::format(".step-{}.tmp.{}", c.step, ::getpid())};
  fs::remove_all(temp.path, ec);
  fs::create_directories(temp.path, ec);
  if (ec) return Status::error(fmt::format("cannot create '{}': {}", temp.path.string(), ec.message()));
  if (Status s = write_small_files(temp.path, c); !s.is_ok()) return s;
  if (Status s = write_safetensors((temp.path / "model.safetensors").string(), c.model); !s.is_ok()) return s;
  if (Status s = write_safetensors((temp.path / "optimizer.safetensors").string(), c.optimizer); !s.is_ok()) return s;
  return commit_checkpoint(checkpoints_dir, temp, c.step, new_manifest(c.step), keep_last);
}

Status save_sharded_checkpoint(const std::string& checkpoints_dir, const CheckpointContents& c, const ShardLayout& layout,
                               const TensorMap& shard, Communicator& comm, int64_t keep_last) {
  const int rank = comm.rank(), ranks = comm.size();
  TORCH_CHECK(layout.ranks == ranks, "save_sharded_checkpoint: a layout for ", layout.ranks, " ranks on ", ranks);
  // One name every rank can compute: the ranks may be different processes on different hosts.
  RemoveUnlessCommitted temp{fs::path(checkpoints_dir) / fmt::format(".step-{}.tmp.sharded", c.step)};
  if (rank != 0) temp.committed = true;  // rank 0 owns the directory's fate
  Status status = Status::ok();
  if (rank == 0) {
    std::error_code ec;
    fs::create_directories(checkpoints_dir, ec);
    fs::remove_all(temp.path, ec);  // a killed attempt's leftovers
    fs::create_directories(temp.path, ec);
    status = ec ? Status::error(fmt::format("cannot create '{}': {}", temp.path.string(), ec.message()))
                : write_small_files(temp.path, c);
  }
  std::vector<double> prepared{status.is_ok() ? 0.0 : 1.0};
  comm.all_reduce_sum(prepared);  // every rank learns whether rank 0 made the directory
  if (prepared[0] > 0) return rank == 0 ? status : Status::error("checkpoint: rank 0 could not prepare the directory");

  // Each rank its own file; rank 0 learns every file's size and checksum for the manifest.
  const std::string name = shard_file_name(rank, ranks);
  const std::string path = (temp.path / name).string();
  status = write_safetensors(path, shard);
  StatusOr<FileDigest> digest = status.is_ok() ? digest_file(path) : StatusOr<FileDigest>(status);
  std::vector<double> entries(3 * static_cast<size_t>(ranks), 0.0);
  entries[3 * rank] = digest ? 0.0 : 1.0;
  if (digest) {
    entries[3 * rank + 1] = static_cast<double>(digest->bytes);
    entries[3 * rank + 2] = static_cast<double>(digest->crc);
  }
  comm.all_reduce_sum(entries);
  for (int r = 0; r < ranks; ++r)
    if (entries[3 * r] > 0)
      return r == rank ? digest.status() : Status::error(fmt::format("checkpoint: rank {} could not write its shard", r));

  if (rank == 0) {
    nlohmann::json manifest = new_manifest(c.step);
    manifest["layout"] = layout_to_json(layout);
    for (int r = 0; r < ranks; ++r)
      manifest["files"][shard_file_name(r, ranks)] = {{"bytes", static_cast<uint64_t>(entries[3 * r + 1])},
                                                       {"crc32c", static_cast<uint64_t>(entries[3 * r + 2])}};
    status = commit_checkpoint(checkpoints_dir, temp, c.step, manifest, keep_last);
  }
  std::vector<double> committed{status.is_ok() ? 0.0 : 1.0};
  comm.all_reduce_sum(committed);
  if (committed[0] > 0) return rank == 0 ? status : Status::error("checkpoint: rank 0 could not commit it");
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
  compare("distill.teacher_path", before.distill.teacher_path, now.distill.teacher_path);
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
