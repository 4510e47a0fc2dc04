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

// Rows [0, m) of x [m, k] (row stride ldx) against panels [first, last), into y [m, n].
void multiply_panels(const float* x, int64_t m, int64_t k, int64_t ldx, const float* panels, const float* bias,
                     int64_t n, int64_t first, int64_t last, float* y) {
  for (int64_t p = first; p < last; ++p) {
    const float* panel = panels + p * k * kWidth;
    const int64_t column = p * kWidth, columns = std::min(kWidth, n - column);
    for (int64_t row = 0; row < m; row += kTileRows) {
      const int64_t rows = std::min(kTileRows, m - row);
      kTiles[rows](x + row * ldx, ldx, panel, k, bias ? bias + column : nullptr, y + row * n + column, n, columns);
    }
  }
}

// Rows per task when a product runs by row blocks: x's block (64 x K floats) stays in L2 while
// every panel passes once, and each panel serves 8 tiles from L1 before the next one loads.
constexpr int64_t kRowBlock = 64;
constexpr int64_t kL2Bytes = 1 << 20;  // per core on the machines of docs/performance.md

}  // namespace

at::Tensor pack_panels(const at::Tensor& b) {
  TORCH_CHECK(b.dim() == 2 && runs_on_cpu_kernels(b), "pack_panels: needs a float32 CPU matrix [K, N], got ",
              b.sizes(), " ", b.scalar_type());
  const int64_t k = b.size(0), n = b.size(1), panels = (n + kWidth - 1) / kWidth;
  at::Tensor packed = at::empty({panels, k, kWidth}, b.options());
  // Read along whichever dimension of b is contiguous: a weight [N, K] comes as its transpose.
  const at::Tensor source = b.stride(0) == 1 || b.stride(1) == 1 ? b : b.contiguous();
  const float* from = source.data_ptr<float>();
  const int64_t stride_k = source.stride(0), stride_n = source.stride(1);
  float* to = packed.data_ptr<float>();
  at::parallel_for(0, panels, 1, [&](int64_t first, int64_t last) {
    for (int64_t p = first; p < last; ++p) {
      float* panel = to + p * k * kWidth;
      const int64_t columns = std::min(kWidth, n - p * kWidth);
      if (stride_n == 1) {  // rows of b: 32 contiguous floats per step of k
        for (int64_t i = 0; i < k; ++i) {
          const float* row = from + i * stride_k + p * kWidth;
          std::copy(row, row + columns, panel + i * kWidth);
          std::fill(panel + i * kWidth + columns, panel + (i + 1) * kWidth, 0.0f);
        }
      } else {  // columns of b (rows of a weight [N, K]): one contiguous run of k per column
        for (int64_t j = 0; j < kWidth; ++j) {
          if (j >= columns) {
            for (int64_t i = 0; i < k; ++i) panel[i * kWidth + j] = 0.0f;
            continue;
          }
          const float* column = from + (p * kWidth + j) * stride_n;
          for (int64_t i = 0; i < k; ++i) panel[i * kWidth + j] = column[i * stride_k];
        }
      }
    }
  });
  return packed;
}

at::Tensor multiply_packed(const at::Tensor& x, const at::Tensor& panels, int64_t n, const at::Tensor& bias) {
  TORCH_CHECK(x.dim() == 2 && panels.dim() == 3 && x.size(1) == panels.size(1) && panels.size(2) == kWidth &&
                  panels.size(0) == (n + kWidth - 1) / kWidth,
              "multiply_packed: x ", x.sizes(), " does not fit panels ", panels.sizes(), " of ", n, " columns");
  const at::Tensor input = x.stride(1) == 1 ? x : x.contiguous();
  const int64_t m = input.size(0), k = input.size(1), ldx = input.stride(0);
  at::Tensor y = at::empty({m, n}, x.options());
  if (m == 0 || n == 0) return y;
  const float* in = input.data_ptr<float>();
  const float* packed = panels.data_ptr<float>();
  const float* b = bias.defined() ? bias.data_ptr<float>() : nullptr;
  float* out = y.data_ptr<float>();
  const int64_t panel_count = panels.size(0);
  const int64_t weight_bytes = panel_count * k * kWidth * static_cast<int64_t>(sizeof(float));
  if (m >= 2 * kRowBlock && (weight_bytes <= kL2Bytes || m >= 16 * kRowBlock)) {
    // Many rows (training, prefill): tasks are row blocks, so x is read from memory once and the
    // weight streams from L2 (or, past 1024 rows, from L3) once per block. Between 128 and 1024
    // rows of a weight larger than L2, panel tasks did better (Qwen2.5-0.5B's MLP at 512 rows: 210
    // against 195 GFLOP/s). Each output element is one tile's sum in k order either way.
    at::parallel_for(0, (m + kRowBlock - 1) / kRowBlock, 1, [&](int64_t first, int64_t last) {
      for (int64_t block = first; block < last; ++block) {
        const int64_t row = block * kRowBlock, rows = std::min(kRowBlock, m - row);
        multiply_panels(in + row * ldx, rows, k, ldx, packed, b, n, 0, panel_count, out + row * n);
      }
    });
    return y;
  }
  // Few rows (a decode step): tasks are panels, so each thread streams its share of the weight once.
  // Tasks of at least ~1M multiply-adds (some 10 us), so that waking a thread pays for itself.
  const int64_t grain = std::max<int64_t>(1, (1 << 20) / std::max<int64_t>(1, m * k * kWidth));
  at::parallel_for(0, panel_count, grain, [&](int64_t first, int64_t last) {
    multiply_panels(in, m, k, ldx, packed, b, n, first, last, out);
  });
  return y;
}

PackedLinear::PackedLinear(const at::Tensor& weight, const at::Tensor& bias) {
  TORCH_CHECK(weight.dim() == 2, "PackedLinear: weight must be [N, K], got ", weight.sizes());
  TORCH_CHECK(!bias.defined() || (bias.dim() == 1 && bias.size(0) == weight.size(0)), "PackedLinear: bias ",
              bias.sizes(), " does not fit weight ", weight.sizes());
  out_ = weight.size(0);
  in_ = weight.size(1);
  const at::Tensor w = weight.detach();
  if (runs_on_cpu_kernels(w)) {
    panels_ = pack_panels(w.t());
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
  std::vector<int64_t> out_shape(x.sizes().begin(), x.sizes().end());
  out_shape.back() = out_;
  return multiply_packed(x.reshape({-1, in_}), panels_, out_, bias_).view(out_shape);
}

}  // namespace grpo
