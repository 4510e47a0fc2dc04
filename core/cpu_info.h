#pragma once
// What the CPU math runs on: the BLAS library LibTorch resolved its GEMM to, the kernel set ("core")
// OpenBLAS chose for this CPU, the thread counts and LibTorch's parallel backend. A GEMM can be 4x
// slower with the wrong core and nothing else tells the user (docs/performance.md, "CPU set-up"),
// so the trainer logs this at start-up, `grpo version` prints it and every benchmark records it.
//
// The probes look the BLAS up at run time (dlsym), so they describe whatever library the dynamic
// loader picked (Debian's alternatives, LD_LIBRARY_PATH), not what the build was linked against.

#include <optional>
#include <string>

namespace grpo {

struct CpuFeatures {
  std::string model_name;  // /proc/cpuinfo "model name", or "unknown"
  bool avx2 = false;       // AVX2 with FMA, usable by the OS
  bool avx512 = false;     // AVX-512 F/BW/DQ/VL (what OpenBLAS's SkylakeX kernels need), usable by the OS
};

CpuFeatures probe_cpu_features();

struct BlasInfo {
  std::string library;   // "OpenBLAS", "MKL", "BLIS" or "unknown"
  std::string provider;  // real path of the shared object that defines sgemm_, or "" when none is loaded
  std::string config;    // the library's own build summary, e.g. "OpenBLAS 0.3.21 DYNAMIC_ARCH ... Zen ..."
  std::string core;      // OpenBLAS's kernel set, e.g. "Haswell", "SkylakeX", "Prescott"; "" when unknown
  std::string threading; // "OpenMP", "pthreads", "sequential" or "" when unknown
  int threads = -1;      // threads the next GEMM from this thread may use; -1 when unknown
};

BlasInfo probe_blas();

// A warning when the BLAS runs kernels that use neither AVX2 nor AVX-512 on a CPU that has them
// (e.g. OpenBLAS 0.3.21 on CPUs newer than it knows falls back to "Prescott", SSE3 only). It names
// the OPENBLAS_CORETYPE override that fits the CPU and the docs section; nullopt when all is well
// or the core is unknown. Pure, so tests can feed it a simulated probe.
std::optional<std::string> generic_blas_core_warning(const BlasInfo& blas, const CpuFeatures& cpu);

struct TorchParallelism {
  std::string backend;       // LibTorch's intra-op parallel backend: "OpenMP", "native" or "TBB"
  int intra_op_threads = 1;  // at::get_num_threads()
};

TorchParallelism probe_torch_parallelism();

// The probes as one line, for logs and benchmark output, e.g. "BLAS OpenBLAS 0.3.21, core Haswell,
// 1 thread (OpenMP); LibTorch OpenMP backend, 1 intra-op thread; CPU AMD EPYC (AVX2, AVX-512)".
std::string compute_setup_summary(const BlasInfo& blas, const TorchParallelism& torch, const CpuFeatures& cpu);

// The summary of this process as it is now (LibTorch's current intra-op thread count included).
std::string compute_setup_line();

// Logs compute_setup_line() at INFO and, on rank 0 only, the generic-core warning at WARN: with
// several ranks on one machine every rank would print the same warning.
void log_compute_setup(int rank);

}  // namespace grpo
