// The tensor-level `_cuda` versions of kernels/ ops (declared beside each op's reference): checks,
// allocations and autograd around the launch functions of kernels/cuda/launch.h, on the current
// stream of the inputs' device. Compiled in every build; without a CUDA compiler the launches
// report that they were not built. Tests also compile it over the CPU emulation of the kernels
// (GRPO_CUDA_EMULATION, target grpo_kernels_emulated), where CPU tensors stand in for CUDA ones.

#include <cstdlib>
#include <cstring>
#include <string>

#include <ATen/ATen.h>
#include <c10/core/DeviceGuard.h>
#include <torch/autograd.h>

#ifdef GRPO_TORCH_CUDA
#include <c10/cuda/CUDAStream.h>
#endif

#include "kernels/cuda/launch.h"
#include "kernels/cuda_kernels.h"
#include "kernels/decode_attention.h"
#include "kernels/rms_norm.h"
#include "kernels/rotary.h"
#include "kernels/swiglu.h"
#include "kernels/token_logprobs.h"
#include "kernels/token_sampling.h"

namespace grpo {
namespace {

namespace ck = cuda_kernels;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

#ifdef GRPO_CUDA_EMULATION
constexpr bool kEmulated = true;
#else
constexpr bool kEmulated = false;
#endif

ck::Dtype dtype_of(const at::Tensor& t, const char* op) {
  TORCH_CHECK(t.is_cuda() || kEmulated, op, ": needs a CUDA tensor, got one on ", t.device());
  if (t.scalar_type() == at::kFloat) return ck::Dtype::kFloat32;
  TORCH_CHECK(t.scalar_type() == at::kBFloat16, op, ": needs float32 or bfloat16, got ", t.scalar_type());
  return ck::Dtype::kBFloat16;
}

void* current_stream(const at::Tensor& t) {
  if (kEmulated) return nullptr;
#ifdef GRPO_TORCH_CUDA
  return c10::cuda::getCurrentCUDAStream(t.device().index()).stream();
#else
  TORCH_CHECK(false, "CUDA kernels: this LibTorch was built without CUDA");
  return nullptr;
#endif
}

at::Tensor unit_inner_stride(const at::Tensor& t) { return t.stride(-1) == 1 ? t : t.contiguous(); }

void check_launch(int error, const char* op) {
  TORCH_CHECK(error == 0, op, ": CUDA launch failed: ", ck::error_string(error));
}

class CudaRmsNorm : public torch::autograd::Function<CudaRmsNorm> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight, double eps) {
    const c10::DeviceGuard guard(x.device());
    const int64_t width = x.size(-1), rows = width == 0 ? 0 : x.numel() / width;
    const at::Tensor x2 = x.contiguous().view({rows, width}), w = weight.contiguous();
    at::Tensor y = at::empty_like(x2), inverse_rms = at::empty({rows}, x.options().dtype(at::kFloat));
    check_launch(ck::rms_norm_forward(dtype_of(x, "rms_norm_cuda"), x2.data_ptr(), w.data_ptr(), y.data_ptr(),
                                      inverse_rms.data_ptr<float>(), rows, width, static_cast<float>(eps),
                                      current_stream(x)),
                 "rms_norm_cuda");
    ctx->save_for_backward({x2, w, inverse_rms});
    return y.view(x.sizes());
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &w = saved[1], &inverse_rms = saved[2];
    const c10::DeviceGuard guard(x.device());
    const int64_t rows = x.size(0), width = x.size(1);
    const at::Tensor g = grad_outputs[0].to(x.scalar_type()).contiguous().view({rows, width});
    at::Tensor dx = at::empty_like(x);
    at::Tensor partials = at::empty({(rows + ck::kRmsNormRowsPerPartial - 1) / ck::kRmsNormRowsPerPartial, width},
                                    x.options().dtype(at::kFloat));
    check_launch(ck::rms_norm_backward(dtype_of(x, "rms_norm_cuda"), x.data_ptr(), w.data_ptr(), g.data_ptr(),
                                       inverse_rms.data_ptr<float>(), dx.data_ptr(), partials.data_ptr<float>(), rows,
                                       width, current_stream(x)),
                 "rms_norm_cuda");
    return {dx.view(grad_outputs[0].sizes()), partials.sum(0).to(w.scalar_type()), at::Tensor()};
  }
};

// [..., I] as [rows, I] with a unit inner stride, without a copy where the leading dimensions
// collapse (a slice of the last dimension does).
at::Tensor as_rows(const at::Tensor& t) {
  const int64_t width = t.size(-1), count = width == 0 ? 0 : t.numel() / width;
  return unit_inner_stride(unit_inner_stride(t).reshape({count, width}));
}

