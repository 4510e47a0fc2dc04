#pragma once
// Vector helpers shared by the AVX-512 kernels of kernels/ (internal: include only from kernel
// sources, whose callers check avx512_kernels_supported() first).

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

// Rows per at::parallel_for task for row-wise kernels over rows of `width` floats: ~16K floats a
// task, so that waking a thread pays for itself.
inline int64_t rows_per_task(int64_t width) { return width >= 16384 ? 1 : 16384 / (width > 0 ? width : 1); }

}  // namespace grpo
