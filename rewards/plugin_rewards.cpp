#include "rewards/plugin_rewards.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <thread>

#include <fmt/format.h>

#include "rewards/plugin_abi.h"

namespace grpo {
namespace {

// ---- shared library, run in a worker process -------------------------------------------------

// Length-prefixed strings over a socket between the reward and its worker.
bool send_all(int fd, const std::string& data) {
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::send(fd, data.data() + done, data.size() - done, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

void append_field(std::string& message, const std::string& field) {
  const uint32_t size = static_cast<uint32_t>(field.size());
  message.append(reinterpret_cast<const char*>(&size), sizeof size);
  message += field;
}

// A message is a count of fields, then each field; `deadline` < 0 waits forever.
enum class ReadResult { kOk, kClosed, kTimedOut };

ReadResult read_exact(int fd, char* out, size_t size, std::chrono::steady_clock::time_point deadline, bool forever) {
  size_t done = 0;
  while (done < size) {
    if (!forever) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return ReadResult::kTimedOut;
      pollfd p{fd, POLLIN, 0};
      const int ready = ::poll(&p, 1, static_cast<int>(std::min<int64_t>(left.count(), 100)) + 1);
      if (ready < 0 && errno != EINTR) return ReadResult::kClosed;
      if (ready <= 0) continue;
    }
    const ssize_t n = ::read(fd, out + done, size - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return ReadResult::kClosed;
    done += static_cast<size_t>(n);
  }
  return ReadResult::kOk;
}

ReadResult read_message(int fd, std::vector<std::string>& fields, double timeout_s) {
  const bool forever = timeout_s < 0;
  const auto deadline = std::chrono::steady_clock::now() +
                        std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                            std::chrono::duration<double>(forever ? 0.0 : timeout_s));
  uint32_t count = 0;
  if (ReadResult r = read_exact(fd, reinterpret_cast<char*>(&count), sizeof count, deadline, forever); r != ReadResult::kOk)
    return r;
  if (count > 16) return ReadResult::kClosed;
  fields.assign(count, std::string());
  for (std::string& field : fields) {
    uint32_t size = 0;
    if (ReadResult r = read_exact(fd, reinterpret_cast<char*>(&size), sizeof size, deadline, forever); r != ReadResult::kOk)
      return r;
    field.resize(size);
    if (ReadResult r = read_exact(fd, field.data(), size, deadline, forever); r != ReadResult::kOk) return r;
  }
  return ReadResult::kOk;
}

std::string message_of(const std::vector<std::string>& fields) {
  std::string message;
  const uint32_t count = static_cast<uint32_t>(fields.size());
  message.append(reinterpret_cast<const char*>(&count), sizeof count);
  for (const std::string& field : fields) append_field(message, field);
  return message;
}

std::string describe_exit(int status) {
  if (WIFSIGNALED(status)) return fmt::format("crashed with signal {} ({})", WTERMSIG(status), ::strsignal(WTERMSIG(status)));
  if (WIFEXITED(status)) return fmt::format("exited with code {} (a plugin must return from score, not exit)", WEXITSTATUS(status));
  return "stopped";
}

// The worker: loads the plugin, creates its state, then answers score requests until the socket
// closes. It never returns.
[[noreturn]] void plugin_worker(int socket, pid_t parent, const std::string& path, const std::string& options) {
  // Keep only the standard streams and the socket: the worker must not hold the trainer's other
  // descriptors (MPI sockets, other workers' sockets, files) open.
  if (socket != 3 && ::dup2(socket, 3) == 3) socket = 3;
  if (::syscall(SYS_close_range, 4u, ~0u, 0u) != 0)
    for (int fd = 4; fd < 4096; ++fd) ::close(fd);
  // Never outlive the process that made it, even while the plugin hangs (PR_SET_PDEATHSIG would
  // follow the forking thread, which may be a scoring thread that ends before the process).
  if (::getppid() != parent) ::_exit(0);
  std::thread([parent] {
    while (::getppid() == parent) ::usleep(200000);
    ::_exit(0);
  }).detach();
  auto reply = [&](const std::vector<std::string>& fields) {
    if (!send_all(socket, message_of(fields))) ::_exit(0);
  };
  void* handle = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    reply({"error", ::dlerror()});
    ::_exit(0);
  }
  auto entry = reinterpret_cast<grpo_reward_entry_v1>(::dlsym(handle, "grpo_reward_v1"));
  if (entry == nullptr) {
    reply({"error", "no symbol grpo_reward_v1"});
    ::_exit(0);
  }
  const grpo_reward_plugin_v1* plugin = entry();
  if (plugin == nullptr || plugin->abi_version != GRPO_REWARD_ABI_VERSION || plugin->struct_size < sizeof(grpo_reward_plugin_v1)) {
    reply({"error", fmt::format("ABI version {} (struct {} bytes), grpo-cpp speaks version {}", plugin ? plugin->abi_version : 0,
                                plugin ? plugin->struct_size : 0, GRPO_REWARD_ABI_VERSION)});
    ::_exit(0);
  }
  char error[512] = {0};
  void* state = plugin->create(options.c_str(), error, sizeof error);
  if (state == nullptr) {
    error[sizeof error - 1] = '\0';
    reply({"error", error});
    ::_exit(0);
  }
  reply({"ready", plugin->name ? plugin->name : "?"});
  for (std::vector<std::string> request; read_message(socket, request, -1) == ReadResult::kOk;) {
    if (request.size() != 5) break;
    int64_t tokens = -1;
    std::memcpy(&tokens, request[4].data(), std::min(request[4].size(), sizeof tokens));
    const grpo_reward_sample_v1 in{request[0].c_str(), request[1].c_str(), request[2].c_str(), request[3].c_str(), tokens};
    grpo_reward_result_v1 out;
    std::memset(&out, 0, sizeof out);
    const int rc = plugin->score(state, &in, &out);
    out.error[sizeof out.error - 1] = '\0';
    out.components_json[sizeof out.components_json - 1] = '\0';
    out.reason[sizeof out.reason - 1] = '\0';
    std::string score(sizeof out.score, '\0');
    std::memcpy(score.data(), &out.score, sizeof out.score);
    if (rc != 0) reply({"error", out.error[0] ? out.error : "failed"});
    else reply({"ok", score, out.components_json, out.reason});
  }
  plugin->destroy(state);
  ::_exit(0);
}

// A C-ABI plugin runs in a worker process of its own (forked, one per plugin), so that a plugin
// that hangs is killed at the timeout, and one that crashes or calls exit() costs an error for
// the sample, never the trainer. A dead worker is restarted for the next sample.
class SharedLibraryReward final : public Reward {
 public:
  ~SharedLibraryReward() override { stop_worker(); }

