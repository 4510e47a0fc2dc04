// Sandboxed program runs per second: a trivial Python program (python3 -c pass equivalent) run
// through the full sandbox (namespaces, read-only root, rlimits, seccomp), against a baseline in the
// same process: the same program run with fork/exec and no isolation. Serial and on T threads.
//
// Usage: bench_sandbox [runs] [threads]

#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>

#include "core/cpu_info.h"
#include "rewards/sandbox.h"

namespace {

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

void run_plain(const std::string& dir) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    if (::chdir(dir.c_str()) != 0) ::_exit(1);
    ::execl("/usr/bin/python3", "python3", "main.py", static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::waitpid(pid, nullptr, 0);
}

}  // namespace

int main(int argc, char** argv) {
  const int runs = argc > 1 ? std::atoi(argv[1]) : 100;
  const int threads = argc > 2 ? std::atoi(argv[2]) : 2;
  std::printf("compute: %s\n", grpo::compute_setup_line().c_str());
  if (grpo::Status s = grpo::sandbox_available(); !s.is_ok()) {
    std::fprintf(stderr, "%s\n", s.message().c_str());
    return 1;
  }
  grpo::SandboxDirectory dir;
  (void)dir.write_file("main.py", "x = sum(range(1000))\n");

  double t0 = now();
  for (int i = 0; i < runs; ++i) run_plain(dir.path());
  const double plain = runs / (now() - t0);

  t0 = now();
  int failures = 0;
  for (int i = 0; i < runs; ++i) {
    auto r = grpo::run_sandboxed({"/usr/bin/python3", "main.py"}, "", dir.path(), {});
    failures += !(r.is_ok() && r->ok());
  }
  const double serial = runs / (now() - t0);

  t0 = now();
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t)
    workers.emplace_back([&] {
      for (int i = 0; i < runs / threads; ++i) {
        grpo::SandboxDirectory own;
        (void)own.write_file("main.py", "x = sum(range(1000))\n");
        auto r = grpo::run_sandboxed({"/usr/bin/python3", "main.py"}, "", own.path(), {});
        if (!(r.is_ok() && r->ok())) ++failures;
      }
    });
  for (auto& w : workers) w.join();
  const double parallel = (runs / threads) * threads / (now() - t0);

  std::printf("python3 runs/s: unsandboxed fork/exec %.1f, sandboxed serial %.1f (ratio %.2f), sandboxed %d threads %.1f; failures %d\n",
              plain, serial, serial / plain, threads, parallel, failures);
  return failures == 0 ? 0 : 1;
}
