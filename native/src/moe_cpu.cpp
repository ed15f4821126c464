// SPDX-License-Identifier: Apache-2.0
// Native CPU backend: the per-token math of moe_routing_math.h, multi-threaded over tokens.
#include <algorithm>
#include <atomic>
#include <new>
#if defined(__linux__)
#include <sched.h>
#endif

#include "moe_cpu_pool.h"
#include "moe_internal.h"

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#define MOE_CPU_AVX2_SIGMOID 1  // AVX2 exp/sigmoid lanes, chosen at run time
#endif

namespace moe {
namespace {

// Below this many logits per call the pool's wake-up costs more than it saves.
constexpr int64_t kParallelMinElements = 1 << 15;
// Replay rows fetched ahead of use (their k logits are scattered).
constexpr int64_t kAhead = 8;

template <int DT>
struct RowLoader {
  const void* row;
  MOE_HD float operator()(int i) const {
    if (DT == MOE_DTYPE_F32) return static_cast<const float*>(row)[i];
    if (DT == MOE_DTYPE_BF16) return bf16_to_float(static_cast<const uint16_t*>(row)[i]);
    return f16_to_float(static_cast<const uint16_t*>(row)[i]);
  }
};

size_t dtype_size(int dtype) { return dtype == MOE_DTYPE_F32 ? 4 : 2; }

template <typename Load>
bool row_has_nonfinite(const Load& load, int experts) {
  for (int i = 0; i < experts; ++i)
    if (!is_finite(load(i))) return true;
  return false;
}

// A logit that is NaN or infinite, as an integer so that `bad |= ...` loops vectorise.
inline uint32_t nonfinite_bit(float l) { return (uint32_t)((float_to_bits(l) & 0x7f800000u) == 0x7f800000u); }

#if MOE_CPU_AVX2_SIGMOID
// exp_det on 8 lanes: the same IEEE operations in the same order (mul and add separate, no
// FMA), selects as blends, floor as truncation corrected by one, n / 2 as C's truncating division.
__attribute__((target("avx2"))) inline __m256 exp_det_lanes(__m256 x) {
  const __m256 hi = _mm256_set1_ps(88.72283935546875f), lo = _mm256_set1_ps(-103.97208404541015625f);
  const __m256 one = _mm256_set1_ps(1.0f), zero = _mm256_setzero_ps();
  const __m256 nan = _mm256_cmp_ps(x, x, _CMP_UNORD_Q);
  const __m256 above = _mm256_cmp_ps(x, hi, _CMP_GT_OQ);
  __m256 xc = _mm256_blendv_ps(x, hi, above);
  xc = _mm256_blendv_ps(xc, lo, _mm256_cmp_ps(xc, lo, _CMP_LT_OQ));
  xc = _mm256_blendv_ps(xc, zero, nan);
  const __m256 t = _mm256_add_ps(_mm256_mul_ps(xc, _mm256_set1_ps(1.44269502162933349609375f)), _mm256_set1_ps(0.5f));
  const __m256 tr = _mm256_cvtepi32_ps(_mm256_cvttps_epi32(t));
  const __m256 nf = _mm256_sub_ps(tr, _mm256_and_ps(_mm256_cmp_ps(tr, t, _CMP_GT_OQ), one));
  __m256 r = _mm256_sub_ps(xc, _mm256_mul_ps(nf, _mm256_set1_ps(0.693359375f)));
  r = _mm256_sub_ps(r, _mm256_mul_ps(nf, _mm256_set1_ps(-2.12194440e-4f)));
  const __m256 z = _mm256_mul_ps(r, r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(5.0000001201e-1f));
  __m256 y = _mm256_add_ps(_mm256_add_ps(_mm256_mul_ps(p, z), r), one);
  const __m256i ni = _mm256_cvttps_epi32(nf);
  const __m256i n1 = _mm256_srai_epi32(_mm256_add_epi32(ni, _mm256_srli_epi32(ni, 31)), 1);
  const __m256i n2 = _mm256_sub_epi32(ni, n1);
  const __m256i bias127 = _mm256_set1_epi32(127);
  y = _mm256_mul_ps(y, _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, bias127), 23)));
  y = _mm256_mul_ps(y, _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, bias127), 23)));
  y = _mm256_blendv_ps(y, _mm256_set1_ps(bits_to_float(0x7f800000u)), above);
  y = _mm256_blendv_ps(y, zero, _mm256_cmp_ps(x, lo, _CMP_LT_OQ));
  return _mm256_blendv_ps(y, x, nan);
}

