// The decoder in float32, where the CPU kernels run (AVX-512F: RMSNorm, SwiGLU, RoPE, one-block
// attention), against the same weights in float64, where only the ATen expressions run: logits
// and every parameter's gradient, on shapes whose widths end mid-vector and batches with right
// and left padding.

#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "kernels/cpu_kernels.h"
#include "models/decoder.h"
#include "tests/support/decoders.h"

namespace grpo {
namespace {

struct Shape {
  const char* name;
  int64_t hidden, intermediate, layers, heads, kv_heads;
};

double relative_error(const at::Tensor& got, const at::Tensor& truth) {
  return ((got.to(at::kDouble) - truth).abs().max() / (truth.abs().max() + 1e-12)).item<double>();
}

DecoderOptions options_of(const Shape& s) {
  return testing::tiny_qwen2_options(s.hidden, s.intermediate, s.layers, s.heads, s.kv_heads);
}

class DecoderKernels : public ::testing::TestWithParam<Shape> {};

TEST_P(DecoderKernels, LogitsAndGradientsEqualFloat64Expressions) {
  if (!avx512_kernels_supported()) GTEST_SKIP() << "no AVX-512F: the decoder runs the ATen expressions here";
  const Shape s = GetParam();
  const DecoderOptions o = options_of(s);
  at::manual_seed(21);
  Decoder fast(o), exact(o);
  testing::randomize_parameters(fast, 0.3);
  exact->to(at::kDouble);
  testing::copy_parameters(fast, exact);
  const auto [ids, mask] = testing::padded_batch(o.vocab_size);
  const at::Tensor upstream = at::randn({ids.size(0), ids.size(1), o.vocab_size}) * mask.unsqueeze(-1);
  const at::Tensor logits = fast->forward(ids, mask);
  const at::Tensor truth = exact->forward(ids, mask);
  (logits * upstream).sum().backward();
  (truth.to(at::kDouble) * upstream.to(at::kDouble)).sum().backward();
  const at::Tensor real = mask.to(at::kBool).unsqueeze(-1);
  EXPECT_LE(relative_error(logits * real, truth.to(at::kDouble) * real), 1e-5) << s.name;
  const auto fast_params = fast->named_parameters(), exact_params = exact->named_parameters();
  for (size_t i = 0; i < fast_params.size(); ++i) {
    const std::string& name = fast_params[i].key();
    EXPECT_LE(relative_error(fast_params[i].value().grad(), exact_params[i].value().grad()), 1e-4) << s.name << " " << name;
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, DecoderKernels,
                         ::testing::Values(Shape{"Width96HeadDim24", 96, 256, 2, 4, 2},
                                           Shape{"Width128HeadDim32", 128, 344, 2, 4, 2},
                                           Shape{"Width40HeadDim10", 40, 72, 1, 4, 1}),
                         [](const ::testing::TestParamInfo<Shape>& info) { return std::string(info.param.name); });

// hidden(ids, mask, nullptr, first) skips the last layer's queries and MLP before `first` (what
// completion_logprobs asks for): values and every gradient equal the full pass's slice, in float32
// (kernels) and float64 (ATen), with left-padded prompts and right-padded completions.
TEST(DecoderSuffix, HiddenFromAPositionEqualsTheFullPassesSlice) {
  const DecoderOptions o = options_of(Shape{"Width64HeadDim16", 64, 96, 2, 4, 2});
  const int64_t batch = 3, length = 23, first = 9;
  for (const at::ScalarType type : {at::kFloat, at::kDouble}) {
    at::manual_seed(22);
    Decoder model(o);
    model->to(type);
    testing::randomize_parameters(model, 0.3);
    const at::Tensor ids = at::randint(0, o.vocab_size, {batch, length}, at::kLong);
    at::Tensor mask = at::ones({batch, length}, at::kLong);
    mask[1].narrow(0, 0, 4).fill_(0);    // a left-padded prompt
    mask[2].narrow(0, 18, 5).fill_(0);   // a right-padded completion
    const at::Tensor upstream = at::randn({batch, length - first, o.hidden_size}, type);
    const auto gradients = [&](const at::Tensor& hidden) {
      model->zero_grad();
      (hidden * upstream).sum().backward();
      std::vector<at::Tensor> out;
      for (const auto& p : model->parameters()) out.push_back(p.grad().clone());
      return out;
    };
    const at::Tensor full = model->hidden(ids, mask).narrow(1, first, length - first);
    const std::vector<at::Tensor> full_grads = gradients(full);
    const at::Tensor suffix = model->hidden(ids, mask, nullptr, first);
    const std::vector<at::Tensor> suffix_grads = gradients(suffix);
    ASSERT_EQ(suffix.sizes(), full.sizes());
    const double tolerance = type == at::kFloat ? 1e-5 : 1e-12;
    EXPECT_LE(relative_error(suffix.detach(), full.detach().to(at::kDouble)), tolerance) << type;
    const auto names = model->named_parameters();
    for (size_t i = 0; i < full_grads.size(); ++i)
      EXPECT_LE(relative_error(suffix_grads[i], full_grads[i].to(at::kDouble)), 10 * tolerance) << type << " " << names[i].key();
  }
  Decoder model(o);
  EXPECT_THROW(model->hidden(at::zeros({1, 4}, at::kLong), {}, nullptr, 4), c10::Error);
}

}  // namespace
}  // namespace grpo
