// kernels/cuda's kernels, compiled as C++ against the CPU emulation of CUDA
// (tests/kernels/cuda_emulation.h) and launched through their own launch functions on CPU memory,
// against the references the GPU test uses (tests/gpu/kernels_cuda_test.cpp): the ATen expressions
// in float64, decode_attention_reference, log_softmax and autograd, and the CPU sampling kernel.
// It checks the kernels' logic in CI, float32 and bfloat16; the GPU test checks them on a GPU.

#include <cmath>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/autograd.h>

#define cuda_kernels cuda_emulated
#include "kernels/cuda/launch.h"
#undef cuda_kernels

#include "kernels/cpu_kernels.h"
#include "kernels/decode_attention.h"
#include "kernels/rms_norm.h"
#include "kernels/rotary.h"
#include "kernels/swiglu.h"
#include "kernels/token_sampling.h"

namespace grpo {
namespace {

namespace emulated = cuda_emulated;

emulated::Dtype dtype_of(at::ScalarType type) {
  return type == at::kFloat ? emulated::Dtype::kFloat32 : emulated::Dtype::kBFloat16;
}

double max_abs_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

double relative_diff(const at::Tensor& got, const at::Tensor& truth) {
  return max_abs_diff(got, truth) / (1.0 + truth.to(at::kDouble).abs().max().item<double>());
}

double tolerance(at::ScalarType type) { return type == at::kFloat ? 2e-5 : 1.5e-2; }

// Values and input gradients of an ATen expression in float64.
template <typename Op>
std::vector<at::Tensor> float64_truth(Op op, const std::vector<at::Tensor>& inputs, const at::Tensor& upstream) {
  std::vector<at::Tensor> leaves;
  for (const auto& input : inputs) leaves.push_back(input.to(at::kDouble).requires_grad_(true));
  const at::Tensor y = op(leaves);
  (y * upstream.to(at::kDouble)).sum().backward();
  std::vector<at::Tensor> out{y.detach()};
  for (const auto& leaf : leaves) out.push_back(leaf.grad());
  return out;
}

TEST(CudaEmulation, RmsNormEqualsTheExpressionInFloat64) {
  at::manual_seed(1);
  for (const auto type : {at::kFloat, at::kBFloat16})
    for (const std::vector<int64_t>& shape : std::vector<std::vector<int64_t>>{{1, 5}, {7, 300}, {70, 33}}) {
      const int64_t rows = shape[0], width = shape[1];
      const at::Tensor x = (at::randn(shape) * 3).to(type), w = at::randn({width}).to(type), up = at::randn(shape).to(type);
      at::Tensor y = at::empty_like(x), inverse_rms = at::empty({rows}), dx = at::empty_like(x);
      at::Tensor partials = at::empty({(rows + emulated::kRmsNormRowsPerPartial - 1) / emulated::kRmsNormRowsPerPartial, width});
      ASSERT_EQ(emulated::rms_norm_forward(dtype_of(type), x.data_ptr(), w.data_ptr(), y.data_ptr(),
                                           inverse_rms.data_ptr<float>(), rows, width, 1e-6f, nullptr),
                0);
      ASSERT_EQ(emulated::rms_norm_backward(dtype_of(type), x.data_ptr(), w.data_ptr(), up.data_ptr(),
                                            inverse_rms.data_ptr<float>(), dx.data_ptr(), partials.data_ptr<float>(),
                                            rows, width, nullptr),
                0);
      const auto truth = float64_truth([](auto& t) { return rms_norm_reference(t[0], t[1], 1e-6); }, {x, w}, up);
      const std::string name = std::string(c10::toString(type)) + " " + std::to_string(rows) + "x" + std::to_string(width);
      EXPECT_LE(relative_diff(y, truth[0]), tolerance(type)) << name;
      EXPECT_LE(relative_diff(dx, truth[1]), tolerance(type)) << name;
      EXPECT_LE(relative_diff(partials.sum(0), truth[2]), tolerance(type)) << name;
    }
}

TEST(CudaEmulation, SwigluEqualsTheExpressionInFloat64) {
  at::manual_seed(2);
  for (const auto type : {at::kFloat, at::kBFloat16}) {
    const int64_t rows = 9, width = 40;
    // gate and up as the halves of one product's rows, read in place through their row stride
    const at::Tensor both = (at::randn({rows, 2 * width}) * 3).to(type), up = at::randn({rows, width}).to(type);
    const at::Tensor gate = both.narrow(1, 0, width), value = both.narrow(1, width, width);
    at::Tensor out = at::empty({rows, width}, type), d_gate = at::empty({rows, width}, type), d_up = at::empty({rows, width}, type);
    ASSERT_EQ(emulated::swiglu_forward(dtype_of(type), gate.data_ptr(), both.stride(0), value.data_ptr(), both.stride(0),
                                       out.data_ptr(), rows, width, nullptr),
              0);
    ASSERT_EQ(emulated::swiglu_backward(dtype_of(type), gate.data_ptr(), both.stride(0), value.data_ptr(), both.stride(0),
                                        up.contiguous().data_ptr(), d_gate.data_ptr(), d_up.data_ptr(), rows, width,
                                        nullptr),
              0);
    const auto truth = float64_truth([](auto& t) { return swiglu_reference(t[0], t[1]); }, {gate, value}, up);
    EXPECT_LE(relative_diff(out, truth[0]), tolerance(type)) << c10::toString(type);
    EXPECT_LE(relative_diff(d_gate, truth[1]), tolerance(type)) << c10::toString(type);
    EXPECT_LE(relative_diff(d_up, truth[2]), tolerance(type)) << c10::toString(type);
  }
}

TEST(CudaEmulation, RotaryEqualsTheExpression) {
  at::manual_seed(3);
  for (const auto type : {at::kFloat, at::kBFloat16}) {
    const int64_t b = 2, heads = 3, length = 5, dim = 16;
    const at::Tensor angles = at::rand({b, length, dim / 2}) * 6;
    const at::Tensor cos = at::cat({angles.cos(), angles.cos()}, -1).to(type), sin = at::cat({angles.sin(), angles.sin()}, -1).to(type);
    // x as the transposed view [B, N, T, D] of [B, T, N, D] the decoder passes
    const at::Tensor storage = at::randn({b, length, heads, dim}).to(type), x = storage.transpose(1, 2);
    const at::Tensor up = at::randn({b, heads, length, dim}).to(type);
    const emulated::RotaryShape shape{b, heads, length, dim, x.stride(0), x.stride(1), x.stride(2)};
    at::Tensor y = at::empty({b, heads, length, dim}, type), dx = at::empty({b, heads, length, dim}, type);
    ASSERT_EQ(emulated::rotary(dtype_of(type), x.data_ptr(), shape, cos.data_ptr(), sin.data_ptr(), y.data_ptr(), false, nullptr), 0);
    const emulated::RotaryShape contiguous{b, heads, length, dim, heads * length * dim, length * dim, dim};
    ASSERT_EQ(emulated::rotary(dtype_of(type), up.data_ptr(), contiguous, cos.data_ptr(), sin.data_ptr(), dx.data_ptr(), true,
                               nullptr),
              0);
    const auto truth = float64_truth(
        [&](auto& t) { return rotary_embedding_reference(t[0], cos.to(at::kDouble), sin.to(at::kDouble)); }, {x}, up);
    EXPECT_LE(relative_diff(y, truth[0]), tolerance(type)) << c10::toString(type);
    EXPECT_LE(relative_diff(dx, truth[1]), tolerance(type)) << c10::toString(type);
    if (type == at::kFloat) {
      EXPECT_TRUE(at::equal(y, rotary_embedding_reference(x, cos, sin)));  // the expression's bits
    }
  }
}

TEST(CudaEmulation, DecodeAttentionEqualsTheReference) {
  at::manual_seed(4);
  struct Case {
    int64_t rows, heads, kv, own, prefix, dim;
    bool with_prefix;
  };
  for (const auto type : {at::kFloat, at::kBFloat16})
    for (const Case& c : {Case{3, 4, 2, 33, 0, 64, false}, Case{4, 6, 2, 19, 12, 32, true}, Case{1, 2, 1, 700, 0, 40, false},
                          Case{2, 2, 2, 150, 400, 16, true}}) {
      const int64_t groups = 2;
      DecodeKeys k;
      // The rows' own slots as a slice of a longer cache, as KvCache keeps them
      k.keys = at::randn({c.rows, c.kv, c.own + 5, c.dim}).to(type).narrow(2, 0, c.own);
      k.values = at::randn({c.rows, c.kv, c.own + 5, c.dim}).to(type).narrow(2, 0, c.own);
      k.mask = at::rand({c.rows, c.own}) > 0.2;
      if (!c.with_prefix) k.mask[c.rows - 1].fill_(false);  // a row that sees nothing gets zeros
      if (c.with_prefix) {
        k.prefix_keys = at::randn({groups, c.kv, c.prefix, c.dim}).to(type);
        k.prefix_values = at::randn({groups, c.kv, c.prefix, c.dim}).to(type);
        k.prefix_mask = at::rand({groups, c.prefix}) > 0.1;
        k.prefix_row = at::arange(c.rows) % groups;
      }
      const at::Tensor q = at::randn({c.rows, c.heads, c.dim}).to(type);
      const double scale = 1.0 / std::sqrt(static_cast<double>(c.dim));
      const emulated::DecodeAttentionShape shape{
          c.rows, c.heads, c.kv, c.dim, q.stride(0), q.stride(1), c.own,
          k.keys.stride(0), k.keys.stride(1), k.keys.stride(2), k.values.stride(0), k.values.stride(1), k.values.stride(2),
          k.mask.stride(0),
          c.with_prefix ? c.prefix : 0, c.with_prefix ? groups : 0,
          c.with_prefix ? k.prefix_keys.stride(0) : 0, c.with_prefix ? k.prefix_keys.stride(1) : 0,
          c.with_prefix ? k.prefix_keys.stride(2) : 0, c.with_prefix ? k.prefix_values.stride(0) : 0,
          c.with_prefix ? k.prefix_values.stride(1) : 0, c.with_prefix ? k.prefix_values.stride(2) : 0,
          c.with_prefix ? k.prefix_mask.stride(0) : 0};
      const int splits = emulated::decode_attention_splits(shape, emulated::multiprocessor_count(0));
      at::Tensor workspace = at::empty({std::max<int64_t>(1, emulated::decode_attention_workspace_floats(shape, splits))});
      at::Tensor out = at::empty({c.rows, c.heads, c.dim}, type);
      const emulated::DecodeAttentionPointers pointers{
          q.data_ptr(), k.keys.data_ptr(), k.values.data_ptr(), k.mask.data_ptr<bool>(),
          c.with_prefix ? k.prefix_keys.data_ptr() : nullptr, c.with_prefix ? k.prefix_values.data_ptr() : nullptr,
          c.with_prefix ? k.prefix_mask.data_ptr<bool>() : nullptr,
          c.with_prefix ? k.prefix_row.data_ptr<int64_t>() : nullptr, out.data_ptr()};
      ASSERT_EQ(emulated::decode_attention(dtype_of(type), pointers, shape, static_cast<float>(scale), splits,
                                           workspace.data_ptr<float>(), nullptr),
                0);
      DecodeKeys k64 = k;
      for (at::Tensor* t : {&k64.keys, &k64.values, &k64.prefix_keys, &k64.prefix_values})
        if (t->defined()) *t = t->to(at::kDouble);
      const std::string name = std::string(c10::toString(type)) + " slots " + std::to_string(c.own) + " + prefix " +
                               std::to_string(c.prefix) + ", " + std::to_string(splits) + " splits";
      EXPECT_LE(relative_diff(out, decode_attention_reference(q.to(at::kDouble), k64, scale)), tolerance(type)) << name;
      if (!c.with_prefix) {
        EXPECT_EQ(out[c.rows - 1].abs().max().item<float>(), 0.0f) << name;
      }
    }
  // The long cases split their slots into ranges (a few rows cannot fill 132 multiprocessors).
  emulated::DecodeAttentionShape few_rows{};
  few_rows.batch = 1;
  few_rows.heads = 2;
  few_rows.kv_heads = 1;
  few_rows.dim = 40;
  few_rows.slots = 700;
  EXPECT_GT(emulated::decode_attention_splits(few_rows, emulated::multiprocessor_count(0)), 1);
}

TEST(CudaEmulation, TokenStatisticsAndLogitGradientsEqualFloat64) {
  at::manual_seed(6);
  for (const auto type : {at::kFloat, at::kBFloat16})
    for (const double temperature : {1.0, 0.7}) {
      const int64_t rows = 4, vocab = 3001;
      const at::Tensor logits = (at::randn({rows, vocab}) * 4).to(type);
      const at::Tensor targets = at::randint(0, vocab, {rows}, at::kLong);
      const at::Tensor lse = at::empty({rows}), logprobs = at::empty({rows}), entropy = at::empty({rows});
      ASSERT_EQ(emulated::token_statistics(dtype_of(type), logits.data_ptr(), rows, vocab, static_cast<float>(temperature),
                                           targets.data_ptr<int64_t>(), lse.data_ptr<float>(), logprobs.data_ptr<float>(),
                                           entropy.data_ptr<float>(), nullptr),
                0);
      const at::Tensor y = logits.to(at::kDouble) / temperature, logp = at::log_softmax(y, -1);
      const std::string name = std::string(c10::toString(type)) + " T " + std::to_string(temperature);
      EXPECT_LE(relative_diff(lse, at::logsumexp(y, {-1})), 2e-6) << name;
      EXPECT_LE(max_abs_diff(logprobs, logp.gather(1, targets.unsqueeze(1)).squeeze(1)), 2e-5) << name;
      EXPECT_LE(max_abs_diff(entropy, -(logp.exp() * logp).sum(-1)), 2e-5) << name;

      const at::Tensor g = at::randn({rows}), g_entropy = at::randn({rows});
      for (const bool with_entropy : {true, false}) {
        at::Tensor leaf = logits.to(at::kDouble).requires_grad_(true);
        const at::Tensor lp = at::log_softmax(leaf / temperature, -1);
        at::Tensor objective = (lp.gather(1, targets.unsqueeze(1)).squeeze(1) * g.to(at::kDouble)).sum();
        if (with_entropy) objective = objective - ((lp.exp() * lp).sum(-1) * g_entropy.to(at::kDouble)).sum();
        objective.backward();
        at::Tensor dz = at::empty({rows, vocab});
        ASSERT_EQ(emulated::token_logit_gradients(dtype_of(type), logits.data_ptr(), rows, vocab,
                                                  static_cast<float>(temperature), targets.data_ptr<int64_t>(),
                                                  lse.data_ptr<float>(), entropy.data_ptr<float>(), g.data_ptr<float>(),
                                                  with_entropy ? g_entropy.data_ptr<float>() : nullptr,
                                                  dz.data_ptr<float>(), nullptr),
                  0);
        EXPECT_LE(max_abs_diff(dz, leaf.grad()), 2e-5) << name << (with_entropy ? " with" : " without") << " entropy";
      }
    }
}

TEST(CudaEmulation, DrawTokensDrawsTheCpuKernelsTokens) {
  if (!avx512_kernels_supported()) GTEST_SKIP() << "the CPU kernel, the truth here, needs AVX-512F";
  at::manual_seed(5);
  struct Case {
    int64_t rows, vocab;
    double temperature, top_p, min_p;
  };
  for (const auto type : {at::kFloat, at::kBFloat16})
    for (const Case& c : {Case{3, 151936, 1.0, 0.95, 0.0}, Case{8, 5000, 1.0, 1.0, 0.0}, Case{8, 5000, 0.7, 0.9, 0.05},
                          Case{16, 1000, 1.3, 0.5, 0.0}, Case{8, 37, 1.0, 0.8, 0.1}}) {
      // Peaked rows (a few large logits) and flat ones, as a model's are.
      const at::Tensor logits = (at::randn({c.rows, c.vocab}) * 2 + (at::rand({c.rows, c.vocab}) > 0.999) * 8).to(type);
      const at::Tensor uniforms = at::rand({c.rows}, at::kDouble);
      at::Tensor tokens = at::empty({c.rows}, at::kLong), logprobs = at::empty({c.rows});
      ASSERT_EQ(emulated::draw_tokens(dtype_of(type), logits.data_ptr(), c.rows, c.vocab, static_cast<float>(c.temperature),
                                      c.top_p, c.min_p, uniforms.data_ptr<double>(), tokens.data_ptr<int64_t>(),
                                      logprobs.data_ptr<float>(), nullptr),
                0);
      const TokenDraw truth = draw_tokens(logits.to(at::kFloat), c.temperature, c.top_p, c.min_p, uniforms);
      const std::string name = std::string(c10::toString(type)) + " V " + std::to_string(c.vocab) + " T " +
                               std::to_string(c.temperature) + " top_p " + std::to_string(c.top_p);
      EXPECT_TRUE(at::equal(tokens, truth.tokens)) << name << "\n" << tokens << "\n" << truth.tokens;
      EXPECT_LE(max_abs_diff(logprobs, truth.logprobs), 2e-5) << name;
    }
}

}  // namespace
}  // namespace grpo
