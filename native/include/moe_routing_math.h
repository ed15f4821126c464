// SPDX-License-Identifier: Apache-2.0
// Per-token routing math shared by the CPU backend and the CUDA kernels (host and device).
// The pure-Java backend (org.moerouter.JavaRouting) mirrors this file operation for operation, and
// its Kernel.selectRow is the reference selection (plain or grouped top-k over rank_key) that the
// CPU and CUDA selection algorithms reproduce exactly.
// Every float op here has a fixed order and no contraction, exp and log are built from +, -, *, /
// and exact scalings, and sqrt is IEEE (correctly rounded), so all three backends compute
// bit-identical routing scores and therefore identical indices.
// Contraction: on the device every +, -, *, / and sqrt goes through add_rn / sub_rn / mul_rn /
// div_rn / sqrt_rn, i.e. the explicitly rounded intrinsics, which nvcc never fuses or approximates
// whatever the consumer's -fmad / -prec-div / -prec-sqrt (scripts/check-ptx.sh checks the PTX). They
// do not undo -ftz=true (subnormals flushed; -use_fast_math sets it): device code needs -ftz=false,
// the default. On the host they are the plain operators: the compiler must not contract them
// (-ffp-contract=off; GCC and Clang contract across inlined calls).
#ifndef MOE_ROUTING_MATH_H_
#define MOE_ROUTING_MATH_H_

#include <stdint.h>
#include "moe_router.h"

#if defined(__CUDACC__)
#define MOE_HD __host__ __device__ __forceinline__
#define MOE_HDI __host__ __device__ __forceinline__
#else
#define MOE_HD inline
// Per-element functions (and backward_row) are always inlined: GCC otherwise outlines them from
// the bigger row functions, which then run the baseline x86-64 code instead of the AVX2 clone of
// their caller (measured: +20% on a sigmoid backward).
#if defined(__GNUC__)
#define MOE_HDI inline __attribute__((always_inline))
#else
#define MOE_HDI inline
#endif
#include <math.h>
#include <string.h>
#endif

namespace moe {

// IEEE round-to-nearest arithmetic that no compiler flag turns into an FMA or an approximation on
// the device (see the head comment).
MOE_HDI float add_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}

MOE_HDI float sub_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}

MOE_HDI float mul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}

MOE_HDI float div_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}

// Lanes of the canonical row sum (softmax denominator): lane j adds experts j, j+32, ... in
// increasing order, then lanes are folded as a butterfly (16, 8, 4, 2, 1). A CUDA warp computes
// exactly this with __shfl_xor_sync; the CPU with 32 accumulators.
constexpr int kSumLanes = 32;
// The 1e-20 of the spec: weight renormalisation (every score), aux-score sums, sqrtsoftplus's dS/dL.
constexpr float kSigmoidNormEps = 1e-20f;

MOE_HDI uint32_t float_to_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  return u;
#endif
}

MOE_HDI float bits_to_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
#endif
}

MOE_HDI float bf16_to_float(uint16_t h) { return bits_to_float((uint32_t)h << 16); }

// IEEE binary16 -> binary32, exact (subnormals, infinities and NaN payloads kept).
MOE_HD float f16_to_float(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t man = h & 0x3ffu;
  if (exp == 0x1fu) return bits_to_float(sign | 0x7f800000u | (man << 13));
  if (exp != 0) return bits_to_float(sign | ((exp + 112u) << 23) | (man << 13));
  if (man == 0) return bits_to_float(sign);
  // subnormal half: value = man * 2^-24, exactly representable as a normal float
  int e = -1;
  do { man <<= 1; ++e; } while ((man & 0x400u) == 0);
  return bits_to_float(sign | ((uint32_t)(112 - e) << 23) | ((man & 0x3ffu) << 13));
}

MOE_HD float load_logit(const void* base, int dtype, int64_t i) {
  if (dtype == MOE_DTYPE_BF16) return bf16_to_float(static_cast<const uint16_t*>(base)[i]);
  if (dtype == MOE_DTYPE_F16) return f16_to_float(static_cast<const uint16_t*>(base)[i]);
  return static_cast<const float*>(base)[i];
}

MOE_HDI bool is_finite(float x) { return (float_to_bits(x) & 0x7f800000u) != 0x7f800000u; }

