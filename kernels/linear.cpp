#include "kernels/linear.h"

#include <immintrin.h>

#include <algorithm>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/autograd.h>

#include "kernels/cpu_kernels.h"
#include "kernels/packed_linear.h"

namespace grpo {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

at::Tensor rows_of(const at::Tensor& t) { return t.reshape({-1, t.size(-1)}); }

at::Tensor product(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  return multiply_packed(rows_of(x), pack_panels(weight.t()), weight.size(0), bias);
}

// dW tile: rows [n, n + R) by columns [k, k + 32) of dW += the sum of dy[m, n + r] * x[m, k:k+32]
// over m in [0, rows), read in place (row strides ldd, ldx). Full tiles load without masks: with
// masked loads in its loop GCC 12 stored all 16 accumulators to the stack at every step.
template <int R, bool kFull>
__attribute__((target("avx512f"))) void gradient_tile(const float* dy, int64_t ldd, const float* x, int64_t ldx,
                                                      int64_t rows, float* dw, int64_t ldw, int64_t columns) {
  const __mmask16 low_mask = columns >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << columns) - 1);
  const __mmask16 high_mask =
      columns >= 32 ? __mmask16(0xFFFF) : columns <= 16 ? __mmask16(0) : __mmask16((1u << (columns - 16)) - 1);
  __m512 low[R], high[R];
  for (int r = 0; r < R; ++r) low[r] = high[r] = _mm512_setzero_ps();
  for (int64_t m = 0; m < rows; ++m) {
    const __m512 x_low = kFull ? _mm512_loadu_ps(x + m * ldx) : _mm512_maskz_loadu_ps(low_mask, x + m * ldx);
    const __m512 x_high = kFull ? _mm512_loadu_ps(x + m * ldx + 16) : _mm512_maskz_loadu_ps(high_mask, x + m * ldx + 16);
    for (int r = 0; r < R; ++r) {
      const __m512 d = _mm512_set1_ps(dy[m * ldd + r]);
      low[r] = _mm512_fmadd_ps(d, x_low, low[r]);
      high[r] = _mm512_fmadd_ps(d, x_high, high[r]);
    }
  }
  for (int r = 0; r < R; ++r) {  // the slice's sum joins dW's running one
    _mm512_mask_storeu_ps(dw + r * ldw, low_mask, _mm512_add_ps(_mm512_maskz_loadu_ps(low_mask, dw + r * ldw), low[r]));
    _mm512_mask_storeu_ps(dw + r * ldw + 16, high_mask,
                          _mm512_add_ps(_mm512_maskz_loadu_ps(high_mask, dw + r * ldw + 16), high[r]));
  }
}

using GradientTile = void (*)(const float*, int64_t, const float*, int64_t, int64_t, float*, int64_t, int64_t);
constexpr int64_t kGradientRows = 8;  // dW rows per tile: 16 accumulators
template <bool kFull>
constexpr GradientTile kGradientTiles[kGradientRows + 1] = {
    nullptr, gradient_tile<1, kFull>, gradient_tile<2, kFull>, gradient_tile<3, kFull>, gradient_tile<4, kFull>,
    gradient_tile<5, kFull>, gradient_tile<6, kFull>, gradient_tile<7, kFull>, gradient_tile<8, kFull>};

