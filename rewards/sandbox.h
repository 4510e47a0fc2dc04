#pragma once
// Runs untrusted programs (model-written code) contained: fresh pid, mount, network, IPC and UTS
// namespaces; a root of its own that shows only the interpreter and compiler paths of the host
// (read-only), a few devices and the run's own directory (the one writable place); an
// unprivileged uid that no other run on the machine holds at the same time; no_new_privs and a
// seccomp filter (no sockets but AF_UNIX, no namespaces, mounts, ptrace, kernel keys, BPF,
// modules); rlimits on CPU, memory, processes, file size and open files; a wall-clock timeout;
// capped output. When the run's first process exits, the
// kernel kills everything it left behind in its pid namespace.

#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"

namespace grpo {

struct SandboxLimits {
  double wall_seconds = 10.0;              // killed after this, whatever it is doing
  int64_t cpu_seconds = 10;                // RLIMIT_CPU
  int64_t memory_bytes = 1LL << 30;        // RLIMIT_AS
  int64_t max_processes = 64;              // RLIMIT_NPROC for the run's private uid
  int64_t max_file_bytes = 16LL << 20;     // RLIMIT_FSIZE
  int64_t max_open_files = 64;             // RLIMIT_NOFILE
  int64_t max_output_bytes = 1LL << 20;    // stdout + stderr kept; more kills the run
  int64_t max_scratch_bytes = 64LL << 20;  // all files of a run's SandboxDirectory together
};

struct SandboxResult {
  int exit_code = -1;          // when the program exited normally
  int signal = 0;              // when it was killed by a signal
  bool timed_out = false;      // wall-clock limit reached
  bool output_limit = false;   // max_output_bytes exceeded
  std::string stdout_text;
  std::string stderr_text;
  double wall_seconds = 0;
  bool ok() const { return exit_code == 0 && !timed_out && !output_limit && signal == 0; }
};

// Runs argv[0] (an absolute path under an allow-listed host path, or in `work_dir`) with
// `stdin_data`, inside `work_dir` (which must exist and is the only writable place; a
// SandboxDirectory caps what it holds). Errors are for a sandbox that could not be set up, never
// for what the program did.
StatusOr<SandboxResult> run_sandboxed(const std::vector<std::string>& argv, const std::string& stdin_data,
                                      const std::string& work_dir, const SandboxLimits& limits);

// A fresh private directory for one run: a tmpfs of at most `max_bytes` (so a program cannot fill
// the host's disk), unmounted and removed by the destructor whatever the program left; one left
// by a process that died is removed by the next process that makes one.
class SandboxDirectory {
 public:
  explicit SandboxDirectory(int64_t max_bytes = SandboxLimits{}.max_scratch_bytes);
  ~SandboxDirectory();
  SandboxDirectory(const SandboxDirectory&) = delete;
  SandboxDirectory& operator=(const SandboxDirectory&) = delete;
  const std::string& path() const { return path_; }
  Status write_file(const std::string& name, const std::string& contents) const;

 private:
  std::string path_;
};

// Whether this process can create sandboxes (root or CAP_SYS_ADMIN, namespaces available).
Status sandbox_available();

}  // namespace grpo
