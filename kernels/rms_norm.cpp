#include "kernels/rms_norm.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <ATen/Parallel.h>
#include <torch/autograd.h>

#include "kernels/avx512_math.h"
#include "kernels/cpu_kernels.h"
#include "kernels/cuda_kernels.h"

namespace grpo {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Rows per block of the weight gradient: each block sums its rows' terms alone and the blocks are
// added in order, so the gradient does not depend on the thread count.
constexpr int64_t kRowsPerBlock = 32;

// y = w * (x * r), r = 1 / sqrt(mean(x^2) + eps); returns r.
__attribute__((target("avx512f"))) float normalize_row(const float* x, const float* w, float* y, int64_t width,
                                                       float eps) {
  __m512 squares = _mm512_setzero_ps();
  for (int64_t i = 0; i < width; i += 16) {
    const __m512 v = _mm512_maskz_loadu_ps(lanes_before(i, width), x + i);
    squares = _mm512_fmadd_ps(v, v, squares);
  }
  const float r = 1.0f / std::sqrt(_mm512_reduce_add_ps(squares) / static_cast<float>(width) + eps);
  const __m512 r16 = _mm512_set1_ps(r);
  for (int64_t i = 0; i < width; i += 16) {
    const __mmask16 m = lanes_before(i, width);
    const __m512 normed = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), r16);
    _mm512_mask_storeu_ps(y + i, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, w + i), normed));
  }
  return r;
}

// dx = r * (g w - xhat * mean(g w xhat)), xhat = x r; adds g * xhat to grad_w.
__attribute__((target("avx512f"))) void normalize_row_backward(const float* x, const float* w, const float* g, float r,
                                                               float* dx, float* grad_w, int64_t width) {
  const __m512 r16 = _mm512_set1_ps(r);
  __m512 dot = _mm512_setzero_ps();
  for (int64_t i = 0; i < width; i += 16) {
    const __mmask16 m = lanes_before(i, width);
    const __m512 xhat = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), r16);
    const __m512 gv = _mm512_maskz_loadu_ps(m, g + i);
    dot = _mm512_fmadd_ps(_mm512_mul_ps(gv, _mm512_maskz_loadu_ps(m, w + i)), xhat, dot);
    _mm512_mask_storeu_ps(grad_w + i, m, _mm512_fmadd_ps(gv, xhat, _mm512_maskz_loadu_ps(m, grad_w + i)));
  }
  const __m512 mean_dot = _mm512_set1_ps(_mm512_reduce_add_ps(dot) / static_cast<float>(width));
  for (int64_t i = 0; i < width; i += 16) {
    const __mmask16 m = lanes_before(i, width);
    const __m512 xhat = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), r16);
    const __m512 gw = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, g + i), _mm512_maskz_loadu_ps(m, w + i));
    _mm512_mask_storeu_ps(dx + i, m, _mm512_mul_ps(r16, _mm512_fnmadd_ps(xhat, mean_dot, gw)));
  }
}

class FusedRmsNorm : public torch::autograd::Function<FusedRmsNorm> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight, double eps) {
    const int64_t width = x.size(-1), rows = width == 0 ? 0 : x.numel() / width;
    const at::Tensor x2 = x.contiguous().view({rows, width}), w = weight.contiguous();
    at::Tensor y = at::empty_like(x2), inverse_rms = at::empty({rows}, x.options());
    const float *xp = x2.data_ptr<float>(), *wp = w.data_ptr<float>();
    float *yp = y.data_ptr<float>(), *rp = inverse_rms.data_ptr<float>();
    const float eps32 = static_cast<float>(eps);
    at::parallel_for(0, rows, rows_per_task(width), [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) rp[row] = normalize_row(xp + row * width, wp, yp + row * width, width, eps32);
    });
    ctx->save_for_backward({x2, w, inverse_rms});
    return y.view(x.sizes());
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &w = saved[1], &inverse_rms = saved[2];
    const int64_t rows = x.size(0), width = x.size(1);
    const at::Tensor g = grad_outputs[0].contiguous().view({rows, width});
    const int64_t blocks = (rows + kRowsPerBlock - 1) / kRowsPerBlock;
    at::Tensor dx = at::empty_like(x), partial_w = at::zeros({std::max<int64_t>(blocks, 1), width}, x.options());
    const float *xp = x.data_ptr<float>(), *wp = w.data_ptr<float>(), *gp = g.data_ptr<float>(),
                *rp = inverse_rms.data_ptr<float>();
    float *dxp = dx.data_ptr<float>(), *pw = partial_w.data_ptr<float>();
    at::parallel_for(0, blocks, std::max<int64_t>(1, rows_per_task(width) / kRowsPerBlock), [&](int64_t begin, int64_t end) {
      for (int64_t block = begin; block < end; ++block)
        for (int64_t row = block * kRowsPerBlock; row < std::min(rows, (block + 1) * kRowsPerBlock); ++row)
          normalize_row_backward(xp + row * width, wp, gp + row * width, rp[row], dxp + row * width, pw + block * width,
                                 width);
    });
    at::Tensor grad_w = partial_w[0].clone();
    float* gw = grad_w.data_ptr<float>();
    for (int64_t block = 1; block < blocks; ++block)
      for (int64_t i = 0; i < width; ++i) gw[i] += pw[block * width + i];
    return {dx.view(grad_outputs[0].sizes()), grad_w, at::Tensor()};
  }
};

}  // namespace

at::Tensor rms_norm_reference(const at::Tensor& x, const at::Tensor& weight, double eps) {
  if (!at::GradMode::is_enabled() && x.scalar_type() == at::kFloat) {
    // The same arithmetic with two temporaries fewer.
    return (x * x.pow(2).mean(-1, /*keepdim=*/true).add_(eps).rsqrt_()).mul_(weight);
  }
  const at::Tensor x32 = x.to(at::kFloat);
  const at::Tensor normed = x32 * at::rsqrt(x32.pow(2).mean(-1, /*keepdim=*/true) + eps);
  return weight * normed.to(x.scalar_type());
}

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  const bool fits = x.dim() > 0 && weight.dim() == 1 && weight.size(0) == x.size(-1) && x.numel() > 0;
  if (fits && runs_on_cuda_kernels(x, weight)) return rms_norm_cuda(x, weight, eps);
  if (!fits || !runs_on_cpu_kernels(x) || !runs_on_cpu_kernels(weight)) return rms_norm_reference(x, weight, eps);
  return FusedRmsNorm::apply(x, weight, eps);
}

}  // namespace grpo