// dW [N, K] = dy [M, N]^T x [M, K]. Tasks are blocks of 8 rows of dW; each walks m in slices of
// 256 (that slice of x and of dy, some 256 x (K + N) floats, stays in L2 across the block's tiles)
// and adds each slice's sum into dW in m order, so every element is the same sum whatever the
// thread count. OpenBLAS ran this reduction at ~140 GFLOP/s inside the demo's step; this at ~180.
at::Tensor weight_gradient(const at::Tensor& dy, const at::Tensor& x) {
  const int64_t m = dy.size(0), n = dy.size(1), k = x.size(1);
  at::Tensor dw = at::zeros({n, k}, dy.options());
  if (m == 0 || n == 0 || k == 0) return dw;
  const float* d = dy.data_ptr<float>();
  const float* xs = x.data_ptr<float>();
  float* out = dw.data_ptr<float>();
  const int64_t ldd = dy.stride(0), ldx = x.stride(0);
  constexpr int64_t kSlice = 256;
  at::parallel_for(0, (n + kGradientRows - 1) / kGradientRows, 1, [&](int64_t first, int64_t last) {
    for (int64_t m0 = 0; m0 < m; m0 += kSlice) {
      const int64_t rows = std::min(kSlice, m - m0);
      for (int64_t block = first; block < last; ++block) {
        const int64_t row = block * kGradientRows, tile_rows = std::min(kGradientRows, n - row);
        for (int64_t column = 0; column < k; column += 32)
          (k - column >= 32 ? kGradientTiles<true> : kGradientTiles<false>)[tile_rows](
              d + m0 * ldd + row, ldd, xs + m0 * ldx + column, ldx, rows, out + row * k + column, k,
              std::min<int64_t>(32, k - column));
      }
    }
  });
  return dw;
}

std::vector<int64_t> output_shape(const at::Tensor& x, int64_t features) {
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape.back() = features;
  return shape;
}

// The backward both autograd functions share: dx on the product tile, dW on its own, db a column sum.
variable_list linear_backward(AutogradContext* ctx, const at::Tensor& upstream, bool with_bias) {
  const auto saved = ctx->get_saved_variables();
  const at::Tensor &x = saved[0], &weight = saved[1];
  const at::Tensor dy = rows_of(upstream).contiguous();
  at::Tensor dx, dw, db;
  if (ctx->needs_input_grad(0))  // dY [M, N] times W [N, K]: W is already the tile's [K, N] operand
    dx = multiply_packed(dy, pack_panels(weight), weight.size(1), at::Tensor()).view(x.sizes());
  if (ctx->needs_input_grad(1)) {
    const at::Tensor x_rows = rows_of(x);
    dw = weight_gradient(dy, x_rows.stride(1) == 1 ? x_rows : x_rows.contiguous());
  }
  if (with_bias && ctx->needs_input_grad(2)) db = dy.sum(0);
  return with_bias ? variable_list{dx, dw, db} : variable_list{dx, dw};
}

// Autograd records an input per tensor argument and cannot take an undefined one: two functions.
class TileLinearWithBias : public torch::autograd::Function<TileLinearWithBias> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight,
                            const at::Tensor& bias) {
    ctx->save_for_backward({x, weight});
    return product(x, weight, bias).view(output_shape(x, weight.size(0)));
  }
  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    return linear_backward(ctx, grad_outputs[0], true);
  }
};

class TileLinear : public torch::autograd::Function<TileLinear> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight) {
    ctx->save_for_backward({x, weight});
    return product(x, weight, at::Tensor()).view(output_shape(x, weight.size(0)));
  }
  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    return linear_backward(ctx, grad_outputs[0], false);
  }
};

}  // namespace

at::Tensor linear_reference(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  return at::linear(x, weight, bias);
}

at::Tensor linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  const bool bias_fits = !bias.defined() || (runs_on_cpu_kernels(bias) && bias.dim() == 1 &&
                                             bias.size(0) == weight.size(0) && bias.is_contiguous());
  if (!runs_on_cpu_kernels(x) || !runs_on_cpu_kernels(weight) || !bias_fits || x.dim() == 0 ||
      weight.dim() != 2 || x.size(-1) != weight.size(1) || x.numel() == 0 || weight.numel() == 0)
    return linear_reference(x, weight, bias);
  const bool records_graph = at::GradMode::is_enabled() &&
                             (x.requires_grad() || weight.requires_grad() || (bias.defined() && bias.requires_grad()));
  if (!records_graph) return product(x, weight, bias).view(output_shape(x, weight.size(0)));
  return bias.defined() ? TileLinearWithBias::apply(x, weight, bias) : TileLinear::apply(x, weight);
}

}  // namespace grpo
