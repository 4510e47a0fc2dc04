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
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <random>
#include <thread>

#include <fmt/format.h>

namespace grpo {
namespace {

constexpr uid_t kFirstSandboxUid = 61000;
constexpr uid_t kSandboxUidCount = 1000;
// One byte per sandbox uid; a run holds an open-file-description lock on its uid's byte. The path
// is fixed (not $TMPDIR) so that every process on the machine sees the same file.
constexpr const char* kUidLockPath = "/tmp/.grpo-sandbox-uids.lock";

// Host paths a sandboxed program sees (read-only): the interpreter, the compiler and their
// libraries. Nothing else of the host is in its root.
constexpr const char* kVisibleHostPaths[] = {"/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
                                             "/etc/ld.so.cache", "/etc/alternatives", "/etc/python3",
                                             "/etc/python3.11", "/etc/python3.12", "/etc/python3.13"};
constexpr const char* kVisibleDevices[] = {"/dev/null", "/dev/zero", "/dev/random", "/dev/urandom", "/dev/full"};

// A uid held for one run: no other run on this machine, in this or any other process, has it
// until the lease ends. The lock goes away with the descriptor, so a crashed process frees its uids.
class UidLease {
 public:
  UidLease() = default;
  UidLease(const UidLease&) = delete;
  UidLease& operator=(const UidLease&) = delete;
  ~UidLease() {
    if (fd_ >= 0) ::close(fd_);
  }
  uid_t uid() const { return uid_; }

  Status acquire(double wait_seconds) {
    fd_ = ::open(kUidLockPath, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd_ < 0) return Status::error(fmt::format("sandbox: cannot open the uid lock file {}: {}", kUidLockPath, std::strerror(errno)));
    thread_local std::minstd_rand random(static_cast<unsigned>(::getpid()) * 7919u +
                                         static_cast<unsigned>(std::hash<std::thread::id>()(std::this_thread::get_id())));
    const auto start = std::chrono::steady_clock::now();
    for (;;) {
      const uid_t first = static_cast<uid_t>(random() % kSandboxUidCount);
      for (uid_t k = 0; k < kSandboxUidCount; ++k) {
        const uid_t slot = (first + k) % kSandboxUidCount;
        struct flock lock {};
        lock.l_type = F_WRLCK;
        lock.l_whence = SEEK_SET;
        lock.l_start = slot;
        lock.l_len = 1;
        if (::fcntl(fd_, F_OFD_SETLK, &lock) == 0) {
          uid_ = kFirstSandboxUid + slot;
          return Status::ok();
        }
        if (errno != EAGAIN && errno != EACCES)
          return Status::error(fmt::format("sandbox: locking {}: {}", kUidLockPath, std::strerror(errno)));
      }
      if (std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() > wait_seconds)
        return Status::error(fmt::format("sandbox: all {} sandbox uids ({}-{}) are in use on this machine", kSandboxUidCount,
                                         kFirstSandboxUid, kFirstSandboxUid + kSandboxUidCount - 1));
      ::usleep(10000);
    }
  }

