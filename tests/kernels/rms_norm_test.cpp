// rms_norm (the kernel on float32 CPU tensors where the CPU has AVX-512F) against its ATen
// expression evaluated in float64: values and gradients w.r.t. x and the weight, for widths that
// end mid-vector and batched inputs; and a row's result alone equals the same row in a batch.

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/autograd.h>

#include "kernels/cpu_kernels.h"
#include "kernels/rms_norm.h"

namespace grpo {
namespace {

double max_abs_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

struct Result {
  at::Tensor y, dx, dw;
};

Result run(const at::Tensor& x0, const at::Tensor& w0, const at::Tensor& upstream, bool reference, at::ScalarType type) {
  at::Tensor x = x0.to(type).clone().requires_grad_(true), w = w0.to(type).clone().requires_grad_(true);
  const at::Tensor y = reference ? rms_norm_reference(x, w, 1e-6) : rms_norm(x, w, 1e-6);
  (y * upstream.to(type)).sum().backward();
  return {y.detach(), x.grad(), w.grad()};
}

TEST(RmsNorm, ValuesAndGradientsEqualTheExpressionInFloat64) {
  if (!avx512_kernels_supported()) GTEST_SKIP() << "no AVX-512F: rms_norm is the ATen expression here";
  at::manual_seed(7);
  for (const std::vector<int64_t>& shape : std::vector<std::vector<int64_t>>{{1, 5}, {3, 16}, {7, 20}, {2, 5, 33}, {65, 256}}) {
    const at::Tensor x = at::randn(shape) * 3, w = at::randn({shape.back()}), upstream = at::randn(shape);
    const Result got = run(x, w, upstream, false, at::kFloat), truth = run(x, w, upstream, true, at::kDouble);
    std::string name;
    for (const int64_t size : shape) name += std::to_string(size) + " ";
    EXPECT_LE(max_abs_diff(got.y, truth.y), 2e-5) << name;
    EXPECT_LE(max_abs_diff(got.dx, truth.dx), 2e-5) << name;
    EXPECT_LE(max_abs_diff(got.dw, truth.dw) / (1 + truth.dw.abs().max().item<double>()), 2e-5) << name;
  }
}

TEST(RmsNorm, ARowAloneEqualsTheSameRowInABatch) {
  at::manual_seed(8);
  const at::Tensor x = at::randn({9, 40}), w = at::randn({40});
  const at::Tensor batch = rms_norm(x, w, 1e-6);
  for (int64_t row = 0; row < 9; ++row)
    EXPECT_TRUE(at::equal(rms_norm(x.narrow(0, row, 1), w, 1e-6), batch.narrow(0, row, 1))) << row;
}

TEST(RmsNorm, OtherDtypesTakeTheExpression) {
  at::manual_seed(9);
  const at::Tensor x = at::randn({4, 24}, at::kDouble), w = at::randn({24}, at::kDouble);
  EXPECT_TRUE(at::equal(rms_norm(x, w, 1e-6), rms_norm_reference(x, w, 1e-6)));
}

}  // namespace
}  // namespace grpo
