#pragma once
// The CPU kernel behind `attention` (kernels/attention.h) for float32 inputs that fit one block
// (training and prefill at up to 256 queries x 512 keys) on CPUs with AVX-512F. Internal: the
// dispatch and its checks live in attention.cpp.
//
// Per (row, KV head) it multiplies in 8 x 32 register tiles (kernels/product_tile.h), K and V read
// in place or packed once for the group of query heads; tiles the causal mask hides entirely are
// never computed, in any of the forward's two products or the backward's four. The probabilities
// [B, H, T, S] are kept for backward, as autograd keeps them on the ATen path; nothing else of
// size T x S is.

#include <cstdint>

#include <ATen/core/Tensor.h>

namespace grpo {

// q [B, H, T, D], k and v [B, KV, S, D], key_mask [B, S] bool (defined); T <= 256 and S <= 512
// are the sizes it is built for. As `attention`: query i sees key j iff j <= query_offset + i and
// key_mask[b, j]; a query that sees no key gets zeros. Differentiable w.r.t. q, k and v.
at::Tensor one_block_attention_cpu(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                   const at::Tensor& key_mask, int64_t query_offset, double scale);

}  // namespace grpo
