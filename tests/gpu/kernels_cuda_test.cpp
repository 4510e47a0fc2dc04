// The CUDA kernels of kernels/cuda against their references, per dtype (float32 ~1e-5, bfloat16
// ~1e-2). Each `_cuda` function called directly: values and gradients of rms_norm, swiglu and
// rotary_embedding against the ATen expressions in float64; decode attention against its reference
// with grouped heads, masked slots, a row with no real key, a shared prefix, a cache slice and
// caches long enough to be split into key ranges; token statistics and logit gradients against
// log_softmax and autograd in float64; draw_tokens against the CPU kernel's draws from the same
// logits and uniforms, token for token. Then through the ops' dispatch (GRPO_CUDA_KERNELS=1, set
// before main): token_logprobs, a whole decoder's logits and gradients against float64 on the
// CPU, and sampled generation against the same model on the CPU.
//
// Built twice. kernels_cuda_test (label gpu) runs on a GPU and skips without a CUDA LibTorch, a
// device or a build that compiled the kernels (CI has none of the first two). cuda_emulation_test
// (label unit, GRPO_CUDA_EMULATION) runs the same cases, smaller and less the decoder and
// generation ones, on CPU tensors over the CPU emulation of the same kernel sources
// (tests/kernels/cuda_emulation.h): their logic, in CI.

#include <cmath>
#include <cstdlib>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/autograd.h>
#include <torch/torch.h>

#include "kernels/cpu_kernels.h"
#include "kernels/cuda_kernels.h"
#include "kernels/decode_attention.h"
#include "kernels/rms_norm.h"
#include "kernels/rotary.h"
#include "kernels/swiglu.h"
#include "kernels/token_logprobs.h"
#include "kernels/token_sampling.h"
#ifndef GRPO_CUDA_EMULATION
#include "models/decoder.h"
#include "rollout/engine.h"
#include "tests/support/decoders.h"
#endif

namespace grpo {
namespace {

// The dispatch cases need the ops to choose the kernels; the switch is read once, at the first
// dispatch, so it is set before main.
const bool kKernelsSwitchedOn = [] { return setenv("GRPO_CUDA_KERNELS", "1", 1) == 0; }();

#ifdef GRPO_CUDA_EMULATION
#define SUITE CudaEmulation
#define SKIP_WITHOUT_CUDA_KERNELS() ASSERT_TRUE(cuda_kernels_built())
const at::Device kCuda(at::kCPU);  // the emulation's "device" memory is the CPU's
// A size for the GPU, and the smaller one the emulation (an OS thread per CUDA thread) runs.
constexpr int64_t sized(int64_t gpu, int64_t emulated) { return emulated; }
#else
#define SUITE CudaKernels
#define SKIP_WITHOUT_CUDA_KERNELS()                                                               \
  do {                                                                                            \
    if (!at::hasCUDA()) GTEST_SKIP() << "LibTorch without CUDA, or no CUDA device";               \
    if (!cuda_kernels_built()) GTEST_SKIP() << "built without a CUDA compiler: no kernels/cuda here"; \
  } while (false)
const at::Device kCuda(at::kCUDA, 0);
constexpr int64_t sized(int64_t gpu, int64_t emulated) { return gpu; }
#endif

double max_abs_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kCPU, at::kDouble) - b.to(at::kCPU, at::kDouble)).abs().max().item<double>();
}

// |a - b| relative to the truth's largest magnitude (bfloat16 keeps ~3 significant digits).
double relative_diff(const at::Tensor& got, const at::Tensor& truth) {
  return max_abs_diff(got, truth) / (1.0 + truth.to(at::kDouble).abs().max().item<double>());
}

double tolerance(at::ScalarType type) { return type == at::kFloat ? 2e-5 : 1.5e-2; }

std::string name_of(at::IntArrayRef shape, at::ScalarType type) {
  std::string name = std::string(c10::toString(type)) + " [";
  for (const int64_t size : shape) name += std::to_string(size) + " ";
  return name + "]";
}

