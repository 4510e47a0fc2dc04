// decode_attention (the CPU kernel where it applies) and its ATen reference, both against the
// obvious loop in float64: per row and query head, a softmax over the real keys of the row's
// prefix and own slots. Grouped heads, cache slices (strided keys), masked slots, a row with no
// real key, a shared prefix read by several rows.

#include <cmath>
#include <vector>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "kernels/decode_attention.h"

namespace grpo {
namespace {

at::Tensor loop_attention(const at::Tensor& q, const DecodeKeys& k, double scale) {
  const int64_t b = q.size(0), heads = q.size(1), dim = q.size(2), kv = k.keys.size(1), group = heads / kv;
  at::Tensor out = at::zeros({b, heads, dim}, at::kDouble);
  for (int64_t r = 0; r < b; ++r)
    for (int64_t h = 0; h < heads; ++h) {
      std::vector<at::Tensor> keys, values;
      if (k.prefix_keys.defined()) {
        const int64_t p = k.prefix_row[r].item<int64_t>();
        for (int64_t j = 0; j < k.prefix_keys.size(2); ++j)
          if (k.prefix_mask[p][j].item<bool>()) {
            keys.push_back(k.prefix_keys[p][h / group][j]);
            values.push_back(k.prefix_values[p][h / group][j]);
          }
      }
      for (int64_t j = 0; j < k.keys.size(2); ++j)
        if (k.mask[r][j].item<bool>()) {
          keys.push_back(k.keys[r][h / group][j]);
          values.push_back(k.values[r][h / group][j]);
        }
      if (keys.empty()) continue;
      std::vector<double> weights;
      double max = -INFINITY, sum = 0;
      for (const auto& key : keys) {
        weights.push_back((q[r][h].to(at::kDouble) * key.to(at::kDouble)).sum().item<double>() * scale);
        max = std::max(max, weights.back());
      }
      for (double& w : weights) sum += (w = std::exp(w - max));
      for (size_t j = 0; j < keys.size(); ++j) out[r][h] += values[j].to(at::kDouble) * (weights[j] / sum);
    }
  return out;
}

double max_abs_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

struct Case {
  int64_t rows, heads, kv_heads, dim, slots, prefix_rows, prefix_slots;
};

DecodeKeys make_keys(const Case& c, at::Tensor* q) {
  *q = at::randn({c.rows, c.heads, c.dim});
  DecodeKeys k;
  // Cache slices: capacity 3 slots more than the ones read, as KvCache::attend passes them.
  k.keys = at::randn({c.rows, c.kv_heads, c.slots + 3, c.dim}).narrow(2, 0, c.slots);
  k.values = at::randn({c.rows, c.kv_heads, c.slots + 3, c.dim}).narrow(2, 0, c.slots);
  k.mask = (at::rand({c.rows, c.slots + 3}) < 0.7).narrow(1, 0, c.slots);
  k.mask[0].fill_(false);  // row 0 has no real own key
  if (c.prefix_rows > 0) {
    k.prefix_keys = at::randn({c.prefix_rows, c.kv_heads, c.prefix_slots, c.dim});
    k.prefix_values = at::randn({c.prefix_rows, c.kv_heads, c.prefix_slots, c.dim});
    k.prefix_mask = at::rand({c.prefix_rows, c.prefix_slots}) < 0.8;
    k.prefix_row = at::arange(c.rows) % c.prefix_rows;
    k.prefix_mask[c.prefix_rows - 1].fill_(false);
  }
  return k;
}

TEST(DecodeAttention, KernelAndReferenceEqualTheLoop) {
  at::manual_seed(7);
  const std::vector<Case> cases = {{5, 4, 2, 64, 7, 0, 0},  {6, 4, 2, 64, 9, 2, 5},   {3, 14, 2, 64, 4, 3, 6},
                                   {4, 2, 2, 128, 33, 2, 1}, {2, 8, 1, 16, 1, 0, 0},  {8, 4, 4, 32, 2, 4, 40}};
  for (const Case& c : cases) {
    at::Tensor q;
    const DecodeKeys k = make_keys(c, &q);
    const double scale = 1.0 / std::sqrt(static_cast<double>(c.dim));
    const at::Tensor truth = loop_attention(q, k, scale);
    const std::string name = "rows " + std::to_string(c.rows) + " heads " + std::to_string(c.heads) + "/" +
                             std::to_string(c.kv_heads) + " dim " + std::to_string(c.dim) + " prefix " +
                             std::to_string(c.prefix_rows);
    EXPECT_LE(max_abs_diff(decode_attention_reference(q, k, scale), truth), 1e-5) << name;
    EXPECT_LE(max_abs_diff(decode_attention(q, k, scale), truth), 1e-5) << name;
    if (c.prefix_rows == 0) {
      EXPECT_EQ(max_abs_diff(decode_attention(q, k, scale)[0], at::zeros({c.heads, c.dim})), 0.0);
    }
  }
}

TEST(DecodeAttention, OtherDtypesTakeTheReference) {
  at::manual_seed(8);
  at::Tensor q;
  const DecodeKeys k = make_keys({4, 4, 2, 64, 6, 2, 3}, &q);
  EXPECT_FALSE(decode_attention_has_kernel(q.to(at::kDouble), k.keys));
  EXPECT_FALSE(decode_attention_has_kernel(q.narrow(2, 0, 24), k.keys));  // head_dim not a multiple of 16
  DecodeKeys doubled = k;
  for (at::Tensor* t : {&doubled.keys, &doubled.values, &doubled.prefix_keys, &doubled.prefix_values})
    *t = t->to(at::kDouble);
  const at::Tensor out = decode_attention(q.to(at::kDouble), doubled, 0.125);
  EXPECT_EQ(out.scalar_type(), at::kDouble);
  EXPECT_LE(max_abs_diff(out, loop_attention(q, k, 0.125)), 1e-6);
}

}  // namespace
}  // namespace grpo
