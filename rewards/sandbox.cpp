#include "rewards/sandbox.h"

#include <fcntl.h>
#include <grp.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <sched.h>
#include <seccomp.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>

#include <fmt/format.h>

namespace grpo {
namespace {

constexpr uid_t kFirstSandboxUid = 61000;
constexpr uid_t kSandboxUidCount = 1000;

// The seccomp program, built once in the parent: the child must not allocate after clone().
struct SeccompProgram {
  std::vector<sock_filter> filter;
  std::string error;
};

const SeccompProgram& seccomp_program() {
  static const SeccompProgram program = [] {
    SeccompProgram p;
    scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
    if (ctx == nullptr) {
      p.error = "seccomp_init failed";
      return p;
    }
    const auto deny = SCMP_ACT_ERRNO(EPERM);
    int rc = 0;
    // Only local (AF_UNIX) sockets: no network, netlink or raw packets.
    rc |= seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EACCES), SCMP_SYS(socket), 1, SCMP_A0(SCMP_CMP_NE, AF_UNIX));
    for (int syscall : {SCMP_SYS(ptrace), SCMP_SYS(process_vm_readv), SCMP_SYS(process_vm_writev), SCMP_SYS(mount),
                        SCMP_SYS(umount2), SCMP_SYS(pivot_root), SCMP_SYS(chroot), SCMP_SYS(unshare), SCMP_SYS(setns),
                        SCMP_SYS(keyctl), SCMP_SYS(add_key), SCMP_SYS(request_key), SCMP_SYS(bpf),
                        SCMP_SYS(perf_event_open), SCMP_SYS(kexec_load), SCMP_SYS(init_module), SCMP_SYS(finit_module),
                        SCMP_SYS(delete_module), SCMP_SYS(reboot), SCMP_SYS(swapon), SCMP_SYS(swapoff), SCMP_SYS(acct),
                        SCMP_SYS(settimeofday), SCMP_SYS(clock_settime), SCMP_SYS(adjtimex), SCMP_SYS(syslog),
                        SCMP_SYS(userfaultfd), SCMP_SYS(io_uring_setup), SCMP_SYS(open_by_handle_at),
                        SCMP_SYS(name_to_handle_at)})
      rc |= seccomp_rule_add(ctx, deny, syscall, 0);
    // clone3 hides its flags in memory; make glibc fall back to clone, whose flags we can see.
    rc |= seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0);
    rc |= seccomp_rule_add(ctx, deny, SCMP_SYS(clone), 1,
                           SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_NEWUSER, CLONE_NEWUSER));
    rc |= seccomp_rule_add(ctx, deny, SCMP_SYS(clone), 1, SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_NEWNET, CLONE_NEWNET));
    rc |= seccomp_rule_add(ctx, deny, SCMP_SYS(clone), 1, SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_NEWNS, CLONE_NEWNS));
    rc |= seccomp_rule_add(ctx, deny, SCMP_SYS(clone), 1, SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_NEWPID, CLONE_NEWPID));
    if (rc != 0) {
      p.error = "seccomp_rule_add failed";
      seccomp_release(ctx);
      return p;
    }
    int fds[2];
    if (::pipe(fds) != 0) {
      p.error = "pipe failed";
      seccomp_release(ctx);
      return p;
    }
    const int export_rc = seccomp_export_bpf(ctx, fds[1]);
    ::close(fds[1]);
    std::string bytes;
    char buffer[4096];
    for (ssize_t n; (n = ::read(fds[0], buffer, sizeof buffer)) > 0;) bytes.append(buffer, static_cast<size_t>(n));
    ::close(fds[0]);
    seccomp_release(ctx);
    if (export_rc != 0 || bytes.empty() || bytes.size() % sizeof(sock_filter) != 0) {
      p.error = "seccomp_export_bpf failed";
      return p;
    }
    p.filter.resize(bytes.size() / sizeof(sock_filter));
    std::memcpy(p.filter.data(), bytes.data(), bytes.size());
    return p;
  }();
  return program;
}

// Everything the child needs, prepared before clone() so the child only makes system calls.
struct ChildSetup {
  std::vector<char*> argv;
  std::vector<char*> envp;
  const char* work_dir = nullptr;
  uid_t uid = 0;
  SandboxLimits limits;
  int stdin_fd = -1, stdout_fd = -1, stderr_fd = -1;
  int error_fd = -1;  // close-on-exec; a byte written here means setup failed
  sock_fprog seccomp{};
};

[[noreturn]] void child_fail(const ChildSetup& s, char step) {
  const char code[2] = {step, static_cast<char>(errno)};
  (void)!::write(s.error_fd, code, sizeof code);
  ::_exit(127);
}

