#pragma once
// Causal self-attention for training and prefill with memory linear in sequence length: the
// FlashAttention algorithm (key blocks folded into a running max, sum and output per query
// block, backward recomputing each block's probabilities from the saved log-sum-exp) in ATen.
// Padding is a per-row key mask [B, S]; no [B, 1, T, S] bias is ever built by the reference.
// LibTorch >= 2.1 builds also have at::scaled_dot_product_attention, which `attention` uses
// there (chosen at compile time); `attention_reference` is always the ATen version. Without it,
// float32 CPU inputs that fit one block (training and prefill at up to 256 tokens) run on an
// AVX-512 kernel (kernels/attention_cpu.h) that skips the tiles the causal mask hides.

#include <cstdint>

#include <ATen/core/Tensor.h>

namespace grpo {

struct AttentionOptions {
  int64_t query_block = 256;  // queries per block (rows of the running softmax)
  int64_t key_block = 512;    // keys per block; inputs within one block take a plain masked softmax
  double scale = 0.0;         // 0: 1 / sqrt(head_dim)
};

// q [B, H, T, D]; k, v [B, KV, S, D] with H a multiple of KV (query head h reads kv head
// h / (H / KV)). Query i sits at key slot query_offset + i and sees key j iff
// j <= query_offset + i and key_mask[b, j] (key_mask [B, S] bool, undefined: all keys real).
// A query that sees no key (left padding) gets zeros. Returns [B, H, T, D] in q's dtype;
// differentiable w.r.t. q, k and v. Softmax statistics are float32 whatever the dtype.
at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& key_mask,
                     int64_t query_offset, const AttentionOptions& options = {});

// The ATen block-wise reference `attention` must match, on every build.
at::Tensor attention_reference(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                               const at::Tensor& key_mask, int64_t query_offset, const AttentionOptions& options = {});

// True when `attention` dispatches to at::scaled_dot_product_attention (LibTorch >= 2.1).
bool attention_uses_sdpa();

}  // namespace grpo
