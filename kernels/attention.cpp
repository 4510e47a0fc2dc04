#include "kernels/attention.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include <ATen/ATen.h>
#include <torch/autograd.h>
#include <torch/version.h>

#include "kernels/attention_cpu.h"
#include "kernels/cpu_kernels.h"

#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 1)
#define GRPO_HAVE_SDPA 1
#else
#define GRPO_HAVE_SDPA 0
#endif

namespace grpo {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

constexpr double kMinusInf = -std::numeric_limits<double>::infinity();

struct Shape {
  int64_t batch, heads, queries, head_dim, kv_heads, keys, group;
};

Shape check_shapes(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& key_mask) {
  TORCH_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4, "attention: q, k, v must be 4-D, got ", q.sizes(), " ",
              k.sizes(), " ", v.sizes());
  Shape s{q.size(0), q.size(1), q.size(2), q.size(3), k.size(1), k.size(2), 0};
  TORCH_CHECK(k.sizes() == v.sizes() && k.size(0) == s.batch && k.size(3) == s.head_dim,
              "attention: k ", k.sizes(), " and v ", v.sizes(), " do not fit q ", q.sizes());
  TORCH_CHECK(s.kv_heads > 0 && s.heads % s.kv_heads == 0, "attention: ", s.heads,
              " query heads are not a multiple of ", s.kv_heads, " kv heads");
  TORCH_CHECK(!key_mask.defined() || (key_mask.dim() == 2 && key_mask.size(0) == s.batch && key_mask.size(1) == s.keys),
              "attention: key_mask must be [", s.batch, ", ", s.keys, "], got ", key_mask.sizes());
  s.group = s.heads / s.kv_heads;
  return s;
}

// Which (query, key) pairs of a block may attend: [B, 1, 1, queries, keys] bool.
at::Tensor block_allowed(const at::Tensor& key_mask, int64_t first_query_slot, int64_t queries, int64_t first_key,
                         int64_t keys) {
  const auto long_options = key_mask.options().dtype(at::kLong);
  const at::Tensor query_slot = at::arange(first_query_slot, first_query_slot + queries, long_options).unsqueeze(1);
  const at::Tensor key_slot = at::arange(first_key, first_key + keys, long_options).unsqueeze(0);
  const at::Tensor causal = key_slot <= query_slot;  // [queries, keys]
  return causal.view({1, 1, 1, queries, keys}) & key_mask.narrow(1, first_key, keys).view({-1, 1, 1, 1, keys});
}

// Scaled scores of one block in float32, [B, KV, G, queries, keys]; q_block [B, KV, G * queries, D].
at::Tensor block_scores(const at::Tensor& q_block, const at::Tensor& k_block, double scale, const Shape& s,
                        int64_t queries) {
  return at::matmul(q_block, k_block.transpose(2, 3))
      .to(at::kFloat)
      .mul_(scale)
      .view({s.batch, s.kv_heads, s.group, queries, k_block.size(2)});
}

// Keys past the last query of a block are invisible to the whole block under the causal mask.
int64_t visible_keys(const Shape& s, int64_t query_offset, int64_t first_query, int64_t queries) {
  return std::min(s.keys, query_offset + first_query + queries);
}