// exp(x) from +, -, * and one exact power-of-two scaling (Cephes-style, about 1 ulp), so that
// CPU, CUDA and Java round identically. Library expf differs between them in the last bit.
// Written without branches (the special cases are selected at the end) so that loops over it
// vectorise; floor(t) for |t| < 2^31 is truncation corrected by one, which is exact.
MOE_HDI float exp_det(float x) {
  const float hi = 88.72283935546875f, lo = -103.97208404541015625f;
  const bool nan = (float_to_bits(x) & 0x7fffffffu) > 0x7f800000u;
  float xc = x > hi ? hi : x;
  xc = xc < lo ? lo : xc;
  xc = nan ? 0.0f : xc;
  const float t = add_rn(mul_rn(xc, 1.44269502162933349609375f), 0.5f);
  const float tr = (float)(int32_t)t;
  const float n = sub_rn(tr, tr > t ? 1.0f : 0.0f);  // selects a constant: no speculative arithmetic
  float r = sub_rn(xc, mul_rn(n, 0.693359375f));
  r = sub_rn(r, mul_rn(n, -2.12194440e-4f));
  const float z = mul_rn(r, r);
  float p = 1.9875691500e-4f;
  p = add_rn(mul_rn(p, r), 1.3981999507e-3f);
  p = add_rn(mul_rn(p, r), 8.3334519073e-3f);
  p = add_rn(mul_rn(p, r), 4.1665795894e-2f);
  p = add_rn(mul_rn(p, r), 1.6666665459e-1f);
  p = add_rn(mul_rn(p, r), 5.0000001201e-1f);
  float y = add_rn(add_rn(mul_rn(p, z), r), 1.0f);
  const int32_t ni = (int32_t)n;  // in [-150, 128]: split so that both factors are normal floats
  const int32_t n1 = ni / 2;
  const int32_t n2 = ni - n1;
  y = mul_rn(y, bits_to_float((uint32_t)(n1 + 127) << 23));
  y = mul_rn(y, bits_to_float((uint32_t)(n2 + 127) << 23));
  y = x > hi ? bits_to_float(0x7f800000u) : y;
  y = x < lo ? 0.0f : y;
  return nan ? x : y;
}

MOE_HDI float sigmoid_det(float x) { return div_rn(1.0f, add_rn(1.0f, exp_det(-x))); }

// Correctly rounded square root (IEEE): sqrtss on the host, __fsqrt_rn on the device, and
// (float)Math.sqrt((double)x) in Java (double rounding is exact for sqrt), so all three agree.
MOE_HDI float sqrt_rn(float x) {
#if defined(__CUDA_ARCH__)
  return __fsqrt_rn(x);
#else
  return sqrtf(x);
#endif
}

// log(x) for finite x >= 1 (the range log1p_det needs), Cephes logf: x = m * 2^e with m in
// [sqrt(1/2), sqrt(2)) split exactly from the bits, a degree-9 polynomial in m - 1 (exact by
// Sterbenz), ln 2 in two parts. Fixed +, -, * order and no library call, as exp_det.
MOE_HDI float log_det(float x) {
  const uint32_t b = float_to_bits(x);
  int32_t e = (int32_t)((b >> 23) & 0xffu) - 126;
  float m = bits_to_float((b & 0x007fffffu) | 0x3f000000u);  // [0.5, 1)
  const bool low = m < 0.707106781186547524f;
  e = e - (low ? 1 : 0);
  m = low ? sub_rn(add_rn(m, m), 1.0f) : sub_rn(m, 1.0f);
  const float z = mul_rn(m, m);
  float y = 7.0376836292e-2f;
  y = sub_rn(mul_rn(y, m), 1.1514610310e-1f);
  y = add_rn(mul_rn(y, m), 1.1676998740e-1f);
  y = sub_rn(mul_rn(y, m), 1.2420140846e-1f);
  y = add_rn(mul_rn(y, m), 1.4249322787e-1f);
  y = sub_rn(mul_rn(y, m), 1.6668057665e-1f);
  y = add_rn(mul_rn(y, m), 2.0000714765e-1f);
  y = sub_rn(mul_rn(y, m), 2.4999993993e-1f);
  y = add_rn(mul_rn(y, m), 3.3333331174e-1f);
  y = mul_rn(y, m);
  y = mul_rn(y, z);
  const float fe = (float)e;
  y = add_rn(y, mul_rn(fe, -2.12194440e-4f));
  y = sub_rn(y, mul_rn(0.5f, z));
  float r = add_rn(m, y);
  return add_rn(r, mul_rn(fe, 0.693359375f));
}

