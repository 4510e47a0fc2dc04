#include "core/run_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <filesystem>

#include <fmt/format.h>

namespace grpo {
namespace {

std::string utc_now() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%d %H:%M:%S UTC", &tm);
  return text;
}

std::string holder_of(int fd) {
  char text[512];
  const ssize_t n = ::pread(fd, text, sizeof text - 1, 0);
  std::string holder(text, n > 0 ? static_cast<size_t>(n) : 0);
  while (!holder.empty() && (holder.back() == '\n' || holder.back() == '\r')) holder.pop_back();
  // The holder writes its line just after locking; a refusal in between sees an empty file.
  return holder.empty() ? "another process" : holder;
}

}  // namespace

StatusOr<std::unique_ptr<RunLock>> RunLock::acquire(const std::string& run_dir) {
  std::error_code ec;
  std::filesystem::create_directories(run_dir, ec);
  if (ec) return Status::error(fmt::format("trainer.run_dir: cannot create '{}': {}", run_dir, ec.message()));
  const std::string path = run_dir + "/.lock";
  // O_CLOEXEC: reward subprocesses must not inherit (and so prolong) the lock.
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return Status::error(fmt::format("trainer.run_dir: cannot open '{}': {}", path, std::strerror(errno)));
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int error = errno;
    std::string message =
        error == EWOULDBLOCK
            ? fmt::format("trainer.run_dir '{}' is in use by {} (lock file {}); wait for that run to end or choose "
                          "another trainer.run_dir",
                          run_dir, holder_of(fd), path)
            : fmt::format("trainer.run_dir: cannot lock '{}': {}", path, std::strerror(error));
    ::close(fd);
    return Status::error(std::move(message));
  }
  char host[256] = "localhost";
  ::gethostname(host, sizeof host - 1);
  const std::string holder = fmt::format("pid {} on host {} since {}\n", ::getpid(), host, utc_now());
  // Best effort: the lock itself is the flock, the text only names its holder.
  if (::ftruncate(fd, 0) == 0 && ::pwrite(fd, holder.data(), holder.size(), 0) >= 0) ::fsync(fd);
  return std::unique_ptr<RunLock>(new RunLock(path, fd));
}

RunLock::~RunLock() {
  if (fd_ >= 0) ::close(fd_);
}

}  // namespace grpo
