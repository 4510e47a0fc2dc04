#include "kernels/rotary.h"

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

// One head's row: out1 = x1 c1 + (-x2) s1, out2 = x2 c2 + x1 s2. `inverse` gives the inverse
// rotation, which is the backward: dx1 = dy1 c1 + dy2 s2, dx2 = dy2 c2 + (-dy1) s1.
__attribute__((target("avx512f"))) void rotate_row(const float* x, const float* c, const float* s, float* out,
                                                   int64_t half, bool inverse) {
  const __m512 zero = _mm512_setzero_ps();
  for (int64_t i = 0; i < half; i += 16) {
    const __mmask16 m = lanes_before(i, half);
    const __m512 x1 = _mm512_maskz_loadu_ps(m, x + i), x2 = _mm512_maskz_loadu_ps(m, x + half + i);
    const __m512 c1 = _mm512_maskz_loadu_ps(m, c + i), c2 = _mm512_maskz_loadu_ps(m, c + half + i);
    const __m512 s1 = _mm512_maskz_loadu_ps(m, s + i), s2 = _mm512_maskz_loadu_ps(m, s + half + i);
    if (!inverse) {
      _mm512_mask_storeu_ps(out + i, m, _mm512_add_ps(_mm512_mul_ps(x1, c1), _mm512_mul_ps(_mm512_sub_ps(zero, x2), s1)));
      _mm512_mask_storeu_ps(out + half + i, m, _mm512_add_ps(_mm512_mul_ps(x2, c2), _mm512_mul_ps(x1, s2)));
    } else {
      _mm512_mask_storeu_ps(out + i, m, _mm512_add_ps(_mm512_mul_ps(x1, c1), _mm512_mul_ps(x2, s2)));
      _mm512_mask_storeu_ps(out + half + i, m, _mm512_add_ps(_mm512_mul_ps(x2, c2), _mm512_mul_ps(_mm512_sub_ps(zero, x1), s1)));
    }
  }
}

// out [B, N, T, D] contiguous = the rotation (or its inverse) of x, read through its strides.
at::Tensor rotate(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, bool inverse) {
  const int64_t b = x.size(0), n = x.size(1), t = x.size(2), d = x.size(3);
  const at::Tensor input = x.stride(3) == 1 ? x : x.contiguous();
  at::Tensor out = at::empty({b, n, t, d}, x.options());
  const float *xp = input.data_ptr<float>(), *cp = cos.data_ptr<float>(), *sp = sin.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const int64_t sb = input.stride(0), sn = input.stride(1), st = input.stride(2);
  at::parallel_for(0, b * n * t, rows_per_task(d), [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t bi = row / (n * t), ni = row / t % n, ti = row % t;
      const int64_t position = (bi * t + ti) * d;
      rotate_row(xp + bi * sb + ni * sn + ti * st, cp + position, sp + position, op + row * d, d / 2, inverse);
    }
  });
  return out;
}

class FusedRotary : public torch::autograd::Function<FusedRotary> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
    ctx->save_for_backward({cos, sin});
    return rotate(x, cos, sin, /*inverse=*/false);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    return {rotate(grad_outputs[0], saved[0], saved[1], /*inverse=*/true), at::Tensor(), at::Tensor()};
  }
};

at::Tensor rotate_half(const at::Tensor& x) {
  const int64_t half = x.size(-1) / 2;
  return at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
}

}  // namespace

at::Tensor rotary_embedding_reference(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  const at::Tensor c = cos.unsqueeze(1), s = sin.unsqueeze(1);
  return x * c + rotate_half(x) * s;
}

at::Tensor rotary_embedding(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  const bool fits = x.dim() == 4 && x.size(-1) % 2 == 0 && x.numel() > 0 && cos.dim() == 3 &&
                    cos.sizes() == sin.sizes() && cos.size(0) == x.size(0) && cos.size(1) == x.size(2) &&
                    cos.size(2) == x.size(3) && cos.is_contiguous() && sin.is_contiguous() && !cos.requires_grad() &&
                    !sin.requires_grad();
  if (fits && runs_on_cuda_kernels(x, cos, sin)) return rotary_embedding_cuda(x, cos, sin);
  if (!fits || !runs_on_cpu_kernels(x) || !runs_on_cpu_kernels(cos) || !runs_on_cpu_kernels(sin))
    return rotary_embedding_reference(x, cos, sin);
  return FusedRotary::apply(x, cos, sin);
}

}  // namespace grpo