// log1p(y) for y >= 0 (NaN propagates): log(u) of u = 1 + y plus the rounding error of u,
// (y - (u - 1)) / u, which is exact to first order (u - 1 is exact for u >= 1). For y < 2^-24,
// u == 1 and the result is y itself. Branch-free: the special cases are selected at the end.
MOE_HDI float log1p_det(float y) {
  const float u = add_rn(1.0f, y);
  const float r = add_rn(log_det(u), div_rn(sub_rn(y, sub_rn(u, 1.0f)), u));
  return y == bits_to_float(0x7f800000u) ? y : r;
}

// Megatron / TE sqrtsoftplus score (spec section 1): sqrt(softplus(x)), softplus(x) = x for
// x > 20, else log1p(exp(x)). Both sides are computed and one is selected, so loops vectorise.
MOE_HDI float softplus_det(float x) {
  const float s = log1p_det(exp_det(x));
  return x > 20.0f ? x : s;
}

MOE_HDI float sqrtsoftplus_det(float x) { return sqrt_rn(softplus_det(x)); }

// Total order on routing scores as an unsigned key: larger key = better. NaN is below every
// number (including -inf); -0 and +0 are equal.
MOE_HDI uint32_t score_key(float r) {
  const uint32_t b = float_to_bits(add_rn(r, 0.0f));
  const uint32_t key = b ^ ((uint32_t)((int32_t)b >> 31) | 0x80000000u);  // negative: ~b, else b | sign
  const uint32_t not_nan = 0u - (uint32_t)((b & 0x7fffffffu) <= 0x7f800000u);
  return key & not_nan;  // branch-free, so key loops vectorise
}

// Score key plus index: equal scores rank the lower index first. Keys are distinct per index.
MOE_HDI uint64_t rank_key(float r, int index) {
  return ((uint64_t)score_key(r) << 32) | (uint64_t)(0xffffffffu - (uint32_t)index);
}

MOE_HDI int rank_key_index(uint64_t key) { return (int)(0xffffffffu - (uint32_t)key); }

// Keeps keys[0..count) sorted descending with at most `cap` entries.
MOE_HD void topk_insert(uint64_t* keys, int& count, int cap, uint64_t key) {
  if (count == cap) {
    if (key <= keys[cap - 1]) return;
    --count;
  }
  int pos = count;
  while (pos > 0 && keys[pos - 1] < key) {
    keys[pos] = keys[pos - 1];
    --pos;
  }
  keys[pos] = key;
  ++count;
}

// Router parameters in the form the kernels use.
struct Params {
  int experts;
  int k;
  int score_fn;
  bool pre_softmax;
  int groups;      // 1 when not group-limited
  int group_topk;  // groups kept (== groups when not group-limited)
  float scale;
  const float* bias;  // [experts] or nullptr (sigmoid, sqrtsoftplus, softmax pre)
  bool biased;        // a bias was given (at creation or by set_bias): ranks by R. Not `bias != nullptr`,
                      // so that a backend may keep a zero bias buffer for a router without one.
  bool normalize;     // effective: k > 1 and the weights are renormalised (never for softmax post)
  int group_terms;    // values of R summed per group score: floor(k / Gk), 2 (TOP2_SUM) or 1 (MAX)
  int nonfinite;      // moe_nonfinite
  int minus_one_rows; // moe_minus_one_rows

  MOE_HD bool grouped() const { return groups > 1 && group_topk < groups; }
  MOE_HD int group_size() const { return experts / groups; }
  MOE_HD int per_group() const { return group_terms; }
  // Whether routing/weights need the whole row (softmax denominator) rather than k logits.
  MOE_HD bool needs_full_row() const { return score_fn == MOE_SCORE_SOFTMAX && pre_softmax; }
  // softmax post: the weights are a softmax over the k selected logits.
  MOE_HD bool post_softmax() const { return score_fn == MOE_SCORE_SOFTMAX && !pre_softmax; }
  // Ranking key K (spec section 1): R with a bias, else the logit itself. Scores are monotone in
  // the logit, so this only decides the ties float32 creates (sigmoid(17) == sigmoid(30) == 1.0f).
  MOE_HD bool rank_by_logit() const { return !biased; }
};

