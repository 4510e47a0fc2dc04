#include "kernels/linear.h"

#include <algorithm>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/autograd.h>

#include "kernels/cpu_kernels.h"
#include "kernels/packed_linear.h"
#include "kernels/product_tile.h"

namespace grpo {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// [..., K] as rows [M, K] with unit column stride, the tiles' operand layout: a view where one
// exists, else a copy.
at::Tensor rows_of(const at::Tensor& t) {
  const at::Tensor rows = t.reshape({-1, t.size(-1)});
  return rows.stride(1) == 1 ? rows : rows.contiguous();
}

at::Tensor product(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  return multiply_packed(rows_of(x), pack_panels(weight.t()), weight.size(0), bias);
}

// dW [N, K] = dy [M, N]^T x [M, K] on the product tile, dy^T read in place: tasks are blocks of 8
// rows of dW; each walks m in slices of 256 (that slice of x and of dy, some 256 x (K + N) floats,
// stays in L2 across the block's tiles) and adds each slice's sum into dW in m order, so every
// element is the same sum whatever the thread count. OpenBLAS ran this reduction at ~140 GFLOP/s
// inside the demo's step; this at ~180.
at::Tensor weight_gradient(const at::Tensor& dy, const at::Tensor& x) {
  const int64_t m = dy.size(0), n = dy.size(1), k = x.size(1);
  if (m == 0 || n == 0 || k == 0) return at::zeros({n, k}, dy.options());
  at::Tensor dw = at::empty({n, k}, dy.options());  // the first slice writes it, later ones add
  const float* d = dy.data_ptr<float>();
  const float* xs = x.data_ptr<float>();
  float* out = dw.data_ptr<float>();
  const int64_t ldd = dy.stride(0), ldx = x.stride(0);
  constexpr int64_t kSlice = 256;
  at::parallel_for(0, (n + tile::kTileRows - 1) / tile::kTileRows, 1, [&](int64_t first, int64_t last) {
    for (int64_t m0 = 0; m0 < m; m0 += kSlice) {
      const int64_t rows = std::min(kSlice, m - m0);
      for (int64_t block = first; block < last; ++block) {
        const int64_t row = block * tile::kTileRows, tile_rows = std::min(tile::kTileRows, n - row);
        for (int64_t column = 0; column < k; column += tile::kTileColumns) {
          const int64_t columns = std::min(tile::kTileColumns, k - column);
          tile::tile_for<true>(tile_rows, columns)(d + m0 * ldd + row, ldd, xs + m0 * ldx + column, ldx, rows, m0 > 0,
                                                   out + row * k + column, k, columns);
        }
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
  const at::Tensor dy = rows_of(upstream);
  at::Tensor dx, dw, db;
  if (ctx->needs_input_grad(0))  // dY [M, N] times W [N, K]: W is already the tile's [K, N] operand
    dx = multiply_packed(dy, pack_panels(weight), weight.size(1), at::Tensor()).view(x.sizes());
  if (ctx->needs_input_grad(1)) dw = weight_gradient(dy, rows_of(x));
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
