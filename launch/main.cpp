#include <unistd.h>

#include <cstdlib>

#include "core/heap.h"
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

}  // namespace

int main(int argc, char** argv) {
  ensure_passive_openmp(argv);
  grpo::keep_freed_memory_in_heap();
  return grpo::run_cli(argc, argv);
}