class BlockwiseAttention : public torch::autograd::Function<BlockwiseAttention> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                               const at::Tensor& key_mask, int64_t query_offset, double scale, int64_t query_block,
                               int64_t key_block) {
    const Shape s = check_shapes(q, k, v, key_mask);
    const at::Tensor q5 = q.reshape({s.batch, s.kv_heads, s.group, s.queries, s.head_dim});
    const auto f32 = q.options().dtype(at::kFloat);
    at::Tensor out = at::empty({s.batch, s.kv_heads, s.group, s.queries, s.head_dim}, q.options());
    at::Tensor lse = at::empty({s.batch, s.kv_heads, s.group, s.queries}, f32);
    for (int64_t qs = 0; qs < s.queries; qs += query_block) {
      const int64_t lq = std::min(query_block, s.queries - qs);
      const at::Tensor q_block = q5.narrow(3, qs, lq).reshape({s.batch, s.kv_heads, s.group * lq, s.head_dim});
      at::Tensor running_max = at::full({s.batch, s.kv_heads, s.group, lq}, kMinusInf, f32);
      at::Tensor running_sum = at::zeros({s.batch, s.kv_heads, s.group, lq}, f32);
      at::Tensor acc = at::zeros({s.batch, s.kv_heads, s.group, lq, s.head_dim}, f32);
      const int64_t key_end = visible_keys(s, query_offset, qs, lq);
      for (int64_t ks = 0; ks < key_end; ks += key_block) {
        const int64_t lk = std::min(key_block, key_end - ks);
        at::Tensor scores = block_scores(q_block, k.narrow(2, ks, lk), scale, s, lq);
        scores.masked_fill_(block_allowed(key_mask, query_offset + qs, lq, ks, lk).logical_not(), kMinusInf);
        const at::Tensor new_max = at::maximum(running_max, std::get<0>(scores.max(-1)));
        // Rows that have seen no key yet keep max -inf; subtract 0 there so exp gives 0, not NaN.
        const at::Tensor shift = new_max.masked_fill(new_max == kMinusInf, 0.0);
        const at::Tensor probs = scores.sub_(shift.unsqueeze(-1)).exp_();
        const at::Tensor rescale = (running_max - shift).exp_();
        running_sum = running_sum.mul_(rescale).add_(probs.sum(-1));
        const at::Tensor pv = at::matmul(probs.view({s.batch, s.kv_heads, s.group * lq, lk}).to(v.scalar_type()),
                                         v.narrow(2, ks, lk));
        acc.mul_(rescale.unsqueeze(-1)).add_(pv.to(at::kFloat).view_as(acc));
        running_max = new_max;
      }
      const at::Tensor seen = running_sum > 0;
      out.narrow(3, qs, lq).copy_(acc.div_(running_sum.clamp_min(std::numeric_limits<float>::min()).unsqueeze(-1)));
      // A row that saw no key: lse 0 makes its recomputed probabilities exp(-inf - 0) = 0.
      lse.narrow(3, qs, lq).copy_(at::where(seen, running_max + running_sum.log(), at::zeros({}, f32)));
    }
    ctx->save_for_backward({q, k, v, key_mask, out, lse});
    ctx->saved_data["query_offset"] = query_offset;
    ctx->saved_data["scale"] = scale;
    ctx->saved_data["query_block"] = query_block;
    ctx->saved_data["key_block"] = key_block;
    return {out.view({s.batch, s.heads, s.queries, s.head_dim})};
  }

  // FlashAttention-2 backward: P = exp(S - lse), dV = P^T dO, dS = P * (dO V^T - rowsum(dO * O)).
  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &q = saved[0], &k = saved[1], &v = saved[2], &key_mask = saved[3], &out = saved[4],
                     &lse = saved[5];
    const int64_t query_offset = ctx->saved_data["query_offset"].toInt();
    const double scale = ctx->saved_data["scale"].toDouble();
    const int64_t query_block = ctx->saved_data["query_block"].toInt();
    const int64_t key_block = ctx->saved_data["key_block"].toInt();
    const Shape s = check_shapes(q, k, v, key_mask);
    const auto dtype = q.scalar_type();
    const at::Tensor q5 = q.reshape({s.batch, s.kv_heads, s.group, s.queries, s.head_dim});
    const at::Tensor grad_out = grad_outputs[0].reshape({s.batch, s.kv_heads, s.group, s.queries, s.head_dim});
    const at::Tensor row_dot = (grad_out.to(at::kFloat) * out.to(at::kFloat)).sum(-1);  // [B, KV, G, T]
    at::Tensor grad_q = at::empty({s.batch, s.kv_heads, s.group, s.queries, s.head_dim}, q.options());
    at::Tensor grad_k = at::zeros(k.sizes(), k.options().dtype(at::kFloat));
    at::Tensor grad_v = at::zeros(v.sizes(), v.options().dtype(at::kFloat));
    for (int64_t qs = 0; qs < s.queries; qs += query_block) {
      const int64_t lq = std::min(query_block, s.queries - qs);
      const at::Tensor q_block = q5.narrow(3, qs, lq).reshape({s.batch, s.kv_heads, s.group * lq, s.head_dim});
      const at::Tensor go_block =
          grad_out.narrow(3, qs, lq).reshape({s.batch, s.kv_heads, s.group * lq, s.head_dim}).to(dtype);
      const at::Tensor lse_block = lse.narrow(3, qs, lq).unsqueeze(-1);
      const at::Tensor dot_block = row_dot.narrow(3, qs, lq).unsqueeze(-1);
      at::Tensor grad_q_block = at::zeros({s.batch, s.kv_heads, s.group * lq, s.head_dim}, lse.options());
      const int64_t key_end = visible_keys(s, query_offset, qs, lq);
      for (int64_t ks = 0; ks < key_end; ks += key_block) {
        const int64_t lk = std::min(key_block, key_end - ks);
        const at::Tensor k_block = k.narrow(2, ks, lk), v_block = v.narrow(2, ks, lk);
        at::Tensor scores = block_scores(q_block, k_block, scale, s, lq);
        scores.masked_fill_(block_allowed(key_mask, query_offset + qs, lq, ks, lk).logical_not(), kMinusInf);
        at::Tensor probs = scores.sub_(lse_block).exp_();
        const at::Tensor probs_flat = probs.view({s.batch, s.kv_heads, s.group * lq, lk});
        grad_v.narrow(2, ks, lk).add_(at::matmul(probs_flat.transpose(2, 3).to(dtype), go_block).to(at::kFloat));
        const at::Tensor grad_probs = at::matmul(go_block, v_block.transpose(2, 3)).to(at::kFloat).view_as(probs);
        const at::Tensor grad_scores =
            probs.mul_(grad_probs.sub_(dot_block)).mul_(scale).view({s.batch, s.kv_heads, s.group * lq, lk}).to(dtype);
        grad_q_block.add_(at::matmul(grad_scores, k_block).to(at::kFloat));
        grad_k.narrow(2, ks, lk).add_(at::matmul(grad_scores.transpose(2, 3), q_block).to(at::kFloat));
      }
      grad_q.narrow(3, qs, lq).copy_(grad_q_block.view({s.batch, s.kv_heads, s.group, lq, s.head_dim}));
    }
    return {grad_q.view(q.sizes()), grad_k.to(k.scalar_type()), grad_v.to(v.scalar_type()), at::Tensor(),
            at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

// Everything fits one block: a plain masked softmax, differentiated by autograd.
at::Tensor single_block_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                  const at::Tensor& key_mask, int64_t query_offset, double scale, const Shape& s) {
  const at::Tensor q_flat = q.reshape({s.batch, s.kv_heads, s.group * s.queries, s.head_dim});
  const at::Tensor allowed = block_allowed(key_mask, query_offset, s.queries, 0, s.keys);
  const at::Tensor scores = block_scores(q_flat, k, scale, s, s.queries).masked_fill(allowed.logical_not(), kMinusInf);
  // A row with no visible key would be 0/0: give it zeros, as the block-wise path does.
  const at::Tensor probs = at::softmax(scores.masked_fill(allowed.logical_not().all(-1, true), 0.0), -1)
                               .masked_fill(allowed.logical_not(), 0.0)
                               .view({s.batch, s.kv_heads, s.group * s.queries, s.keys})
                               .to(v.scalar_type());
  return at::matmul(probs, v).view({s.batch, s.heads, s.queries, s.head_dim});
}

