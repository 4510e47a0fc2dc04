// The generic-BLAS-core warning, fed simulated probes: the CPU of the CI kind where Debian's
// OpenBLAS 0.3.21 fell back to Prescott (Intel family 6 model 207, AVX-512), and the cases that
// must stay quiet. The real probes are checked end to end in tests/launch/cli_test.cpp.

#include "core/cpu_info.h"

#include <gtest/gtest.h>

#include <string>

namespace grpo {
namespace {

BlasInfo openblas_with_core(const std::string& core) {
  BlasInfo blas;
  blas.library = "OpenBLAS";
  blas.config = "OpenBLAS 0.3.21 NO_LAPACKE DYNAMIC_ARCH NO_AFFINITY USE_OPENMP " + core + " MAX_THREADS=64";
  blas.core = core;
  blas.threading = "OpenMP";
  blas.threads = 1;
  return blas;
}

CpuFeatures cpu_with(bool avx2, bool avx512) { return CpuFeatures{"Intel(R) Xeon(R) Processor", avx2, avx512}; }

bool has(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

TEST(GenericBlasCoreWarning, PrescottOnAnAvx512CpuNamesTheSkylakeXOverrideAndTheDocs) {
  const auto warning = generic_blas_core_warning(openblas_with_core("Prescott"), cpu_with(true, true));
  ASSERT_TRUE(warning.has_value());
  EXPECT_TRUE(has(*warning, "OPENBLAS_CORETYPE=SkylakeX")) << *warning;
  EXPECT_TRUE(has(*warning, "'Prescott'")) << *warning;
  EXPECT_TRUE(has(*warning, "OpenBLAS 0.3.21")) << *warning;
  EXPECT_TRUE(has(*warning, "AVX-512")) << *warning;
  EXPECT_TRUE(has(*warning, "docs/performance.md, \"CPU set-up\"")) << *warning;
}

TEST(GenericBlasCoreWarning, OnAnAvx2OnlyCpuTheOverrideIsHaswell) {
  // Sandybridge kernels stop at AVX; single-target builds report the core in capitals.
  for (const char* core : {"Sandybridge", "PRESCOTT", "Nehalem"}) {
    const auto warning = generic_blas_core_warning(openblas_with_core(core), cpu_with(true, false));
    ASSERT_TRUE(warning.has_value()) << core;
    EXPECT_TRUE(has(*warning, "OPENBLAS_CORETYPE=Haswell")) << *warning;
    EXPECT_FALSE(has(*warning, "SkylakeX")) << *warning;
  }
}

TEST(GenericBlasCoreWarning, QuietWhenTheCoreFitsTheCpuOrNothingIsKnown) {
  for (const char* core : {"Haswell", "Zen", "SkylakeX", "Cooperlake", "SAPPHIRERAPIDS", "NEOVERSEN1"})
    EXPECT_FALSE(generic_blas_core_warning(openblas_with_core(core), cpu_with(true, true)).has_value()) << core;
  // An old CPU without AVX2 is right to run Prescott kernels.
  EXPECT_FALSE(generic_blas_core_warning(openblas_with_core("Prescott"), cpu_with(false, false)).has_value());
  // Another BLAS (no core reported) is not second-guessed.
  BlasInfo reference;
  reference.library = "reference BLAS (netlib)";
  EXPECT_FALSE(generic_blas_core_warning(reference, cpu_with(true, true)).has_value());
}

TEST(ComputeSetupSummary, NamesLibraryVersionCoreThreadsBackendAndCpu) {
  const std::string line =
      compute_setup_summary(openblas_with_core("Zen"), TorchParallelism{"OpenMP", 2}, CpuFeatures{"AMD EPYC", true, true});
  EXPECT_EQ(line, "BLAS OpenBLAS 0.3.21, core Zen, 1 thread (OpenMP); LibTorch OpenMP backend, 2 intra-op threads; "
                  "CPU AMD EPYC (AVX2, AVX-512)");
}

TEST(ComputeSetupSummary, AnUnknownBlasIsNamedByItsFile) {
  BlasInfo blas;
  blas.library = "unknown";
  blas.provider = "/opt/blas/libfastblas.so";
  const std::string line = compute_setup_summary(blas, TorchParallelism{"native", 1}, CpuFeatures{"unknown", false, false});
  EXPECT_EQ(line, "BLAS unknown from /opt/blas/libfastblas.so; LibTorch native backend, 1 intra-op thread; CPU unknown");
}

}  // namespace
}  // namespace grpo
