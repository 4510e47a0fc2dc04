#include "kernels/attention_cpu.h"

#include <immintrin.h>

#include <algorithm>
#include <limits>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/autograd.h>

#include "kernels/avx512_math.h"
#include "kernels/product_tile.h"

namespace grpo {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using tile::kTileColumns;
using tile::kTileRows;
using tile::tile_for;

constexpr float kMinusInf = -std::numeric_limits<float>::infinity();

// One query's row: p_j = softmax(x_j * scale + key_bias_j) over the keys j < visible it may see
// under the causal mask, 0 beyond; no key at all gives 0s. x and p may be the same row.
__attribute__((target("avx512f"))) void causal_softmax_row(const float* x, const float* key_bias, float* p,
                                                           int64_t visible, int64_t keys, float scale) {
  const __m512 scale16 = _mm512_set1_ps(scale);
  __m512 max16 = _mm512_set1_ps(kMinusInf);
  for (int64_t j = 0; j < visible; j += 16) {
    const __mmask16 m = lanes_before(j, visible);
    const __m512 z =
        _mm512_add_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + j), scale16), _mm512_maskz_loadu_ps(m, key_bias + j));
    _mm512_mask_storeu_ps(p + j, m, z);
    max16 = _mm512_mask_max_ps(max16, m, max16, z);
  }
  const float max = _mm512_reduce_max_ps(max16);
  std::fill(p + visible, p + keys, 0.0f);
  if (max == kMinusInf) {
    std::fill(p, p + visible, 0.0f);
    return;
  }
  const __m512 shift = _mm512_set1_ps(max);
  __m512 sum16 = _mm512_setzero_ps();
  for (int64_t j = 0; j < visible; j += 16) {
    const __mmask16 m = lanes_before(j, visible);
    const __m512 e = exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, p + j), shift));
    _mm512_mask_storeu_ps(p + j, m, e);
    sum16 = _mm512_mask_add_ps(sum16, m, sum16, e);
  }
  const __m512 inverse = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(sum16));
  for (int64_t j = 0; j < visible; j += 16) {
    const __mmask16 m = lanes_before(j, visible);
    _mm512_mask_storeu_ps(p + j, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, p + j), inverse));
  }
}

// d x_j = scale * p_j * (d p_j - sum_k p_k d p_k), 0 past the visible keys (where p is 0). dp and
// dx may be the same row.
__attribute__((target("avx512f"))) void causal_softmax_row_backward(const float* p, const float* dp, float* dx,
                                                                    int64_t visible, int64_t keys, float scale) {
  __m512 dot16 = _mm512_setzero_ps();
  for (int64_t j = 0; j < visible; j += 16) {
    const __mmask16 m = lanes_before(j, visible);
    dot16 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, p + j), _mm512_maskz_loadu_ps(m, dp + j), dot16);
  }
  const __m512 dot = _mm512_set1_ps(_mm512_reduce_add_ps(dot16)), scale16 = _mm512_set1_ps(scale);
  for (int64_t j = 0; j < visible; j += 16) {
    const __mmask16 m = lanes_before(j, visible);
    const __m512 centered = _mm512_sub_ps(_mm512_maskz_loadu_ps(m, dp + j), dot);
    _mm512_mask_storeu_ps(dx + j, m, _mm512_mul_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(m, p + j), centered), scale16));
  }
  std::fill(dx + visible, dx + keys, 0.0f);
}

// The sizes of one call and the causal geometry: query t sees keys [0, visible(t)).
struct Geometry {
  int64_t batch, heads, queries, dim, kv_heads, keys, group, offset;
  int64_t visible(int64_t t) const { return std::min(keys, std::max<int64_t>(0, offset + t + 1)); }
  // The first query that sees key j (queries before it have p = 0 there).
  int64_t first_query_seeing(int64_t j) const { return std::min(queries, std::max<int64_t>(0, j - offset)); }
};

