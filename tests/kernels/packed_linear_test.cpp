// PackedLinear against at::linear computed in float64 (the truth), over row counts that fill a
// tile, part of one and several; feature counts that end mid-panel; with and without bias.

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "kernels/cpu_kernels.h"
#include "kernels/packed_linear.h"

namespace grpo {
namespace {

double max_relative_error(const at::Tensor& got, const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
  const at::Tensor truth = at::linear(x.to(at::kDouble), w.to(at::kDouble), b.defined() ? b.to(at::kDouble) : b);
  // Relative to the size of the sum's terms, not of the result (which may cancel to ~0).
  const at::Tensor scale =
      at::linear(x.abs().to(at::kDouble), w.abs().to(at::kDouble), b.defined() ? b.abs().to(at::kDouble) : b) + 1e-30;
  return ((got.to(at::kDouble) - truth).abs() / scale).max().item<double>();
}

TEST(PackedLinear, EqualsLinearForEveryTileAndPanelShape) {
  at::manual_seed(3);
  for (const int64_t m : {1, 3, 8, 13, 64})
    for (const int64_t k : {1, 17, 256})
      for (const int64_t n : {1, 31, 32, 33, 100})
        for (const bool with_bias : {false, true}) {
          const at::Tensor x = at::randn({m, k}), w = at::randn({n, k});
          const at::Tensor b = with_bias ? at::randn({n}) : at::Tensor();
          const PackedLinear linear(w, b);
          const at::Tensor y = linear(x);
          ASSERT_EQ(y.sizes(), (std::vector<int64_t>{m, n}));
          EXPECT_LE(max_relative_error(y, x, w, b), 1e-5) << m << "x" << k << "x" << n << " bias " << with_bias;
        }
}

TEST(PackedLinear, KeepsLeadingDimensionsAndReadsStridedInput) {
  at::manual_seed(4);
  const at::Tensor w = at::randn({40, 24}), b = at::randn({40});
  const at::Tensor x = at::randn({3, 5, 48}).narrow(2, 8, 24);  // not contiguous
  const at::Tensor y = PackedLinear(w, b)(x);
  ASSERT_EQ(y.sizes(), (std::vector<int64_t>{3, 5, 40}));
  EXPECT_LE(max_relative_error(y.reshape({15, 40}), x.reshape({15, 24}), w, b), 1e-5);
}

TEST(PackedLinear, HoldsACopyOfTheWeights) {
  at::manual_seed(5);
  at::Tensor w = at::randn({32, 16});
  const at::Tensor x = at::randn({2, 16});
  const PackedLinear linear(w, {});
  const at::Tensor before = linear(x);
  w.mul_(2);
  EXPECT_TRUE(at::equal(linear(x), before));
}

TEST(PackedLinear, OtherDtypesTakeTheReferencePath) {
  at::manual_seed(6);
  const at::Tensor w = at::randn({33, 20}), b = at::randn({33});
  const at::Tensor x = at::randn({4, 20});
  const PackedLinear linear(w, b);
  const at::Tensor y = linear(x.to(at::kDouble));
  EXPECT_EQ(y.scalar_type(), at::kDouble);
  EXPECT_LE(max_relative_error(y, x, w, b), 1e-6);
  const PackedLinear bf16(w.to(at::kBFloat16), b.to(at::kBFloat16));
  EXPECT_FALSE(bf16.packed());
  EXPECT_LE((bf16(x.to(at::kBFloat16)).to(at::kFloat) - at::linear(x, w, b)).abs().max().item<double>(), 0.5);
}

TEST(PackedLinear, PacksFloat32WhereTheCpuHasAvx512) {
  const PackedLinear linear(at::randn({8, 8}), {});
  EXPECT_EQ(linear.packed(), avx512_kernels_supported());
  if (!avx512_kernels_supported()) GTEST_SKIP() << "this CPU has no AVX-512F: the kernel itself did not run";
}

}  // namespace
}  // namespace grpo
