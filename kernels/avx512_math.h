#pragma once
// Vector helpers and the product tile shared by the AVX-512 kernels of kernels/ (internal: include
// only from kernel sources, whose callers check avx512_kernels_supported() first).

#include <immintrin.h>

#include <cstdint>

namespace grpo {

// exp(x) for 16 floats, within ~2 ulp (Cephes' polynomial on x - n ln2, times 2^n); 0 below -103.
__attribute__((target("avx512f"))) inline __m512 exp16(__m512 x) {
  const __mmask16 live = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-103.0f), _CMP_GT_OQ);
  x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-103.0f)), _mm512_set1_ps(88.72f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  const __m512 y = _mm512_add_ps(_mm512_fmadd_ps(_mm512_mul_ps(p, r), r, r), _mm512_set1_ps(1.0f));
  return _mm512_maskz_mov_ps(live, _mm512_scalef_ps(y, n));
}

// The lanes of a 16-float step that lie before `end`, for loops whose last step is partial.
__attribute__((target("avx512f"))) inline __mmask16 lanes_before(int64_t i, int64_t end) {
  const int64_t left = end - i;
  return left >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << left) - 1);
}

// One tile of a product: rows r < R of y (row stride ldy), columns [0, columns) with columns <= 32,
// = (accumulate ? y : bias, or 0 without one) + sum over i < k of x[r * ldx + i * x_step] *
// panel[i * ldp + c] (x_step 1: x row-major; ldx 1 and x_step its row stride: x read transposed).
// The panel is k rows of 32 (or `columns`) contiguous floats ldp apart: a packed weight panel, or
// 32 columns of a row-major matrix read in place. 16 accumulators, the panel's row loaded once
// for the R rows.
template <int R>
__attribute__((target("avx512f"))) void multiply_tile(const float* x, int64_t ldx, int64_t x_step, const float* panel,
                                                      int64_t ldp, int64_t k, const float* bias, bool accumulate,
                                                      float* y, int64_t ldy, int64_t columns) {
  const __mmask16 low_mask = lanes_before(0, columns), high_mask = columns <= 16 ? 0 : lanes_before(16, columns);
  __m512 low[R], high[R];
  for (int r = 0; r < R; ++r) {
    if (accumulate) {
      low[r] = _mm512_maskz_loadu_ps(low_mask, y + r * ldy);
      high[r] = _mm512_maskz_loadu_ps(high_mask, y + r * ldy + 16);
    } else {
      low[r] = bias ? _mm512_maskz_loadu_ps(low_mask, bias) : _mm512_setzero_ps();
      high[r] = bias ? _mm512_maskz_loadu_ps(high_mask, bias + 16) : _mm512_setzero_ps();
    }
  }
  for (int64_t i = 0; i < k; ++i) {
    const __m512 w_low = _mm512_maskz_loadu_ps(low_mask, panel + i * ldp);
    const __m512 w_high = _mm512_maskz_loadu_ps(high_mask, panel + i * ldp + 16);
    for (int r = 0; r < R; ++r) {
      const __m512 a = _mm512_set1_ps(x[r * ldx + i * x_step]);
      low[r] = _mm512_fmadd_ps(a, w_low, low[r]);
      high[r] = _mm512_fmadd_ps(a, w_high, high[r]);
    }
  }
  for (int r = 0; r < R; ++r) {
    _mm512_mask_storeu_ps(y + r * ldy, low_mask, low[r]);
    _mm512_mask_storeu_ps(y + r * ldy + 16, high_mask, high[r]);
  }
}

constexpr int64_t kTileRows = 8;     // rows per tile: 16 accumulators of the 32 vector registers
constexpr int64_t kTileColumns = 32;  // columns per tile: two vectors

using TileFunction = void (*)(const float*, int64_t, int64_t, const float*, int64_t, int64_t, const float*, bool, float*,
                              int64_t, int64_t);

// multiply_tile for 1..kTileRows rows.
inline TileFunction tile_for_rows(int64_t rows) {
  static constexpr TileFunction tiles[kTileRows + 1] = {nullptr,          multiply_tile<1>, multiply_tile<2>,
                                                        multiply_tile<3>, multiply_tile<4>, multiply_tile<5>,
                                                        multiply_tile<6>, multiply_tile<7>, multiply_tile<8>};
  return tiles[rows];
}

}  // namespace grpo