// Runs op on inputs converted to `type` on `device` with gradients, returns the output and the
// inputs' gradients for upstream gradient `upstream`.
template <typename Op>
std::vector<at::Tensor> values_and_gradients(Op op, const std::vector<at::Tensor>& inputs, const at::Tensor& upstream,
                                             at::ScalarType type, at::Device device) {
  std::vector<at::Tensor> leaves;
  for (const auto& input : inputs) leaves.push_back(input.to(device, type).clone().requires_grad_(true));
  const at::Tensor y = op(leaves);
  (y * upstream.to(device, type)).sum().backward();
  std::vector<at::Tensor> out{y.detach()};
  for (const auto& leaf : leaves) out.push_back(leaf.grad());
  return out;
}

TEST(SUITE, RmsNormEqualsTheExpressionInFloat64) {
  SKIP_WITHOUT_CUDA_KERNELS();
  at::manual_seed(1);
  for (const auto type : {at::kFloat, at::kBFloat16})
    for (const std::vector<int64_t>& shape :
         std::vector<std::vector<int64_t>>{{1, 5}, {7, 20}, {2, 5, 33}, {sized(130, 70), sized(896, 300)}}) {
      const at::Tensor x = at::randn(shape) * 3, w = at::randn({shape.back()}), up = at::randn(shape);
      const auto got = values_and_gradients([](auto& t) { return rms_norm_cuda(t[0], t[1], 1e-6); }, {x, w}, up, type, kCuda);
      const auto truth = values_and_gradients([](auto& t) { return rms_norm_reference(t[0], t[1], 1e-6); }, {x, w}, up,
                                              at::kDouble, at::kCPU);
      for (size_t i = 0; i < got.size(); ++i)
        EXPECT_LE(relative_diff(got[i], truth[i]), tolerance(type)) << name_of(shape, type) << " output " << i;
    }
}

TEST(SUITE, SwigluEqualsTheExpressionInFloat64) {
  SKIP_WITHOUT_CUDA_KERNELS();
  at::manual_seed(2);
  for (const auto type : {at::kFloat, at::kBFloat16})
    for (const std::vector<int64_t>& shape :
         std::vector<std::vector<int64_t>>{{1, 7}, {9, 40}, {2, 3, sized(4864, 300)}}) {
      const at::Tensor gate = at::randn(shape) * 3, value = at::randn(shape), up = at::randn(shape);
      const auto got = values_and_gradients([](auto& t) { return swiglu_cuda(t[0], t[1]); }, {gate, value}, up, type, kCuda);
      const auto truth = values_and_gradients([](auto& t) { return swiglu_reference(t[0], t[1]); }, {gate, value}, up,
                                              at::kDouble, at::kCPU);
      for (size_t i = 0; i < got.size(); ++i)
        EXPECT_LE(relative_diff(got[i], truth[i]), tolerance(type)) << name_of(shape, type) << " output " << i;
    }
  // gate and up as the two halves of one product's rows (a strided slice, read in place)
  const at::Tensor both = at::randn({6, 2 * 48}).to(kCuda);
  EXPECT_LE(max_abs_diff(swiglu_cuda(both.narrow(1, 0, 48), both.narrow(1, 48, 48)),
                         swiglu_reference(both.narrow(1, 0, 48), both.narrow(1, 48, 48))),
            1e-6);
}

