// swiglu (the kernel on float32 CPU tensors where the CPU has AVX-512F) against silu(gate) * up
// evaluated in float64: values and gradients, widths that end mid-vector, inputs that are slices
// of one wider row (gate|up from one product), and large gate values of either sign.

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/autograd.h>

#include "kernels/cpu_kernels.h"
#include "kernels/swiglu.h"

namespace grpo {
namespace {

double max_abs_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

TEST(Swiglu, ValuesAndGradientsEqualTheExpressionInFloat64) {
  if (!avx512_kernels_supported()) GTEST_SKIP() << "no AVX-512F: swiglu is the ATen expression here";
  at::manual_seed(12);
  for (const int64_t width : {1, 15, 16, 17, 100, 688}) {
    // gate|up as one [3, 4, 2 * width] product, sliced as the decoder's inference path does
    const at::Tensor both = at::randn({3, 4, 2 * width}) * 4;
    both.view({-1})[0] = 95.0;   // exp(-g) underflows
    both.view({-1})[1] = -95.0;  // exp(-g) overflows
    const at::Tensor upstream = at::randn({3, 4, width});
    at::Tensor fused = both.clone().requires_grad_(true), truth = both.to(at::kDouble).requires_grad_(true);
    const at::Tensor y = swiglu(fused.narrow(-1, 0, width), fused.narrow(-1, width, width));
    const at::Tensor want = swiglu_reference(truth.narrow(-1, 0, width), truth.narrow(-1, width, width));
    (y * upstream).sum().backward();
    (want * upstream.to(at::kDouble)).sum().backward();
    EXPECT_TRUE(y.is_contiguous());
    EXPECT_LE(max_abs_diff(y, want) / (1 + want.abs().max().item<double>()), 2e-6) << width;
    EXPECT_LE(max_abs_diff(fused.grad(), truth.grad()) / (1 + truth.grad().abs().max().item<double>()), 2e-6) << width;
  }
}

TEST(Swiglu, OtherDtypesTakeTheExpression) {
  at::manual_seed(13);
  const at::Tensor g = at::randn({4, 24}, at::kDouble), u = at::randn({4, 24}, at::kDouble);
  EXPECT_TRUE(at::equal(swiglu(g, u), swiglu_reference(g, u)));
}

}  // namespace
}  // namespace grpo
