#include "core/atomic_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include <fmt/format.h>

namespace grpo {
namespace {

std::string parent_directory(const std::string& path) {
  const auto slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

Status os_error(const std::string& what, const std::string& path) {
  return Status::error(fmt::format("{} '{}': {}", what, path, std::strerror(errno)));
}

}  // namespace

Status write_file_atomic(const std::string& path, std::string_view contents) {
  const std::string temp_path = fmt::format("{}.tmp.{}", path, ::getpid());
  const int fd = ::open(temp_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return os_error("cannot create", temp_path);

  const char* data = contents.data();
  size_t left = contents.size();
  while (left > 0) {
    const ssize_t written = ::write(fd, data, left);
    if (written < 0 && errno == EINTR) continue;
    if (written < 0) {
      Status status = os_error("cannot write", temp_path);
      ::close(fd);
      ::unlink(temp_path.c_str());
      return status;
    }
    data += written;
    left -= static_cast<size_t>(written);
  }
  if (::fsync(fd) != 0) {
    Status status = os_error("cannot fsync", temp_path);
    ::close(fd);
    ::unlink(temp_path.c_str());
    return status;
  }
  ::close(fd);
  if (::rename(temp_path.c_str(), path.c_str()) != 0) {
    Status status = os_error("cannot rename temporary file onto", path);
    ::unlink(temp_path.c_str());
    return status;
  }
  // The rename is durable only once the directory entry itself is on disk.
  const std::string directory = parent_directory(path);
  const int dir_fd = ::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd >= 0) {
    ::fsync(dir_fd);
    ::close(dir_fd);
  }
  return Status::ok();
}

StatusOr<std::string> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return os_error("cannot open", path);
  std::ostringstream buffer;
  buffer << in.rdbuf();
  if (in.bad()) return os_error("cannot read", path);
  return buffer.str();
}

}  // namespace grpo