TEST(SUITE, RotaryEqualsTheExpression) {
  SKIP_WITHOUT_CUDA_KERNELS();
  at::manual_seed(3);
  for (const auto type : {at::kFloat, at::kBFloat16}) {
    const int64_t b = 2, heads = 3, length = 5, dim = 64;
    const at::Tensor angles = at::rand({b, length, dim / 2}) * 6;
    const at::Tensor cos = at::cat({angles.cos(), angles.cos()}, -1), sin = at::cat({angles.sin(), angles.sin()}, -1);
    // x as a transposed view [B, N, T, D] of [B, T, N, D], as the decoder passes it
    const at::Tensor x = at::randn({b, length, heads, dim}), up = at::randn({b, heads, length, dim});
    auto run = [&](bool kernel, at::ScalarType t, at::Device device) {
      at::Tensor leaf = x.to(device, t).clone().requires_grad_(true);
      const at::Tensor c = cos.to(device, t), s = sin.to(device, t), view = leaf.transpose(1, 2);
      const at::Tensor y = kernel ? rotary_embedding_cuda(view, c, s) : rotary_embedding_reference(view, c, s);
      (y * up.to(device, t)).sum().backward();
      return std::vector<at::Tensor>{y.detach(), leaf.grad()};
    };
    const auto got = run(true, type, kCuda), truth = run(false, at::kDouble, at::kCPU);
    for (size_t i = 0; i < got.size(); ++i) EXPECT_LE(relative_diff(got[i], truth[i]), tolerance(type)) << i;
    if (type == at::kFloat) {  // the expression's bits: products and sums rounded separately
      const at::Tensor view = x.to(kCuda).transpose(1, 2), c = cos.to(kCuda), s = sin.to(kCuda);
      EXPECT_TRUE(at::equal(rotary_embedding_cuda(view, c, s), rotary_embedding_reference(view, c, s)));
    }
  }
}

// Keys for `rows` rows in `groups` prompt groups: own slots with holes, one row with no real
// key at all, and (with_prefix) a prefix per group, also with holes.
DecodeKeys decode_keys(int64_t rows, int64_t kv, int64_t own, int64_t prefix, int64_t dim, bool with_prefix,
                       at::ScalarType type) {
  const int64_t groups = 2;
  DecodeKeys k;
  // The rows' own slots as a slice of a longer cache, as KvCache keeps them.
  k.keys = at::randn({rows, kv, own + 5, dim}).to(kCuda, type).narrow(2, 0, own);
  k.values = at::randn({rows, kv, own + 5, dim}).to(kCuda, type).narrow(2, 0, own);
  k.mask = (at::rand({rows, own}) > 0.2).to(kCuda);
  if (!with_prefix) k.mask[rows - 1].fill_(false);  // a row that sees nothing gets zeros
  if (with_prefix) {
    k.prefix_keys = at::randn({groups, kv, prefix, dim}).to(kCuda, type);
    k.prefix_values = at::randn({groups, kv, prefix, dim}).to(kCuda, type);
    k.prefix_mask = (at::rand({groups, prefix}) > 0.1).to(kCuda);
    k.prefix_row = (at::arange(rows) % groups).to(kCuda);
  }
  return k;
}

TEST(SUITE, DecodeAttentionEqualsTheReference) {
  SKIP_WITHOUT_CUDA_KERNELS();
  at::manual_seed(4);
  struct Case {
    int64_t rows, heads, kv, own, prefix, dim;
    bool with_prefix;
  };
  for (const auto type : {at::kFloat, at::kBFloat16})
    for (const Case& c : {Case{5, 4, 2, 33, 0, 64, false}, Case{sized(8, 4), sized(14, 6), 2, 129, 32, 64, true},
                          Case{2, sized(8, 2), sized(8, 2), sized(3000, 700), 0, 128, false},
                          Case{sized(3, 2), sized(4, 2), 1, sized(700, 150), sized(4100, 400), 32, true},
                          Case{4, 2, 1, 17, 0, 80, false}}) {
      const DecodeKeys k = decode_keys(c.rows, c.kv, c.own, c.prefix, c.dim, c.with_prefix, type);
      const at::Tensor q = at::randn({c.rows, c.heads, c.dim}).to(kCuda, type);
      const double scale = 1.0 / std::sqrt(static_cast<double>(c.dim));
      const at::Tensor got = decode_attention_cuda(q, k, scale);
      // The dispatch (and KvCache, which asks decode_attention_has_kernel) takes the same kernel.
      EXPECT_TRUE(decode_attention_has_kernel(q, k.keys));
      EXPECT_TRUE(at::equal(decode_attention(q, k, scale), got));
      DecodeKeys k64 = k;
      for (at::Tensor* t : {&k64.keys, &k64.values, &k64.prefix_keys, &k64.prefix_values})
        if (t->defined()) *t = t->to(at::kDouble);
      const at::Tensor truth = decode_attention_reference(q.to(at::kDouble), k64, scale);
      EXPECT_EQ(got.scalar_type(), type);
      EXPECT_LE(relative_diff(got, truth), tolerance(type))
          << c10::toString(type) << " rows " << c.rows << " heads " << c.heads << "/" << c.kv << " slots " << c.own
          << " + prefix " << c.prefix << " dim " << c.dim;
      if (!c.with_prefix) {
        EXPECT_EQ(got[c.rows - 1].abs().max().item<float>(), 0.0f) << "a row with no real key";
      }
    }
}

