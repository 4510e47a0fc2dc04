#pragma once
// Attention of a decode step: one query per row over that row's cached keys, optionally after a
// prompt prefix shared by groups of rows (models/kv_cache.h). A decode query sees every real key
// it is given (the causal mask only hides the future, and the future is not cached yet), so the
// only mask is which keys are real. The CPU kernel (float32, AVX-512F, head_dim a multiple of 16)
// reads each row's keys and values in place, with no score tensor, no bias tensor and no gather
// of the prefix; the ATen reference is the truth it must match and runs everywhere else.

#include <ATen/core/Tensor.h>

namespace grpo {

// The keys a row's query reads: its own slots and, when prefix_keys is defined, the prefix row
// prefix_row[b] first.
struct DecodeKeys {
  at::Tensor keys, values;  // [B, KV, S, D]
  at::Tensor mask;          // [B, S] bool: real keys
  at::Tensor prefix_keys, prefix_values;  // [R, KV, P, D] or undefined
  at::Tensor prefix_mask;                 // [R, P] bool
  at::Tensor prefix_row;                  // [B] long in [0, R)
};

// q [B, H, D] with H a multiple of KV (query head h reads kv head h / (H / KV)); scale multiplies
// q.k. Returns softmax(scale q.k over the real keys) . v as [B, H, D] in q's dtype (softmax in
// float32); a row with no real key gets zeros, as kernels/attention.h does.
at::Tensor decode_attention(const at::Tensor& q, const DecodeKeys& keys, double scale);
at::Tensor decode_attention_reference(const at::Tensor& q, const DecodeKeys& keys, double scale);

// The CUDA kernel (kernels/cuda), float32 or bfloat16 CUDA tensors; `decode_attention` dispatches to it when
// runs_on_cuda_kernels (kernels/cuda_kernels.h). Its test compares it with the reference per dtype.
// Keys and values in q's dtype, head_dim <= 256, at most 32 query heads per KV head. A block per
// (row, KV head), a warp per query head, so each KV head's cache is read once; long caches split
// into key ranges merged afterwards; the prefix read in place.
at::Tensor decode_attention_cuda(const at::Tensor& q, const DecodeKeys& keys, double scale);

// True when decode_attention runs a kernel for these inputs (not the reference): the CPU kernel,
// or the CUDA one where runs_on_cuda_kernels (kernels/cuda_kernels.h). KvCache asks it to read a
// decode step's keys in place.
bool decode_attention_has_kernel(const at::Tensor& q, const at::Tensor& keys);

// Throws unless q and keys fit the shapes above; every path checks this first.
void check_decode_attention_inputs(const at::Tensor& q, const DecodeKeys& keys);

}  // namespace grpo