// y [m, n] (row stride ldy) = x [m, k] (row stride ldx) times b [k, n] read in place (row stride
// ldb), or added to y; rows in tiles of 8, where tile rows [r, r + 8) need only the first
// inner(r, r + 8) entries of k (the rest are zeros of a causal mask).
template <typename Inner>
void multiply(const float* x, int64_t ldx, int64_t m, const float* b, int64_t ldb, int64_t n, float* y, int64_t ldy,
              bool accumulate, const Inner& inner) {
  for (int64_t row = 0; row < m; row += kTileRows) {
    const int64_t rows = std::min(kTileRows, m - row), k = inner(row, row + rows);
    for (int64_t column = 0; column < n; column += kTileColumns) {
      float* out = y + row * ldy + column;
      if (k <= 0) {
        if (!accumulate)
          for (int64_t r = 0; r < rows; ++r) std::fill(out + r * ldy, out + r * ldy + std::min(kTileColumns, n - column), 0.0f);
        continue;
      }
      const int64_t columns = std::min(kTileColumns, n - column);
      tile_for(rows, columns)(x + row * ldx, ldx, b + column, ldb, k, accumulate, out, ldy, columns);
    }
  }
}

// to [cols, rows] = from [rows, cols]^T (row strides cols and rows).
void transpose(const float* from, int64_t rows, int64_t cols, float* to) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) to[c * rows + r] = from[r * cols + c];
}

// scores [T, S] of one query head: q_h [T, D] times k^T, k^T packed as keys_t [D, S]; only the
// 32-key columns a tile's queries may see.
void head_scores(const Geometry& g, const float* q_h, const float* keys_t, float* scores) {
  for (int64_t row = 0; row < g.queries; row += kTileRows) {
    const int64_t rows = std::min(kTileRows, g.queries - row), seen = g.visible(row + rows - 1);
    for (int64_t column = 0; column < seen; column += kTileColumns) {
      const int64_t columns = std::min(kTileColumns, g.keys - column);
      tile_for(rows, columns)(q_h + row * g.dim, g.dim, keys_t + column, g.keys, g.dim, false,
                              scores + row * g.keys + column, g.keys, columns);
    }
  }
}

