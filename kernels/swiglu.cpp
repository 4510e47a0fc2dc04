#include "kernels/swiglu.h"

#include <immintrin.h>

#include <algorithm>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/autograd.h>

#include "kernels/avx512_math.h"
#include "kernels/cpu_kernels.h"
#include "kernels/cuda_kernels.h"

namespace grpo {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// A tensor as rows of its last dimension: a pointer, the row count and the distance between rows.
struct Rows {
  at::Tensor tensor;  // keeps the storage alive
  const float* data;
  int64_t count, width, stride;
};

// A view of [..., I] as [rows, I] without a copy where the leading dimensions collapse (a slice of
// the last dimension does); else a contiguous copy.
Rows as_rows(const at::Tensor& t) {
  const int64_t width = t.size(-1), count = width == 0 ? 0 : t.numel() / width;
  at::Tensor rows = t.stride(-1) == 1 ? t.reshape({count, width}) : t.contiguous().view({count, width});
  if (rows.stride(1) != 1) rows = rows.contiguous();
  return {rows, rows.data_ptr<float>(), count, width, rows.stride(0)};
}

__attribute__((target("avx512f"))) inline __m512 sigmoid16(__m512 g) {
  return _mm512_div_ps(_mm512_set1_ps(1.0f), _mm512_add_ps(_mm512_set1_ps(1.0f), exp16(_mm512_sub_ps(_mm512_setzero_ps(), g))));
}

__attribute__((target("avx512f"))) void swiglu_row(const float* gate, const float* up, float* out, int64_t width) {
  for (int64_t i = 0; i < width; i += 16) {
    const __mmask16 m = lanes_before(i, width);
    const __m512 g = _mm512_maskz_loadu_ps(m, gate + i);
    const __m512 silu = _mm512_mul_ps(g, sigmoid16(g));
    _mm512_mask_storeu_ps(out + i, m, _mm512_mul_ps(silu, _mm512_maskz_loadu_ps(m, up + i)));
  }
}

// d gate = dy * up * s * (1 + g (1 - s)), d up = dy * g * s, s = sigmoid(g).
__attribute__((target("avx512f"))) void swiglu_row_backward(const float* gate, const float* up, const float* dy,
                                                            float* d_gate, float* d_up, int64_t width) {
  const __m512 one = _mm512_set1_ps(1.0f);
  for (int64_t i = 0; i < width; i += 16) {
    const __mmask16 m = lanes_before(i, width);
    const __m512 g = _mm512_maskz_loadu_ps(m, gate + i), u = _mm512_maskz_loadu_ps(m, up + i);
    const __m512 d = _mm512_maskz_loadu_ps(m, dy + i);
    const __m512 s = sigmoid16(g);
    const __m512 silu_slope = _mm512_mul_ps(s, _mm512_fmadd_ps(g, _mm512_sub_ps(one, s), one));
    _mm512_mask_storeu_ps(d_gate + i, m, _mm512_mul_ps(_mm512_mul_ps(d, u), silu_slope));
    _mm512_mask_storeu_ps(d_up + i, m, _mm512_mul_ps(d, _mm512_mul_ps(g, s)));
  }
}

class FusedSwiglu : public torch::autograd::Function<FusedSwiglu> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& gate, const at::Tensor& up) {
    const Rows g = as_rows(gate), u = as_rows(up);
    at::Tensor out = at::empty({g.count, g.width}, gate.options());
    float* op = out.data_ptr<float>();
    at::parallel_for(0, g.count, rows_per_task(g.width), [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row)
        swiglu_row(g.data + row * g.stride, u.data + row * u.stride, op + row * g.width, g.width);
    });
    ctx->save_for_backward({g.tensor, u.tensor});
    return out.view(gate.sizes());
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &gate = saved[0], &up = saved[1];
    const int64_t rows = gate.size(0), width = gate.size(1);
    const at::Tensor dy = grad_outputs[0].contiguous().view({rows, width});
    at::Tensor d_gate = at::empty({rows, width}, dy.options()), d_up = at::empty({rows, width}, dy.options());
    const float *gp = gate.data_ptr<float>(), *up_p = up.data_ptr<float>(), *dyp = dy.data_ptr<float>();
    float *dgp = d_gate.data_ptr<float>(), *dup = d_up.data_ptr<float>();
    const int64_t gs = gate.stride(0), us = up.stride(0);
    at::parallel_for(0, rows, rows_per_task(width), [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row)
        swiglu_row_backward(gp + row * gs, up_p + row * us, dyp + row * width, dgp + row * width, dup + row * width,
                            width);
    });
    return {d_gate.view(grad_outputs[0].sizes()), d_up.view(grad_outputs[0].sizes())};
  }
};

}  // namespace

at::Tensor swiglu_reference(const at::Tensor& gate, const at::Tensor& up) { return at::silu(gate) * up; }

at::Tensor swiglu(const at::Tensor& gate, const at::Tensor& up) {
  const bool fits = gate.sizes() == up.sizes() && gate.dim() > 0 && gate.numel() > 0;
  if (fits && runs_on_cuda_kernels(gate, up)) return swiglu_cuda(gate, up);
  if (!fits || !runs_on_cpu_kernels(gate) || !runs_on_cpu_kernels(up)) return swiglu_reference(gate, up);
  return FusedSwiglu::apply(gate, up);
}

}  // namespace grpo