// out[i] = sigmoid_det(in[i]); in and out may be the same array.
__attribute__((target("avx2"))) void sigmoid_row_avx2(const float* in, float* out, int n) {
  const __m256 one = _mm256_set1_ps(1.0f), sign = _mm256_set1_ps(-0.0f);
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 e = exp_det_lanes(_mm256_xor_ps(_mm256_loadu_ps(in + i), sign));  // exp(-l)
    _mm256_storeu_ps(out + i, _mm256_div_ps(one, _mm256_add_ps(one, e)));
  }
  for (; i < n; ++i) out[i] = sigmoid_det(in[i]);
}

// out[i] = exp_det(in[i] - sub); in and out may be the same array.
__attribute__((target("avx2"))) void exp_shifted_avx2(const float* in, float sub, float* out, int n) {
  const __m256 s = _mm256_set1_ps(sub);
  int i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, exp_det_lanes(_mm256_sub_ps(_mm256_loadu_ps(in + i), s)));
  for (; i < n; ++i) out[i] = exp_det(in[i] - sub);
}

bool cpu_has_avx2() {
  static const bool has = __builtin_cpu_supports("avx2");
  return has;
}
#endif

// sigmoid_det over a row; AVX2 lanes when the CPU has them (identical results either way).
template <typename Load>
void sigmoid_row(const Load& load, int E, float* out) {
#if MOE_CPU_AVX2_SIGMOID
  if (cpu_has_avx2()) {
    for (int i = 0; i < E; ++i) out[i] = load(i);  // fp32 row (half types widen exactly)
    sigmoid_row_avx2(out, out, E);
    return;
  }
#endif
  for (int i = 0; i < E; ++i) out[i] = sigmoid_det(load(i));
}

// Routing scores R and their 32-bit keys for a whole row; returns whether a logit is non-finite.
template <typename Load>
bool row_scores(const Params& p, const Load& load, const RowSoftmax& sm, float* scores, uint32_t* skeys) {
  const int E = p.experts;
  uint32_t bad = 0;
  if (p.score_fn == MOE_SCORE_SIGMOID) {
    const float* bias = p.bias;
    for (int i = 0; i < E; ++i) bad |= nonfinite_bit(load(i));
    sigmoid_row(load, E, scores);
    if (bias)
      for (int i = 0; i < E; ++i) scores[i] = scores[i] + bias[i];
    for (int i = 0; i < E; ++i) skeys[i] = score_key(scores[i]);
  } else if (p.pre_softmax) {
    for (int i = 0; i < E; ++i) {
      const float l = load(i);
      bad |= nonfinite_bit(l);
      scores[i] = exp_det(l - sm.max) / sm.sum;
      skeys[i] = score_key(scores[i]);
    }
  } else {
    for (int i = 0; i < E; ++i) {
      const float l = load(i);
      bad |= nonfinite_bit(l);
      scores[i] = l;
      skeys[i] = score_key(l);
    }
  }
  return bad != 0;
}

// Exact top-`cap` of n 32-bit score keys sk[0..n) whose positions ascend with the expert index
// (index_of maps a position to its expert), as rank keys sorted descending in out[0..cap).
// The cap-th largest of >= cap block maxima is a lower bound of the cap-th largest key, so every
// expert of the top cap is among the keys >= that bound: a branch-free pass collects them, and
// only those (typically 1-3 x cap) go through the exact insertion with index tie-breaking.
template <typename IndexOf>
void topk_keys(const uint32_t* sk, int n, int cap, IndexOf index_of, uint64_t* out) {
  int count = 0;
  int bs = 16;
  while (bs > 1 && (n + bs - 1) / bs < cap) bs >>= 1;
  if (bs < 4) {  // too few experts per selected one for the bound to pay
    for (int i = 0; i < n; ++i) topk_insert(out, count, cap, ((uint64_t)sk[i] << 32) | (0xffffffffu - (uint32_t)index_of(i)));
    return;
  }
  uint64_t best[MOE_MAX_TOPK];  // block maxima, as keys with the block number for distinctness
  int nbest = 0;
  for (int b0 = 0, blk = 0; b0 < n; b0 += bs, ++blk) {
    const int e = b0 + bs < n ? b0 + bs : n;
    uint32_t m = 0;
    for (int j = b0; j < e; ++j) m = sk[j] > m ? sk[j] : m;
    topk_insert(best, nbest, cap, ((uint64_t)m << 32) | (uint32_t)blk);
  }
  const uint32_t bound = (uint32_t)(best[cap - 1] >> 32);
  int cand[MOE_MAX_EXPERTS];
  int nc = 0;
  for (int i = 0; i < n; ++i) {
    cand[nc] = i;
    nc += sk[i] >= bound;
  }
  for (int c = 0; c < nc; ++c) {
    const int i = cand[c];
    topk_insert(out, count, cap, ((uint64_t)sk[i] << 32) | (0xffffffffu - (uint32_t)index_of(i)));
  }
}