TEST(SUITE, DrawTokensDrawsTheCpuKernelsTokens) {
  SKIP_WITHOUT_CUDA_KERNELS();
  if (!avx512_kernels_supported()) GTEST_SKIP() << "the CPU kernel, the truth here, needs AVX-512F";
  at::manual_seed(5);
  struct Case {
    int64_t rows, vocab;
    double temperature;
    int64_t top_k;
    double top_p, min_p;
  };
  for (const auto type : {at::kFloat, at::kBFloat16})
    for (const Case& c : {Case{sized(64, 2), 151936, 1.0, 0, 1.0, 0.0}, Case{sized(64, 3), 151936, 1.0, 0, 0.95, 0.0},
                          Case{sized(16, 8), sized(151936, 5000), 0.7, 0, 0.9, 0.05},
                          Case{sized(64, 1), 151936, 0.7, 20, 0.8, 0.0}, Case{sized(32, 16), 1000, 1.3, 50, 1.0, 0.0},
                          Case{sized(32, 16), 1000, 1.3, 0, 0.5, 0.0}, Case{8, 37, 1.0, 3, 0.8, 0.1}}) {
      // Peaked rows (a few large logits) and flat ones, as a model's are.
      const at::Tensor logits = (at::randn({c.rows, c.vocab}) * 2 + (at::rand({c.rows, c.vocab}) > 0.999) * 8).to(type);
      const at::Tensor uniforms = at::rand({c.rows}, at::kDouble);
      const TokenDraw got = draw_tokens_cuda(logits.to(kCuda), c.temperature, c.top_k, c.top_p, c.min_p, uniforms);
      const TokenDraw truth = draw_tokens(logits.to(at::kFloat), c.temperature, c.top_k, c.top_p, c.min_p, uniforms);
      const std::string name = std::string(c10::toString(type)) + " V " + std::to_string(c.vocab) + " T " +
                               std::to_string(c.temperature) + " top_k " + std::to_string(c.top_k) + " top_p " +
                               std::to_string(c.top_p);
      EXPECT_TRUE(at::equal(got.tokens.cpu(), truth.tokens)) << name;
      EXPECT_LE(max_abs_diff(got.logprobs, truth.logprobs), 2e-5) << name;
      // A row's draw does not depend on the rows beside it.
      const int64_t last = c.rows - 1;
      const TokenDraw alone = draw_tokens_cuda(logits.narrow(0, last, 1).to(kCuda), c.temperature, c.top_k, c.top_p,
                                               c.min_p, uniforms.narrow(0, last, 1));
      EXPECT_EQ(alone.tokens.item<int64_t>(), got.tokens[last].item<int64_t>()) << name;
    }
}

