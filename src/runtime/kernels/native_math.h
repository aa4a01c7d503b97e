// AVX2/FMA vector math for the native kernels' fused epilogues: exp, sigmoid and SiLU on eight
// floats (exp and SiLU also on sixteen, for the AVX-512 kernels). Callers must check the CPU
// (cpu_has_avx2_fma, isa_enabled(Isa::kAvx512)) before calling.
//
// exp is Cephes' expf scheme (range reduction by ln 2 in two parts, degree-5 polynomial), about
// 2 ulp; sigmoid and SiLU divide exactly, so both stay within ~3e-7 relative of the reference
// kernels' std::exp based values, far inside the f32 test tolerance (1e-5).
#pragma once

#include "runtime/kernels/simd.h"

#include <cstddef>
#include <cstdint>

namespace modex::runtime::native {

__attribute__((target("avx2,fma"), always_inline)) inline __m256 exp_avx2(__m256 x) {
  // Clamped so that 2^n stays a normal float; exp(-87.3) ~ 1.2e-38, exp(88.3) ~ 2.2e38.
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.3f)), _mm256_set1_ps(88.3f));
  // t = x * log2(e) + 1.5 * 2^23 + 127 rounds x * log2(e) to an integer n in t's low mantissa
  // bits, biased by 127: shifted up by 23 they are the float 2^n (no round / convert needed).
  const __m256 magic = _mm256_set1_ps(12582912.0f + 127.0f);
  const __m256 t = _mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), magic);
  const __m256 n = _mm256_sub_ps(t, magic);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  return _mm256_mul_ps(p, _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_castps_si256(t), 23)));
}

// x * sigmoid(x) = x / (1 + exp(-x)).
__attribute__((target("avx2,fma"), always_inline)) inline __m256 silu_avx2(__m256 x) {
  __m256 d = _mm256_add_ps(_mm256_set1_ps(1.0f), exp_avx2(_mm256_sub_ps(_mm256_setzero_ps(), x)));
  return _mm256_div_ps(x, d);
}

// exp_avx2's scheme on sixteen floats.
__attribute__((target("avx512f"), always_inline)) inline __m512 exp_avx512(__m512 x) {
  x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.3f)), _mm512_set1_ps(88.3f));
  const __m512 magic = _mm512_set1_ps(12582912.0f + 127.0f);
  const __m512 t = _mm512_fmadd_ps(x, _mm512_set1_ps(1.44269504088896341f), magic);
  const __m512 n = _mm512_sub_ps(t, magic);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  return _mm512_mul_ps(p, _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_castps_si512(t), 23)));
}

__attribute__((target("avx512f"), always_inline)) inline __m512 silu_avx512(__m512 x) {
  __m512 d = _mm512_add_ps(_mm512_set1_ps(1.0f), exp_avx512(_mm512_sub_ps(_mm512_setzero_ps(), x)));
  return _mm512_div_ps(x, d);
}

__attribute__((target("avx2,fma"), always_inline)) inline __m256 sigmoid_avx2(__m256 x) {
  __m256 d = _mm256_add_ps(_mm256_set1_ps(1.0f), exp_avx2(_mm256_sub_ps(_mm256_setzero_ps(), x)));
  return _mm256_div_ps(_mm256_set1_ps(1.0f), d);
}

// Lanes [0, n) set (n <= 8): masked loads and stores of a channel tail.
__attribute__((target("avx2"))) inline __m256i lane_mask(int64_t n) {
  alignas(32) static const int32_t bits[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bits + 8 - n));
}

// Whether this CPU runs the AVX2/FMA code (checked once).
bool cpu_has_avx2_fma();

// Instruction sets beyond AVX2 that some kernels have a variant for. A kernel's factory asks
// isa_enabled() when it creates the kernel: true when the CPU (and, for AMX, the OS, asked once for
// the tile state with arch_prctl) supports the set and no limit excludes it. The limit is the
// environment's MODEX_MAX_ISA (avx2, avx512 or amx) or set_max_isa() (tests run every variant the
// machine has against the same references).
enum class Isa : int { kAvx2 = 0, kAvx512 = 1, kAmx = 2 };
bool isa_enabled(Isa isa);
void set_max_isa(Isa isa);

// In place over data[0, count).
void silu_inplace(float* data, size_t count);

// y[i] = table[x[i]] for i < count (a 256-entry byte table; y may be x). 32 bytes at a time: the
// low nibble picks an entry of each of the table's 16 rows (vpshufb), the high nibble's four bits
// pick among the 16 results in a tree of byte blends.
void lookup_bytes(const uint8_t* table, const uint8_t* x, uint8_t* y, size_t count);

// y[i] = clamp(round_half_away_from_zero(x[i] / scale), lo - zp, hi - zp) + zp as int8 (TFLite's
// quantization, as q8::quantize computes it one value at a time; NaN gives lo). lo, hi within
// [-128, 127].
void quantize_int8(const float* x, size_t count, float scale, int32_t zp, int32_t lo, int32_t hi, int8_t* y);

}  // namespace modex::runtime::native
