#include "rollout/sampler.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <limits>

#include <cmath>

#include "kernels/token_sampling.h"

namespace grpo {
namespace {

// The filtered distribution written out by hand for one row of 8 logits.
TEST(Sampler, FiltersKeepTheDocumentedTokens) {
  // probabilities proportional to 8, 4, 2, 1, 1, 0.5, 0.25, 0.25 (sum 17)
  const at::Tensor logits = at::log(at::tensor({8.0, 4.0, 2.0, 1.0, 1.0, 0.5, 0.25, 0.25}, at::kDouble)).unsqueeze(0);
  SamplingOptions top_k;
  top_k.top_k = 3;
  at::Tensor p = filtered_probabilities(logits, top_k)[0];
  EXPECT_NEAR(p[0].item<double>(), 8.0 / 14, 1e-12);
  EXPECT_EQ(p.narrow(0, 3, 5).sum().item<double>(), 0.0);

  SamplingOptions top_p;
  top_p.top_p = 0.8;  // 8/17 = .47, 12/17 = .71 < .8, 14/17 = .82 reaches it: keep 3
  p = filtered_probabilities(logits, top_p)[0];
  EXPECT_GT(p[2].item<double>(), 0);
  EXPECT_EQ(p[3].item<double>(), 0);

  SamplingOptions min_p;
  min_p.min_p = 0.2;  // keep p >= 0.2 * 8/17: tokens with weight >= 1.6
  p = filtered_probabilities(logits, min_p)[0];
  EXPECT_GT(p[2].item<double>(), 0);
  EXPECT_EQ(p[3].item<double>(), 0);

  SamplingOptions hot;
  hot.temperature = 2.0;  // p ~ sqrt(weights)
  p = filtered_probabilities(logits, hot)[0];
  EXPECT_NEAR(p[0].item<double>() / p[1].item<double>(), std::sqrt(2.0), 1e-9);
}

// Sampled frequencies over many seeds match the filtered distribution (chi-square, 4 dof,
// critical value 18.47 at p = 0.001), and filtered-out tokens are never drawn. By hand: at
// temperature 0.9 the weights become w^(1/0.9) = 10.08, 4.66, 2.16, 1, 1, 0.46, 0.21, 0.21; top-k 6
// drops the two 0.21s; top-p 0.95 of the remaining 19.36 is 18.39, reached before the 0.46.
TEST(Sampler, FrequenciesMatchTheFilteredDistribution) {
  const int64_t rows = 40000;
  const at::Tensor logits =
      at::log(at::tensor({8.0, 4.0, 2.0, 1.0, 1.0, 0.5, 0.25, 0.25}, at::kFloat)).unsqueeze(0).expand({rows, 8});
  SamplingOptions options;
  options.temperature = 0.9;
  options.top_p = 0.95;
  options.top_k = 6;
  std::vector<uint64_t> seeds(rows);
  for (int64_t i = 0; i < rows; ++i) seeds[i] = 1000 + i;
  const at::Tensor tokens = sample_next_tokens(logits, options, seeds, 3);
  const at::Tensor expected = filtered_probabilities(logits.narrow(0, 0, 1), options)[0] * rows;
  const at::Tensor counts = at::bincount(tokens, {}, 8).to(at::kDouble);
  double chi2 = 0;
  int dof = -1;
  for (int v = 0; v < 8; ++v) {
    const double e = expected[v].item<double>(), c = counts[v].item<double>();
    if (e == 0) {
      EXPECT_EQ(c, 0) << "token " << v << " was filtered out but drawn";
      continue;
    }
    chi2 += (c - e) * (c - e) / e;
    ++dof;
  }
  EXPECT_EQ(dof, 4);
  EXPECT_LT(chi2, 18.47);
}

TEST(Sampler, SameSeedSameTokenWhateverTheBatch) {
  const at::Tensor logits = at::randn({5, 50});
  SamplingOptions options;
  const std::vector<uint64_t> seeds{11, 22, 33, 44, 55};
  const at::Tensor all = sample_next_tokens(logits, options, seeds, 7);
  for (int64_t i = 0; i < 5; ++i) {
    const at::Tensor alone = sample_next_tokens(logits.narrow(0, i, 1), options, {seeds[i]}, 7);
    EXPECT_EQ(alone[0].item<int64_t>(), all[i].item<int64_t>());
  }
}

TEST(Sampler, GreedyIsArgmaxAndLogprobsAreTemperatureScaled) {
  const at::Tensor logits = at::tensor(std::vector<float>{0.0f, 3.0f, 1.0f}).unsqueeze(0);
  SamplingOptions greedy;
  greedy.temperature = 0;
  EXPECT_EQ(sample_next_tokens(logits, greedy, {1}, 0)[0].item<int64_t>(), 1);
  const at::Tensor lp = sampling_logprobs(logits, at::tensor({2}, at::kLong), 0.5);
  const double z = std::exp(0.0) + std::exp(6.0) + std::exp(2.0);
  EXPECT_NEAR(lp[0].item<double>(), 2.0 - std::log(z), 1e-5);
}

// Top-p's threshold by radix search equals the one a full sort gives (the previous sampler's
// rule: keep tokens until those before reach top_p), on rows with realistic and peaked logits.
TEST(Sampler, TopPThresholdEqualsTheSortedCut) {
  at::manual_seed(11);
  for (int64_t vocab : {5000, 40000}) {  // the three- and the two-level search
    const at::Tensor logits = at::cat({at::randn({4, vocab}), 4 * at::randn({4, vocab})});
    const at::Tensor probs = at::softmax(logits, -1);
    const at::Tensor sorted = std::get<0>(probs.sort(-1, /*descending=*/true));
    const at::Tensor before = sorted.to(at::kDouble).cumsum(-1) - sorted.to(at::kDouble);
    const at::Tensor total = sorted.to(at::kDouble).sum(-1, true);
    for (double top_p : {0.3, 0.9, 0.95}) {
      const at::Tensor threshold = top_p_threshold(probs, top_p);
      // The last token whose predecessors have not reached top_p (before is increasing).
      const at::Tensor last_kept = (before < top_p * total).sum(-1, true) - 1;
      const at::Tensor want = sorted.gather(1, last_kept);
      for (int64_t row = 0; row < probs.size(0); ++row)
        EXPECT_EQ(threshold[row][0].item<float>(), want[row][0].item<float>())
            << "vocab " << vocab << " row " << row << " top_p " << top_p;
    }
  }
}

// The radix path at a vocabulary of 2,048: eight tokens carry the mass of the hand-computed case
// above and 2,040 tokens share 1e-6 of it; top-p 0.95 must drop those and the 0.5 and 0.25s.
// Probabilities by hand: 8, 4, 2, 1, 1 over 16.
TEST(Sampler, LargeVocabularyFrequenciesMatchTheHandComputedNucleus) {
  const int64_t rows = 10000, chunk = 1000, vocab = 2048;
  at::Tensor weights = at::full({vocab}, 1e-6 * 17 / (vocab - 8), at::kFloat);
  weights.narrow(0, 0, 8).copy_(at::tensor({8.0f, 4.0f, 2.0f, 1.0f, 1.0f, 0.5f, 0.25f, 0.25f}));
  const at::Tensor logits = at::log(weights).unsqueeze(0).expand({chunk, vocab});
  SamplingOptions options;
  options.top_p = 0.95;  // 16/17 = 0.941 < 0.95: the 0.5 is kept too; 16.5/17 = 0.97 reaches it
  at::Tensor counts = at::zeros({vocab}, at::kDouble);
  for (int64_t first = 0; first < rows; first += chunk) {
    std::vector<uint64_t> seeds(chunk);
    for (int64_t i = 0; i < chunk; ++i) seeds[i] = 5000 + first + i;
    counts += at::bincount(sample_next_tokens(logits, options, seeds, 1), {}, vocab).to(at::kDouble);
  }
  const std::vector<double> expected{8 / 16.5, 4 / 16.5, 2 / 16.5, 1 / 16.5, 1 / 16.5, 0.5 / 16.5};
  double chi2 = 0;
  for (size_t v = 0; v < expected.size(); ++v) {
    const double e = expected[v] * rows, c = counts[static_cast<int64_t>(v)].item<double>();
    chi2 += (c - e) * (c - e) / e;
  }
  EXPECT_EQ(counts.narrow(0, 6, vocab - 6).sum().item<double>(), 0.0) << "a token outside the nucleus was drawn";
  EXPECT_LT(chi2, 20.52);  // 5 dof, p = 0.001
}

TEST(Sampler, ProbabilitiesAreFloat32ForFloat32Logits) {
  SamplingOptions options;
  options.top_p = 0.9;
  EXPECT_EQ(filtered_probabilities(at::randn({2, 3000}), options).scalar_type(), at::kFloat);
}

// A diverged policy's NaN or infinite logits still give token ids inside the vocabulary (the
// trainer's guards then stop the run); an out-of-range id would crash the engine's gather.
TEST(Sampler, NonFiniteLogitsStillGiveTokenIdsInTheVocabulary) {
  at::Tensor logits = at::randn({3, 50});
  logits[0].fill_(std::numeric_limits<float>::quiet_NaN());
  logits[1][7] = std::numeric_limits<float>::infinity();
  logits[2][3] = -std::numeric_limits<float>::infinity();
  SamplingOptions options;
  for (double top_p : {1.0, 0.9}) {
    options.top_p = top_p;
    const at::Tensor tokens = sample_next_tokens(logits, options, at::full({3}, 0.999, at::kDouble));
    EXPECT_TRUE((tokens >= 0).all().item<bool>() && (tokens < 50).all().item<bool>()) << tokens;
  }
}

}  // namespace
}  // namespace grpo

