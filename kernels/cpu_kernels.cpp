#include "kernels/cpu_kernels.h"

#include "core/cpu_info.h"

namespace grpo {

bool avx512_kernels_supported() {
  static const bool supported = probe_cpu_features().avx512;
  return supported;
}

bool runs_on_cpu_kernels(const at::Tensor& t) {
  return t.is_cpu() && t.scalar_type() == at::kFloat && avx512_kernels_supported();
}

}  // namespace grpo