class OneBlockAttention : public torch::autograd::Function<OneBlockAttention> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& q_in, const at::Tensor& k_in,
                            const at::Tensor& v_in, const at::Tensor& key_bias, int64_t offset, double scale) {
    const at::Tensor q = q_in.contiguous(), k = k_in.contiguous(), v = v_in.contiguous();
    const Geometry g{q.size(0), q.size(1), q.size(2), q.size(3), k.size(1), k.size(2), q.size(1) / k.size(1), offset};
    at::Tensor out = at::empty_like(q), probs = at::empty({g.batch, g.heads, g.queries, g.keys}, q.options());
    const float *qp = q.data_ptr<float>(), *kp = k.data_ptr<float>(), *vp = v.data_ptr<float>(),
                *bias = key_bias.data_ptr<float>();
    float *op = out.data_ptr<float>(), *pp = probs.data_ptr<float>();
    const float scale32 = static_cast<float>(scale);
    at::parallel_for(0, g.batch * g.kv_heads, 1, [&](int64_t first, int64_t last) {
      std::vector<float> keys_t(g.dim * g.keys);
      for (int64_t task = first; task < last; ++task) {
        const int64_t b = task / g.kv_heads;
        const float *k_h = kp + task * g.keys * g.dim, *v_h = vp + task * g.keys * g.dim;
        transpose(k_h, g.keys, g.dim, keys_t.data());
        for (int64_t head = task * g.group; head < (task + 1) * g.group; ++head) {
          const float* q_h = qp + head * g.queries * g.dim;
          float* p_h = pp + head * g.queries * g.keys;
          head_scores(g, q_h, keys_t.data(), p_h);
          for (int64_t t = 0; t < g.queries; ++t)
            causal_softmax_row(p_h + t * g.keys, bias + b * g.keys, p_h + t * g.keys, g.visible(t), g.keys, scale32);
          multiply(p_h, g.keys, g.queries, v_h, g.dim, g.dim, op + head * g.queries * g.dim, g.dim, false,
                   [&](int64_t, int64_t end) { return g.visible(end - 1); });
        }
      }
    });
    ctx->save_for_backward({q, k, v, probs});
    ctx->saved_data["offset"] = offset;
    ctx->saved_data["scale"] = scale;
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &q = saved[0], &k = saved[1], &v = saved[2], &probs = saved[3];
    const at::Tensor grad_out = grad_outputs[0].contiguous();
    const Geometry g{q.size(0), q.size(1), q.size(2), q.size(3), k.size(1), k.size(2), q.size(1) / k.size(1),
                     ctx->saved_data["offset"].toInt()};
    const float scale = static_cast<float>(ctx->saved_data["scale"].toDouble());
    at::Tensor dq = at::empty_like(q), dk = at::zeros_like(k), dv = at::zeros_like(v);
    const float *qp = q.data_ptr<float>(), *kp = k.data_ptr<float>(), *vp = v.data_ptr<float>(),
                *pp = probs.data_ptr<float>(), *gp = grad_out.data_ptr<float>();
    float *dqp = dq.data_ptr<float>(), *dkp = dk.data_ptr<float>(), *dvp = dv.data_ptr<float>();
    const auto seen_by_tile = [&](int64_t, int64_t end) { return g.visible(end - 1); };
    at::parallel_for(0, g.batch * g.kv_heads, 1, [&](int64_t first, int64_t last) {
      std::vector<float> values_t(g.dim * g.keys), grad_scores(g.queries * g.keys);
      for (int64_t task = first; task < last; ++task) {
        const float *k_h = kp + task * g.keys * g.dim, *v_h = vp + task * g.keys * g.dim;
        float *dk_h = dkp + task * g.keys * g.dim, *dv_h = dvp + task * g.keys * g.dim;
        transpose(v_h, g.keys, g.dim, values_t.data());
        for (int64_t head = task * g.group; head < (task + 1) * g.group; ++head) {
          const float *q_h = qp + head * g.queries * g.dim, *p_h = pp + head * g.queries * g.keys,
                      *go_h = gp + head * g.queries * g.dim;
          // dV += P^T dO, from the first query that sees each key on
          multiply_transposed_from_first_seeing(g, p_h, go_h, dv_h);
          // dP = dO V^T, then dS = scale * P * (dP - rowsum(P * dP)) in place
          head_scores(g, go_h, values_t.data(), grad_scores.data());
          for (int64_t t = 0; t < g.queries; ++t)
            causal_softmax_row_backward(p_h + t * g.keys, grad_scores.data() + t * g.keys, grad_scores.data() + t * g.keys,
                                        g.visible(t), g.keys, scale);
          // dQ = dS K;  dK += dS^T Q
          multiply(grad_scores.data(), g.keys, g.queries, k_h, g.dim, g.dim, dqp + head * g.queries * g.dim, g.dim, false,
                   seen_by_tile);
          multiply_transposed_from_first_seeing(g, grad_scores.data(), q_h, dk_h);
        }
      }
    });
    return {dq, dk, dv, at::Tensor(), at::Tensor(), at::Tensor()};
  }

 private:
  // y [S, D] += x^T m for x [T, S] (read transposed in place) and m [T, D], where x's column j (a
  // key) is 0 before the first query that sees key j: each 8-key tile starts its inner loop at the
  // first query that sees its first key.
  static void multiply_transposed_from_first_seeing(const Geometry& g, const float* x, const float* m, float* y) {
    for (int64_t row = 0; row < g.keys; row += kTileRows) {
      const int64_t rows = std::min(kTileRows, g.keys - row), start = g.first_query_seeing(row);
      if (start >= g.queries) continue;
      for (int64_t column = 0; column < g.dim; column += kTileColumns) {
        const int64_t columns = std::min(kTileColumns, g.dim - column);
        tile_for<true>(rows, columns)(x + start * g.keys + row, g.keys, m + start * g.dim + column, g.dim,
                                      g.queries - start, true, y + row * g.dim + column, g.dim, columns);
      }
    }
  }
};

}  // namespace

at::Tensor one_block_attention_cpu(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                   const at::Tensor& key_mask, int64_t query_offset, double scale) {
  const at::Tensor key_bias =
      at::zeros(key_mask.sizes(), q.options().requires_grad(false)).masked_fill_(key_mask.logical_not(), kMinusInf);
  return OneBlockAttention::apply(q, k, v, key_bias, query_offset, scale);
}

}  // namespace grpo
