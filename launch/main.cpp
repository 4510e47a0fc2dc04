#include <malloc.h>
#include <unistd.h>

#include <cstdlib>

#include "launch/cli.h"

namespace {

// OpenMP reads its environment when the runtime loads, before main. Spin-waiting threads made
// decoding 2-30x slower on shared 2-core machines (docs/performance.md), so the process re-executes
// itself once with a passive wait policy unless the user chose one.
void ensure_passive_openmp(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") != nullptr) return;
  ::setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
  ::execv("/proc/self/exe", argv);  // returns only on failure; then run as we are
}

// LibTorch on CPU allocates and frees many medium-sized buffers per step. With glibc's defaults
// each one is an mmap/munmap pair and fresh pages fault in every time; keeping freed memory in
// the heap made a GRPO step of the CPU demo 1.9x faster (docs/performance.md).
void keep_freed_memory() {
  mallopt(M_MMAP_THRESHOLD, 32 << 20);  // glibc's ceiling for this setting
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  mallopt(M_TOP_PAD, 64 << 20);
}

}  // namespace

int main(int argc, char** argv) {
  ensure_passive_openmp(argv);
  keep_freed_memory();
  return grpo::run_cli(argc, argv);
}