// Live selection with the result of JavaRouting.Kernel.selectRow (plain or group-limited).
template <typename Load>
bool select_row_cpu(const Params& p, const Load& load, const RowSoftmax& sm, float* scores, uint32_t* skeys,
                    uint64_t* keys, int32_t* idx) {
  const bool nonfinite = row_scores(p, load, sm, scores, skeys);
  if (!p.grouped()) {
    topk_keys(skeys, p.experts, p.k, [](int i) { return i; }, keys);
  } else {
    const int gs = p.group_size(), per = p.per_group();
    uint64_t group_top[MOE_MAX_TOPK];
    uint64_t group_keys[MOE_MAX_GROUPS];
    int gcount = 0;
    for (int g = 0; g < p.groups; ++g) {
      const int base = g * gs;
      topk_keys(skeys + base, gs, per, [base](int i) { return base + i; }, group_top);
      topk_insert(group_keys, gcount, p.group_topk, rank_key(group_score_from_sorted(group_top, per, scores), g));
    }
    // The kept groups' keys side by side, in ascending group order (so positions ascend with index).
    uint64_t kept = 0;
    for (int j = 0; j < gcount; ++j) kept |= 1ull << rank_key_index(group_keys[j]);
    int order[MOE_MAX_GROUPS];
    int nk = 0;
    uint32_t packed[MOE_MAX_EXPERTS];
    for (int g = 0; g < p.groups; ++g)
      if ((kept >> g) & 1ull) {
        std::copy(skeys + g * gs, skeys + (g + 1) * gs, packed + nk * gs);
        order[nk++] = g;
      }
    topk_keys(packed, nk * gs, p.k, [&order, gs](int i) { return order[i / gs] * gs + i % gs; }, keys);
  }
  for (int j = 0; j < p.k; ++j) idx[j] = rank_key_index(keys[j]);
  return nonfinite;
}

// out[i] = exp_det(in[i] - sub), on AVX2 lanes when `lanes`.
inline void exp_shifted(bool lanes, const float* in, float sub, float* out, int n) {
#if MOE_CPU_AVX2_SIGMOID
  if (lanes) return exp_shifted_avx2(in, sub, out, n);
#endif
  (void)lanes;
  for (int i = 0; i < n; ++i) out[i] = exp_det(in[i] - sub);
}

// moe::unscaled_weights with the k logits gathered first (same results):
// the k exponentials vectorise, the sums keep their sequential order.
template <typename Load>
void weights_cpu(const Params& p, const Load& load, const int32_t* idx, const RowSoftmax& sm, float* w, bool& nf) {
  const int k = p.k;
  float l[MOE_MAX_TOPK];
  uint32_t bad = 0;
  for (int j = 0; j < k; ++j) l[j] = load(idx[j]);
#if MOE_CPU_AVX2_SIGMOID
  const bool lanes = k >= 8 && cpu_has_avx2();
#else
  const bool lanes = false;
#endif
  if (p.score_fn == MOE_SCORE_SOFTMAX && p.pre_softmax) {
    exp_shifted(lanes, l, sm.max, w, k);
    for (int j = 0; j < k; ++j) w[j] = w[j] / sm.sum;
    return;
  }
  for (int j = 0; j < k; ++j) bad |= nonfinite_bit(l[j]);
  if (bad) nf = true;
  if (p.score_fn == MOE_SCORE_SIGMOID) {
#if MOE_CPU_AVX2_SIGMOID
    if (lanes)
      sigmoid_row_avx2(l, w, k);
    else
#endif
      for (int j = 0; j < k; ++j) w[j] = sigmoid_det(l[j]);
    if (k == 1) return;
    float denom = 0.0f;
    for (int j = 0; j < k; ++j) denom = denom + w[j];
    denom = denom + kSigmoidNormEps;
    for (int j = 0; j < k; ++j) w[j] = w[j] / denom;
    return;
  }
  float m = bits_to_float(0xff800000u);
  for (int j = 0; j < k; ++j) m = l[j] > m ? l[j] : m;
  exp_shifted(lanes, l, m, w, k);
  float sum = 0.0f;
  for (int j = 0; j < k; ++j) sum = sum + w[j];
  for (int j = 0; j < k; ++j) w[j] = w[j] / sum;
}

