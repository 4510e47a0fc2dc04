// The code sandbox against hostile programs: each must be contained, the calling process must be
// unaffected, and no process of the run may be left behind.

#include "rewards/sandbox.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

namespace grpo {
namespace {

namespace fs = std::filesystem;

// Processes whose real uid is one of the sandbox uids (61000-61999).
int sandbox_processes() {
  int count = 0;
  DIR* proc = ::opendir("/proc");
  for (dirent* entry; proc && (entry = ::readdir(proc));) {
    if (!std::isdigit(static_cast<unsigned char>(entry->d_name[0]))) continue;
    std::ifstream status(std::string("/proc/") + entry->d_name + "/status");
    for (std::string line; std::getline(status, line);) {
      if (line.rfind("Uid:", 0) == 0) {
        const int uid = std::stoi(line.substr(4));
        if (uid >= 61000 && uid < 62000) ++count;
        break;
      }
    }
  }
  if (proc) ::closedir(proc);
  return count;
}

class SandboxTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (Status s = sandbox_available(); !s.is_ok()) GTEST_SKIP() << s.message();
  }
  SandboxResult run_python(const std::string& program, SandboxLimits limits = {}) {
    SandboxDirectory dir;
    EXPECT_TRUE(dir.write_file("main.py", program).is_ok());
    StatusOr<SandboxResult> result = run_sandboxed({"/usr/bin/python3", "main.py"}, "", dir.path(), limits);
    EXPECT_TRUE(result.is_ok()) << result.status().message();
    return result.is_ok() ? *result : SandboxResult{};
  }
  void TearDown() override {
    // Nothing of any run may outlive it.
    for (int i = 0; i < 50 && sandbox_processes() > 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    EXPECT_EQ(sandbox_processes(), 0) << "a sandboxed process was left behind";
  }
};

TEST_F(SandboxTest, RunsAProgramWithStdinAndStdout) {
  SandboxDirectory dir;
  ASSERT_TRUE(dir.write_file("main.py", "import sys\nprint(sum(int(x) for x in sys.stdin.read().split()))\n").is_ok());
  StatusOr<SandboxResult> r = run_sandboxed({"/usr/bin/python3", "main.py"}, "1 2 3\n", dir.path(), {});
  ASSERT_TRUE(r.is_ok()) << r.status().message();
  EXPECT_TRUE(r->ok()) << r->stderr_text;
  EXPECT_EQ(r->stdout_text, "6\n");
}

TEST_F(SandboxTest, ForkBombIsContained) {
  SandboxLimits limits;
  limits.wall_seconds = 5;
  const SandboxResult r = run_python("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n", limits);
  EXPECT_FALSE(r.ok());
  EXPECT_LT(r.wall_seconds, 15);
}

TEST_F(SandboxTest, InfiniteLoopIsKilledAtTheWallClockLimit) {
  SandboxLimits limits;
  limits.wall_seconds = 1.5;
  const SandboxResult r = run_python("while True:\n    pass\n", limits);
  EXPECT_TRUE(r.timed_out || r.signal != 0);
  EXPECT_LT(r.wall_seconds, 10);
}

TEST_F(SandboxTest, MemoryBombFails) {
  SandboxLimits limits;
  limits.memory_bytes = 256LL << 20;
  const SandboxResult r = run_python("x = bytearray(2 * 1024**3)\nprint('allocated')\n", limits);
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(r.stdout_text.find("allocated"), std::string::npos);
  EXPECT_NE(r.stderr_text.find("MemoryError"), std::string::npos) << r.stderr_text;
}

TEST_F(SandboxTest, NetworkConnectFails) {
  // A listener on loopback in the caller's namespace must see no connection.
  const int listener = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(listener, reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
  socklen_t length = sizeof address;
  ::getsockname(listener, reinterpret_cast<sockaddr*>(&address), &length);
  ::listen(listener, 4);
  const int port = ntohs(address.sin_port);
  const SandboxResult r = run_python("import socket\ns = socket.create_connection(('127.0.0.1', " + std::to_string(port) +
                                     "), timeout=2)\nprint('connected')\n");
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(r.stdout_text.find("connected"), std::string::npos);
  EXPECT_NE(r.stderr_text.find("PermissionError"), std::string::npos) << r.stderr_text;
  ::fcntl(listener, F_SETFL, O_NONBLOCK);
  EXPECT_LT(::accept(listener, nullptr, nullptr), 0) << "the sandbox reached a loopback listener";
  ::close(listener);
}

TEST_F(SandboxTest, WritesOutsideItsDirectoryFail) {
  const std::string target = "/tmp/grpo_sandbox_escape_" + std::to_string(::getpid());
  const SandboxResult r = run_python("open('" + target + "', 'w').write('x')\n");
  EXPECT_FALSE(r.ok());
  EXPECT_FALSE(fs::exists(target));
  const SandboxResult own = run_python("open('inside.txt', 'w').write('x')\nprint(open('inside.txt').read())\n");
  EXPECT_TRUE(own.ok()) << own.stderr_text;
}

TEST_F(SandboxTest, RootOnlyFilesAreUnreadable) {
  const std::string secret = "/tmp/grpo_sandbox_secret_" + std::to_string(::getpid());
  {
    std::ofstream(secret) << "top-secret-value";
  }
  ::chmod(secret.c_str(), 0600);
  const SandboxResult r = run_python("print(open('" + secret + "').read())\n");
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(r.stdout_text.find("top-secret-value"), std::string::npos);
  fs::remove(secret);
}

TEST_F(SandboxTest, CannotKillItsCaller) {
  const SandboxResult r = run_python("import os, signal\nfor pid in (os.getppid(), " + std::to_string(::getpid()) +
                                     ", -1, 0):\n    try:\n        os.kill(pid, signal.SIGKILL)\n    except OSError as e:\n"
                                     "        print('denied', pid, e.errno)\n");
  (void)r;
  SUCCEED() << "the test process is still alive";
  EXPECT_EQ(::kill(::getpid(), 0), 0);
}

TEST_F(SandboxTest, DaemonizedChildrenDieWithTheRun) {
  SandboxLimits limits;
  limits.wall_seconds = 5;
  const SandboxResult r = run_python(
      "import os, time\n"
      "if os.fork() == 0:\n"
      "    os.setsid()\n"
      "    if os.fork() == 0:\n"
      "        time.sleep(60)\n"
      "    os._exit(0)\n"
      "print('parent done')\n",
      limits);
  EXPECT_TRUE(r.ok()) << r.stderr_text;
  EXPECT_LT(r.wall_seconds, 15);  // far below the grandchild's 60 s: nobody waited for it
  // TearDown checks that the sleeping grandchild is gone.
}

TEST_F(SandboxTest, HugeOutputIsCapped) {
  SandboxLimits limits;
  limits.max_output_bytes = 1 << 20;
  const SandboxResult r = run_python("import sys\nchunk = 'x' * (1 << 20)\nfor _ in range(100):\n    sys.stdout.write(chunk)\n", limits);
  EXPECT_TRUE(r.output_limit);
  EXPECT_FALSE(r.ok());
  EXPECT_LE(r.stdout_text.size(), size_t{1} << 20);
}

TEST_F(SandboxTest, NewNamespacesAndPrivilegeAreDenied) {
  const SandboxResult r = run_python(
      "import ctypes, os\nlibc = ctypes.CDLL(None)\n"
      "print('unshare', libc.unshare(0x10000000))\n"  // CLONE_NEWUSER
      "print('uid', os.getuid())\n");
  EXPECT_NE(r.stdout_text.find("unshare -1"), std::string::npos) << r.stdout_text << r.stderr_text;
  EXPECT_EQ(r.stdout_text.find("uid 0"), std::string::npos);
}

TEST_F(SandboxTest, HostFilesOutsideTheAllowListAreInvisible) {
  // World-readable files the harness planted outside the run's directory: in /tmp, beside the
  // run's directory, and the project's own tree.
  const std::string planted = "/tmp/grpo_sandbox_planted_" + std::to_string(::getpid());
  { std::ofstream(planted) << "expected-output-42"; }
  ::chmod(planted.c_str(), 0644);
  SandboxDirectory dir;
  const std::string beside = fs::path(dir.path()).parent_path() / ("planted-" + std::to_string(::getpid()));
  { std::ofstream(beside) << "expected-output-43"; }
  ::chmod(beside.c_str(), 0644);
  ASSERT_TRUE(dir.write_file("main.py",
                             "import os\n"
                             "for path in ['" + planted + "', '" + beside + "', '" GRPO_SOURCE_DIR "/README.md', '/etc/passwd']:\n"
                             "    try:\n        print(path, open(path).read()[:40])\n"
                             "    except OSError as e:\n        print(path, 'denied', type(e).__name__)\n"
                             "print('root', sorted(os.listdir('/')))\n"
                             "open('/dev/null', 'w').write('x')\nprint('random', len(open('/dev/urandom', 'rb').read(8)))\n").is_ok());
  StatusOr<SandboxResult> r = run_sandboxed({"/usr/bin/python3", "main.py"}, "", dir.path(), {});
  ASSERT_TRUE(r.is_ok()) << r.status().message();
  EXPECT_TRUE(r->ok()) << r->stderr_text;
  EXPECT_EQ(r->stdout_text.find("expected-output"), std::string::npos) << r->stdout_text;
  EXPECT_EQ(r->stdout_text.find("root:"), std::string::npos) << r->stdout_text;  // /etc/passwd's first line
  EXPECT_NE(r->stdout_text.find(planted + " denied FileNotFoundError"), std::string::npos) << r->stdout_text;
  EXPECT_NE(r->stdout_text.find("README.md denied FileNotFoundError"), std::string::npos) << r->stdout_text;
  EXPECT_EQ(r->stdout_text.find("'work'"), std::string::npos) << r->stdout_text;
  EXPECT_NE(r->stdout_text.find("'usr'"), std::string::npos) << r->stdout_text;
  EXPECT_NE(r->stdout_text.find("random 8"), std::string::npos) << r->stdout_text;  // devices still work
  fs::remove(planted);
  fs::remove(beside);
}

TEST_F(SandboxTest, TotalBytesWrittenAreCappedAndNothingReachesTheHostDisk) {
  constexpr int64_t kCap = 8LL << 20;
  std::string path;
  {
    SandboxDirectory dir(kCap);
    path = dir.path();
    struct statfs info {};
    ASSERT_EQ(::statfs(path.c_str(), &info), 0);
    EXPECT_EQ(info.f_type, 0x01021994) << "the run's directory is not a tmpfs";  // TMPFS_MAGIC
    // 40 files of 1 MB, each below the per-file limit: the 9th or so must fail.
    ASSERT_TRUE(dir.write_file("main.py",
                               "import errno\nwritten = 0\n"
                               "for i in range(40):\n"
                               "    try:\n"
                               "        with open(f'f{i}', 'wb') as f:\n            f.write(b'x' * (1 << 20))\n"
                               "        written += 1\n"
                               "    except OSError as e:\n"
                               "        print('full', errno.errorcode[e.errno])\n        break\n"
                               "print('written', written)\n").is_ok());
    StatusOr<SandboxResult> r = run_sandboxed({"/usr/bin/python3", "main.py"}, "", dir.path(), {});
    ASSERT_TRUE(r.is_ok()) << r.status().message();
    EXPECT_NE(r->stdout_text.find("full ENOSPC"), std::string::npos) << r->stdout_text << r->stderr_text;
    const size_t at = r->stdout_text.find("written ");
    ASSERT_NE(at, std::string::npos) << r->stdout_text;
    EXPECT_LE(std::stoi(r->stdout_text.substr(at + 8)), 8);
    // What the program wrote is in the tmpfs, not under the directory on the host's disk.
    int64_t bytes = 0;
    for (const auto& entry : fs::directory_iterator(path))
      if (entry.is_regular_file()) bytes += static_cast<int64_t>(entry.file_size());
    EXPECT_LE(bytes, kCap);
  }
  EXPECT_FALSE(fs::exists(path)) << "the run's directory outlived it";
}

// Rewards are scored on a thread pool: runs started from several threads at once must all work.
// The child of clone() used to hang now and then in glibc's setuid(), which waits for the
// parent's other threads, until the wall-clock limit failed a correct program.
TEST_F(SandboxTest, RunsFromSeveralThreadsAtOnceAllSucceed) {
  constexpr int kThreads = 3, kRuns = 15;
  std::atomic<int> succeeded{0};
  std::vector<std::string> failures(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < kRuns; ++i) {
        SandboxDirectory dir;
        (void)dir.write_file("main.py", "print(sum(range(10)))\n");
        SandboxLimits limits;
        limits.wall_seconds = 5;
        StatusOr<SandboxResult> r = run_sandboxed({"/usr/bin/python3", "main.py"}, "", dir.path(), limits);
        if (r.is_ok() && r->ok() && r->stdout_text == "45\n") ++succeeded;
        else if (failures[t].empty()) failures[t] = r.is_ok() ? (r->timed_out ? "timed out" : r->stderr_text) : r.status().message();
      }
    });
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(succeeded.load(), kThreads * kRuns) << failures[0] << failures[1] << failures[2];
}