// Checks one replay row: k distinct experts in [0, E). Returns MOE_REPLAY_* code.
MOE_HD int check_replay_row(const int32_t* idx, int k, int experts) {
  for (int j = 0; j < k; ++j) {
    int e = idx[j];
    if (e < 0 || e >= experts) return MOE_REPLAY_OUT_OF_RANGE;
    for (int m = 0; m < j; ++m)
      if (idx[m] == e) return MOE_REPLAY_DUPLICATE;
  }
  return MOE_REPLAY_OK;
}

// A replay row of k times -1: padding in slime/miles traces (spec section 4, minus_one_rows).
MOE_HD bool is_minus_one_row(const int32_t* idx, int k) {
  for (int j = 0; j < k; ++j)
    if (idx[j] != -1) return false;
  return true;
}

// Score S of a sigmoid or sqrtsoftplus router (softmax scores need the row statistics).
MOE_HDI float score_of(int score_fn, float logit) {
  return score_fn == MOE_SCORE_SQRTSOFTPLUS ? sqrtsoftplus_det(logit) : sigmoid_det(logit);
}

// dS/dL of a sigmoid or sqrtsoftplus score s = score_of(l) (spec section 5, TE form for
// sqrtsoftplus: the 1e-20 keeps it finite where S underflows to 0).
MOE_HDI float score_grad(int score_fn, float l, float s) {
  if (score_fn == MOE_SCORE_SQRTSOFTPLUS) {
    const float d = l > 20.0f ? 1.0f : sigmoid_det(l);
    return div_rn(d, add_rn(mul_rn(2.0f, s), kSigmoidNormEps));
  }
  return mul_rn(s, sub_rn(1.0f, s));
}

// Canonical softmax statistics of a row: max and denominator in the fixed lane order.
struct RowSoftmax {
  float max;
  float sum;
};

MOE_HD float fold_lanes(float* lanes) {
  for (int off = kSumLanes / 2; off > 0; off >>= 1)
    for (int j = 0; j < off; ++j) lanes[j] = add_rn(lanes[j], lanes[j + off]);
  return lanes[0];
}

template <typename Load>
MOE_HD RowSoftmax row_softmax(const Load& load, int experts) {
  float m = bits_to_float(0xff800000u);  // -inf; NaN never wins `>`
  for (int i = 0; i < experts; ++i) {
    float v = load(i);
    m = v > m ? v : m;
  }
  float lanes[kSumLanes];
  for (int j = 0; j < kSumLanes; ++j) lanes[j] = 0.0f;
  int i = 0;
  for (; i + kSumLanes <= experts; i += kSumLanes)  // blocked, so each block vectorises
    for (int j = 0; j < kSumLanes; ++j) lanes[j] = add_rn(lanes[j], exp_det(sub_rn(load(i + j), m)));
  for (int j = 0; i + j < experts; ++j) lanes[j] = add_rn(lanes[j], exp_det(sub_rn(load(i + j), m)));
  RowSoftmax s;
  s.max = m;
  s.sum = fold_lanes(lanes);
  return s;
}

// logsumexp of a row from its canonical softmax statistics (the z-loss, spec section 6): log_det is the
// same on every backend (libm log is not), and the sum is >= 1 for a finite row (its max contributes
// exp(0)). NaN otherwise.
MOE_HD float row_logsumexp(const RowSoftmax& sm) {
  return is_finite(sm.sum) ? add_rn(sm.max, log_det(sm.sum)) : sub_rn(sm.sum, sm.sum);
}

// Routing score R of one expert (spec section 1): what group scores use; the ranking key is R
// with a bias and the logit without (Params::rank_by_logit).
MOE_HD float routing_score(const Params& p, float logit, int expert, const RowSoftmax& sm) {
  if (p.post_softmax()) return logit;
  const float s = p.pre_softmax ? div_rn(exp_det(sub_rn(logit, sm.max)), sm.sum) : score_of(p.score_fn, logit);
  return p.bias ? add_rn(s, p.bias[expert]) : s;
}

// Group score: the top per_group routing scores of the group summed in descending key order.
MOE_HD float group_score_from_sorted(const uint64_t* top_keys, int n, const float* scores) {
  float s = 0.0f;
  for (int j = 0; j < n; ++j) s = add_rn(s, scores[rank_key_index(top_keys[j])]);
  return s;
}

