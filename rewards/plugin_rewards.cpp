#include "rewards/plugin_rewards.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <mutex>
#include <stdexcept>

#include <fmt/format.h>

#include "rewards/plugin_abi.h"

namespace grpo {
namespace {

// ---- shared library ---------------------------------------------------------------------------

class SharedLibraryReward final : public Reward {
 public:
  ~SharedLibraryReward() override {
    if (plugin_ && state_) plugin_->destroy(state_);
    if (handle_) ::dlclose(handle_);
  }

  static StatusOr<std::unique_ptr<Reward>> create(const nlohmann::json& options) {
    RewardOptions o("plugin", options);
    const std::string path = o.string("path", "");
    const nlohmann::json plugin_options = o.object("options");
    if (Status status = o.finish(); !status.is_ok()) return status;
    if (path.empty()) return Status::error("reward 'plugin': option 'path' (the shared library) is required");

    auto reward = std::make_unique<SharedLibraryReward>();
    reward->handle_ = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (reward->handle_ == nullptr) return Status::error(fmt::format("reward plugin '{}': {}", path, ::dlerror()));
    auto entry = reinterpret_cast<grpo_reward_entry_v1>(::dlsym(reward->handle_, "grpo_reward_v1"));
    if (entry == nullptr) return Status::error(fmt::format("reward plugin '{}': no symbol grpo_reward_v1", path));
    reward->plugin_ = entry();
    if (reward->plugin_ == nullptr || reward->plugin_->abi_version != GRPO_REWARD_ABI_VERSION ||
        reward->plugin_->struct_size < sizeof(grpo_reward_plugin_v1))
      return Status::error(fmt::format("reward plugin '{}': ABI version {} (struct {} bytes), grpo-cpp speaks version {}",
                                       path, reward->plugin_ ? reward->plugin_->abi_version : 0,
                                       reward->plugin_ ? reward->plugin_->struct_size : 0, GRPO_REWARD_ABI_VERSION));
    reward->name_ = fmt::format("{} ({})", reward->plugin_->name ? reward->plugin_->name : "?", path);
    char error[512] = {0};
    reward->state_ = reward->plugin_->create(plugin_options.dump().c_str(), error, sizeof error);
    if (reward->state_ == nullptr) return Status::error(fmt::format("reward plugin {}: {}", reward->name_, error));
    return std::unique_ptr<Reward>(std::move(reward));
  }

  RewardScore score(const RewardSample& sample) const override {
    const std::string fields = sample.fields.dump();
    const grpo_reward_sample_v1 in{sample.id.c_str(), sample.prompt.c_str(), sample.completion.c_str(), fields.c_str(),
                                   sample.completion_tokens};
    grpo_reward_result_v1 out;
    std::memset(&out, 0, sizeof out);
    if (plugin_->score(state_, &in, &out) != 0) {
      out.error[sizeof out.error - 1] = '\0';
      throw std::runtime_error(fmt::format("plugin {}: {}", name_, out.error[0] ? out.error : "failed"));
    }
    out.components_json[sizeof out.components_json - 1] = '\0';
    out.reason[sizeof out.reason - 1] = '\0';
    RewardScore result;
    result.score = out.score;
    result.reason = out.reason;
    if (out.components_json[0] != '\0') {
      const auto components = nlohmann::json::parse(out.components_json, nullptr, false);
      if (!components.is_object()) throw std::runtime_error(fmt::format("plugin {}: components_json is not an object", name_));
      for (const auto& [key, value] : components.items())
        if (value.is_number()) result.components[key] = value.get<double>();
    }
    return result;
  }

 private:
  void* handle_ = nullptr;
  const grpo_reward_plugin_v1* plugin_ = nullptr;
  void* state_ = nullptr;
  std::string name_;
};

// ---- subprocess speaking JSON lines -----------------------------------------------------------

// Version 2 added request_id (sent with every request, echoed in every reply).
constexpr int kSubprocessProtocol = 2;

class SubprocessReward final : public Reward {
 public:
  ~SubprocessReward() override { stop(); }

  static StatusOr<std::unique_ptr<Reward>> create(const nlohmann::json& options) {
    auto reward = std::make_unique<SubprocessReward>();
    RewardOptions o("subprocess", options);
    reward->command_ = o.strings("command");
    reward->timeout_s_ = o.number("timeout_s", 30.0);
    reward->name_ = o.string("name", "");
    if (Status s = o.finish(); !s.is_ok()) return s;
    if (reward->command_.empty())
      return Status::error("reward 'subprocess': option 'command' must be a non-empty list, e.g. [python3, scorer.py]");
    if (reward->name_.empty()) reward->name_ = reward->command_.back();
    std::lock_guard<std::mutex> lock(reward->mutex_);
    if (Status s = reward->start(); !s.is_ok()) return s;
    return std::unique_ptr<Reward>(std::move(reward));
  }