 private:
  int fd_ = -1;
  uid_t uid_ = 0;
};

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

// One step of building the sandbox's root, prepared in the parent.
struct MountStep {
  enum Kind { kMkdir, kTouch, kSymlink, kBindReadOnly, kBindDevice, kBindWritable } kind;
  std::string source;  // kBind*: the host path; kSymlink: the link's target
  std::string target;  // inside the new root (the root's mount point as prefix)
};

// Everything the child needs, prepared before clone() so the child only makes system calls.
struct ChildSetup {
  const char* new_root = nullptr;  // where the run's root (a tmpfs) is assembled before pivot_root
  std::vector<MountStep> mounts;
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
  // Filesystem: a root of its own (a tmpfs) holding only the allow-listed host paths read-only,
  // a few devices, a private /proc and /dev/shm, and the run's directory, the one writable place.
  if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) child_fail(s, 'p');
  if (::mount("tmpfs", s.new_root, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0755") != 0) child_fail(s, 't');
  constexpr unsigned long kReadOnly = MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV;
  for (const MountStep& step : s.mounts) {
    const char* target = step.target.c_str();
    switch (step.kind) {
      case MountStep::kMkdir:
        if (::mkdir(target, 0755) != 0 && errno != EEXIST) child_fail(s, 'm');
        break;
      case MountStep::kTouch: {
        const int fd = ::open(target, O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
        if (fd < 0) child_fail(s, 'm');
        ::close(fd);
        break;
      }
      case MountStep::kSymlink:
        if (::symlink(step.source.c_str(), target) != 0) child_fail(s, 'm');
        break;
      case MountStep::kBindReadOnly:
        if (::mount(step.source.c_str(), target, nullptr, MS_BIND | MS_REC, nullptr) != 0) child_fail(s, 'b');
        if (::mount(nullptr, target, nullptr, kReadOnly, nullptr) != 0) child_fail(s, 'r');
        break;
      case MountStep::kBindDevice:  // read-only, but a device node must stay usable (no MS_NODEV)
        if (::mount(step.source.c_str(), target, nullptr, MS_BIND, nullptr) != 0) child_fail(s, 'b');
        if (::mount(nullptr, target, nullptr, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID, nullptr) != 0) child_fail(s, 'r');
        break;
      case MountStep::kBindWritable:
        if (::mount(step.source.c_str(), target, nullptr, MS_BIND, nullptr) != 0) child_fail(s, 'b');
        if (::mount(nullptr, target, nullptr, MS_REMOUNT | MS_BIND | MS_NOSUID | MS_NODEV, nullptr) != 0) child_fail(s, 'b');
        break;
    }
  }
  if (::chdir(s.new_root) != 0) child_fail(s, 'c');
  // pivot_root(".", ".") stacks the old root under the new one; detaching it leaves only the new.
  if (::syscall(SYS_pivot_root, ".", ".") != 0) child_fail(s, 'v');
  if (::umount2(".", MNT_DETACH) != 0) child_fail(s, 'v');
  if (::chdir("/") != 0) child_fail(s, 'c');
  if (::mount(nullptr, "/", nullptr, kReadOnly, nullptr) != 0) child_fail(s, 'r');
  if (::mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr) != 0) child_fail(s, 'f');
  if (::mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "size=16m,mode=1777") != 0) child_fail(s, 'f');
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
  // Raw system calls: glibc's setuid() and friends would try to switch every thread of the
  // parent too (the child of clone() still believes it has them) and wait for them forever.
  if (::syscall(SYS_setgroups, 0, nullptr) != 0 || ::syscall(SYS_setgid, s.uid) != 0 || ::syscall(SYS_setuid, s.uid) != 0)
    child_fail(s, 'u');
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
    case 't': what = "mounting the run's root tmpfs"; break;
    case 'm': what = "creating a mount point in the run's root"; break;
    case 'b': what = "bind-mounting a host path or the work directory"; break;
    case 'r': what = "remounting a path read-only"; break;
    case 'v': what = "switching to the run's root (pivot_root)"; break;
    case 'f': what = "mounting /proc or /dev/shm"; break;
    case 'l': what = "setting rlimits"; break;
    case 'u': what = "dropping to the sandbox uid"; break;
    case 'n': what = "setting no_new_privs"; break;
    case 's': what = "installing the seccomp filter"; break;
    case 'c': what = "entering the work directory"; break;
    case 'e': what = "executing the program"; break;
  }
  return fmt::format("sandbox setup failed while {}: {}", what, std::strerror(err));
}

std::string sandbox_base_directory() { return std::filesystem::temp_directory_path() / "grpo-sandbox"; }

// The steps that assemble a run's root at `root`: allow-listed host paths as they are on the host
// (a symlink stays a symlink, so /lib -> usr/lib keeps working), devices, /proc, /dev/shm and the
// work directory at its own path.
std::vector<MountStep> plan_root(const std::string& root, const std::string& work_dir) {
  std::vector<MountStep> steps;
  auto mkdirs = [&](const std::string& path) {  // every component of an absolute path
    for (size_t slash = path.find('/', 1);; slash = path.find('/', slash + 1)) {
      steps.push_back({MountStep::kMkdir, "", root + path.substr(0, slash)});
      if (slash == std::string::npos) break;
    }
  };
  for (const char* host : kVisibleHostPaths) {
    struct stat info {};
    if (::lstat(host, &info) != 0) continue;
    const std::string parent = std::filesystem::path(host).parent_path();
    if (parent != "/") mkdirs(parent);
    if (S_ISLNK(info.st_mode)) {
      std::error_code error;
      const std::filesystem::path target = std::filesystem::read_symlink(host, error);
      if (!error) steps.push_back({MountStep::kSymlink, target.string(), root + host});
    } else if (S_ISDIR(info.st_mode)) {
      steps.push_back({MountStep::kMkdir, "", root + host});
      steps.push_back({MountStep::kBindReadOnly, host, root + host});
    } else {
      steps.push_back({MountStep::kTouch, "", root + host});
      steps.push_back({MountStep::kBindReadOnly, host, root + host});
    }
  }
  mkdirs("/dev/shm");
  for (const char* device : kVisibleDevices) {
    if (::access(device, F_OK) != 0) continue;
    steps.push_back({MountStep::kTouch, "", root + device});
    steps.push_back({MountStep::kBindDevice, device, root + device});
  }
  mkdirs("/proc");
  mkdirs(work_dir);
  steps.push_back({MountStep::kBindWritable, work_dir, root + work_dir});
  return steps;
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

  std::error_code path_error;
  const std::string work = std::filesystem::canonical(work_dir, path_error).string();
  if (path_error || !std::filesystem::is_directory(work))
    return Status::error(fmt::format("sandbox: work directory '{}' does not exist", work_dir));
  if (work == "/") return Status::error("sandbox: the work directory cannot be /");
  const std::string new_root = sandbox_base_directory() + "/root";
  std::filesystem::create_directories(new_root, path_error);
  if (path_error) return Status::error(fmt::format("sandbox: cannot create {}: {}", new_root, path_error.message()));

  UidLease uid;
  if (Status s = uid.acquire(limits.wall_seconds); !s.is_ok()) return s;
  ChildSetup setup;
  setup.uid = uid.uid();
  setup.limits = limits;
  setup.work_dir = work.c_str();
  setup.new_root = new_root.c_str();
  setup.mounts = plan_root(new_root, work);
  std::vector<std::string> args = argv;
  for (std::string& a : args) setup.argv.push_back(a.data());
  setup.argv.push_back(nullptr);
  std::vector<std::string> env = {"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=" + work, "TMPDIR=" + work, "LANG=C.UTF-8",
                                  "PYTHONDONTWRITEBYTECODE=1", "PYTHONHASHSEED=0", "OMP_NUM_THREADS=1"};
  for (std::string& e : env) setup.envp.push_back(e.data());
  setup.envp.push_back(nullptr);
  const SeccompProgram& program = seccomp_program();
  setup.seccomp.len = static_cast<unsigned short>(program.filter.size());
  setup.seccomp.filter = const_cast<sock_filter*>(program.filter.data());

  // The run's directory must be writable by its uid.
  ::chown(work.c_str(), setup.uid, setup.uid);

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

namespace {

// A run directory is named run-<pid>-XXXXXX so that the tmpfs of a process that died without
// cleaning up (kill -9) can be found and removed by the next process.
void remove_directories_of_dead_processes(const std::string& base) {
  std::error_code error;
  for (const auto& entry : std::filesystem::directory_iterator(base, error)) {
    const std::string name = entry.path().filename();
    if (name.rfind("run-", 0) != 0) continue;
    const pid_t owner = static_cast<pid_t>(std::strtol(name.c_str() + 4, nullptr, 10));
    if (owner <= 0 || ::kill(owner, 0) == 0 || errno != ESRCH) continue;
    ::umount2(entry.path().c_str(), MNT_DETACH);
    std::filesystem::remove_all(entry.path(), error);
  }
}

}  // namespace

SandboxDirectory::SandboxDirectory(int64_t max_bytes) {
  const std::string base = sandbox_base_directory();
  std::filesystem::create_directories(base);
  ::chmod(base.c_str(), 0711);
  static std::once_flag cleaned;
  std::call_once(cleaned, [&] { remove_directories_of_dead_processes(base); });
  std::string pattern = fmt::format("{}/run-{}-XXXXXX", base, ::getpid());
  if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error(fmt::format("mkdtemp: {}", std::strerror(errno)));
  path_ = pattern;
  // Everything a run writes lands in this size-limited tmpfs, never on the host's disk.
  const std::string options = fmt::format("size={},mode=0700", std::max<int64_t>(max_bytes, 4096));
  if (::mount("tmpfs", path_.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, options.c_str()) != 0) {
    const int err = errno;
    ::rmdir(path_.c_str());
    throw std::runtime_error(fmt::format("sandbox: cannot mount a {}-byte tmpfs at {}: {}", max_bytes, path_, std::strerror(err)));
  }
}

SandboxDirectory::~SandboxDirectory() {
  ::umount2(path_.c_str(), MNT_DETACH);
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