// Weights of k chosen experts (spec section 3), unscaled (scale applied by the caller).
// Also reports whether a logit that was read is non-finite (softmax pre reads the whole row: its
// caller checks that). The bias never enters the weights.
template <typename Load>
MOE_HD void unscaled_weights(const Params& p, const Load& load, const int32_t* idx, const RowSoftmax* sm,
                             float* w, bool& nonfinite) {
  const int k = p.k;
  if (p.post_softmax()) {
    float m = bits_to_float(0xff800000u);
    for (int j = 0; j < k; ++j) {
      float l = load(idx[j]);
      if (!is_finite(l)) nonfinite = true;
      if (l > m) m = l;
    }
    float sum = 0.0f;
    for (int j = 0; j < k; ++j) {
      w[j] = exp_det(sub_rn(load(idx[j]), m));
      sum = add_rn(sum, w[j]);
    }
    for (int j = 0; j < k; ++j) w[j] = div_rn(w[j], sum);
    return;
  }
  float denom = 0.0f;
  for (int j = 0; j < k; ++j) {
    float l = load(idx[j]);
    if (p.pre_softmax) {
      w[j] = div_rn(exp_det(sub_rn(l, sm->max)), sm->sum);
    } else {
      if (!is_finite(l)) nonfinite = true;
      w[j] = p.score_fn == MOE_SCORE_SQRTSOFTPLUS ? sqrtsoftplus_det(l) : sigmoid_det(l);
    }
    denom = add_rn(denom, w[j]);
  }
  if (p.normalize) {
    denom = add_rn(denom, kSigmoidNormEps);
    for (int j = 0; j < k; ++j) w[j] = div_rn(w[j], denom);
  }
}

// Backward of one row (spec section 5): grad [E] from dw [k] at experts idx[k].
// w_unscaled are the unscaled weights of idx (from unscaled_weights) and sm the row softmax
// (pre-softmax only); row_exp [E] (optional, pre-softmax) holds exp_det(l_i - max) already.
// Writes every element of grad.
template <typename Load>
MOE_HDI void backward_row(const Params& p, const Load& load, const int32_t* idx, const float* w_unscaled,
                          const RowSoftmax& sm, const float* dw, float* grad, const float* row_exp = nullptr) {
  const int k = p.k;
  if (p.post_softmax()) {
    for (int i = 0; i < p.experts; ++i) grad[i] = 0.0f;
    float dot = 0.0f;
    for (int j = 0; j < k; ++j) dot = add_rn(dot, mul_rn(w_unscaled[j], mul_rn(p.scale, dw[j])));
    for (int j = 0; j < k; ++j) grad[idx[j]] = mul_rn(w_unscaled[j], sub_rn(mul_rn(p.scale, dw[j]), dot));
    return;
  }
  // du: d(loss)/d(u) of the un-normalised values u (P or S at idx). Normalised (w = u / Z with
  // Z = sum u + eps): du_m = (g_m - sum_j g_j w_j) / Z; otherwise du = g.
  // Loops are split per score function (not a select per element), so that the compiler never
  // evaluates every score function for every element.
  float du[MOE_MAX_TOPK];
  if (p.normalize) {
    float z = 0.0f, dot = 0.0f;
    if (p.pre_softmax)
      for (int j = 0; j < k; ++j) z = add_rn(z, div_rn(exp_det(sub_rn(load(idx[j]), sm.max)), sm.sum));
    else if (p.score_fn == MOE_SCORE_SQRTSOFTPLUS)
      for (int j = 0; j < k; ++j) z = add_rn(z, sqrtsoftplus_det(load(idx[j])));
    else
      for (int j = 0; j < k; ++j) z = add_rn(z, sigmoid_det(load(idx[j])));
    z = add_rn(z, kSigmoidNormEps);
    for (int j = 0; j < k; ++j) dot = add_rn(dot, mul_rn(mul_rn(p.scale, dw[j]), w_unscaled[j]));
    for (int j = 0; j < k; ++j) du[j] = div_rn(sub_rn(mul_rn(p.scale, dw[j]), dot), z);
  } else {
    for (int j = 0; j < k; ++j) du[j] = mul_rn(p.scale, dw[j]);
  }
  if (p.pre_softmax) {  // dL = P * (h - sum(P * h)), h = du scattered
    float dot = 0.0f;
    float pj[MOE_MAX_TOPK];
    for (int j = 0; j < k; ++j) {
      pj[j] = p.normalize ? div_rn(exp_det(sub_rn(load(idx[j]), sm.max)), sm.sum) : w_unscaled[j];
      dot = add_rn(dot, mul_rn(pj[j], du[j]));
    }
    if (row_exp)
      for (int i = 0; i < p.experts; ++i) grad[i] = mul_rn(-div_rn(row_exp[i], sm.sum), dot);
    else
      for (int i = 0; i < p.experts; ++i) grad[i] = mul_rn(-div_rn(exp_det(sub_rn(load(i), sm.max)), sm.sum), dot);
    for (int j = 0; j < k; ++j) grad[idx[j]] = mul_rn(pj[j], sub_rn(du[j], dot));
    return;
  }
  for (int i = 0; i < p.experts; ++i) grad[i] = 0.0f;
  if (p.score_fn == MOE_SCORE_SQRTSOFTPLUS) {
    for (int j = 0; j < k; ++j) {
      const float l = load(idx[j]);
      grad[idx[j]] = mul_rn(du[j], score_grad(MOE_SCORE_SQRTSOFTPLUS, l, sqrtsoftplus_det(l)));
    }
  } else {
    for (int j = 0; j < k; ++j) {
      const float s = sigmoid_det(load(idx[j]));
      grad[idx[j]] = mul_rn(du[j], mul_rn(s, sub_rn(1.0f, s)));
    }
  }
}

