// SPDX-License-Identifier: Apache-2.0
// exp_det, log_det, sigmoid_det and sqrtsoftplus_det of moe_routing_math.h on SIMD lanes (8 AVX2, 16 AVX-512),
// written once (moe_cpu_lanes.inc) over a lane type: the scalar functions' IEEE operations in their order (mul
// and add separate, -ffp-contract=off), selects as blends, so every lane of either width is the scalar result.
#ifndef MOE_CPU_LANES_H_
#define MOE_CPU_LANES_H_

#if defined(__GNUC__) && defined(__x86_64__)
// Included after moe_cpu.cpp's -Wmaybe-uninitialized pragma (GCC PR 105593), which must precede immintrin.h.
#include <immintrin.h>
#include <stdint.h>

#include "moe_routing_math.h"

// The AVX-512 kernels' target (F, BW, DQ, VL). The 16-lane operations carry exactly this set so that they
// inline into every MOE_AVX512 function (GCC inlines a callee only into a caller whose target includes its own).
#define MOE_AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx2,f16c,popcnt")))

namespace moe {
namespace {

#define MOE_LANE8_OP __attribute__((target("avx2"), always_inline)) static inline
#define MOE_LANE16_OP MOE_AVX512 __attribute__((always_inline)) static inline

// The operations the lane math uses. V: floats, VI: int32s, M: a compare result (AVX2: a vector of all-ones
// or zero lanes; AVX-512: a mask register). blend(a, b, m) = m ? b : a. sub_where(a, m, b) = m ? a - b : a,
// which AVX2 computes as a - (m & b): a - (+0) is a for every a, -0 and NaN included.
struct Avx2Lanes {
  using V = __m256;
  using VI = __m256i;
  using M = __m256;
  MOE_LANE8_OP V set1(float a) { return _mm256_set1_ps(a); }
  MOE_LANE8_OP VI set1_i(int32_t a) { return _mm256_set1_epi32(a); }
  MOE_LANE8_OP V zero() { return _mm256_setzero_ps(); }
  MOE_LANE8_OP V add(V a, V b) { return _mm256_add_ps(a, b); }
  MOE_LANE8_OP V sub(V a, V b) { return _mm256_sub_ps(a, b); }
  MOE_LANE8_OP V mul(V a, V b) { return _mm256_mul_ps(a, b); }
  MOE_LANE8_OP V div(V a, V b) { return _mm256_div_ps(a, b); }
  MOE_LANE8_OP V sqrt(V a) { return _mm256_sqrt_ps(a); }
  MOE_LANE8_OP V neg(V a) { return _mm256_xor_ps(a, _mm256_set1_ps(-0.0f)); }
  MOE_LANE8_OP VI trunc_to_int(V a) { return _mm256_cvttps_epi32(a); }
  MOE_LANE8_OP V to_float(VI a) { return _mm256_cvtepi32_ps(a); }
  MOE_LANE8_OP VI bits(V a) { return _mm256_castps_si256(a); }
  MOE_LANE8_OP V from_bits(VI a) { return _mm256_castsi256_ps(a); }
  MOE_LANE8_OP VI add_i(VI a, VI b) { return _mm256_add_epi32(a, b); }
  MOE_LANE8_OP VI sub_i(VI a, VI b) { return _mm256_sub_epi32(a, b); }
  MOE_LANE8_OP VI and_i(VI a, VI b) { return _mm256_and_si256(a, b); }
  MOE_LANE8_OP VI or_i(VI a, VI b) { return _mm256_or_si256(a, b); }
  template <int N>
  MOE_LANE8_OP VI srli(VI a) { return _mm256_srli_epi32(a, N); }
  template <int N>
  MOE_LANE8_OP VI srai(VI a) { return _mm256_srai_epi32(a, N); }
  template <int N>
  MOE_LANE8_OP VI slli(VI a) { return _mm256_slli_epi32(a, N); }
  MOE_LANE8_OP M lt(V a, V b) { return _mm256_cmp_ps(a, b, _CMP_LT_OQ); }
  MOE_LANE8_OP M gt(V a, V b) { return _mm256_cmp_ps(a, b, _CMP_GT_OQ); }
  MOE_LANE8_OP M unord(V a, V b) { return _mm256_cmp_ps(a, b, _CMP_UNORD_Q); }
  MOE_LANE8_OP V blend(V a, V b, M m) { return _mm256_blendv_ps(a, b, m); }
  MOE_LANE8_OP V sub_where(V a, M m, V b) { return _mm256_sub_ps(a, _mm256_and_ps(m, b)); }
  MOE_LANE8_OP VI sub_where_i(VI a, M m, VI b) { return _mm256_sub_epi32(a, _mm256_and_si256(_mm256_castps_si256(m), b)); }
};

struct Avx512Lanes {
  using V = __m512;
  using VI = __m512i;
  using M = __mmask16;
  MOE_LANE16_OP V set1(float a) { return _mm512_set1_ps(a); }
  MOE_LANE16_OP VI set1_i(int32_t a) { return _mm512_set1_epi32(a); }
  MOE_LANE16_OP V zero() { return _mm512_setzero_ps(); }
  MOE_LANE16_OP V add(V a, V b) { return _mm512_add_ps(a, b); }
  MOE_LANE16_OP V sub(V a, V b) { return _mm512_sub_ps(a, b); }
  MOE_LANE16_OP V mul(V a, V b) { return _mm512_mul_ps(a, b); }
  MOE_LANE16_OP V div(V a, V b) { return _mm512_div_ps(a, b); }
  MOE_LANE16_OP V sqrt(V a) { return _mm512_sqrt_ps(a); }
  MOE_LANE16_OP V neg(V a) { return _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(a), _mm512_set1_epi32((int)0x80000000u))); }
  MOE_LANE16_OP VI trunc_to_int(V a) { return _mm512_cvttps_epi32(a); }
  MOE_LANE16_OP V to_float(VI a) { return _mm512_cvtepi32_ps(a); }
  MOE_LANE16_OP VI bits(V a) { return _mm512_castps_si512(a); }
  MOE_LANE16_OP V from_bits(VI a) { return _mm512_castsi512_ps(a); }
  MOE_LANE16_OP VI add_i(VI a, VI b) { return _mm512_add_epi32(a, b); }
  MOE_LANE16_OP VI sub_i(VI a, VI b) { return _mm512_sub_epi32(a, b); }
  MOE_LANE16_OP VI and_i(VI a, VI b) { return _mm512_and_si512(a, b); }
  MOE_LANE16_OP VI or_i(VI a, VI b) { return _mm512_or_si512(a, b); }
  template <int N>
  MOE_LANE16_OP VI srli(VI a) { return _mm512_srli_epi32(a, N); }
  template <int N>
  MOE_LANE16_OP VI srai(VI a) { return _mm512_srai_epi32(a, N); }
  template <int N>
  MOE_LANE16_OP VI slli(VI a) { return _mm512_slli_epi32(a, N); }
  MOE_LANE16_OP M lt(V a, V b) { return _mm512_cmp_ps_mask(a, b, _CMP_LT_OQ); }
  MOE_LANE16_OP M gt(V a, V b) { return _mm512_cmp_ps_mask(a, b, _CMP_GT_OQ); }
  MOE_LANE16_OP M unord(V a, V b) { return _mm512_cmp_ps_mask(a, b, _CMP_UNORD_Q); }
  MOE_LANE16_OP V blend(V a, V b, M m) { return _mm512_mask_blend_ps(m, a, b); }
  MOE_LANE16_OP V sub_where(V a, M m, V b) { return _mm512_mask_sub_ps(a, m, a, b); }
  MOE_LANE16_OP VI sub_where_i(VI a, M m, VI b) { return _mm512_mask_sub_epi32(a, m, a, b); }
};

