// rotary_embedding (the kernel on float32 CPU tensors where the CPU has AVX-512F) against its
// ATen expression: the same bits forward and backward (the kernel rounds each product and sum as
// the expression does), on the decoder's layout (heads as a transposed view of the projection),
// head dimensions that end mid-vector, and a result laid out contiguously.

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/autograd.h>

#include "kernels/cpu_kernels.h"
#include "kernels/rotary.h"

namespace grpo {
namespace {

TEST(Rotary, ValuesAndGradientsHaveTheExpressionsBits) {
  if (!avx512_kernels_supported()) GTEST_SKIP() << "no AVX-512F: rotary_embedding is the ATen expression here";
  at::manual_seed(14);
  const int64_t b = 3, t = 7, heads = 5;
  for (const int64_t dim : {2, 8, 40, 64}) {
    const at::Tensor angles = at::randn({b, t, dim / 2}) * 10;
    const at::Tensor cos = at::cat({angles, angles}, -1).cos(), sin = at::cat({angles, angles}, -1).sin();
    const at::Tensor projected = at::randn({b, t, heads * dim});
    const at::Tensor upstream = at::randn({b, heads, t, dim});
    at::Tensor x1 = projected.clone().requires_grad_(true), x2 = projected.clone().requires_grad_(true);
    const at::Tensor y = rotary_embedding(x1.view({b, t, heads, dim}).transpose(1, 2), cos, sin);
    const at::Tensor want = rotary_embedding_reference(x2.view({b, t, heads, dim}).transpose(1, 2), cos, sin);
    (y * upstream).sum().backward();
    (want * upstream).sum().backward();
    EXPECT_TRUE(y.is_contiguous());
    EXPECT_TRUE(at::equal(y, want)) << dim;
    EXPECT_TRUE(at::equal(x1.grad(), x2.grad())) << dim;
  }
}

TEST(Rotary, OtherDtypesTakeTheExpression) {
  at::manual_seed(15);
  const at::Tensor x = at::randn({1, 2, 3, 4}, at::kDouble), c = at::randn({1, 3, 4}, at::kDouble);
  EXPECT_TRUE(at::equal(rotary_embedding(x, c, c), rotary_embedding_reference(x, c, c)));
}

}  // namespace
}  // namespace grpo