// Aux-loss scores of one row (spec section 6): softmax over the row, or the sigmoid / sqrtsoftplus
// scores normalised by the canonical lane sum.
template <typename Load>
MOE_HD void aux_scores_row(int score_fn, const Load& load, int experts, float* out) {
  if (score_fn == MOE_SCORE_SOFTMAX) {
    RowSoftmax sm = row_softmax(load, experts);
    for (int i = 0; i < experts; ++i) out[i] = div_rn(exp_det(sub_rn(load(i), sm.max)), sm.sum);
    return;
  }
  float lanes[kSumLanes];
  for (int j = 0; j < kSumLanes; ++j) lanes[j] = 0.0f;
  if (score_fn == MOE_SCORE_SQRTSOFTPLUS)
    for (int i = 0; i < experts; ++i) out[i] = sqrtsoftplus_det(load(i));
  else
    for (int i = 0; i < experts; ++i) out[i] = sigmoid_det(load(i));
  for (int i = 0; i < experts; ++i) lanes[i % kSumLanes] = add_rn(lanes[i % kSumLanes], out[i]);
  float z = add_rn(fold_lanes(lanes), kSigmoidNormEps);
  for (int i = 0; i < experts; ++i) out[i] = div_rn(out[i], z);
}

// Gradient of sum_i f_i * S_i (S = aux scores of the row) w.r.t. the row's logits, times c,
// added into grad. Softmax: c * S_e * (f_e - dot); sigmoid/sqrtsoftplus over their sum:
// c * s'_e / Z * (f_e - dot), with dot = sum_i f_i S_i.
template <typename Load>
MOE_HD void aux_grad_row(int score_fn, const Load& load, int experts, const float* scores, const float* f, float c,
                         float* grad) {
  float dot = 0.0f;
  for (int i = 0; i < experts; ++i) dot = add_rn(dot, mul_rn(f[i], scores[i]));
  if (score_fn == MOE_SCORE_SOFTMAX) {
    for (int i = 0; i < experts; ++i) grad[i] = add_rn(grad[i], mul_rn(c, mul_rn(scores[i], sub_rn(f[i], dot))));
    return;
  }
  float lanes[kSumLanes];
  for (int j = 0; j < kSumLanes; ++j) lanes[j] = 0.0f;
  for (int i = 0; i < experts; ++i) lanes[i % kSumLanes] = add_rn(lanes[i % kSumLanes], score_of(score_fn, load(i)));
  float z = add_rn(fold_lanes(lanes), kSigmoidNormEps);
  for (int i = 0; i < experts; ++i) {
    const float l = load(i);
    const float d = div_rn(score_grad(score_fn, l, score_of(score_fn, l)), z);
    grad[i] = add_rn(grad[i], mul_rn(c, mul_rn(d, sub_rn(f[i], dot))));
  }
}

}  // namespace moe

#endif  // MOE_ROUTING_MATH_H_
