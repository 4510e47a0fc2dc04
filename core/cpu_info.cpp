#include "core/cpu_info.h"

#include <dlfcn.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string_view>

#include <ATen/Config.h>
#include <ATen/Parallel.h>
#include <fmt/format.h>

#include "core/logging.h"

namespace grpo {
namespace {

std::string lowercase(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(), [](unsigned char c) { return std::tolower(c); });
  return text;
}

bool contains(const std::string& text, std::string_view part) { return text.find(part) != std::string::npos; }

template <class Function>
Function* find_symbol(const char* name) {
  return reinterpret_cast<Function*>(::dlsym(RTLD_DEFAULT, name));
}

// The file a loaded symbol lives in, with links resolved (Debian's alternatives are links).
std::string object_file_of(const void* symbol) {
  Dl_info info{};
  if (symbol == nullptr || ::dladdr(symbol, &info) == 0 || info.dli_fname == nullptr) return "";
  std::error_code error;
  const auto real = std::filesystem::canonical(info.dli_fname, error);
  return error ? std::string(info.dli_fname) : real.string();
}

std::string cpu_model_name() {
  std::ifstream cpuinfo("/proc/cpuinfo");
  for (std::string line; std::getline(cpuinfo, line);) {
    if (line.rfind("model name", 0) != 0) continue;
    const auto colon = line.find(':');
    if (colon == std::string::npos) break;
    const auto start = line.find_first_not_of(" \t", colon + 1);
    return start == std::string::npos ? "unknown" : line.substr(start);
  }
  return "unknown";
}

// OpenBLAS kernel sets (x86) whose GEMM uses neither AVX2 nor AVX-512. Names as openblas_get_corename
// returns them, lowercased: DYNAMIC_ARCH builds say "Prescott", single-target builds "PRESCOTT".
constexpr std::array<std::string_view, 19> kPreAvx2Cores = {
    "katmai", "coppermine", "northwood", "prescott", "banias", "atom", "core2",    "penryn",     "dunnington", "nehalem",
    "athlon", "opteron",    "opteron_sse3", "barcelona", "nano", "sandybridge", "bobcat", "bulldozer", "piledriver"};

std::string library_with_version(const BlasInfo& blas) {
  // OpenBLAS's config starts "OpenBLAS 0.3.21 ..."; keep the name and version only.
  if (blas.library == "OpenBLAS" && blas.config.rfind("OpenBLAS ", 0) == 0) {
    const auto end = blas.config.find(' ', 9);
    return blas.config.substr(0, end);
  }
  return blas.library;
}

}  // namespace

CpuFeatures probe_cpu_features() {
  CpuFeatures cpu;
  cpu.model_name = cpu_model_name();
#if defined(__x86_64__) || defined(__i386__)
  // GCC's builtins also check (xgetbv) that the OS saves the wide registers.
  __builtin_cpu_init();
  cpu.avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  cpu.avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
#endif
  return cpu;
}

BlasInfo probe_blas() {
  BlasInfo blas;
  // LibTorch calls the Fortran symbol, so whoever defines sgemm_ first is the BLAS in use; another
  // BLAS loaded beside it (e.g. OpenBLAS pulled in by LAPACK) does not count.
  blas.provider = object_file_of(::dlsym(RTLD_DEFAULT, "sgemm_"));
  const std::string provider = lowercase(blas.provider);
  const auto openblas_corename = find_symbol<char*()>("openblas_get_corename");
  if (contains(provider, "openblas") && openblas_corename != nullptr) {
    blas.library = "OpenBLAS";
    blas.core = openblas_corename();
    if (const auto config = find_symbol<char*()>("openblas_get_config")) blas.config = config();
    const auto parallel = find_symbol<int()>("openblas_get_parallel");
    const int mode = parallel ? parallel() : -1;
    blas.threading = mode == 0 ? "sequential" : mode == 1 ? "pthreads" : mode == 2 ? "OpenMP" : "";
    // The OpenMP build re-reads the caller's OpenMP thread count at every call, so that is the
    // number the next GEMM gets; openblas_get_num_threads() may still hold the count of the last one.
    const auto omp_threads = find_symbol<int()>("omp_get_max_threads");
    const auto openblas_threads = find_symbol<int()>("openblas_get_num_threads");
    if (mode == 0) {
      blas.threads = 1;
    } else if (mode == 2 && omp_threads != nullptr) {
      blas.threads = omp_threads();
    } else if (openblas_threads != nullptr) {
      blas.threads = openblas_threads();
    }
  } else if (contains(provider, "mkl")) {
    blas.library = "MKL";
  } else if (contains(provider, "blis")) {
    blas.library = "BLIS";
  } else if (contains(provider, "/blas/libblas")) {
    blas.library = "reference BLAS (netlib)";
    blas.threading = "sequential";
    blas.threads = 1;
  } else {
    blas.library = "unknown";
  }
  return blas;
}

TorchParallelism probe_torch_parallelism() {
  TorchParallelism torch;
#if AT_PARALLEL_OPENMP
  torch.backend = "OpenMP";
#elif AT_PARALLEL_NATIVE_TBB
  torch.backend = "TBB";
#else
  torch.backend = "native";
#endif
  torch.intra_op_threads = at::get_num_threads();
  return torch;
}

std::optional<std::string> generic_blas_core_warning(const BlasInfo& blas, const CpuFeatures& cpu) {
  if (!cpu.avx2 || blas.core.empty()) return std::nullopt;
  const std::string core = lowercase(blas.core);
  if (std::find(kPreAvx2Cores.begin(), kPreAvx2Cores.end(), core) == kPreAvx2Cores.end()) return std::nullopt;
  const char* better = cpu.avx512 ? "SkylakeX" : "Haswell";
  return fmt::format(
      "the BLAS ({}) runs its generic '{}' kernels, which use no AVX2, on a CPU with {}: matrix products run "
      "up to 4x slower. Set OPENBLAS_CORETYPE={} in the environment (see docs/performance.md, \"CPU set-up\")",
      library_with_version(blas), blas.core, cpu.avx512 ? "AVX-512" : "AVX2", better);
}

std::string compute_setup_summary(const BlasInfo& blas, const TorchParallelism& torch, const CpuFeatures& cpu) {
  std::string text = "BLAS " + library_with_version(blas);
  if (!blas.core.empty()) text += ", core " + blas.core;
  if (blas.threads > 0) text += fmt::format(", {} thread{}", blas.threads, blas.threads == 1 ? "" : "s");
  if (!blas.threading.empty()) text += " (" + blas.threading + ")";
  if (blas.library == "unknown" && !blas.provider.empty()) text += " from " + blas.provider;
  text += fmt::format("; LibTorch {} backend, {} intra-op thread{}", torch.backend, torch.intra_op_threads,
                      torch.intra_op_threads == 1 ? "" : "s");
  text += "; CPU " + cpu.model_name;
  if (cpu.avx512) {
    text += " (AVX2, AVX-512)";
  } else if (cpu.avx2) {
    text += " (AVX2)";
  }
  return text;
}

std::string compute_setup_line() {
  return compute_setup_summary(probe_blas(), probe_torch_parallelism(), probe_cpu_features());
}

void log_compute_setup(int rank) {
  const BlasInfo blas = probe_blas();
  const CpuFeatures cpu = probe_cpu_features();
  log_info("{}", compute_setup_summary(blas, probe_torch_parallelism(), cpu));
  if (rank != 0) return;
  if (const auto warning = generic_blas_core_warning(blas, cpu)) log_warn("{}", *warning);
}

}  // namespace grpo
