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
#include <unistd.h>

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

}  // namespace
}  // namespace grpo
