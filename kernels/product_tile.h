#pragma once
// The register tile of the products the CPU kernels run with operands read in place: one-block
// attention's six (kernels/attention_cpu.cpp) and the training linear's weight gradient
// (kernels/linear.cpp). PackedLinear keeps its own tile, which starts from the bias and reads
// packed panels only. Built into translation units compiled with -Wno-uninitialized (see
// kernels/CMakeLists.txt, which also says how to check the tile's loop after editing it).

#include <immintrin.h>

#include <cstdint>

#include "kernels/avx512_math.h"

namespace grpo {
namespace tile {

// One tile of a product, PackedLinear's tile generalized to panels read in place, accumulation
// and a transposed x: rows r < R of y (row stride ldy), columns [0, columns) with columns <= 32,
// = (accumulate ? y : 0) + sum over i < k of x(r, i) * panel[i * ldp + c], where x(r, i) is
// x[r * ldx + i] (row-major) or, with kTransposedX, x[r + i * ldx] (x^T read in place). The panel
// is k rows of `columns` contiguous floats ldp apart: 32 columns of a row-major matrix read in
// place, or of a packed transpose. 16 accumulators, the panel's row loaded once for the R rows.
// kFull (columns == 32) loads the panel without masks: with masked loads in the loop, GCC 12 kept
// the accumulators in memory (at -O2 and, by details as small as declaration order, at -O3), 2-4x
// slower; the masked variant only serves the last columns of a row.
template <int R, bool kTransposedX, bool kFull>
__attribute__((target("avx512f"))) inline void multiply_tile(const float* x, int64_t ldx, const float* panel,
                                                             int64_t ldp, int64_t k, bool accumulate, float* y,
                                                             int64_t ldy, int64_t columns) {
  const __mmask16 low_mask = lanes_before(0, columns), high_mask = columns <= 16 ? 0 : lanes_before(16, columns);
  __m512 low[R], high[R];
  for (int r = 0; r < R; ++r) low[r] = high[r] = _mm512_setzero_ps();
  for (int64_t i = 0; i < k; ++i) {
    const float* p = panel + i * ldp;
    const __m512 w_low = kFull ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps(low_mask, p);
    const __m512 w_high = kFull ? _mm512_loadu_ps(p + 16) : _mm512_maskz_loadu_ps(high_mask, p + 16);
    for (int r = 0; r < R; ++r) {
      const __m512 a = _mm512_set1_ps(kTransposedX ? x[r + i * ldx] : x[r * ldx + i]);
      low[r] = _mm512_fmadd_ps(a, w_low, low[r]);
      high[r] = _mm512_fmadd_ps(a, w_high, high[r]);
    }
  }
  const __mmask16 add_low = accumulate ? low_mask : 0, add_high = accumulate ? high_mask : 0;  // y or 0
  for (int r = 0; r < R; ++r) {
    _mm512_mask_storeu_ps(y + r * ldy, low_mask, _mm512_add_ps(low[r], _mm512_maskz_loadu_ps(add_low, y + r * ldy)));
    _mm512_mask_storeu_ps(y + r * ldy + 16, high_mask,
                          _mm512_add_ps(high[r], _mm512_maskz_loadu_ps(add_high, y + r * ldy + 16)));
  }
}

inline constexpr int64_t kTileRows = 8;     // rows per tile: 16 accumulators of the 32 vector registers
inline constexpr int64_t kTileColumns = 32;  // columns per tile: two vectors

using TileFunction = void (*)(const float*, int64_t, const float*, int64_t, int64_t, bool, float*, int64_t, int64_t);

template <bool kTransposedX, bool kFull>
inline constexpr TileFunction kTiles[kTileRows + 1] = {
    nullptr, multiply_tile<1, kTransposedX, kFull>, multiply_tile<2, kTransposedX, kFull>,
    multiply_tile<3, kTransposedX, kFull>, multiply_tile<4, kTransposedX, kFull>, multiply_tile<5, kTransposedX, kFull>,
    multiply_tile<6, kTransposedX, kFull>, multiply_tile<7, kTransposedX, kFull>, multiply_tile<8, kTransposedX, kFull>};

// multiply_tile for 1..kTileRows rows of a row-major x, or of x^T read in place, and `columns` columns.
template <bool kTransposedX = false>
inline TileFunction tile_for(int64_t rows, int64_t columns) {
  return columns == kTileColumns ? kTiles<kTransposedX, true>[rows] : kTiles<kTransposedX, false>[rows];
}

}  // namespace tile
}  // namespace grpo