  static StatusOr<std::unique_ptr<Reward>> create(const nlohmann::json& options) {
    RewardOptions o("plugin", options);
    auto reward = std::make_unique<SharedLibraryReward>();
    reward->path_ = o.string("path", "");
    reward->options_ = o.object("options").dump();
    reward->timeout_s_ = o.number("timeout_s", 10.0);
    if (Status status = o.finish(); !status.is_ok()) return status;
    if (reward->path_.empty()) return Status::error("reward 'plugin': option 'path' (the shared library) is required");
    if (reward->timeout_s_ <= 0) return Status::error("reward 'plugin': option 'timeout_s' must be > 0");
    reward->name_ = reward->path_;
    std::lock_guard<std::mutex> lock(reward->mutex_);
    if (Status s = reward->start_worker(); !s.is_ok()) return s;
    return std::unique_ptr<Reward>(std::move(reward));
  }

  RewardScore score(const RewardSample& sample) const override {
    std::lock_guard<std::mutex> lock(mutex_);  // one request at a time per worker
    auto* self = const_cast<SharedLibraryReward*>(this);
    if (worker_ <= 0) {
      if (Status s = self->start_worker(); !s.is_ok()) throw std::runtime_error(s.message());
    }
    std::string tokens(sizeof sample.completion_tokens, '\0');
    std::memcpy(tokens.data(), &sample.completion_tokens, sizeof sample.completion_tokens);
    if (!send_all(socket_, message_of({sample.id, sample.prompt, sample.completion, sample.fields.dump(), tokens})))
      self->fail_worker(sample, "its worker is gone");
    std::vector<std::string> reply;
    const ReadResult got = read_message(socket_, reply, timeout_s_);
    if (got == ReadResult::kTimedOut)
      self->fail_worker(sample, fmt::format("no reply within {} s (timeout_s); its worker was killed", timeout_s_));
    if (got == ReadResult::kClosed || reply.empty()) self->fail_worker(sample, "");
    if (reply[0] == "error" && reply.size() == 2)
      throw std::runtime_error(fmt::format("plugin {} on sample '{}': {}", name_, sample.id, reply[1]));
    if (reply[0] != "ok" || reply.size() != 4 || reply[1].size() != sizeof(double)) self->fail_worker(sample, "malformed reply");
    RewardScore result;
    std::memcpy(&result.score, reply[1].data(), sizeof(double));
    result.reason = reply[3];
    if (!reply[2].empty()) {
      const auto components = nlohmann::json::parse(reply[2], nullptr, false);
      if (!components.is_object()) throw std::runtime_error(fmt::format("plugin {}: components_json is not an object", name_));
      for (const auto& [key, value] : components.items())
        if (value.is_number()) result.components[key] = value.get<double>();
    }
    return result;
  }