at::Tensor defined_key_mask(const at::Tensor& key_mask, const at::Tensor& k) {
  return key_mask.defined() ? key_mask.to(at::kBool)
                            : at::ones({k.size(0), k.size(2)}, k.options().dtype(at::kBool));
}

double scale_for(const AttentionOptions& options, int64_t head_dim) {
  return options.scale > 0 ? options.scale : 1.0 / std::sqrt(static_cast<double>(head_dim));
}

#if GRPO_HAVE_SDPA
// LibTorch's fused kernels. Padding still goes in as a boolean [B, 1, T, S] mask (one byte per
// pair, never kept by autograd); a query with no visible key is let see every key and then zeroed.
at::Tensor sdpa_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& key_mask,
                          int64_t query_offset, double scale, const Shape& s) {
  const at::Tensor keys = s.group > 1 ? k.repeat_interleave(s.group, 1) : k;
  const at::Tensor values = s.group > 1 ? v.repeat_interleave(s.group, 1) : v;
  if (!key_mask.defined() && query_offset == 0 && s.queries == s.keys)
    return at::scaled_dot_product_attention(q, keys, values, {}, 0.0, /*is_causal=*/true, scale);
  const at::Tensor allowed = block_allowed(defined_key_mask(key_mask, k), query_offset, s.queries, 0, s.keys)
                                 .view({s.batch, 1, s.queries, s.keys});
  const at::Tensor blind = allowed.logical_not().all(-1, /*keepdim=*/true);  // [B, 1, T, 1]
  const at::Tensor out =
      at::scaled_dot_product_attention(q, keys, values, allowed.logical_or(blind), 0.0, /*is_causal=*/false, scale);
  return out.masked_fill(blind, 0.0);
}
#endif

}  // namespace

at::Tensor attention_reference(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                               const at::Tensor& key_mask, int64_t query_offset, const AttentionOptions& options) {
  const Shape s = check_shapes(q, k, v, key_mask);
  TORCH_CHECK(options.query_block > 0 && options.key_block > 0, "attention: block sizes must be positive");
  const at::Tensor mask = defined_key_mask(key_mask, k);
  const double scale = scale_for(options, s.head_dim);
  if (s.queries <= options.query_block && s.keys <= options.key_block)
    return single_block_attention(q, k, v, mask, query_offset, scale, s);
  return BlockwiseAttention::apply(q, k, v, mask, query_offset, scale, options.query_block, options.key_block)[0];
}

at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& key_mask,
                     int64_t query_offset, const AttentionOptions& options) {
  const Shape s = check_shapes(q, k, v, key_mask);
#if GRPO_HAVE_SDPA
  return sdpa_attention(q, k, v, key_mask, query_offset, scale_for(options, s.head_dim), s);
#else
  const bool one_block = s.queries <= options.query_block && s.keys <= options.key_block;
  if (one_block && s.keys > 0 && runs_on_cpu_kernels(q) && runs_on_cpu_kernels(k) && runs_on_cpu_kernels(v))
    return one_block_attention_cpu(q, k, v, defined_key_mask(key_mask, k), query_offset, scale_for(options, s.head_dim));
  return attention_reference(q, k, v, key_mask, query_offset, options);
#endif
}

bool attention_uses_sdpa() { return GRPO_HAVE_SDPA != 0; }

}  // namespace grpo
