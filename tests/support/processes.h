#pragma once
// Helpers of the multi-rank tests that kill or stop ranks of a job they started.

#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace grpo::testing {

inline std::string read_text_file(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// The process whose environment holds every one of `entries` (NUL-separated in /proc), or -1.
inline pid_t find_process_with_env(const std::vector<std::string>& entries) {
  for (const auto& proc : std::filesystem::directory_iterator("/proc")) {
    const std::string name = proc.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::string env = read_text_file(proc.path() / "environ");
    env.insert(env.begin(), '\0');
    bool all = true;
    for (const std::string& e : entries) all = all && env.find(std::string(1, '\0') + e + '\0') != std::string::npos;
    if (all) return static_cast<pid_t>(std::stol(name));
  }
  return -1;
}

// Runs `command` in its own process group and SIGKILLs the whole group once `marker` exists.
// `marker` is <run dir>/checkpoints/step-N/<file>: ranks that a launcher put in process groups of
// their own are found by that run directory in their command line and die too.
inline void run_and_kill_when(const std::string& command, const std::filesystem::path& marker) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::setpgid(0, 0);
    ::execl("/bin/sh", "sh", "-c", (command + " > /dev/null 2>&1").c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::setpgid(pid, pid);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (!std::filesystem::exists(marker) && std::chrono::steady_clock::now() < deadline) {
    if (::waitpid(pid, nullptr, WNOHANG) == pid) return;  // finished before the marker: nothing to kill
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ::kill(-pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
  (void)std::system(("pkill -9 -f '" + marker.parent_path().parent_path().parent_path().string() + "' 2>/dev/null").c_str());
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
}

}  // namespace grpo::testing