// Two processes on one machine (two ranks) each run sandboxes: a fork bomb in one must not make
// a correct program in the other fail, which it did when both used the same uid (the bomb held
// the uid's whole process limit, so the other's fork failed). The forked child starts from the
// parent's state, as two ranks started alike do.
TEST_F(SandboxTest, ForkBombInAnotherProcessDoesNotDisturbThisOne) {
  int started[2];
  ASSERT_EQ(::pipe(started), 0);
  const pid_t bomber = ::fork();
  ASSERT_GE(bomber, 0);
  if (bomber == 0) {
    ::close(started[0]);
    (void)!::write(started[1], "s", 1);
    SandboxDirectory dir;
    (void)dir.write_file("main.py", "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n");
    SandboxLimits limits;
    limits.wall_seconds = 4;
    (void)run_sandboxed({"/usr/bin/python3", "main.py"}, "", dir.path(), limits);
    ::_exit(0);
  }
  ::close(started[1]);
  char byte = 0;
  ASSERT_EQ(::read(started[0], &byte, 1), 1);
  ::close(started[0]);
  std::this_thread::sleep_for(std::chrono::milliseconds(1000));  // the bomb is at its process limit
  int correct = 0;
  for (int i = 0; i < 5; ++i) {
    SandboxDirectory dir;
    // A correct program that starts a process of its own (as g++ does, or multiprocessing).
    ASSERT_TRUE(dir.write_file("main.py", "import os\npid = os.fork()\nif pid == 0:\n    os._exit(0)\n"
                                          "os.waitpid(pid, 0)\nprint(6 * 7)\n").is_ok());
    StatusOr<SandboxResult> r = run_sandboxed({"/usr/bin/python3", "main.py"}, "", dir.path(), {});
    if (r.is_ok() && r->ok() && r->stdout_text == "42\n") ++correct;
    else ADD_FAILURE() << "run " << i << ": " << (r.is_ok() ? r->stderr_text : r.status().message());
  }
  EXPECT_EQ(correct, 5);
  int status = 0;
  ASSERT_EQ(::waitpid(bomber, &status, 0), bomber);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

}  // namespace
}  // namespace grpo