  RewardScore score(const RewardSample& sample) const override {
    std::lock_guard<std::mutex> lock(mutex_);  // one request at a time on the pipe
    if (pid_ <= 0) {
      if (Status s = const_cast<SubprocessReward*>(this)->start(); !s.is_ok()) throw std::runtime_error(s.message());
    }
    // The request id lets a reply be matched to its request: a program that writes an extra line
    // would otherwise shift every later reply onto the wrong sample.
    const int64_t request_id = ++last_request_id_;
    const nlohmann::json request = {{"protocol", kSubprocessProtocol}, {"request_id", request_id},
                                    {"id", sample.id}, {"prompt", sample.prompt}, {"completion", sample.completion},
                                    {"fields", sample.fields}, {"completion_tokens", sample.completion_tokens}};
    const std::string line = request.dump() + "\n";
    if (!write_all(line)) fail("its stdin closed (did it exit?)");
    const std::string reply = read_line();
    const auto response = nlohmann::json::parse(reply, nullptr, false);
    if (!response.is_object()) fail(fmt::format("replied with a line that is not a JSON object: {}", reply.substr(0, 200)));
    const auto echoed = response.find("request_id");
    if (echoed == response.end() || !echoed->is_number_integer() || echoed->get<int64_t>() != request_id)
      fail(fmt::format("reply to request {} (sample '{}') carries request_id {} (protocol {} replies echo the "
                       "request's request_id): {}",
                       request_id, sample.id, echoed == response.end() ? "none" : echoed->dump(), kSubprocessProtocol,
                       reply.substr(0, 200)));
    if (response.contains("error")) throw std::runtime_error(fmt::format("subprocess reward '{}': {}", name_, response["error"].dump()));
    if (!response.contains("score") || !response["score"].is_number()) fail("reply has no numeric \"score\"");
    RewardScore result;
    result.score = response["score"].get<double>();
    result.reason = response.value("reason", "");
    if (response.contains("components") && response["components"].is_object())
      for (const auto& [key, value] : response["components"].items())
        if (value.is_number()) result.components[key] = value.get<double>();
    return result;
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    const std::string err = drain_stderr();
    const_cast<SubprocessReward*>(this)->stop();
    throw std::runtime_error(fmt::format("subprocess reward '{}': {}{}", name_, what,
                                         err.empty() ? "" : "; its stderr: " + err.substr(err.size() > 500 ? err.size() - 500 : 0)));
  }

  Status start() {
    int in[2], out[2], err[2];
    if (::pipe2(in, O_CLOEXEC) != 0 || ::pipe2(out, O_CLOEXEC) != 0 || ::pipe2(err, O_CLOEXEC) != 0)
      return Status::error("subprocess reward: pipe failed");
    std::vector<char*> argv;
    for (std::string& part : command_) argv.push_back(part.data());
    argv.push_back(nullptr);
    const pid_t pid = ::fork();
    if (pid < 0) return Status::error("subprocess reward: fork failed");
    if (pid == 0) {
      ::dup2(in[0], 0);
      ::dup2(out[1], 1);
      ::dup2(err[1], 2);
      ::execvp(argv[0], argv.data());
      ::_exit(127);
    }
    ::close(in[0]);
    ::close(out[1]);
    ::close(err[1]);
    pid_ = pid;
    to_child_ = in[1];
    from_child_ = out[0];
    child_err_ = err[0];
    ::fcntl(child_err_, F_SETFL, O_NONBLOCK);
    buffer_.clear();
    return Status::ok();
  }

  void stop() {
    for (int* fd : {&to_child_, &from_child_, &child_err_})
      if (*fd >= 0) {
        ::close(*fd);
        *fd = -1;
      }
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
      pid_ = -1;
    }
  }

  bool write_all(const std::string& data) const {
    ::signal(SIGPIPE, SIG_IGN);
    size_t done = 0;
    while (done < data.size()) {
      const ssize_t n = ::write(to_child_, data.data() + done, data.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return false;
      done += static_cast<size_t>(n);
    }
    return true;
  }

  std::string read_line() const {
    const auto start = std::chrono::steady_clock::now();
    for (;;) {
      const size_t newline = buffer_.find('\n');
      if (newline != std::string::npos) {
        std::string line = buffer_.substr(0, newline);
        buffer_.erase(0, newline + 1);
        return line;
      }
      const double left = timeout_s_ - std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      if (left <= 0) fail(fmt::format("no reply within {} s", timeout_s_));
      pollfd p{from_child_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left * 1000) + 1) <= 0) continue;
      char chunk[4096];
      const ssize_t n = ::read(from_child_, chunk, sizeof chunk);
      if (n <= 0) {
        // The pipe closes a moment before the exit is visible: give the process a second to finish.
        int status = 0;
        bool exited = false;
        for (int tries = 0; tries < 100 && !exited; ++tries) {
          exited = ::waitpid(pid_, &status, WNOHANG) == pid_;
          if (!exited) ::usleep(10000);
        }
        const_cast<SubprocessReward*>(this)->pid_ = exited ? -1 : pid_;
        fail(exited ? fmt::format("it exited ({})", WIFSIGNALED(status) ? fmt::format("signal {}", WTERMSIG(status))
                                                                        : fmt::format("code {}", WEXITSTATUS(status)))
                    : "its stdout closed");
      }
      buffer_.append(chunk, static_cast<size_t>(n));
    }
  }

  std::string drain_stderr() const {
    std::string text;
    char chunk[4096];
    for (ssize_t n; child_err_ >= 0 && (n = ::read(child_err_, chunk, sizeof chunk)) > 0;) text.append(chunk, static_cast<size_t>(n));
    return text;
  }

  std::vector<std::string> command_;
  std::string name_;
  double timeout_s_ = 30;
  mutable std::mutex mutex_;
  mutable std::string buffer_;
  mutable int64_t last_request_id_ = 0;
  pid_t pid_ = -1;
  int to_child_ = -1, from_child_ = -1, child_err_ = -1;
};

}  // namespace

StatusOr<std::unique_ptr<Reward>> create_plugin_reward(const nlohmann::json& options) {
  return SharedLibraryReward::create(options);
}

StatusOr<std::unique_ptr<Reward>> create_subprocess_reward(const nlohmann::json& options) {
  return SubprocessReward::create(options);
}

}  // namespace grpo