TEST(SUITE, TokenStatisticsEqualLogSoftmaxInFloat64) {
  SKIP_WITHOUT_CUDA_KERNELS();
  at::manual_seed(6);
  for (const auto type : {at::kFloat, at::kBFloat16})
    for (const double temperature : {1.0, 0.7})
      for (const std::vector<int64_t>& shape :
           std::vector<std::vector<int64_t>>{{sized(37, 9), 1000}, {sized(5, 2), 151936}, {3, 7}}) {
        const at::Tensor logits = (at::randn(shape) * 4).to(type);  // the values both sides see
        const at::Tensor targets = at::randint(0, shape[1], {shape[0]}, at::kLong);
        const at::Tensor y = logits.to(at::kDouble) / temperature, logp = at::log_softmax(y, -1);
        const TokenStatistics got = token_statistics_cuda(logits.to(kCuda), targets, temperature);
        const std::string name = name_of(shape, type) + " T " + std::to_string(temperature);
        EXPECT_LE(relative_diff(got.logsumexp, at::logsumexp(y, {-1})), 2e-6) << name;
        EXPECT_LE(max_abs_diff(got.logprobs, logp.gather(1, targets.unsqueeze(1)).squeeze(1)), 2e-5) << name;
        EXPECT_LE(max_abs_diff(got.entropy, -(logp.exp() * logp).sum(-1)), 2e-5) << name;

        // d(g . logprob + g_H . entropy) / dlogits against autograd in float64, with and without g_H
        const at::Tensor g = at::randn({shape[0]}), g_entropy = at::randn({shape[0]});
        for (const bool with_entropy : {true, false}) {
          at::Tensor leaf = logits.to(at::kDouble).requires_grad_(true);
          const at::Tensor lp = at::log_softmax(leaf / temperature, -1);
          at::Tensor objective = (lp.gather(1, targets.unsqueeze(1)).squeeze(1) * g.to(at::kDouble)).sum();
          if (with_entropy) objective = objective - ((lp.exp() * lp).sum(-1) * g_entropy.to(at::kDouble)).sum();
          objective.backward();
          const at::Tensor dz = token_logit_gradients_cuda(logits.to(kCuda), targets, got, g,
                                                           with_entropy ? g_entropy : at::Tensor(), temperature);
          EXPECT_LE(max_abs_diff(dz, leaf.grad()), 2e-5) << name << (with_entropy ? " with" : " without") << " entropy";
        }
      }
}

TEST(SUITE, TokenLogprobsOnTheKernelsEqualThePlainPathInFloat64) {
  SKIP_WITHOUT_CUDA_KERNELS();
  ASSERT_TRUE(kKernelsSwitchedOn && cuda_kernels_enabled());
  at::manual_seed(7);
  const int64_t rows = 3, length = 50, hidden_size = 24, vocab = 1000;
  const at::Tensor hidden = at::randn({rows, length, hidden_size}), weight = at::randn({vocab, hidden_size}) * 0.3;
  const at::Tensor targets = at::randint(0, vocab, {rows, length}, at::kLong);
  const at::Tensor mask = at::rand({rows, length}) > 0.2, g = at::randn({rows, length}), g_h = at::randn({rows, length});
  TokenLogprobsOptions options;
  options.temperature = 0.8;
  options.chunk_tokens = 16;  // several chunks and a partial one
  auto run = [&](at::Device device, at::ScalarType type, bool chunked) {
    at::Tensor h = hidden.to(device, type).clone().requires_grad_(true);
    at::Tensor w = weight.to(device, type).clone().requires_grad_(true);
    const TokenLogprobs out = chunked ? token_logprobs(h, w, targets.to(device), mask.to(device), options)
                                      : token_logprobs_unchunked(h, w, targets.to(device), mask.to(device), options);
    ((out.logprobs * g.to(device)).sum() + (out.entropy * g_h.to(device)).sum()).backward();
    return std::vector<at::Tensor>{out.logprobs.detach(), out.entropy.detach(), h.grad(), w.grad()};
  };
  const auto truth = run(at::kCPU, at::kDouble, false);
  for (const auto type : {at::kFloat, at::kBFloat16}) {
    const auto got = run(kCuda, type, true);
    const double tol = type == at::kFloat ? 1e-4 : 3e-2;
    for (size_t i = 0; i < got.size(); ++i) EXPECT_LE(relative_diff(got[i], truth[i]), tol) << c10::toString(type) << " " << i;
  }
}

