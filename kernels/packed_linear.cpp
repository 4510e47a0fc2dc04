#include "kernels/packed_linear.h"

#include <immintrin.h>

#include <algorithm>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include "kernels/cpu_kernels.h"

namespace grpo {
namespace {

constexpr int64_t kWidth = PackedLinear::kPanelWidth;
constexpr int64_t kTileRows = 8;  // rows per tile: 16 accumulators of the 32 vector registers

// One tile: rows [0, R) of `x` (row stride ldx) times one panel [k, 32], plus the panel's bias
// (or 0), into `y` (row stride ldy), of which only the first `columns` (<= 32) are written.
template <int R>
__attribute__((target("avx512f"))) void panel_tile(const float* x, int64_t ldx, const float* panel, int64_t k,
                                                   const float* bias, float* y, int64_t ldy, int64_t columns) {
  __m512 low[R], high[R];
  const __mmask16 low_mask = columns >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << columns) - 1);
  const __mmask16 high_mask = columns >= 32 ? __mmask16(0xFFFF) : columns <= 16 ? __mmask16(0) : __mmask16((1u << (columns - 16)) - 1);
  const __m512 bias_low = bias ? _mm512_maskz_loadu_ps(low_mask, bias) : _mm512_setzero_ps();
  const __m512 bias_high = bias ? _mm512_maskz_loadu_ps(high_mask, bias + 16) : _mm512_setzero_ps();
  for (int r = 0; r < R; ++r) {
    low[r] = bias_low;
    high[r] = bias_high;
  }
  for (int64_t i = 0; i < k; ++i) {
    const __m512 w_low = _mm512_loadu_ps(panel + i * kWidth);
    const __m512 w_high = _mm512_loadu_ps(panel + i * kWidth + 16);
    for (int r = 0; r < R; ++r) {
      const __m512 a = _mm512_set1_ps(x[r * ldx + i]);
      low[r] = _mm512_fmadd_ps(a, w_low, low[r]);
      high[r] = _mm512_fmadd_ps(a, w_high, high[r]);
    }
  }
  for (int r = 0; r < R; ++r) {
    _mm512_mask_storeu_ps(y + r * ldy, low_mask, low[r]);
    _mm512_mask_storeu_ps(y + r * ldy + 16, high_mask, high[r]);
  }
}

using TileFunction = void (*)(const float*, int64_t, const float*, int64_t, const float*, float*, int64_t, int64_t);
constexpr TileFunction kTiles[kTileRows + 1] = {nullptr,          panel_tile<1>, panel_tile<2>, panel_tile<3>, panel_tile<4>,
                                                panel_tile<5>, panel_tile<6>, panel_tile<7>, panel_tile<8>};

// Rows [0, m) of x [m, k] against panels [first, last), into y [m, n].
void multiply_panels(const float* x, int64_t m, int64_t k, const float* panels, const float* bias, int64_t n,
                     int64_t first, int64_t last, float* y) {
  for (int64_t p = first; p < last; ++p) {
    const float* panel = panels + p * k * kWidth;
    const int64_t column = p * kWidth, columns = std::min(kWidth, n - column);
    for (int64_t row = 0; row < m; row += kTileRows) {
      const int64_t rows = std::min(kTileRows, m - row);
      kTiles[rows](x + row * k, k, panel, k, bias ? bias + column : nullptr, y + row * n + column, n, columns);
    }
  }
}

}  // namespace

PackedLinear::PackedLinear(const at::Tensor& weight, const at::Tensor& bias) {
  TORCH_CHECK(weight.dim() == 2, "PackedLinear: weight must be [N, K], got ", weight.sizes());
  TORCH_CHECK(!bias.defined() || (bias.dim() == 1 && bias.size(0) == weight.size(0)), "PackedLinear: bias ",
              bias.sizes(), " does not fit weight ", weight.sizes());
  out_ = weight.size(0);
  in_ = weight.size(1);
  const at::Tensor w = weight.detach();
  if (runs_on_cpu_kernels(w)) {
    const int64_t panels = (out_ + kWidth - 1) / kWidth, k = in_, n = out_;
    panels_ = at::empty({panels, k, kWidth}, w.options());
    const at::Tensor source = w.contiguous();
    const float* from = source.data_ptr<float>();
    float* to = panels_.data_ptr<float>();
    // One pass, panels in parallel: panel p's element (i, j) is W[32 p + j, i], 0 past N.
    at::parallel_for(0, panels, 1, [&](int64_t first, int64_t last) {
      for (int64_t p = first; p < last; ++p) {
        float* panel = to + p * k * kWidth;
        for (int64_t j = 0; j < kWidth; ++j) {
          const int64_t row = p * kWidth + j;
          if (row >= n) {
            for (int64_t i = 0; i < k; ++i) panel[i * kWidth + j] = 0.0f;
            continue;
          }
          const float* w_row = from + row * k;
          for (int64_t i = 0; i < k; ++i) panel[i * kWidth + j] = w_row[i];
        }
      }
    });
    if (bias.defined()) bias_ = bias.detach().to(at::kFloat).contiguous().clone();
  } else {
    weight_ = w.clone();
    if (bias.defined()) bias_ = bias.detach().clone();
  }
}

at::Tensor PackedLinear::operator()(const at::Tensor& x) const {
  TORCH_CHECK(defined(), "PackedLinear: not built");
  TORCH_CHECK(x.size(-1) == in_, "PackedLinear: input has ", x.size(-1), " features, the weight ", in_);
  if (!panels_.defined() || !x.is_cpu() || x.scalar_type() != at::kFloat) {
    if (panels_.defined())  // a float32 CPU pack asked for another dtype or device: unpack once more
      return at::linear(x, panels_.transpose(1, 2).reshape({-1, in_}).narrow(0, 0, out_).to(x.options()),
                        bias_.defined() ? bias_.to(x.options()) : at::Tensor());
    return at::linear(x, weight_, bias_);
  }
  const at::Tensor input = x.reshape({-1, in_}).contiguous();
  const int64_t m = input.size(0);
  std::vector<int64_t> out_shape(x.sizes().begin(), x.sizes().end());
  out_shape.back() = out_;
  at::Tensor y = at::empty({m, out_}, x.options());
  if (m == 0) return y.view(out_shape);
  const float* in = input.data_ptr<float>();
  const float* panels = panels_.data_ptr<float>();
  const float* bias = bias_.defined() ? bias_.data_ptr<float>() : nullptr;
  float* out = y.data_ptr<float>();
  const int64_t n = out_, k = in_;
  // Tasks of at least ~1M multiply-adds (some 10 us), so that waking a thread pays for itself.
  const int64_t grain = std::max<int64_t>(1, (1 << 20) / std::max<int64_t>(1, m * k * kWidth));
  at::parallel_for(0, panels_.size(0), grain, [&](int64_t first, int64_t last) {
    multiply_panels(in, m, k, panels, bias, n, first, last, out);
  });
  return y.view(out_shape);
}

}  // namespace grpo
