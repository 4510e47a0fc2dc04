#pragma once
// The CUDA kernels of kernels/ as plain launch functions: raw device pointers, sizes, strides in
// elements and a cudaStream_t passed as void*, so this header needs neither LibTorch nor CUDA and
// the kernels (kernels/cuda/*.cu) compile with nvcc alone, CPU-only CI included. The tensor-level
// `_cuda` functions beside each op (kernels/cuda_ops.cpp) check shapes and dtypes, allocate, and
// call these on the current stream. Each launch returns a cudaError_t as int (0: launched).
// Without a CUDA compiler, kernels/cuda/unavailable.cpp defines them to return kNotBuilt.

#include <cstdint>
#include <string>

namespace grpo {
namespace cuda_kernels {

enum class Dtype { kFloat32, kBFloat16 };

inline constexpr int kNotBuilt = -1;  // returned by every launch in a build without nvcc

// True when this build compiled the kernels (a CUDA compiler was found).
bool built();
// cudaGetErrorString for a launch's result (or "built without a CUDA compiler").
std::string error_string(int error);
// Streaming multiprocessors of a device (0 where it cannot be read).
int multiprocessor_count(int device);

// rms_norm: rows of `width` elements ([rows, width] contiguous), statistics in float32.
// y = w * (x * r), r = 1 / sqrt(mean(x^2) + eps); inverse_rms[row] = r.
int rms_norm_forward(Dtype dtype, const void* x, const void* weight, void* y, float* inverse_rms, int64_t rows,
                     int64_t width, float eps, void* stream);
// dx = r (g w - xhat mean(g w xhat)), xhat = x r; weight_partials [ceil(rows / kRmsNormRowsPerPartial), width]
// float32: each block of rows' sum of g * xhat (summed by the caller, in order).
inline constexpr int64_t kRmsNormRowsPerPartial = 64;
int rms_norm_backward(Dtype dtype, const void* x, const void* weight, const void* grad, const float* inverse_rms,
                      void* dx, float* weight_partials, int64_t rows, int64_t width, void* stream);

// swiglu: gate and up rows `width` wide, gate_stride / up_stride elements apart (slices of a wider
// row allowed); out, d_gate, d_up contiguous [rows, width]; grad contiguous.
int swiglu_forward(Dtype dtype, const void* gate, int64_t gate_stride, const void* up, int64_t up_stride, void* out,
                   int64_t rows, int64_t width, void* stream);
int swiglu_backward(Dtype dtype, const void* gate, int64_t gate_stride, const void* up, int64_t up_stride,
                    const void* grad, void* d_gate, void* d_up, int64_t rows, int64_t width, void* stream);

// rotary: x [B, N, T, D] with strides (sb, sn, st, 1); cos, sin [B, T, D] contiguous, x's dtype;
// out [B, N, T, D] contiguous. `inverse` applies the inverse rotation (the backward).
struct RotaryShape {
  int64_t batch, heads, length, dim;
  int64_t stride_batch, stride_head, stride_position;
};
int rotary(Dtype dtype, const void* x, const RotaryShape& shape, const void* cos, const void* sin, void* out,
           bool inverse, void* stream);

// decode attention (kernels/decode_attention.h): one query per row over the row's cached slots,
// after a shared prefix when prefix_keys is non-null. Strides in elements, head_dim contiguous.
struct DecodeAttentionShape {
  int64_t batch, heads, kv_heads, dim;
  int64_t q_stride_batch, q_stride_head;
  int64_t slots;  // S, the row's own slots
  int64_t key_stride_batch, key_stride_head, key_stride_slot;
  int64_t value_stride_batch, value_stride_head, value_stride_slot;
  int64_t mask_stride_batch;  // mask [B, S] bool (1 byte)
  int64_t prefix_slots;       // P (0 without a prefix)
  int64_t prefix_rows;        // R
  int64_t prefix_key_stride_row, prefix_key_stride_head, prefix_key_stride_slot;
  int64_t prefix_value_stride_row, prefix_value_stride_head, prefix_value_stride_slot;
  int64_t prefix_mask_stride_row;
};
struct DecodeAttentionPointers {
  const void* q;
  const void* keys;
  const void* values;
  const bool* mask;
  const void* prefix_keys;    // null: no prefix
  const void* prefix_values;
  const bool* prefix_mask;
  const int64_t* prefix_row;  // [B]
  void* out;                  // [B, H, D] contiguous, q's dtype
};
// Float32 scratch the launch needs for `splits` partial results (0 when splits is 1).
int64_t decode_attention_workspace_floats(const DecodeAttentionShape& shape, int splits);
// The key-range splits per (row, head) a launch uses on a device with `multiprocessors` SMs.
int decode_attention_splits(const DecodeAttentionShape& shape, int multiprocessors);
int decode_attention(Dtype dtype, const DecodeAttentionPointers& pointers, const DecodeAttentionShape& shape,
                     float scale, int splits, float* workspace, void* stream);

// token_logprobs' chunk statistics (kernels/token_logprobs.h) from logits [rows, vocab] contiguous
// and targets [rows] int64: logsumexp, log-prob of the target and entropy of softmax(z / T), each
// [rows] float32. Backward: grad_logits [rows, vocab] float32 from the saved logsumexp and entropy
// and the upstream gradients [rows] (grad_entropy may be null).
int token_statistics(Dtype dtype, const void* logits, int64_t rows, int64_t vocab, float temperature,
                     const int64_t* targets, float* logsumexp, float* logprobs, float* entropy, void* stream);
int token_logit_gradients(Dtype dtype, const void* logits, int64_t rows, int64_t vocab, float temperature,
                          const int64_t* targets, const float* logsumexp, const float* entropy,
                          const float* grad_logprobs, const float* grad_entropy, float* grad_logits, void* stream);

// draw_tokens (kernels/token_sampling.h) for logits [rows, vocab] contiguous, uniforms [rows]
// float64 on the device; tokens [rows] int64, logprobs [rows] float32.
int draw_tokens(Dtype dtype, const void* logits, int64_t rows, int64_t vocab, float temperature, int64_t top_k,
                double top_p, double min_p, const double* uniforms, int64_t* tokens, float* logprobs, void* stream);

}  // namespace cuda_kernels
}  // namespace grpo