class CudaSwiglu : public torch::autograd::Function<CudaSwiglu> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& gate, const at::Tensor& up) {
    const c10::DeviceGuard guard(gate.device());
    const at::Tensor g = as_rows(gate), u = as_rows(up);
    at::Tensor out = at::empty({g.size(0), g.size(1)}, gate.options());
    check_launch(ck::swiglu_forward(dtype_of(gate, "swiglu_cuda"), g.data_ptr(), g.stride(0), u.data_ptr(), u.stride(0),
                                    out.data_ptr(), g.size(0), g.size(1), current_stream(gate)),
                 "swiglu_cuda");
    ctx->save_for_backward({g, u});
    return out.view(gate.sizes());
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &g = saved[0], &u = saved[1];
    const c10::DeviceGuard guard(g.device());
    const int64_t rows = g.size(0), width = g.size(1);
    const at::Tensor dy = grad_outputs[0].to(g.scalar_type()).contiguous().view({rows, width});
    at::Tensor d_gate = at::empty({rows, width}, g.options()), d_up = at::empty({rows, width}, g.options());
    check_launch(ck::swiglu_backward(dtype_of(g, "swiglu_cuda"), g.data_ptr(), g.stride(0), u.data_ptr(), u.stride(0),
                                     dy.data_ptr(), d_gate.data_ptr(), d_up.data_ptr(), rows, width, current_stream(g)),
                 "swiglu_cuda");
    return {d_gate.view(grad_outputs[0].sizes()), d_up.view(grad_outputs[0].sizes())};
  }
};

at::Tensor rotate_cuda(const at::Tensor& x_in, const at::Tensor& cos, const at::Tensor& sin, bool inverse) {
  const c10::DeviceGuard guard(x_in.device());
  const at::Tensor x = unit_inner_stride(x_in);
  at::Tensor out = at::empty({x.size(0), x.size(1), x.size(2), x.size(3)}, x.options());
  const ck::RotaryShape shape{x.size(0), x.size(1), x.size(2), x.size(3), x.stride(0), x.stride(1), x.stride(2)};
  check_launch(ck::rotary(dtype_of(x, "rotary_embedding_cuda"), x.data_ptr(), shape, cos.data_ptr(), sin.data_ptr(),
                          out.data_ptr(), inverse, current_stream(x)),
               "rotary_embedding_cuda");
  return out;
}

