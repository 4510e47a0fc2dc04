// The launch functions of kernels/cuda/launch.h in a build without a CUDA compiler: each reports
// kNotBuilt, which the `_cuda` functions turn into an error naming the op. No CUDA tensor reaches
// them through the ops' dispatch (cuda_kernels_enabled() is false here); only a direct call does.

#include "kernels/cuda/launch.h"

namespace grpo {
namespace cuda_kernels {

bool built() { return false; }
std::string error_string(int) { return "built without a CUDA compiler"; }
int multiprocessor_count(int) { return 0; }

int rms_norm_forward(Dtype, const void*, const void*, void*, float*, int64_t, int64_t, float, void*) { return kNotBuilt; }
int rms_norm_backward(Dtype, const void*, const void*, const void*, const float*, void*, float*, int64_t, int64_t,
                      void*) {
  return kNotBuilt;
}
int swiglu_forward(Dtype, const void*, int64_t, const void*, int64_t, void*, int64_t, int64_t, void*) { return kNotBuilt; }
int swiglu_backward(Dtype, const void*, int64_t, const void*, int64_t, const void*, void*, void*, int64_t, int64_t,
                    void*) {
  return kNotBuilt;
}
int rotary(Dtype, const void*, const RotaryShape&, const void*, const void*, void*, bool, void*) { return kNotBuilt; }
int64_t decode_attention_workspace_floats(const DecodeAttentionShape&, int) { return 0; }
int decode_attention_splits(const DecodeAttentionShape&, int) { return 1; }
int decode_attention(Dtype, const DecodeAttentionPointers&, const DecodeAttentionShape&, float, int, float*, void*) {
  return kNotBuilt;
}
int token_statistics(Dtype, const void*, int64_t, int64_t, float, const int64_t*, float*, float*, float*, void*) {
  return kNotBuilt;
}
int token_logit_gradients(Dtype, const void*, int64_t, int64_t, float, const int64_t*, const float*, const float*,
                          const float*, const float*, float*, void*) {
  return kNotBuilt;
}
int draw_tokens(Dtype, const void*, int64_t, int64_t, float, int64_t, double, double, const double*, int64_t*, float*,
                void*) {
  return kNotBuilt;
}

}  // namespace cuda_kernels
}  // namespace grpo