 private:
  Status start_worker() {
    int sockets[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sockets) != 0)
      return Status::error(fmt::format("reward plugin '{}': socketpair: {}", path_, std::strerror(errno)));
    std::fflush(nullptr);  // the child must not write the parent's buffered output again
    const pid_t parent = ::getpid();
    const pid_t pid = ::fork();
    if (pid < 0) {
      ::close(sockets[0]);
      ::close(sockets[1]);
      return Status::error(fmt::format("reward plugin '{}': fork: {}", path_, std::strerror(errno)));
    }
    if (pid == 0) {
      ::close(sockets[0]);
      plugin_worker(sockets[1], parent, path_, options_);
    }
    ::close(sockets[1]);
    worker_ = pid;
    socket_ = sockets[0];
    std::vector<std::string> hello;
    const ReadResult got = read_message(socket_, hello, timeout_s_);
    if (got == ReadResult::kOk && hello.size() == 2 && hello[0] == "ready") {
      name_ = fmt::format("{} ({})", hello[1], path_);
      return Status::ok();
    }
    const std::string why = got == ReadResult::kTimedOut ? fmt::format("loading took longer than {} s", timeout_s_)
                            : got == ReadResult::kOk && hello.size() == 2 ? hello[1]
                                                                          : "its worker " + describe_exit(reap_worker());
    stop_worker();
    return Status::error(fmt::format("reward plugin '{}': {}", path_, why));
  }

  // Waits for the worker's exit status (it closed its end) and forgets it.
  int reap_worker() {
    int status = 0;
    for (int tries = 0; tries < 200; ++tries) {  // the socket closes a moment before the exit is visible
      if (::waitpid(worker_, &status, WNOHANG) == worker_) {
        worker_ = -1;
        return status;
      }
      ::usleep(5000);
    }
    ::kill(worker_, SIGKILL);
    ::waitpid(worker_, &status, 0);
    worker_ = -1;
    return status;
  }

  void stop_worker() {
    if (socket_ >= 0) ::close(socket_);
    socket_ = -1;
    if (worker_ > 0) {
      ::kill(worker_, SIGKILL);
      ::waitpid(worker_, nullptr, 0);
      worker_ = -1;
    }
  }

  [[noreturn]] void fail_worker(const RewardSample& sample, const std::string& why) {
    std::string what = why;
    if (what.empty()) what = "its worker " + describe_exit(reap_worker());
    stop_worker();
    throw std::runtime_error(fmt::format("plugin {} on sample '{}': {}; the worker restarts for the next sample", name_,
                                         sample.id, what));
  }

  std::string path_;
  std::string options_;
  std::string name_;
  double timeout_s_ = 10.0;
  mutable std::mutex mutex_;
  pid_t worker_ = -1;
  int socket_ = -1;
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
