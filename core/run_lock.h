#pragma once
// One run per run directory: an exclusive flock(2) on <run_dir>/.lock, held for the run's lifetime.
// The kernel drops the lock when the holding process ends in any way (exit, crash, kill -9), so a
// lock is never stale once its process is gone. The file records the holder (pid, host, start
// time) so that a refused second run can say who holds it. flock works on local filesystems and
// on NFS (Linux emulates it with byte-range locks); Lustre needs its `flock` mount option.

#include <memory>
#include <string>

#include "core/status.h"

namespace grpo {

class RunLock {
 public:
  // Creates `run_dir` if needed and takes its lock without waiting. The error, one line, names the
  // directory and the holder: "trainer.run_dir 'runs/x' is in use by pid 123 on host h since
  // 2026-11-29 22:10:00 UTC (lock file runs/x/.lock)".
  static StatusOr<std::unique_ptr<RunLock>> acquire(const std::string& run_dir);
  ~RunLock();  // releases the lock
  RunLock(const RunLock&) = delete;
  RunLock& operator=(const RunLock&) = delete;

  const std::string& path() const { return path_; }

 private:
  RunLock(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}
  std::string path_;
  int fd_ = -1;
};

}  // namespace grpo