#undef MOE_LANE8_OP
#undef MOE_LANE16_OP

// The math, once per width. It is included twice rather than written as templates over the lane type
// because a function's target is fixed where it is written: a template with no target cannot inline the
// AVX2 or AVX-512 operations (GCC: "inlining failed in call to always_inline: target specific option
// mismatch"), and one with the AVX-512 target would not inline into the AVX2 kernels.
namespace lanes8 {
using L = Avx2Lanes;
#define MOE_LANES_FN __attribute__((target("avx2"), always_inline)) inline
#include "moe_cpu_lanes.inc"
#undef MOE_LANES_FN
}  // namespace lanes8

namespace lanes16 {
using L = Avx512Lanes;
#define MOE_LANES_FN MOE_AVX512 __attribute__((always_inline)) inline
#include "moe_cpu_lanes.inc"
#undef MOE_LANES_FN
}  // namespace lanes16

// One name per function, the width chosen by the argument (__m256 or __m512).
using lanes16::exp_det_lanes;
using lanes16::exp_det_lanes_le0;
using lanes16::log_det_lanes;
using lanes16::sigmoid_lanes;
using lanes16::sqrtsoftplus_lanes;
using lanes8::exp_det_lanes;
using lanes8::exp_det_lanes_le0;
using lanes8::log_det_lanes;
using lanes8::sigmoid_lanes;
using lanes8::sqrtsoftplus_lanes;

}  // namespace
}  // namespace moe

#endif  // __GNUC__ && __x86_64__
#endif  // MOE_CPU_LANES_H_