#ifndef GRPO_CUDA_EMULATION  // these need grpo_models and grpo_rollout, built on the real kernels
TEST(SUITE, DecoderOnTheKernelsEqualsFloat64OnTheCpu) {
  SKIP_WITHOUT_CUDA_KERNELS();
  ASSERT_TRUE(kKernelsSwitchedOn && cuda_kernels_enabled());
  const DecoderOptions o = testing::tiny_qwen2_options(64, 176, 2, 4, 2);
  at::manual_seed(8);
  Decoder fast(o), exact(o);
  testing::randomize_parameters(fast, 0.3);
  exact->to(at::kDouble);
  testing::copy_parameters(fast, exact);
  fast->to(kCuda);
  const auto [ids, mask] = testing::padded_batch(o.vocab_size);
  const at::Tensor upstream = at::randn({ids.size(0), ids.size(1), o.vocab_size}) * mask.unsqueeze(-1);
  const at::Tensor logits = fast->forward(ids.to(kCuda), mask.to(kCuda));
  const at::Tensor truth = exact->forward(ids, mask);
  (logits * upstream.to(kCuda)).sum().backward();
  (truth * upstream.to(at::kDouble)).sum().backward();
  const at::Tensor real = mask.to(at::kBool).unsqueeze(-1);
  EXPECT_LE(relative_diff(logits.cpu() * real, truth * real), 1e-5);
  const auto fast_params = fast->named_parameters(), exact_params = exact->named_parameters();
  for (size_t i = 0; i < fast_params.size(); ++i)
    EXPECT_LE(relative_diff(fast_params[i].value().grad(), exact_params[i].value().grad()), 1e-4) << fast_params[i].key();
}

TEST(SUITE, SampledGenerationOnTheKernelsEqualsTheCpu) {
  SKIP_WITHOUT_CUDA_KERNELS();
  ASSERT_TRUE(kKernelsSwitchedOn && cuda_kernels_enabled());
  const DecoderOptions o = testing::tiny_qwen2_options(64, 176, 2, 4, 2);
  at::manual_seed(9);
  Decoder cpu(o), gpu(o);
  testing::randomize_parameters(cpu, 0.5);
  testing::copy_parameters(cpu, gpu);
  gpu->to(kCuda);
  GenerationOptions options;
  options.sampling.top_p = 0.9;
  options.max_new_tokens = 16;
  options.group_size = 4;  // the prompt's prefix shared by its rows
  const std::vector<std::vector<int64_t>> prompts{{1, 2, 3, 4, 5}, {7, 8}, {9, 10, 11, 12, 13, 14, 15}};
  const std::vector<uint64_t> seeds = rollout_seeds(11, {0, 1, 2}, options.group_size);
  const RolloutBatch want = generate(cpu, prompts, options, seeds), got = generate(gpu, prompts, options, seeds);
  EXPECT_TRUE(at::equal(got.completion_ids.cpu(), want.completion_ids));
  EXPECT_LE(max_abs_diff(got.sampling_logp, want.sampling_logp), 1e-4);
}

#endif

TEST(SUITE, BadInputsAreRefusedBeforeALaunch) {
  SKIP_WITHOUT_CUDA_KERNELS();
  const at::Tensor x = at::randn({4, 8}, at::TensorOptions(kCuda));
  EXPECT_THROW(rms_norm_cuda(x, at::randn({7}, at::TensorOptions(kCuda)), 1e-6), c10::Error);
  EXPECT_THROW(rms_norm_cuda(x.to(at::kDouble), at::randn({8}, at::TensorOptions(kCuda).dtype(at::kDouble)), 1e-6),
               c10::Error);
  EXPECT_THROW(draw_tokens_cuda(x, 0.0, 0, 1.0, 0.0, at::rand({4}, at::kDouble)), c10::Error);
  EXPECT_THROW(draw_tokens_cuda(x, 1.0, 0, 1.0, 0.0, at::rand({3}, at::kDouble)), c10::Error);
}

}  // namespace
}  // namespace grpo