struct RouteCtx {
  const Params* p;
  const char* logits;
  size_t row_bytes;
  const int32_t* replay;
  const uint8_t* mask;
  int32_t* out_idx;
  float* out_w;
  std::atomic<int64_t> nonfinite{0};
};

// The row kernels also get an AVX2 clone, chosen at load time. AVX2 alone brings no FMA, and
// contraction is off, so both clones round every operation identically.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define MOE_CPU_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define MOE_CPU_CLONES
#endif

template <int DT>
MOE_CPU_CLONES void route_rows(void* vctx, int64_t t0, int64_t t1) {
  RouteCtx& c = *static_cast<RouteCtx*>(vctx);
  const Params& p = *c.p;
  const int k = p.k;
  float scores[MOE_MAX_EXPERTS];
  uint32_t skeys[MOE_MAX_EXPERTS];
  uint64_t keys[MOE_MAX_TOPK + MOE_MAX_GROUPS];
  float w[MOE_MAX_TOPK];
  int64_t nonfinite = 0;
  for (int64_t t = t0; t < t1; ++t) {
    RowLoader<DT> load{c.logits + t * c.row_bytes};
    int32_t* idx = c.out_idx + t * k;
    const bool replay = c.replay && (!c.mask || c.mask[t] != 0);
    RowSoftmax sm{0.0f, 1.0f};
    if (p.needs_full_row()) sm = row_softmax(load, p.experts);
    bool nf;
    if (replay) {
      const int32_t* src = c.replay + t * k;
      if (t + kAhead < t1 && !p.needs_full_row()) {  // replay reads k scattered logits: fetch ahead
        const char* ahead = c.logits + (t + kAhead) * c.row_bytes;
        for (int j = 0; j < k; ++j) __builtin_prefetch(ahead + (size_t)src[kAhead * k + j] * (DT == MOE_DTYPE_F32 ? 4 : 2));
      }
      if (src != idx) std::copy(src, src + k, idx);
      nf = p.needs_full_row() && row_has_nonfinite(load, p.experts);
    } else {
      nf = select_row_cpu(p, load, sm, scores, skeys, keys, idx);
    }
    weights_cpu(p, load, idx, sm, w, nf);
    float* out = c.out_w + t * k;
    for (int j = 0; j < k; ++j) out[j] = w[j] * p.scale;
    nonfinite += nf;
  }
  c.nonfinite.fetch_add(nonfinite, std::memory_order_relaxed);
}

struct BackwardCtx {
  const Params* p;
  const char* logits;
  size_t row_bytes;
  const int32_t* idx;
  const float* grad_w;
  float* grad_logits;
};

template <int DT>
MOE_CPU_CLONES void backward_rows(void* vctx, int64_t t0, int64_t t1) {
  BackwardCtx& c = *static_cast<BackwardCtx*>(vctx);
  const Params& p = *c.p;
  float w[MOE_MAX_TOPK];
  for (int64_t t = t0; t < t1; ++t) {
    RowLoader<DT> load{c.logits + t * c.row_bytes};
    const int32_t* idx = c.idx + t * p.k;
    RowSoftmax sm{0.0f, 1.0f};
    if (p.needs_full_row()) sm = row_softmax(load, p.experts);
    bool nf = false;
    weights_cpu(p, load, idx, sm, w, nf);
    backward_row(p, load, idx, w, sm, c.grad_w + t * p.k, c.grad_logits + t * p.experts);
  }
}

struct ValidateCtx {
  const int32_t* idx;
  const uint8_t* mask;
  int k, experts;
  std::atomic<int64_t> first_bad;
};

void validate_rows(void* vctx, int64_t t0, int64_t t1) {
  ValidateCtx& c = *static_cast<ValidateCtx*>(vctx);
  int reason;
  int64_t bad = first_bad_row(c.idx + t0 * c.k, c.mask ? c.mask + t0 : nullptr, t1 - t0, c.k, c.experts, &reason);
  if (bad < 0) return;
  bad += t0;
  int64_t cur = c.first_bad.load(std::memory_order_relaxed);
  while (bad < cur && !c.first_bad.compare_exchange_weak(cur, bad, std::memory_order_relaxed)) {
  }
}