int child_main(void* arg) {
  const ChildSetup& s = *static_cast<const ChildSetup*>(arg);
  ::setsid();
  if (::dup2(s.stdin_fd, 0) < 0 || ::dup2(s.stdout_fd, 1) < 0 || ::dup2(s.stderr_fd, 2) < 0) child_fail(s, 'd');
  // Filesystem: everything read-only but the run's directory; private /proc, /dev/shm, /tmp.
  if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) child_fail(s, 'p');
  if (::mount(s.work_dir, s.work_dir, nullptr, MS_BIND, nullptr) != 0) child_fail(s, 'b');
  if (::mount(nullptr, "/", nullptr, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV, nullptr) != 0)
    child_fail(s, 'r');
  if (::mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr) != 0) child_fail(s, 'f');
  ::mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "size=16m,mode=1777");
  // Limits.
  auto limit = [&](int resource, int64_t value) {
    const rlimit r{static_cast<rlim_t>(value), static_cast<rlim_t>(value)};
    if (::setrlimit(resource, &r) != 0) child_fail(s, 'l');
  };
  limit(RLIMIT_CPU, s.limits.cpu_seconds);
  limit(RLIMIT_AS, s.limits.memory_bytes);
  limit(RLIMIT_NPROC, s.limits.max_processes);
  limit(RLIMIT_FSIZE, s.limits.max_file_bytes);
  limit(RLIMIT_NOFILE, s.limits.max_open_files);
  limit(RLIMIT_CORE, 0);
  // An unprivileged identity of its own, no way back.
  if (::setgroups(0, nullptr) != 0 || ::setgid(s.uid) != 0 || ::setuid(s.uid) != 0) child_fail(s, 'u');
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) child_fail(s, 'n');
  if (::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &s.seccomp) != 0) child_fail(s, 's');
  if (::chdir(s.work_dir) != 0) child_fail(s, 'c');
  ::execve(s.argv[0], s.argv.data(), s.envp.data());
  child_fail(s, 'e');
}

