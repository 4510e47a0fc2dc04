#pragma once
// Runs a shell command the way a user would, for end-to-end tests: its stdout and stderr
// together, its exit code, and how long it took.

#include <sys/wait.h>

#include <chrono>
#include <cstdio>
#include <string>

namespace grpo::testing {

struct CommandResult {
  int exit_code = -1;  // -1 when it did not exit normally
  std::string output;
  double seconds = 0;
};

inline CommandResult run_command(const std::string& command) {
  const auto start = std::chrono::steady_clock::now();
  CommandResult result;
  FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return result;
  char buffer[4096];
  for (size_t n; (n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0;) result.output.append(buffer, n);
  const int status = ::pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

#ifdef GRPO_MPIEXEC
// The prefix that starts a command on `ranks` MPI ranks as every multi-rank test does: as root,
// and with more ranks than cores.
inline std::string mpi_launcher(int ranks) {
  return std::string(GRPO_MPIEXEC) + " --allow-run-as-root --oversubscribe -np " + std::to_string(ranks) + " ";
}
#endif

}  // namespace grpo::testing