class CudaRotary : public torch::autograd::Function<CudaRotary> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
    ctx->save_for_backward({cos, sin});
    return rotate_cuda(x, cos, sin, /*inverse=*/false);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    return {rotate_cuda(grad_outputs[0], saved[0], saved[1], /*inverse=*/true), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

bool cuda_kernels_built() { return ck::built(); }

std::string cuda_kernels_setting_problem() {
  const char* value = std::getenv("GRPO_CUDA_KERNELS");
  if (value == nullptr || std::strcmp(value, "0") == 0 || std::strcmp(value, "1") == 0) return "";
  return std::string("GRPO_CUDA_KERNELS=") + value + ": expected 0 (CUDA tensors take the ATen references) or 1 (the kernels of kernels/cuda)";
}

bool cuda_kernels_enabled() {
  static const bool enabled = [] {
    const char* value = std::getenv("GRPO_CUDA_KERNELS");
    return ck::built() && value != nullptr && std::strcmp(value, "1") == 0;
  }();
  return enabled;
}

bool runs_on_cuda_kernels(const at::Tensor& t) {
  return t.defined() && (t.is_cuda() || kEmulated) && (t.scalar_type() == at::kFloat || t.scalar_type() == at::kBFloat16) &&
         cuda_kernels_enabled();
}

at::Tensor rms_norm_cuda(const at::Tensor& x, const at::Tensor& weight, double eps) {
  TORCH_CHECK(x.dim() > 0 && weight.dim() == 1 && weight.size(0) == x.size(-1) && x.scalar_type() == weight.scalar_type() &&
                  x.device() == weight.device(),
              "rms_norm_cuda: x ", x.sizes(), " ", x.scalar_type(), " and weight ", weight.sizes(), " ",
              weight.scalar_type(), " do not fit");
  return CudaRmsNorm::apply(x, weight, eps);
}

at::Tensor swiglu_cuda(const at::Tensor& gate, const at::Tensor& up) {
  TORCH_CHECK(gate.sizes() == up.sizes() && gate.dim() > 0 && gate.scalar_type() == up.scalar_type() &&
                  gate.device() == up.device(),
              "swiglu_cuda: gate ", gate.sizes(), " and up ", up.sizes(), " do not fit");
  return CudaSwiglu::apply(gate, up);
}

at::Tensor rotary_embedding_cuda(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  TORCH_CHECK(x.dim() == 4 && x.size(-1) % 2 == 0 && cos.dim() == 3 && cos.sizes() == sin.sizes() &&
                  cos.size(0) == x.size(0) && cos.size(1) == x.size(2) && cos.size(2) == x.size(3) &&
                  cos.scalar_type() == x.scalar_type() && sin.scalar_type() == x.scalar_type() &&
                  cos.device() == x.device() && sin.device() == x.device(),
              "rotary_embedding_cuda: x ", x.sizes(), " and cos/sin ", cos.sizes(), " do not fit");
  return CudaRotary::apply(x, cos.contiguous(), sin.contiguous());
}

at::Tensor decode_attention_cuda(const at::Tensor& q_in, const DecodeKeys& k, double scale) {
  check_decode_attention_inputs(q_in, k);
  const bool with_prefix = k.prefix_keys.defined();
  const auto same_dtype = [&](const at::Tensor& t) { return !t.defined() || t.scalar_type() == q_in.scalar_type(); };
  TORCH_CHECK(same_dtype(k.keys) && same_dtype(k.values) && same_dtype(k.prefix_keys) && same_dtype(k.prefix_values),
              "decode_attention_cuda: q, keys and values need one dtype");
  TORCH_CHECK(q_in.size(1) / k.keys.size(1) <= 32 && q_in.size(2) <= 256, "decode_attention_cuda: q ", q_in.sizes(),
              " and keys ", k.keys.sizes(), " do not fit (head_dim <= 256, at most 32 query heads per KV head)");
  const c10::DeviceGuard guard(q_in.device());
  const at::Tensor q = unit_inner_stride(q_in), keys = unit_inner_stride(k.keys), values = unit_inner_stride(k.values);
  const at::Tensor mask = unit_inner_stride(k.mask.to(at::kBool));
  at::Tensor prefix_keys, prefix_values, prefix_mask, prefix_row;
  if (with_prefix) {
    prefix_keys = unit_inner_stride(k.prefix_keys);
    prefix_values = unit_inner_stride(k.prefix_values);
    prefix_mask = unit_inner_stride(k.prefix_mask.to(at::kBool));
    prefix_row = k.prefix_row.to(q.device(), at::kLong).contiguous();
  }
  const ck::DecodeAttentionShape shape{
      q.size(0), q.size(1), keys.size(1), q.size(2), q.stride(0), q.stride(1), keys.size(2),
      keys.stride(0), keys.stride(1), keys.stride(2), values.stride(0), values.stride(1), values.stride(2),
      mask.stride(0),
      with_prefix ? prefix_keys.size(2) : 0, with_prefix ? prefix_keys.size(0) : 0,
      with_prefix ? prefix_keys.stride(0) : 0, with_prefix ? prefix_keys.stride(1) : 0,
      with_prefix ? prefix_keys.stride(2) : 0, with_prefix ? prefix_values.stride(0) : 0,
      with_prefix ? prefix_values.stride(1) : 0, with_prefix ? prefix_values.stride(2) : 0,
      with_prefix ? prefix_mask.stride(0) : 0};
  at::Tensor out = at::empty({q.size(0), q.size(1), q.size(2)}, q.options());
  const int splits = ck::decode_attention_splits(shape, ck::multiprocessor_count(q.device().index()));
  at::Tensor workspace;
  if (const int64_t floats = ck::decode_attention_workspace_floats(shape, splits))
    workspace = at::empty({floats}, q.options().dtype(at::kFloat));
  const ck::DecodeAttentionPointers pointers{
      q.data_ptr(), keys.data_ptr(), values.data_ptr(), mask.data_ptr<bool>(),
      with_prefix ? prefix_keys.data_ptr() : nullptr, with_prefix ? prefix_values.data_ptr() : nullptr,
      with_prefix ? prefix_mask.data_ptr<bool>() : nullptr, with_prefix ? prefix_row.data_ptr<int64_t>() : nullptr,
      out.data_ptr()};
  check_launch(ck::decode_attention(dtype_of(q, "decode_attention_cuda"), pointers, shape, static_cast<float>(scale),
                                    splits, workspace.defined() ? workspace.data_ptr<float>() : nullptr,
                                    current_stream(q)),
               "decode_attention_cuda");
  return out;
}

TokenStatistics token_statistics_cuda(const at::Tensor& logits_in, const at::Tensor& targets_in, double temperature) {
  TORCH_CHECK(logits_in.dim() == 2 && targets_in.numel() == logits_in.size(0), "token_statistics_cuda: logits ",
              logits_in.sizes(), " and targets ", targets_in.sizes(), " do not fit");
  TORCH_CHECK(temperature > 0, "token_statistics_cuda: temperature must be > 0");
  const c10::DeviceGuard guard(logits_in.device());
  const at::Tensor logits = logits_in.contiguous(), targets = targets_in.to(logits.device(), at::kLong).contiguous();
  const int64_t rows = logits.size(0);
  const auto f32 = logits.options().dtype(at::kFloat);
  TokenStatistics s{at::empty({rows}, f32), at::empty({rows}, f32), at::empty({rows}, f32)};
  check_launch(ck::token_statistics(dtype_of(logits, "token_statistics_cuda"), logits.data_ptr(), rows, logits.size(1),
                                    static_cast<float>(temperature), targets.data_ptr<int64_t>(),
                                    s.logsumexp.data_ptr<float>(), s.logprobs.data_ptr<float>(),
                                    s.entropy.data_ptr<float>(), current_stream(logits)),
               "token_statistics_cuda");
  return s;
}

at::Tensor token_logit_gradients_cuda(const at::Tensor& logits_in, const at::Tensor& targets_in,
                                      const TokenStatistics& statistics, const at::Tensor& grad_logprobs,
                                      const at::Tensor& grad_entropy, double temperature) {
  const int64_t rows = logits_in.dim() == 2 ? logits_in.size(0) : -1;
  TORCH_CHECK(rows >= 0 && targets_in.numel() == rows && statistics.logsumexp.numel() == rows &&
                  statistics.entropy.numel() == rows && grad_logprobs.numel() == rows &&
                  (!grad_entropy.defined() || grad_entropy.numel() == rows),
              "token_logit_gradients_cuda: logits ", logits_in.sizes(), " and per-row inputs do not fit");
  TORCH_CHECK(temperature > 0, "token_logit_gradients_cuda: temperature must be > 0");
  const c10::DeviceGuard guard(logits_in.device());
  const at::Tensor logits = logits_in.contiguous(), targets = targets_in.to(logits.device(), at::kLong).contiguous();
  const auto per_row = [&](const at::Tensor& t) { return t.to(logits.device(), at::kFloat).contiguous(); };
  const at::Tensor lse = per_row(statistics.logsumexp), entropy = per_row(statistics.entropy), g = per_row(grad_logprobs);
  const at::Tensor g_entropy = grad_entropy.defined() ? per_row(grad_entropy) : at::Tensor();
  at::Tensor grad_logits = at::empty({rows, logits.size(1)}, logits.options().dtype(at::kFloat));
  check_launch(ck::token_logit_gradients(dtype_of(logits, "token_logit_gradients_cuda"), logits.data_ptr(), rows,
                                         logits.size(1), static_cast<float>(temperature), targets.data_ptr<int64_t>(),
                                         lse.data_ptr<float>(), entropy.data_ptr<float>(), g.data_ptr<float>(),
                                         g_entropy.defined() ? g_entropy.data_ptr<float>() : nullptr,
                                         grad_logits.data_ptr<float>(), current_stream(logits)),
               "token_logit_gradients_cuda");
  return grad_logits;
}

TokenDraw draw_tokens_cuda(const at::Tensor& logits_in, double temperature, int64_t top_k, double top_p, double min_p,
                           const at::Tensor& uniforms_in) {
  TORCH_CHECK(logits_in.dim() == 2, "draw_tokens_cuda: logits must be [B, V], got ", logits_in.sizes());
  TORCH_CHECK(temperature > 0, "draw_tokens_cuda: temperature must be > 0");
  TORCH_CHECK(uniforms_in.numel() == logits_in.size(0), "draw_tokens_cuda: ", uniforms_in.numel(), " uniforms for ",
              logits_in.size(0), " rows");
  const c10::DeviceGuard guard(logits_in.device());
  const at::Tensor logits = logits_in.contiguous();
  const at::Tensor uniforms = uniforms_in.to(logits.device(), at::kDouble).contiguous();
  const int64_t rows = logits.size(0);
  TokenDraw out{at::empty({rows}, logits.options().dtype(at::kLong)), at::empty({rows}, logits.options().dtype(at::kFloat))};
  check_launch(ck::draw_tokens(dtype_of(logits, "draw_tokens_cuda"), logits.data_ptr(), rows, logits.size(1),
                               static_cast<float>(temperature), top_k, top_p, min_p, uniforms.data_ptr<double>(),
                               out.tokens.data_ptr<int64_t>(), out.logprobs.data_ptr<float>(), current_stream(logits)),
               "draw_tokens_cuda");
  return out;
}

}  // namespace grpo
