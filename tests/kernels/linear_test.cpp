// linear (the packed product tile on float32 CPU tensors where the CPU has AVX-512F) against
// at::linear evaluated in float64: values and the gradients w.r.t. x, the weight and the bias, over
// row counts on both of multiply_packed's schedules (panel tasks below 128 rows, row blocks above)
// and feature counts that end mid-panel; and the invariants the header promises: a row alone equals
// the same row in a batch, and the thread count changes no bit of y, dx or dW.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <gtest/gtest.h>
#include <torch/autograd.h>

#include <string>
#include <vector>

#include "kernels/cpu_kernels.h"
#include "kernels/linear.h"

namespace grpo {
namespace {

struct Result {
  at::Tensor y, dx, dw, db;
};

Result run(const at::Tensor& x0, const at::Tensor& w0, const at::Tensor& b0, const at::Tensor& upstream, bool reference,
           at::ScalarType type) {
  at::Tensor x = x0.to(type).clone().requires_grad_(true), w = w0.to(type).clone().requires_grad_(true);
  at::Tensor b = b0.defined() ? b0.to(type).clone().requires_grad_(true) : at::Tensor();
  const at::Tensor y = reference ? linear_reference(x, w, b) : linear(x, w, b);
  (y * upstream.to(type)).sum().backward();
  return {y.detach(), x.grad(), w.grad(), b.defined() ? b.grad() : at::Tensor()};
}

// |got - truth| relative to the size of the sum's terms (|a| |b|), not of the result, which may cancel.
double relative_error(const at::Tensor& got, const at::Tensor& truth, const at::Tensor& term_scale) {
  return ((got.to(at::kDouble) - truth).abs() / (term_scale + 1e-30)).max().item<double>();
}

TEST(Linear, ValuesAndGradientsEqualTheExpressionInFloat64) {
  if (!avx512_kernels_supported()) GTEST_SKIP() << "no AVX-512F: linear is at::linear here";
  at::manual_seed(11);
  for (const std::vector<int64_t>& rows : std::vector<std::vector<int64_t>>{{1}, {7}, {2, 4}, {129}, {3, 100}})
    for (const int64_t k : {1, 17, 256})
      for (const int64_t n : {1, 33, 100})
        for (const bool with_bias : {false, true}) {
          std::vector<int64_t> x_shape = rows, y_shape = rows;
          x_shape.push_back(k);
          y_shape.push_back(n);
          const at::Tensor x = at::randn(x_shape), w = at::randn({n, k}), upstream = at::randn(y_shape);
          const at::Tensor b = with_bias ? at::randn({n}) : at::Tensor();
          const Result got = run(x, w, b, upstream, false, at::kFloat), truth = run(x, w, b, upstream, true, at::kDouble);
          const Result scale = run(x.abs(), w.abs(), with_bias ? b.abs() : b, upstream.abs(), true, at::kDouble);
          std::string name = std::to_string(x.numel() / k) + "x" + std::to_string(k) + "x" + std::to_string(n) +
                             (with_bias ? " bias" : "");
          ASSERT_EQ(got.y.sizes(), truth.y.sizes()) << name;
          EXPECT_LE(relative_error(got.y, truth.y, scale.y), 1e-5) << name;
          EXPECT_LE(relative_error(got.dx, truth.dx, scale.dx), 1e-5) << name;
          EXPECT_LE(relative_error(got.dw, truth.dw, scale.dw), 1e-5) << name;
          if (with_bias) {
            EXPECT_LE(relative_error(got.db, truth.db, scale.db), 1e-5) << name;
          }
        }
}

TEST(Linear, ARowAloneEqualsTheSameRowInABatch) {
  at::manual_seed(12);
  const at::Tensor x = at::randn({300, 72}), w = at::randn({40, 72}), b = at::randn({40});
  const at::Tensor batch = linear(x, w, b);  // row blocks
  for (const int64_t row : {0, 7, 8, 150, 299})
    EXPECT_TRUE(at::equal(linear(x.narrow(0, row, 1), w, b), batch.narrow(0, row, 1))) << row;  // panel tasks
}

TEST(Linear, ThreadCountDoesNotChangeValuesOrGradients) {
  at::manual_seed(13);
  const at::Tensor x = at::randn({520, 96}), w = at::randn({200, 96}), b = at::randn({200}), upstream = at::randn({520, 200});
  const int threads = at::get_num_threads();
  at::set_num_threads(1);
  const Result one = run(x, w, b, upstream, false, at::kFloat);
  at::set_num_threads(2);
  const Result two = run(x, w, b, upstream, false, at::kFloat);
  at::set_num_threads(threads);
  EXPECT_TRUE(at::equal(one.y, two.y));
  EXPECT_TRUE(at::equal(one.dx, two.dx));
  EXPECT_TRUE(at::equal(one.dw, two.dw));
}

TEST(Linear, StridedInputAndNoGradientEqualTheGraphPath) {
  at::manual_seed(14);
  const at::Tensor w = at::randn({40, 24}).requires_grad_(), b = at::randn({40});
  const at::Tensor x = at::randn({3, 50, 48}).narrow(2, 8, 24);  // rows not contiguous
  const at::Tensor with_graph = linear(x, w, b);
  ASSERT_TRUE(with_graph.requires_grad());
  at::Tensor without_graph;
  {
    at::NoGradGuard no_grad;
    without_graph = linear(x, w, b);
  }
  EXPECT_FALSE(without_graph.requires_grad());
  EXPECT_EQ(with_graph.sizes(), (std::vector<int64_t>{3, 50, 40}));
  EXPECT_TRUE(at::equal(with_graph.detach(), without_graph));
  EXPECT_TRUE(at::allclose(without_graph, at::linear(x, w.detach(), b), 1e-5, 1e-5));
}

TEST(Linear, OtherDtypesTakeTheExpression) {
  at::manual_seed(15);
  const at::Tensor x = at::randn({4, 24}, at::kDouble), w = at::randn({8, 24}, at::kDouble), b = at::randn({8}, at::kDouble);
  EXPECT_TRUE(at::equal(linear(x, w, b), linear_reference(x, w, b)));
}

}  // namespace
}  // namespace grpo