std::string describe_setup_failure(char step, int err) {
  const char* what = "unknown step";
  switch (step) {
    case 'd': what = "redirecting standard streams"; break;
    case 'p': what = "making mounts private"; break;
    case 'b': what = "bind-mounting the work directory"; break;
    case 'r': what = "remounting / read-only"; break;
    case 'f': what = "mounting /proc"; break;
    case 'l': what = "setting rlimits"; break;
    case 'u': what = "dropping to the sandbox uid"; break;
    case 'n': what = "setting no_new_privs"; break;
    case 's': what = "installing the seccomp filter"; break;
    case 'c': what = "entering the work directory"; break;
    case 'e': what = "executing the program"; break;
  }
  return fmt::format("sandbox setup failed while {}: {}", what, std::strerror(err));
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

Status sandbox_available() {
  if (::geteuid() != 0) return Status::error("the code sandbox needs root (namespaces, mounts, a private uid)");
  if (!seccomp_program().error.empty()) return Status::error(seccomp_program().error);
  return Status::ok();
}

StatusOr<SandboxResult> run_sandboxed(const std::vector<std::string>& argv, const std::string& stdin_data,
                                      const std::string& work_dir, const SandboxLimits& limits) {
  if (Status available = sandbox_available(); !available.is_ok()) return available;
  if (argv.empty() || argv[0].empty() || argv[0][0] != '/') return Status::error("sandbox: argv[0] must be an absolute path");

  static std::atomic<uint32_t> next_slot{0};
  ChildSetup setup;
  setup.uid = kFirstSandboxUid + (next_slot++ % kSandboxUidCount);
  setup.limits = limits;
  setup.work_dir = work_dir.c_str();
  std::vector<std::string> args = argv;
  for (std::string& a : args) setup.argv.push_back(a.data());
  setup.argv.push_back(nullptr);
  std::vector<std::string> env = {"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=" + work_dir, "LANG=C.UTF-8",
                                  "PYTHONDONTWRITEBYTECODE=1", "PYTHONHASHSEED=0", "OMP_NUM_THREADS=1"};
  for (std::string& e : env) setup.envp.push_back(e.data());
  setup.envp.push_back(nullptr);
  const SeccompProgram& program = seccomp_program();
  setup.seccomp.len = static_cast<unsigned short>(program.filter.size());
  setup.seccomp.filter = const_cast<sock_filter*>(program.filter.data());

  // The run's directory must be writable by its uid.
  ::chown(work_dir.c_str(), setup.uid, setup.uid);

  int in_pipe[2], out_pipe[2], err_pipe[2], status_pipe[2];
  if (::pipe2(in_pipe, O_CLOEXEC) != 0 || ::pipe2(out_pipe, O_CLOEXEC) != 0 || ::pipe2(err_pipe, O_CLOEXEC) != 0 ||
      ::pipe2(status_pipe, O_CLOEXEC) != 0)
    return Status::error(fmt::format("sandbox: pipe: {}", std::strerror(errno)));
  setup.stdin_fd = in_pipe[0];
  setup.stdout_fd = out_pipe[1];
  setup.stderr_fd = err_pipe[1];
  setup.error_fd = status_pipe[1];

  constexpr size_t kStackSize = 256 * 1024;
  std::vector<char> stack(kStackSize);
  const auto start = std::chrono::steady_clock::now();
  const pid_t pid = ::clone(child_main, stack.data() + kStackSize,
                            CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS | SIGCHLD, &setup);
  const int clone_errno = errno;
  ::close(in_pipe[0]);
  ::close(out_pipe[1]);
  ::close(err_pipe[1]);
  ::close(status_pipe[1]);
  if (pid < 0) {
    for (int fd : {in_pipe[1], out_pipe[0], err_pipe[0], status_pipe[0]}) ::close(fd);
    return Status::error(fmt::format("sandbox: clone: {}", std::strerror(clone_errno)));
  }

  SandboxResult result;
  size_t written = 0;
  int stdin_fd = in_pipe[1];
  ::fcntl(stdin_fd, F_SETFL, O_NONBLOCK);
  if (stdin_data.empty()) {
    ::close(stdin_fd);
    stdin_fd = -1;
  }
  int fds[2] = {out_pipe[0], err_pipe[0]};
  std::string* sinks[2] = {&result.stdout_text, &result.stderr_text};
  bool killed = false;
  while (fds[0] >= 0 || fds[1] >= 0) {
    const double left = limits.wall_seconds - seconds_since(start);
    if (left <= 0) {
      result.timed_out = true;
      break;
    }
    pollfd polls[3];
    int n = 0;
    for (int k = 0; k < 2; ++k)
      if (fds[k] >= 0) polls[n++] = {fds[k], POLLIN, 0};
    if (stdin_fd >= 0) polls[n++] = {stdin_fd, POLLOUT, 0};
    const int ready = ::poll(polls, static_cast<nfds_t>(n), static_cast<int>(std::min(left, 0.1) * 1000) + 1);
    if (ready < 0 && errno != EINTR) break;
    for (int i = 0; i < n; ++i) {
      if (polls[i].revents == 0) continue;
      if (polls[i].fd == stdin_fd) {
        const ssize_t w = ::write(stdin_fd, stdin_data.data() + written, stdin_data.size() - written);
        if (w > 0) written += static_cast<size_t>(w);
        if (w < 0 && errno != EAGAIN) written = stdin_data.size();
        if (written >= stdin_data.size()) {
          ::close(stdin_fd);
          stdin_fd = -1;
        }
        continue;
      }
      const int k = polls[i].fd == fds[0] ? 0 : 1;
      char buffer[65536];
      const ssize_t r = ::read(fds[k], buffer, sizeof buffer);
      if (r <= 0) {
        ::close(fds[k]);
        fds[k] = -1;
        continue;
      }
      sinks[k]->append(buffer, static_cast<size_t>(r));
      if (result.stdout_text.size() + result.stderr_text.size() > static_cast<size_t>(limits.max_output_bytes)) {
        result.output_limit = true;
        break;
      }
    }
    if (result.output_limit) break;
  }
  if (result.timed_out || result.output_limit) {
    ::kill(pid, SIGKILL);  // pid 1 of the run's namespace: the kernel kills all the rest
    killed = true;
  }
  int status = 0;
  // Output closed but the program may still run (it closed its streams): enforce the wall limit.
  for (;;) {
    const pid_t w = ::waitpid(pid, &status, killed ? 0 : WNOHANG);
    if (w == pid) break;
    if (w < 0 && errno != EINTR) break;
    if (!killed && seconds_since(start) > limits.wall_seconds) {
      result.timed_out = true;
      ::kill(pid, SIGKILL);
      killed = true;
      continue;
    }
    if (!killed) ::usleep(2000);
  }
  for (int fd : {fds[0], fds[1], stdin_fd})
    if (fd >= 0) ::close(fd);
  result.wall_seconds = seconds_since(start);
  if (result.stdout_text.size() > static_cast<size_t>(limits.max_output_bytes)) result.stdout_text.resize(limits.max_output_bytes);

  char failure[2] = {0, 0};
  const ssize_t failed = ::read(status_pipe[0], failure, sizeof failure);
  ::close(status_pipe[0]);
  if (failed == 2) return Status::error(describe_setup_failure(failure[0], failure[1]));

  if (WIFEXITED(status)) result.exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) result.signal = WTERMSIG(status);
  return result;
}

SandboxDirectory::SandboxDirectory() {
  const std::string base = std::filesystem::temp_directory_path() / "grpo-sandbox";
  std::filesystem::create_directories(base);
  ::chmod(base.c_str(), 0711);
  std::string pattern = base + "/run-XXXXXX";
  if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error(fmt::format("mkdtemp: {}", std::strerror(errno)));
  path_ = pattern;
}

SandboxDirectory::~SandboxDirectory() {
  std::error_code ignored;
  std::filesystem::remove_all(path_, ignored);
}

Status SandboxDirectory::write_file(const std::string& name, const std::string& contents) const {
  const std::string path = path_ + "/" + name;
  std::ofstream out(path, std::ios::binary);
  out << contents;
  if (!out) return Status::error(fmt::format("cannot write '{}'", path));
  return Status::ok();
}

}  // namespace grpo