// Rejects the first invalid row (masked-out rows are not checked) with a detailed error.
int validate_indices(moe_router* r, const int32_t* idx, const uint8_t* mask, int64_t tokens) {
  ValidateCtx c{idx, mask, r->params.k, r->params.experts, {INT64_MAX}};
  r->pool->run(tokens, 4096, validate_rows, &c);
  int64_t bad = c.first_bad.load();
  if (bad == INT64_MAX) return MOE_OK;
  int reason = check_replay_row(idx + bad * r->params.k, r->params.k, r->params.experts);
  return replay_error(bad, reason, idx, r->params.k, r->params.experts);
}

int64_t grain_for(const Params& p) { return std::max<int64_t>(16, 8192 / p.experts); }

}  // namespace

// Usable CPUs: the affinity mask (taskset, cpusets) where the platform has one.
static int usable_cpus() {
#if defined(__linux__)
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0) return std::max(1, CPU_COUNT(&set));
#endif
  return (int)std::max(1u, std::thread::hardware_concurrency());
}

// One pool per process (a router per MoE layer must not mean a pool per layer). Never destroyed:
// its workers may be inside a call when the process exits.
static CpuPool& shared_pool() {
  static CpuPool* pool = new CpuPool(usable_cpus());
  return *pool;
}

// For routers limited to their calling thread.
static CpuPool& serial_pool() {
  static CpuPool* pool = new CpuPool(1);
  return *pool;
}

int cpu_router_init(moe_router* r) {
  if (r->backend == MOE_BACKEND_CPU) r->pool = &shared_pool();
  return MOE_OK;
}

void cpu_router_release(moe_router* r) { r->pool = nullptr; }

int cpu_set_threads(moe_router* r, int threads) {
  if (threads > 1)
    return fail(MOE_ERR_INVALID_ARGUMENT,
                "router threads: 0 (the shared pool) or 1 (calling thread only), got %d; the pool size is "
                "process-wide (moe_set_num_threads)",
                threads);
  r->pool = threads == 1 ? &serial_pool() : &shared_pool();
  return MOE_OK;
}

int cpu_set_num_threads(int threads) {
  shared_pool().set_threads(threads == 0 ? usable_cpus() : threads);
  return MOE_OK;
}

int cpu_num_threads() { return shared_pool().threads(); }

int cpu_route(moe_router* r, const void* logits, int dtype, int64_t tokens, const int32_t* replay_idx,
              const uint8_t* replay_mask, int32_t* out_idx, float* out_w, int64_t* out_nonfinite) {
  const Params& p = r->params;
  if (replay_idx) {
    int st = validate_indices(r, replay_idx, replay_mask, tokens);
    if (st != MOE_OK) return st;
  }
  RouteCtx c;
  c.p = &p;
  c.logits = static_cast<const char*>(logits);
  c.row_bytes = dtype_size(dtype) * (size_t)p.experts;
  c.replay = replay_idx;
  c.mask = replay_mask;
  c.out_idx = out_idx;
  c.out_w = out_w;
  CpuPool::Body body = dtype == MOE_DTYPE_F32    ? route_rows<MOE_DTYPE_F32>
                       : dtype == MOE_DTYPE_BF16 ? route_rows<MOE_DTYPE_BF16>
                                                 : route_rows<MOE_DTYPE_F16>;
  if (tokens * p.experts < kParallelMinElements)
    body(&c, 0, tokens);
  else
    r->pool->run(tokens, grain_for(p), body, &c);
  if (out_nonfinite) *out_nonfinite = c.nonfinite.load();
  return MOE_OK;
}

int cpu_backward(moe_router* r, const void* logits, int dtype, int64_t tokens, const int32_t* idx,
                 const float* grad_w, float* grad_logits) {
  const Params& p = r->params;
  int st = validate_indices(r, idx, nullptr, tokens);
  if (st != MOE_OK) return st;
  BackwardCtx c{&p, static_cast<const char*>(logits), dtype_size(dtype) * (size_t)p.experts, idx, grad_w,
                grad_logits};
  CpuPool::Body body = dtype == MOE_DTYPE_F32    ? backward_rows<MOE_DTYPE_F32>
                       : dtype == MOE_DTYPE_BF16 ? backward_rows<MOE_DTYPE_BF16>
                                                 : backward_rows<MOE_DTYPE_F16>;
  if (tokens * p.experts < kParallelMinElements)
    body(&c, 0, tokens);
  else
    r->pool->run(tokens, grain_for(p), body, &c);
  return MOE_OK;
}

}  // namespace moe