namespace grpo {
namespace {

// The fused draw (kernels/token_sampling.h) against the ATen chain it replaces, on the same
// uniforms: the same token in every row and the same log-prob, over vocabularies that end
// mid-vector and Qwen's, temperatures, top-k (with and without top-p), top-p and min-p.
TEST(SamplerKernel, DrawsTheTokensOfTheAtenChain) {
  if (!draw_tokens_has_kernel(at::zeros({1, 16}))) GTEST_SKIP() << "no AVX-512F: the kernel does not run here";
  at::manual_seed(12);
  for (const int64_t vocab : {7, 64, 1000, 151936})
    for (const double temperature : {1.0, 0.7})
      for (const int64_t top_k : {0, 1, 5, 50})
        for (const double top_p : {1.0, 0.95, 0.5})
          for (const double min_p : {0.0, 0.05}) {
            const int64_t rows = vocab > 10000 ? 4 : 64;
            const at::Tensor logits = at::randn({rows, vocab}) * 3;
            const at::Tensor uniforms = at::rand({rows}, at::kDouble);
            SamplingOptions options;
            options.temperature = temperature;
            options.top_k = top_k;
            options.top_p = top_p;
            options.min_p = min_p;
            const TokenDraw fused = draw_tokens(logits, temperature, top_k, top_p, min_p, uniforms);
            const at::Tensor tokens = sample_next_tokens(logits, options, uniforms);
            const std::string name = "V " + std::to_string(vocab) + " T " + std::to_string(temperature) + " top-k " +
                                     std::to_string(top_k) + " top-p " + std::to_string(top_p) + " min-p " +
                                     std::to_string(min_p);
            EXPECT_TRUE(at::equal(fused.tokens, tokens)) << name;
            EXPECT_LE((fused.logprobs - sampling_logprobs(logits, tokens, temperature)).abs().max().item<double>(), 2e-5)
                << name;
          }
}

// Top-k keeps every token tied with the k-th, as the chain's masked_fill does: logits with a
// 3-way tie at the 2nd place and k = 2 draw all three tied tokens (and never the others).
TEST(SamplerKernel, TopKKeepsTheTokensTiedWithTheKth) {
  const int64_t rows = 3000;
  const at::Tensor logits = at::tensor({3.0f, 1.0f, 2.0f, 2.0f, 0.5f, 2.0f, -1.0f}).unsqueeze(0).expand({rows, 7}).contiguous();
  if (!draw_tokens_has_kernel(logits)) GTEST_SKIP() << "no AVX-512F: the kernel does not run here";
  std::vector<double> u(rows);
  for (int64_t i = 0; i < rows; ++i) u[static_cast<size_t>(i)] = counter_uniform(7 + static_cast<uint64_t>(i), 1);
  const at::Tensor uniforms = at::tensor(u, at::kDouble);
  const TokenDraw fused = draw_tokens(logits, 1.0, 2, 1.0, 0.0, uniforms);
  SamplingOptions options;
  options.top_k = 2;
  EXPECT_TRUE(at::equal(fused.tokens, sample_next_tokens(logits, options, uniforms)));
  const at::Tensor counts = at::bincount(fused.tokens, {}, 7);
  for (const int64_t kept : {0, 2, 3, 5}) EXPECT_GT(counts[kept].item<int64_t>(), 0) << kept;
  for (const int64_t dropped : {1, 4, 6}) EXPECT_EQ(counts[dropped].item<int64_t>(), 0) << dropped;
}

// The fused draw's frequencies match the filtered distribution (chi-square, 4 dof, critical
// value 18.47 at p = 0.001). By hand: at temperature 0.9 the weights are w^(1/0.9) = 10.08, 4.66,
// 2.16, 1, 1, 0.46, 0.21, 0.21 (sum 19.78); top-p 0.95 (18.79) is reached with the second 1.
TEST(SamplerKernel, FrequenciesMatchTheFilteredDistribution) {
  const int64_t rows = 40000;
  const at::Tensor logits =
      at::log(at::tensor({8.0, 4.0, 2.0, 1.0, 1.0, 0.5, 0.25, 0.25}, at::kFloat)).unsqueeze(0).expand({rows, 8});
  if (!draw_tokens_has_kernel(logits)) GTEST_SKIP() << "no AVX-512F: the kernel does not run here";
  SamplingOptions options;
  options.temperature = 0.9;
  options.top_p = 0.95;
  std::vector<double> u(rows);
  for (int64_t i = 0; i < rows; ++i) u[static_cast<size_t>(i)] = counter_uniform(2000 + static_cast<uint64_t>(i), 5);
  const at::Tensor tokens = sample_tokens_with_logprobs(logits, options, at::tensor(u, at::kDouble)).tokens;
  const at::Tensor weights = at::pow(at::tensor({8.0, 4.0, 2.0, 1.0, 1.0}, at::kDouble), 1 / 0.9);
  const at::Tensor expected = weights / weights.sum() * rows;
  const at::Tensor counts = at::bincount(tokens, {}, 8).to(at::kDouble);
  EXPECT_EQ(counts.narrow(0, 5, 3).sum().item<double>(), 0.0);
  const double chi2 = ((counts.narrow(0, 0, 5) - expected).pow(2) / expected).sum().item<double>();
  EXPECT_LT(chi2, 18.47);
}

}  // namespace
}  // namespace grpo
