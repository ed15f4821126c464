// SPDX-License-Identifier: Apache-2.0
// Native CPU backend: the per-token math of moe_routing_math.h, multi-threaded over tokens.
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cfloat>
#include <limits>
#include <new>
#include <utility>
#if defined(__linux__)
#include <sched.h>
#endif

#include "moe_cpu_fpenv.h"
#include "moe_cpu_pool.h"
#include "moe_internal.h"

#if defined(__GNUC__) && defined(__x86_64__)
// GCC 12's AVX-512 intrinsics start from _mm512_undefined_*() and it then warns about their own
// "uninitialized" operand when they inline (GCC PR 105593, fixed in 12.3); set before the header to cover it.
#if !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>
#define MOE_CPU_AVX2_SIGMOID 1  // AVX2 exp/sigmoid lanes, chosen at run time
#endif
#include "moe_cpu_lanes.h"

namespace moe {
namespace {

// Below this many logits per call the pool's wake-up costs more than it saves (live routing and the
// backward, ~25 us and more of work on one thread: 32 Ki logits are 512 rows of E = 64 at ~50 ns a row).
constexpr int64_t kParallelMinElements = 1 << 15;
// Replay reads k logits a row, not E, at 10-25 ns a row (AVX-512; docs/cpu-design.md): by the logit count
// above a 512-expert replay of 64 rows (~1.5 us) went to the pool. Rows below this run on the caller; 2048
// rows are 20-50 us, where a worker that wakes late (tens of us on this VM) costs little of the gain.
constexpr int64_t kReplayParallelMinRows = 2048;
// Replay index validation, ~1-2 ns a row: on the pool from 16 Ki rows, in chunks of 4096.
constexpr int64_t kValidateParallelMinRows = 16384;
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
// out[i] = sigmoid_det(in[i]); in and out may be the same array.
__attribute__((target("avx2"))) void sigmoid_row_avx2(const float* in, float* out, int n) {
  int i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, sigmoid_lanes(_mm256_loadu_ps(in + i)));
  for (; i < n; ++i) out[i] = sigmoid_det(in[i]);
}

// out[i] = sqrtsoftplus_det(in[i]); in and out may be the same array.
__attribute__((target("avx2"))) void sqrtsoftplus_row_avx2(const float* in, float* out, int n) {
  int i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, sqrtsoftplus_lanes(_mm256_loadu_ps(in + i)));
  for (; i < n; ++i) out[i] = sqrtsoftplus_det(in[i]);
}

// out[i] = exp_det(in[i] - sub); in and out may be the same array.
__attribute__((target("avx2"))) void exp_shifted_avx2(const float* in, float sub, float* out, int n) {
  const __m256 s = _mm256_set1_ps(sub);
  int i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, exp_det_lanes(_mm256_sub_ps(_mm256_loadu_ps(in + i), s)));
  for (; i < n; ++i) out[i] = exp_det(in[i] - sub);
}

}  // namespace

// The widest instruction set the CPU kernels may use: what the CPU has (AVX-512 F/BW/DQ/VL with the OS
// saving zmm state, which __builtin_cpu_supports checks), capped by MOE_ROUTER_CPU_ISA (scalar, avx2, avx512)
// at first use and by cpu_set_isa_cap (tests run every path on one machine). Every level gives the same bits.
static std::atomic<int> g_isa_cap{-1};

static int detected_isa() {
  static const int isa = !__builtin_cpu_supports("avx2") ? kIsaScalar
                         : __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                                 __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl")
                             ? kIsaAvx512
                             : kIsaAvx2;
  return isa;
}

static int env_isa_cap() {
  const char* v = getenv("MOE_ROUTER_CPU_ISA");
  if (!v) return kIsaAvx512;
  if (!strcmp(v, "scalar")) return kIsaScalar;
  if (!strcmp(v, "avx2")) return kIsaAvx2;
  return kIsaAvx512;
}

int cpu_isa() {
  int cap = g_isa_cap.load(std::memory_order_relaxed);
  if (cap < 0) {
    static const int from_env = env_isa_cap();
    cap = from_env;
  }
  return std::min(cap, detected_isa());
}

int cpu_set_isa_cap(int cap) {
  g_isa_cap.store(cap < 0 ? -1 : std::min(cap, (int)kIsaAvx512), std::memory_order_relaxed);
  return cpu_isa();
}

namespace {

bool cpu_has_avx2() { return cpu_isa() >= kIsaAvx2; }
bool cpu_has_avx512() { return cpu_isa() >= kIsaAvx512; }

// Lane numbers of the set bits of an 8-bit mask, packed one per byte, lowest first: the shuffle that
// compresses the selected lanes of a vector to its front (AVX2 has no vpcompressd).
struct CompressLut {
  uint64_t lanes[256];
};
constexpr CompressLut make_compress_lut() {
  CompressLut l{};
  for (int m = 0; m < 256; ++m) {
    uint64_t x = 0;
    int n = 0;
    for (int b = 0; b < 8; ++b)
      if ((m >> b) & 1) x |= (uint64_t)b << (8 * n++);
    l.lanes[m] = x;
  }
  return l;
}
constexpr CompressLut kCompress = make_compress_lut();

// Candidates of a vectorised selection: keys (score key ^ sign bit, so signed compares order them) and
// expert indices, at most n + 8 of each.
struct Candidates {
  alignas(32) int32_t key[MOE_MAX_EXPERTS + 8];
  alignas(32) int32_t index[MOE_MAX_EXPERTS + 8];
};

// Most candidates the rank pass takes (beyond it, ties or NaN rows: the scalar path is faster anyway).
constexpr int kMaxCandidates = 64;

// r_ge[i] = number of candidates j with key_j >= key_i, minus one (the rank of i when keys are distinct),
// for i < nc: every candidate against every other, eight i at a time on the lanes.
template <int NG>
__attribute__((target("avx2"), always_inline)) inline void rank_candidates(const Candidates& c, int nc, int32_t* rank) {
  __m256i key[NG], less[NG];
  for (int g = 0; g < NG; ++g) {
    key[g] = _mm256_load_si256((const __m256i*)(c.key + 8 * g));
    less[g] = _mm256_setzero_si256();
  }
  for (int j = 0; j < nc; ++j) {
    const __m256i b = _mm256_set1_epi32(c.key[j]);
    for (int g = 0; g < NG; ++g) less[g] = _mm256_sub_epi32(less[g], _mm256_cmpgt_epi32(key[g], b));
  }
  const __m256i top = _mm256_set1_epi32(nc - 1);
  for (int g = 0; g < NG; ++g) _mm256_store_si256((__m256i*)(rank + 8 * g), _mm256_sub_epi32(top, less[g]));
}

// The largest lane value x of the lane maxima s0 (A = 1) or s0 and s1 (A = 2), signed keys, such that at
// least `cap` lanes hold x or more, broadcast: the cap-th largest lane maximum. Each lane maximum is a
// different expert, so at least cap keys are >= it: a lower bound of the cap-th largest key.
template <int A>
__attribute__((target("avx2"), always_inline)) inline __m256i kth_lane_max_s(__m256i s0, __m256i s1, int cap) {
  const __m256i sign = _mm256_set1_epi32((int)0x80000000u);
  __m256i less0 = _mm256_setzero_si256(), less1 = less0;  // lanes below each lane (negated)
  for (int j = 0; j < 8; ++j) {
    const __m256i at = _mm256_set1_epi32(j);
    const __m256i b0 = _mm256_permutevar8x32_epi32(s0, at);
    less0 = _mm256_add_epi32(less0, _mm256_cmpgt_epi32(s0, b0));
    if (A == 2) {
      const __m256i b1 = _mm256_permutevar8x32_epi32(s1, at);
      less0 = _mm256_add_epi32(less0, _mm256_cmpgt_epi32(s0, b1));
      less1 = _mm256_add_epi32(less1, _mm256_add_epi32(_mm256_cmpgt_epi32(s1, b0), _mm256_cmpgt_epi32(s1, b1)));
    }
  }
  // at or above x: 8 A - below(x); keep x where that is >= cap (less is negative: 8 A + less >= cap)
  const __m256i need = _mm256_set1_epi32(cap - 8 * A - 1);
  __m256i m = _mm256_and_si256(_mm256_cmpgt_epi32(less0, need), s0);
  m = _mm256_or_si256(m, _mm256_andnot_si256(_mm256_cmpgt_epi32(less0, need), sign));  // others: the lowest key
  if (A == 2) {
    const __m256i ok1 = _mm256_cmpgt_epi32(less1, need);
    m = _mm256_max_epi32(m, _mm256_or_si256(_mm256_and_si256(ok1, s1), _mm256_andnot_si256(ok1, sign)));
  }
  m = _mm256_max_epi32(m, _mm256_permute2x128_si256(m, m, 1));
  m = _mm256_max_epi32(m, _mm256_shuffle_epi32(m, 0x4e));
  return _mm256_max_epi32(m, _mm256_shuffle_epi32(m, 0xb1));  // signed form (key ^ sign bit)
}

// kth_lane_max_s of unsigned score keys (the result in signed form, key ^ sign bit).
template <int A>
__attribute__((target("avx2"), always_inline)) inline __m256i kth_lane_max(__m256i a0, __m256i a1, int cap) {
  const __m256i sign = _mm256_set1_epi32((int)0x80000000u);
  return kth_lane_max_s<A>(_mm256_xor_si256(a0, sign), _mm256_xor_si256(a1, sign), cap);
}

// The float whose score key is `key` (score_key's inverse; NaN for key 0, +0 for the key of +-0).
inline float score_of_key(uint32_t key) {
  return bits_to_float((key & 0x80000000u) ? key & 0x7fffffffu : ~key);
}

// Group score (group_score_from_sorted over the group's top `terms` <= 2 keys) from the keys of its n
// routing scores (n a multiple of 8): lane-wise top two with multiplicity, merged across lanes. Only the
// top keys' values enter the sum, and equal keys are equal scores up to the sign of zero and NaN payloads,
// which change no key of the sum: the group's key is the reference's bit for bit.
__attribute__((target("avx2"))) float group_top_sum_avx2(const uint32_t* rk, int n, int terms) {
  __m256i t1 = _mm256_setzero_si256(), t2 = t1;
  for (int v = 0; v < n; v += 8) {
    const __m256i x = _mm256_loadu_si256((const __m256i*)(rk + v));
    t2 = _mm256_max_epu32(t2, _mm256_min_epu32(t1, x));
    t1 = _mm256_max_epu32(t1, x);
  }
  __m256i o1 = _mm256_permute2x128_si256(t1, t1, 1), o2 = _mm256_permute2x128_si256(t2, t2, 1);
  t2 = _mm256_max_epu32(_mm256_min_epu32(t1, o1), _mm256_max_epu32(t2, o2));
  t1 = _mm256_max_epu32(t1, o1);
  o1 = _mm256_shuffle_epi32(t1, 0x4e);
  o2 = _mm256_shuffle_epi32(t2, 0x4e);
  t2 = _mm256_max_epu32(_mm256_min_epu32(t1, o1), _mm256_max_epu32(t2, o2));
  t1 = _mm256_max_epu32(t1, o1);
  o1 = _mm256_shuffle_epi32(t1, 0xb1);
  o2 = _mm256_shuffle_epi32(t2, 0xb1);
  t2 = _mm256_max_epu32(_mm256_min_epu32(t1, o1), _mm256_max_epu32(t2, o2));
  t1 = _mm256_max_epu32(t1, o1);
  const float s = 0.0f + score_of_key((uint32_t)_mm256_cvtsi256_si32(t1));
  return terms == 2 ? s + score_of_key((uint32_t)_mm256_cvtsi256_si32(t2)) : s;
}

// The exact rank of each candidate i < nc: candidates j with key_j > key_i, or key_j == key_i and j < i
// (candidates ascend with the expert index, so this is the index tie-break). Three times the work of
// rank_candidates: used only when keys tie.
template <int NG>
__attribute__((target("avx2"), always_inline)) inline void rank_candidates_ties(const Candidates& c, int nc,
                                                                               int32_t* rank) {
  __m256i key[NG], pos[NG], beat[NG];
  for (int g = 0; g < NG; ++g) {
    key[g] = _mm256_load_si256((const __m256i*)(c.key + 8 * g));
    pos[g] = _mm256_add_epi32(_mm256_set1_epi32(8 * g), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    beat[g] = _mm256_setzero_si256();
  }
  for (int j = 0; j < nc; ++j) {
    const __m256i b = _mm256_set1_epi32(c.key[j]), at = _mm256_set1_epi32(j);
    for (int g = 0; g < NG; ++g) {
      const __m256i eq_before = _mm256_and_si256(_mm256_cmpeq_epi32(b, key[g]), _mm256_cmpgt_epi32(pos[g], at));
      beat[g] = _mm256_sub_epi32(beat[g], _mm256_or_si256(_mm256_cmpgt_epi32(b, key[g]), eq_before));
    }
  }
  for (int g = 0; g < NG; ++g) _mm256_store_si256((__m256i*)(rank + 8 * g), beat[g]);
}

// Exact top-`cap` (cap <= 16) of n 32-bit score keys sk[0..n) (n a multiple of 8), as rank keys sorted
// descending in out[0..cap): the result of topk_keys. vbase[v] is the expert index of sk[8 v] (nullptr: 8 v;
// the indices of a vector ascend by one). The minimum of the lane maxima (8 lanes for cap <= 8, 16 lanes
// otherwise) bounds the cap-th largest key from below, since each lane holds a different expert; a
// compare-and-compress pass collects the keys at or above it (typically 1.5-3 x cap), each candidate's
// rank is counted against all others on vector lanes, and ranks below cap are the result (counted again
// with the index tie-break when keys tie below cap). Returns false, having decided nothing, when there are
// too many candidates (NaN rows, massive ties): topk_keys then decides.
__attribute__((target("avx2,popcnt"))) bool topk_keys_avx2(const uint32_t* sk, int n, int cap, const int32_t* vbase,
                                                          Candidates& c, uint64_t* out) {
  const int nv = n >> 3;
  if ((n & 7) != 0 || cap > 16 || nv < (cap > 8 ? 2 : 1)) return false;
  const __m256i* p = reinterpret_cast<const __m256i*>(sk);
  __m256i a0 = _mm256_setzero_si256(), a1 = a0;
  if (cap <= 8) {
    for (int v = 0; v < nv; ++v) a0 = _mm256_max_epu32(a0, _mm256_loadu_si256(p + v));
  } else {
    int v = 0;
    for (; v + 1 < nv; v += 2) {
      a0 = _mm256_max_epu32(a0, _mm256_loadu_si256(p + v));
      a1 = _mm256_max_epu32(a1, _mm256_loadu_si256(p + v + 1));
    }
    if (v < nv) a0 = _mm256_max_epu32(a0, _mm256_loadu_si256(p + v));
  }
  const __m256i sign = _mm256_set1_epi32((int)0x80000000u);
  const __m256i b = _mm256_xor_si256(cap <= 8 ? kth_lane_max<1>(a0, a0, cap) : kth_lane_max<2>(a0, a1, cap), sign);
  const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  int nc = 0;
  for (int v = 0; v < nv; ++v) {
    const __m256i x = _mm256_loadu_si256(p + v);
    const int m = _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpeq_epi32(_mm256_max_epu32(x, b), x)));
    const __m256i perm = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)kCompress.lanes[m]));
    const __m256i base = _mm256_add_epi32(_mm256_set1_epi32(vbase ? vbase[v] : 8 * v), iota);
    _mm256_storeu_si256((__m256i*)(c.key + nc), _mm256_permutevar8x32_epi32(_mm256_xor_si256(x, sign), perm));
    _mm256_storeu_si256((__m256i*)(c.index + nc), _mm256_permutevar8x32_epi32(base, perm));
    nc += __builtin_popcount((unsigned)m);
  }
  if (nc > kMaxCandidates) return false;
  alignas(32) int32_t rank[kMaxCandidates];
  switch ((nc + 7) >> 3) {
    case 1: rank_candidates<1>(c, nc, rank); break;
    case 2: rank_candidates<2>(c, nc, rank); break;
    case 3: rank_candidates<3>(c, nc, rank); break;
    case 4: rank_candidates<4>(c, nc, rank); break;
    case 5: rank_candidates<5>(c, nc, rank); break;
    case 6: rank_candidates<6>(c, nc, rank); break;
    case 7: rank_candidates<7>(c, nc, rank); break;
    default: rank_candidates<8>(c, nc, rank); break;
  }
  // Equal keys get the same rank and leave the ranks just below it empty: every rank below cap taken
  // exactly once means no tie decides the result.
  int slot[17];
  uint32_t seen = 0;
  for (int i = 0; i < nc; ++i) {
    const int s = rank[i] < cap ? rank[i] : cap;
    slot[s] = i;
    seen |= 1u << s;
  }
  const uint32_t all = (1u << cap) - 1u;
  if ((seen & all) != all) {
    switch ((nc + 7) >> 3) {
      case 1: rank_candidates_ties<1>(c, nc, rank); break;
      case 2: rank_candidates_ties<2>(c, nc, rank); break;
      case 3: rank_candidates_ties<3>(c, nc, rank); break;
      case 4: rank_candidates_ties<4>(c, nc, rank); break;
      case 5: rank_candidates_ties<5>(c, nc, rank); break;
      case 6: rank_candidates_ties<6>(c, nc, rank); break;
      case 7: rank_candidates_ties<7>(c, nc, rank); break;
      default: rank_candidates_ties<8>(c, nc, rank); break;
    }
    for (int i = 0; i < nc; ++i) slot[rank[i] < cap ? rank[i] : cap] = i;  // distinct ranks now
  }
  for (int j = 0; j < cap; ++j) {
    const int i = slot[j];
    out[j] = ((uint64_t)((uint32_t)c.key[i] ^ 0x80000000u) << 32) | (uint64_t)(0xffffffffu - (uint32_t)c.index[i]);
  }
  return true;
}

// Selection keys of finite logits, from their float bits, in signed form: b for b >= 0, (b ^ 0x7fffffff)
// + 1 for negative b. They order as score_key does (-0 and +0 both get 0), and every non-finite logit
// falls outside [kFiniteKeyMin, kFiniteKeyMax], so the keys' lane minima and maxima also check the row.
constexpr int32_t kFiniteKeyMin = (int32_t)0x80800001u, kFiniteKeyMax = 0x7f7fffff;
__attribute__((target("avx2"), always_inline)) inline __m256i finite_key(__m256i b) {
  const __m256i neg = _mm256_srai_epi32(b, 31);
  return _mm256_sub_epi32(_mm256_xor_si256(b, _mm256_srli_epi32(neg, 1)), neg);
}

// finite_key's inverse (the bits of +0 for the key of -0 and +0).
__attribute__((target("avx2"), always_inline)) inline __m256i finite_key_bits(__m256i s) {
  const __m256i neg = _mm256_srai_epi32(s, 31);
  return _mm256_xor_si256(_mm256_add_epi32(s, neg), _mm256_srli_epi32(neg, 1));
}

// Logits [8 v, 8 v + 8) of a row as float bits, widened in registers (exact for the half types).
template <int DT>
__attribute__((target("avx2,f16c"), always_inline)) inline __m256i load_bits8(const void* row, int v) {
  if (DT == MOE_DTYPE_F32) return _mm256_loadu_si256(static_cast<const __m256i*>(row) + v);
  const __m128i h = _mm_loadu_si128(static_cast<const __m128i*>(row) + v);
  if (DT == MOE_DTYPE_BF16) return _mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16);
  return _mm256_castps_si256(_mm256_cvtph_ps(h));
}

// Per-thread scratch of softmax_post_select_avx2.
struct PostScratch {
  alignas(32) int32_t key[MOE_MAX_EXPERTS];
  Candidates cand;
  alignas(32) int32_t rank[kMaxCandidates];
  int nc;
};

// Candidates i < nc whose rank is below cap, as a bit mask; sets `clear` when those ranks are exactly
// 0 .. cap-1 (no tie among or across them; equal keys share their highest rank).
template <int NG>
__attribute__((target("avx2,popcnt"), always_inline)) inline uint64_t ranked_below(const int32_t* rank, int nc, int cap,
                                                                                  bool& clear) {
  const __m256i capv = _mm256_set1_epi32(cap), ncv = _mm256_set1_epi32(nc);
  const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  uint64_t sel = 0;
  __m256i sum = _mm256_setzero_si256();
  for (int g = 0; g < NG; ++g) {
    const __m256i r = _mm256_load_si256((const __m256i*)(rank + 8 * g));
    const __m256i pos = _mm256_add_epi32(iota, _mm256_set1_epi32(8 * g));
    const __m256i lt = _mm256_and_si256(_mm256_cmpgt_epi32(capv, r), _mm256_cmpgt_epi32(ncv, pos));
    sel |= (uint64_t)(unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(lt)) << (8 * g);
    sum = _mm256_add_epi32(sum, _mm256_and_si256(r, lt));
  }
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(sum), _mm256_extracti128_si256(sum, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
  // Ranks are >= positions (0, 1, ...), so cap of them below cap summing to cap (cap - 1) / 2 are those.
  clear = __builtin_popcountll(sel) == cap && _mm_cvtsi128_si32(s) == cap * (cap - 1) / 2;
  return sel;
}

// The ranks, the tie check and, on ties, the ranks with the index tie-break, for NG candidate vectors;
// returns the candidates of rank below cap.
template <int NG>
__attribute__((target("avx2,popcnt"), always_inline)) inline uint64_t rank_top(PostScratch& s, int nc, int cap) {
  rank_candidates<NG>(s.cand, nc, s.rank);
  bool clear;
  uint64_t sel = ranked_below<NG>(s.rank, nc, cap, clear);
  if (!clear) {
    rank_candidates_ties<NG>(s.cand, nc, s.rank);
    sel = ranked_below<NG>(s.rank, nc, cap, clear);
  }
  return sel;
}

// Live selection of one softmax-post row of E logits (E a multiple of 8, k <= 8 A), fused: one pass turns
// each vector of logits into keys (stored), lane maxima (8 A lanes) and the non-finite check; the k-th
// largest lane maximum bounds the k-th key from below; a compress pass packs the keys at or above it
// (about 1.5 k of them) with their indices; their ranks (index tie-break when keys tie) put the winners in
// order. Writes the k indices and returns true, or returns false, having written nothing, for a row with a
// non-finite logit or too many candidates (ties): the general path takes it.
template <int DT, int A>
__attribute__((target("avx2,f16c,popcnt"), always_inline)) inline bool softmax_post_select_avx2(
    const void* row, int E, int k, PostScratch& s) {
  const int nv = E >> 3;
  const __m256i lowest = _mm256_set1_epi32(INT32_MIN);
  __m256i a0 = lowest, a1 = lowest, lo = _mm256_set1_epi32(INT32_MAX);
  int v = 0;
  if (A == 2)
    for (; v + 1 < nv; v += 2) {
      const __m256i x0 = finite_key(load_bits8<DT>(row, v)), x1 = finite_key(load_bits8<DT>(row, v + 1));
      _mm256_store_si256((__m256i*)(s.key + 8 * v), x0);
      _mm256_store_si256((__m256i*)(s.key + 8 * v + 8), x1);
      a0 = _mm256_max_epi32(a0, x0);
      a1 = _mm256_max_epi32(a1, x1);
      lo = _mm256_min_epi32(lo, _mm256_min_epi32(x0, x1));
    }
  for (; v < nv; ++v) {
    const __m256i x = finite_key(load_bits8<DT>(row, v));
    _mm256_store_si256((__m256i*)(s.key + 8 * v), x);
    a0 = _mm256_max_epi32(a0, x);
    lo = _mm256_min_epi32(lo, x);
  }
  const __m256i bad = _mm256_or_si256(_mm256_cmpgt_epi32(_mm256_max_epi32(a0, a1), _mm256_set1_epi32(kFiniteKeyMax)),
                                      _mm256_cmpgt_epi32(_mm256_set1_epi32(kFiniteKeyMin), lo));
  if (!_mm256_testz_si256(bad, bad)) return false;
  const __m256i bound = kth_lane_max_s<A>(a0, a1, k);
  __m256i vi = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i eight = _mm256_set1_epi32(8);
  int nc = 0;
  for (v = 0; v < nv; ++v) {
    const __m256i x = _mm256_load_si256((const __m256i*)(s.key + 8 * v));
    const unsigned m = ~(unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(bound, x))) & 0xffu;
    const __m256i perm = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)kCompress.lanes[m]));
    _mm256_storeu_si256((__m256i*)(s.cand.key + nc), _mm256_permutevar8x32_epi32(x, perm));
    _mm256_storeu_si256((__m256i*)(s.cand.index + nc), _mm256_permutevar8x32_epi32(vi, perm));
    vi = _mm256_add_epi32(vi, eight);
    nc += __builtin_popcount(m);
  }
  s.nc = nc;
  return nc <= kMaxCandidates;
}

// Second half of softmax_post_select_avx2 for a row whose softmax_post_select_avx2 returned true.
__attribute__((target("avx2,popcnt"), always_inline)) inline void softmax_post_rank_avx2(PostScratch& s, int k,
                                                                                        int32_t* out_idx) {
  const int nc = s.nc;
  uint64_t sel;
  switch ((nc + 7) >> 3) {
    case 1: sel = rank_top<1>(s, nc, k); break;
    case 2: sel = rank_top<2>(s, nc, k); break;
    case 3: sel = rank_top<3>(s, nc, k); break;
    case 4: sel = rank_top<4>(s, nc, k); break;
    case 5: sel = rank_top<5>(s, nc, k); break;
    case 6: sel = rank_top<6>(s, nc, k); break;
    case 7: sel = rank_top<7>(s, nc, k); break;
    default: sel = rank_top<8>(s, nc, k); break;
  }
  for (; sel; sel &= sel - 1) {
    const int i = __builtin_ctzll(sel);
    out_idx[s.rank[i]] = s.cand.index[i];
  }
}
#else
struct Candidates {};
inline bool topk_keys_avx2(const uint32_t*, int, int, const int32_t*, Candidates&, uint64_t*) { return false; }
inline float group_top_sum_avx2(const uint32_t*, int, int) { return 0.0f; }
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

// out[i] = exp_det(in[i] - sub), on AVX2 lanes when `lanes`.
inline void exp_shifted(bool lanes, const float* in, float sub, float* out, int n) {
#if MOE_CPU_AVX2_SIGMOID
  if (lanes) return exp_shifted_avx2(in, sub, out, n);
#endif
  (void)lanes;
  for (int i = 0; i < n; ++i) out[i] = exp_det(in[i] - sub);
}

inline bool cpu_has_avx2_lanes() {
#if MOE_CPU_AVX2_SIGMOID
  return cpu_has_avx2();
#else
  return false;
#endif
}

// moe::row_softmax (bit for bit: the same exp_det values summed in the same lane order), with the
// row's exponentials on AVX2 lanes when the CPU has them. Leaves exp_det(l_i - max) in exps [E],
// so that P = exps / sum needs no second exponential.
template <typename Load>
RowSoftmax row_softmax_cpu(const Load& load, int E, float* exps) {
  float m = bits_to_float(0xff800000u);  // -inf; NaN never wins `>`
  for (int i = 0; i < E; ++i) {
    exps[i] = load(i);  // widened once (exact for half types)
    m = exps[i] > m ? exps[i] : m;
  }
  exp_shifted(cpu_has_avx2_lanes(), exps, m, exps, E);
  float lanes[kSumLanes];
  for (int j = 0; j < kSumLanes; ++j) lanes[j] = 0.0f;
  int i = 0;
  for (; i + kSumLanes <= E; i += kSumLanes)
    for (int j = 0; j < kSumLanes; ++j) lanes[j] += exps[i + j];
  for (int j = 0; i + j < E; ++j) lanes[j] += exps[i + j];
  return RowSoftmax{m, fold_lanes(lanes)};
}

// sqrtsoftplus_det over a row; AVX2 lanes when the CPU has them (identical results either way).
template <typename Load>
void sqrtsoftplus_row(const Load& load, int E, float* out) {
#if MOE_CPU_AVX2_SIGMOID
  if (cpu_has_avx2()) {
    for (int i = 0; i < E; ++i) out[i] = load(i);
    sqrtsoftplus_row_avx2(out, out, E);
    return;
  }
#endif
  for (int i = 0; i < E; ++i) out[i] = sqrtsoftplus_det(load(i));
}

// Keys of one row for selection (spec sections 1-2): `kk` the ranking key K of every expert, `rk` the
// keys of the routing scores R (group scores sum R, `scores`). K = R with a bias; without one K is
// the logit, and R is computed only when group scores need it. Returns whether a logit is non-finite.
struct RowKeys {
  const uint32_t* kk;
  const uint32_t* rk;
};

template <typename Load>
__attribute__((always_inline)) inline bool row_keys(const Params& p, const Load& load, const RowSoftmax& sm, float* scores, uint32_t* skeys,
              uint32_t* lkeys, RowKeys& out) {
  const int E = p.experts;
  uint32_t bad = 0;
  if (p.post_softmax()) {  // R = K = L
    for (int i = 0; i < E; ++i) {
      const float l = load(i);
      bad |= nonfinite_bit(l);
      scores[i] = l;
      skeys[i] = score_key(l);
    }
    out.kk = out.rk = skeys;
    return bad != 0;
  }
  const bool by_logit = p.rank_by_logit();
  if (by_logit) {
    for (int i = 0; i < E; ++i) {
      const float l = load(i);
      bad |= nonfinite_bit(l);
      lkeys[i] = score_key(l);
    }
    out.kk = lkeys;
    out.rk = skeys;
    if (!p.grouped()) return bad != 0;  // R is not needed
  } else {
    for (int i = 0; i < E; ++i) bad |= nonfinite_bit(load(i));
    out.kk = out.rk = skeys;
  }
  if (p.pre_softmax) {  // scores holds the row's exponentials (row_softmax_cpu): P = exp / sum
    for (int i = 0; i < E; ++i) scores[i] = scores[i] / sm.sum;
  } else if (p.score_fn == MOE_SCORE_SIGMOID) {
    sigmoid_row(load, E, scores);
  } else {
    sqrtsoftplus_row(load, E, scores);
  }
  if (p.bias)
    for (int i = 0; i < E; ++i) scores[i] = scores[i] + p.bias[i];
  for (int i = 0; i < E; ++i) skeys[i] = score_key(scores[i]);
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
// Inlined into the AVX2 clone of route_rows: out of line it would be baseline x86-64 code.
template <typename Load>
__attribute__((always_inline)) inline bool select_row_cpu(const Params& p, const Load& load, const RowSoftmax& sm, float* scores, uint32_t* skeys,
                    uint32_t* lkeys, uint64_t* keys, int32_t* idx, Candidates& cand) {
  const bool lanes = cpu_has_avx2_lanes();
  RowKeys rk;
  const bool nonfinite = row_keys(p, load, sm, scores, skeys, lkeys, rk);
  if (!p.grouped()) {
    if (!(lanes && topk_keys_avx2(rk.kk, p.experts, p.k, nullptr, cand, keys)))
      topk_keys(rk.kk, p.experts, p.k, [](int i) { return i; }, keys);
  } else {
    const int gs = p.group_size(), terms = p.per_group();
    uint64_t group_top[MOE_MAX_TOPK];
    uint64_t group_keys[MOE_MAX_GROUPS];
    int gcount = 0;
    const bool lane_groups = lanes && terms >= 1 && terms <= 2 && gs % 8 == 0;
    for (int g = 0; g < p.groups; ++g) {
      const int base = g * gs;
      float gscore;
      if (lane_groups) {
        gscore = group_top_sum_avx2(rk.rk + base, gs, terms);
      } else {
        topk_keys(rk.rk + base, gs, terms, [base](int i) { return base + i; }, group_top);
        gscore = group_score_from_sorted(group_top, terms, scores);
      }
      topk_insert(group_keys, gcount, p.group_topk, rank_key(gscore, g));
    }
    // The kept groups' keys side by side, in ascending group order (so positions ascend with index).
    uint64_t kept = 0;
    for (int j = 0; j < gcount; ++j) kept |= 1ull << rank_key_index(group_keys[j]);
    int order[MOE_MAX_GROUPS];
    int nk = 0;
    uint32_t packed[MOE_MAX_EXPERTS];
    for (int g = 0; g < p.groups; ++g)
      if ((kept >> g) & 1ull) {
        std::copy(rk.kk + g * gs, rk.kk + (g + 1) * gs, packed + nk * gs);
        order[nk++] = g;
      }
    int32_t vbase[MOE_MAX_EXPERTS / 8];
    const bool packed_lanes = lanes && gs % 8 == 0;
    if (packed_lanes)
      for (int v = 0; v < nk * gs / 8; ++v) vbase[v] = order[v * 8 / gs] * gs + (v * 8) % gs;
    if (!(packed_lanes && topk_keys_avx2(packed, nk * gs, p.k, vbase, cand, keys)))
      topk_keys(packed, nk * gs, p.k, [&order, gs](int i) { return order[i / gs] * gs + i % gs; }, keys);
  }
  for (int j = 0; j < p.k; ++j) idx[j] = rank_key_index(keys[j]);
  return nonfinite;
}

// moe::unscaled_weights with the k logits gathered first (same results):
// the k exponentials vectorise, the sums keep their sequential order. Inlined into the AVX2 clones
// of its callers (see weights_cpu_call).
template <typename Load>
__attribute__((always_inline)) inline void weights_cpu(const Params& p, const Load& load, const int32_t* idx,
                                                      const RowSoftmax& sm, float* w, bool& nf) {
  const int k = p.k;
  float l[MOE_MAX_TOPK];
  uint32_t bad = 0;
  for (int j = 0; j < k; ++j) l[j] = load(idx[j]);
  // Exponentials on 8 lanes, the rows padded to a multiple of 8 (l and w hold MOE_MAX_TOPK, a multiple
  // of 8): one vector costs less than two scalar exp_det.
#if MOE_CPU_AVX2_SIGMOID
  const bool lanes = k >= 2 && cpu_has_avx2();
#else
  const bool lanes = false;
#endif
  const int k8 = lanes ? (k + 7) & ~7 : k;
  if (p.post_softmax()) {
    for (int j = 0; j < k; ++j) bad |= nonfinite_bit(l[j]);
    if (bad) nf = true;
    float m = bits_to_float(0xff800000u);
    for (int j = 0; j < k; ++j) m = l[j] > m ? l[j] : m;
    for (int j = k; j < k8; ++j) l[j] = 0.0f;
    exp_shifted(lanes, l, m, w, k8);
    float sum = 0.0f;
    for (int j = 0; j < k; ++j) sum = sum + w[j];
    for (int j = 0; j < k; ++j) w[j] = w[j] / sum;
    return;
  }
  for (int j = k; j < k8; ++j) l[j] = 0.0f;
  if (p.pre_softmax) {  // the caller checked the whole row
    exp_shifted(lanes, l, sm.max, w, k8);
    for (int j = 0; j < k; ++j) w[j] = w[j] / sm.sum;
  } else {
    for (int j = 0; j < k; ++j) bad |= nonfinite_bit(l[j]);
    if (bad) nf = true;
    if (p.score_fn == MOE_SCORE_SIGMOID) {
#if MOE_CPU_AVX2_SIGMOID
      if (lanes)
        sigmoid_row_avx2(l, w, k8);
      else
#endif
        for (int j = 0; j < k; ++j) w[j] = sigmoid_det(l[j]);
    } else {
#if MOE_CPU_AVX2_SIGMOID
      if (k >= 4 && cpu_has_avx2()) {  // ~25 scalar ns each: lanes pay already at 4, padded to 8
        const int k8 = (k + 7) & ~7;      // l and w hold MOE_MAX_TOPK, a multiple of 8
        for (int j = k; j < k8; ++j) l[j] = 0.0f;
        sqrtsoftplus_row_avx2(l, w, k8);
      } else
#endif
        for (int j = 0; j < k; ++j) w[j] = sqrtsoftplus_det(l[j]);
    }
  }
  if (!p.normalize) return;
  float denom = 0.0f;
  for (int j = 0; j < k; ++j) denom = denom + w[j];
  denom = denom + kSigmoidNormEps;
  for (int j = 0; j < k; ++j) w[j] = w[j] / denom;
}

// weights_cpu out of line, for live routing; replay and backward inline it. Which is faster depends
// on how the loop around it compiles, not on the work: single-threaded at T = 4096, inlining it
// everywhere cost live E64 k6 5% (the selection's registers), and calling it everywhere cost replay
// E128 k8 20% (its AVX2 lanes then return into baseline x86-64 code). Re-measure before changing.
template <typename Load>
__attribute__((noinline)) void weights_cpu_call(const Params& p, const Load& load, const int32_t* idx,
                                                const RowSoftmax& sm, float* w, bool& nf) {
  weights_cpu(p, load, idx, sm, w, nf);
}

struct RouteCtx {
  const Params* p;
  const char* logits;
  size_t row_bytes;
  const int32_t* replay;
  const uint8_t* mask;
  int32_t* out_idx;
  float* out_w;
  uint8_t* out_flags;
  int fused;     // fused_lanes, for live calls
  int replay16;  // replay calls: the KP (8 or 16) of replay_rows_avx512, 0 when it is not used
  bool live16;   // live calls of a fused router: softmax_post_rows_avx512 (E a multiple of 16)
  int post16;    // live16 with k <= 8: post16_rows, its NV + 1 (NV 0: the row's vectors read twice), else 0
  std::atomic<int64_t> nonfinite{0};
};

// The row kernels also get an AVX2 clone, chosen at load time. AVX2 alone brings no FMA, and
// contraction is off, so both clones round every operation identically.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define MOE_CPU_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define MOE_CPU_CLONES
#endif

// What a row of a call does (spec section 4): route live, or take the experts at `src` (the replay
// row, or 0..k-1 for an all -1 row under ARANGE). Replay rows were validated, so a row holding -1
// is all -1 and its policy is LIVE or ARANGE.
struct RowPlan {
  const int32_t* src;  // nullptr: live
};

inline RowPlan plan_row(const Params& p, const int32_t* replay, const uint8_t* mask, int64_t t, const int32_t* arange) {
  if (!replay || (mask && mask[t] == 0)) return RowPlan{nullptr};
  const int32_t* src = replay + t * p.k;
  if (src[0] != -1) return RowPlan{src};
  return RowPlan{p.minus_one_rows == MOE_MINUS_ONE_ARANGE ? arange : nullptr};
}

#if MOE_CPU_AVX2_SIGMOID
// Transposes the 8 x 8 floats in t (t[i] lane j <-> t[j] lane i).
__attribute__((target("avx2"), always_inline)) inline void transpose8_ps(__m256* t) {
  const __m256 a0 = _mm256_unpacklo_ps(t[0], t[1]), a1 = _mm256_unpackhi_ps(t[0], t[1]);
  const __m256 a2 = _mm256_unpacklo_ps(t[2], t[3]), a3 = _mm256_unpackhi_ps(t[2], t[3]);
  const __m256 a4 = _mm256_unpacklo_ps(t[4], t[5]), a5 = _mm256_unpackhi_ps(t[4], t[5]);
  const __m256 a6 = _mm256_unpacklo_ps(t[6], t[7]), a7 = _mm256_unpackhi_ps(t[6], t[7]);
  const __m256 b0 = _mm256_shuffle_ps(a0, a2, 0x44), b1 = _mm256_shuffle_ps(a0, a2, 0xee);
  const __m256 b2 = _mm256_shuffle_ps(a1, a3, 0x44), b3 = _mm256_shuffle_ps(a1, a3, 0xee);
  const __m256 b4 = _mm256_shuffle_ps(a4, a6, 0x44), b5 = _mm256_shuffle_ps(a4, a6, 0xee);
  const __m256 b6 = _mm256_shuffle_ps(a5, a7, 0x44), b7 = _mm256_shuffle_ps(a5, a7, 0xee);
  t[0] = _mm256_permute2f128_ps(b0, b4, 0x20);
  t[1] = _mm256_permute2f128_ps(b1, b5, 0x20);
  t[2] = _mm256_permute2f128_ps(b2, b6, 0x20);
  t[3] = _mm256_permute2f128_ps(b3, b7, 0x20);
  t[4] = _mm256_permute2f128_ps(b0, b4, 0x31);
  t[5] = _mm256_permute2f128_ps(b1, b5, 0x31);
  t[6] = _mm256_permute2f128_ps(b2, b6, 0x31);
  t[7] = _mm256_permute2f128_ps(b3, b7, 0x31);
}

// Largest k of the row-per-lane replay kernel.
constexpr int kReplayLanesMaxK = 16;

// Eight replayed rows at once, one row per lane (weights_cpu's operations in its order, across rows instead
// of along one): for each j < k a gather of the rows' j-th logits, then the exponentials, the sums in j
// order and the divisions on 8 lanes, so no horizontal operation and no per-row branch remains. Softmax
// post, sigmoid and sqrtsoftplus (softmax pre needs whole rows); fp32, and bf16 when row t0 - 1 exists (its
// 16-bit logits are the high halves of the 32-bit words that end at them). KP (8 or 16) >= k is the
// compile-time bound of the j loops, so that they unroll and the j vectors stay in registers (with a
// run-time k they lived on the stack: every operation went through memory); `j < k` tests are the same for
// every block of a call, so they predict perfectly. Returns the rows with a non-finite logit among their k.
template <int DT, int KP>
__attribute__((target("avx2"))) int replay_rows8_avx2(const Params& p, const char* rows, size_t row_bytes,
                                                     const int32_t* src, int32_t* out_idx, float* out_w,
                                                     uint8_t* out_flags) {
  const int k = p.k;
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i at_row = _mm256_mullo_epi32(lane, _mm256_set1_epi32((int)(row_bytes / (DT == MOE_DTYPE_F32 ? 4 : 2))));
  __m256 x[KP];
  __m256i bad = _mm256_setzero_si256();
  const __m256i expo = _mm256_set1_epi32(0x7f800000);
  // The rows' indices, one j per vector: 8 x 8 transposes of the contiguous [8, k] block (a gather per j
  // costs more on current cores). A row reads a full vector where it stays inside the block (past its k:
  // the next rows' indices, junk lanes), else only its own (the block may end the array).
  for (int j0 = 0; j0 < KP; j0 += 8) {
    if (j0 >= k) break;
    const __m256i own = _mm256_cmpgt_epi32(_mm256_set1_epi32(k - j0), lane);
    __m256 t[8];
    for (int r = 0; r < 8; ++r)
      t[r] = _mm256_castsi256_ps(r * k + j0 + 8 <= 8 * k ? _mm256_loadu_si256((const __m256i*)(src + r * k + j0))
                                                         : _mm256_maskload_epi32(src + r * k + j0, own));
    transpose8_ps(t);
    for (int j = 0; j < 8; ++j) x[j0 + j] = t[j];
  }
  for (int j = 0; j < KP; ++j) {
    if (j >= k) break;
    const __m256i e = _mm256_add_epi32(at_row, _mm256_castps_si256(x[j]));
    __m256i bits;
    if (DT == MOE_DTYPE_F32)
      bits = _mm256_i32gather_epi32(reinterpret_cast<const int*>(rows), e, 4);
    else
      bits = _mm256_and_si256(_mm256_i32gather_epi32(reinterpret_cast<const int*>(rows - 2), e, 2),
                              _mm256_set1_epi32((int)0xffff0000u));
    bad = _mm256_or_si256(bad, _mm256_cmpeq_epi32(_mm256_and_si256(bits, expo), expo));
    x[j] = _mm256_castsi256_ps(bits);
  }
  const __m256 zero = _mm256_setzero_ps();
  __m256 sum = zero;
  if (p.post_softmax()) {
    __m256 m = _mm256_set1_ps(bits_to_float(0xff800000u));
    for (int j = 0; j < KP; ++j)
      if (j < k) m = _mm256_max_ps(x[j], m);  // x > m ? x : m, as the scalar loop
    for (int j = 0; j < KP; ++j)
      if (j < k) x[j] = exp_det_lanes(_mm256_sub_ps(x[j], m));
    for (int j = 0; j < KP; ++j)
      if (j < k) sum = _mm256_add_ps(sum, x[j]);
    for (int j = 0; j < KP; ++j)
      if (j < k) x[j] = _mm256_div_ps(x[j], sum);
  } else {
    if (p.score_fn == MOE_SCORE_SIGMOID) {
      for (int j = 0; j < KP; ++j)
        if (j < k) x[j] = sigmoid_lanes(x[j]);
    } else {
      for (int j = 0; j < KP; ++j)
        if (j < k) x[j] = sqrtsoftplus_lanes(x[j]);
    }
    if (p.normalize) {
      for (int j = 0; j < KP; ++j)
        if (j < k) sum = _mm256_add_ps(sum, x[j]);
      sum = _mm256_add_ps(sum, _mm256_set1_ps(kSigmoidNormEps));
      for (int j = 0; j < KP; ++j)
        if (j < k) x[j] = _mm256_div_ps(x[j], sum);
    }
  }
  const __m256 scale = _mm256_set1_ps(p.scale);
  const __m256 keep = p.nonfinite == MOE_NONFINITE_ZERO ? _mm256_castsi256_ps(_mm256_xor_si256(bad, _mm256_set1_epi32(-1)))
                                                        : _mm256_castsi256_ps(_mm256_set1_epi32(-1));
  for (int j = 0; j < KP; ++j) x[j] = j < k ? _mm256_and_ps(_mm256_mul_ps(x[j], scale), keep) : zero;
  // Back to one row per vector (8 x 8 transposes of j blocks), stored row by row: a row's vector past its k
  // (junk) lands on the next rows' weights, which their stores then overwrite; a vector that would leave
  // the block is masked.
  __m256 t[KP / 8][8];
  for (int j0 = 0; j0 < KP; j0 += 8) {
    for (int j = 0; j < 8; ++j) t[j0 / 8][j] = x[j0 + j];
    if (j0 < k) transpose8_ps(t[j0 / 8]);
  }
  for (int r = 0; r < 8; ++r)
    for (int j0 = 0; j0 < KP; j0 += 8) {
      if (j0 >= k) break;
      if (r * k + j0 + 8 > 8 * k)
        _mm256_maskstore_ps(out_w + r * k + j0, _mm256_cmpgt_epi32(_mm256_set1_epi32(k - j0), lane), t[j0 / 8][r]);
      else
        _mm256_storeu_ps(out_w + r * k + j0, t[j0 / 8][r]);
    }
  // The [8, k] index block is contiguous: k vectors.
  if (src != out_idx)
    for (int v = 0; v < KP; ++v)
      if (v < k) _mm256_storeu_si256((__m256i*)(out_idx + 8 * v), _mm256_loadu_si256((const __m256i*)(src + 8 * v)));
  const int nf = _mm256_movemask_ps(_mm256_castsi256_ps(bad));
  if (out_flags) {  // the lanes' 0/1 as eight bytes
    const __m256i b01 = _mm256_srli_epi32(bad, 31);
    const __m128i w16 = _mm_packus_epi32(_mm256_castsi256_si128(b01), _mm256_extracti128_si256(b01, 1));
    _mm_storel_epi64((__m128i*)out_flags, _mm_packus_epi16(w16, w16));
  }
  return __builtin_popcount((unsigned)nf);
}

// replay_rows8_avx2 for the call's k.
template <int DT>
__attribute__((target("avx2"))) inline int replay_rows8(const Params& p, const char* rows, size_t row_bytes,
                                                       const int32_t* src, int32_t* out_idx, float* out_w,
                                                       uint8_t* out_flags) {
  return p.k <= 8 ? replay_rows8_avx2<DT, 8>(p, rows, row_bytes, src, out_idx, out_w, out_flags)
                  : replay_rows8_avx2<DT, 16>(p, rows, row_bytes, src, out_idx, out_w, out_flags);
}

// Rows fetched ahead by the row-per-lane replay kernel (16 and 32 measured the same).
constexpr int64_t kLanesAhead = 16;

// Fetches the logits that replay_rows8_avx2 will read for rows [t, t + 8): every line of the rows where a
// row is at most 8 lines (its k logits touch most of them), else the k lines the indices name (junk indices
// of masked-out or -1 rows only fetch junk: a prefetch never faults). The kernel's gathers hit 8 rows at
// once and the hardware prefetchers do not follow them: without this, rows past L2 cost 3-5x the gather floor.
template <int DT>
__attribute__((always_inline)) inline void prefetch_block(const RouteCtx& c, int64_t t) {
  const char* rows = c.logits + t * c.row_bytes;
  if (c.row_bytes <= 512) {
    for (size_t o = 0; o < 8 * c.row_bytes; o += 64) __builtin_prefetch(rows + o);
  } else {
    const int k = c.p->k;
    const int32_t* idx = c.replay + t * k;
    for (int r = 0; r < 8; ++r)
      for (int j = 0; j < k; ++j)
        __builtin_prefetch(rows + r * c.row_bytes + (size_t)idx[r * k + j] * (DT == MOE_DTYPE_F32 ? 4 : 2));
  }
}

// Whether rows [t, t + 8) can take replay_rows8_avx2: all replayed (mask 1, no -1 row), f32 or bf16.
template <int DT>
inline bool replay_lanes_fit(const Params& p, const int32_t* replay, const uint8_t* mask, int64_t t) {
  if (DT == MOE_DTYPE_F16 || (DT == MOE_DTYPE_BF16 && t == 0)) return false;
  for (int r = 0; r < 8; ++r)
    if ((mask && mask[t + r] == 0) || replay[(t + r) * p.k] == -1) return false;
  return true;
}

// Rows fetched ahead by the AVX-512 replay kernel: one block, the AVX2 kernel's distance in rows (32, 64 and
// 128 made no difference that the shared machine's noise at T = 65536 let us see).
constexpr int64_t kLanesAhead16 = 16;

// The AVX-512 kernels (F, BW, DQ, VL; MOE_AVX512 in moe_cpu_lanes.h): 16 rows per block, the AVX2 kernels'
// operations in their order on twice the lanes, with mask registers for the selects, the lane tests and the
// partial loads and stores.

// transpose8_ps on both 256-bit halves of t: t[i] lane j <-> t[j] lane i within lanes 0-7, and within 8-15.
MOE_AVX512 inline void transpose8x2_ps(__m512* t) {
  const __m512 a0 = _mm512_unpacklo_ps(t[0], t[1]), a1 = _mm512_unpackhi_ps(t[0], t[1]);
  const __m512 a2 = _mm512_unpacklo_ps(t[2], t[3]), a3 = _mm512_unpackhi_ps(t[2], t[3]);
  const __m512 a4 = _mm512_unpacklo_ps(t[4], t[5]), a5 = _mm512_unpackhi_ps(t[4], t[5]);
  const __m512 a6 = _mm512_unpacklo_ps(t[6], t[7]), a7 = _mm512_unpackhi_ps(t[6], t[7]);
  const __m512 b0 = _mm512_shuffle_ps(a0, a2, 0x44), b1 = _mm512_shuffle_ps(a0, a2, 0xee);
  const __m512 b2 = _mm512_shuffle_ps(a1, a3, 0x44), b3 = _mm512_shuffle_ps(a1, a3, 0xee);
  const __m512 b4 = _mm512_shuffle_ps(a4, a6, 0x44), b5 = _mm512_shuffle_ps(a4, a6, 0xee);
  const __m512 b6 = _mm512_shuffle_ps(a5, a7, 0x44), b7 = _mm512_shuffle_ps(a5, a7, 0xee);
  // 128-bit blocks: lo = (x.0, y.0, x.2, y.2), hi = (x.1, y.1, x.3, y.3) (16 + block for the second source).
  const __m512i lo = _mm512_setr_epi32(0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27);
  const __m512i hi = _mm512_setr_epi32(4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31);
  t[0] = _mm512_permutex2var_ps(b0, lo, b4);
  t[1] = _mm512_permutex2var_ps(b1, lo, b5);
  t[2] = _mm512_permutex2var_ps(b2, lo, b6);
  t[3] = _mm512_permutex2var_ps(b3, lo, b7);
  t[4] = _mm512_permutex2var_ps(b0, hi, b4);
  t[5] = _mm512_permutex2var_ps(b1, hi, b5);
  t[6] = _mm512_permutex2var_ps(b2, hi, b6);
  t[7] = _mm512_permutex2var_ps(b3, hi, b7);
}

// The contiguous [16, k] int block at src as KP vectors of 16 lanes, x[j] lane r = src[r * k + j] (j < k;
// x[j] for j >= k unset). Row r's 8 ints from j0 go to the low half of vector r % 8 when r < 8, else to its
// high half, then both halves are transposed at once. Loads are masked to the block (it may end the array).
template <int KP>
MOE_AVX512 inline void load_block16(const int32_t* src, int k, __m512* x) {
  for (int j0 = 0; j0 < KP; j0 += 8) {
    if (j0 >= k) break;
    const __mmask8 own = (__mmask8)((k - j0 >= 8) ? 0xff : (1u << (k - j0)) - 1);
    __m512 t[8];
    for (int r = 0; r < 8; ++r) {
      const int32_t* a = src + r * k + j0;
      const int32_t* b = src + (r + 8) * k + j0;
      const __m256i lo = _mm256_loadu_si256((const __m256i*)a);  // inside the block: r * k + j0 + 8 <= 16 k
      const __m256i hi = (r + 8) * k + j0 + 8 <= 16 * k ? _mm256_loadu_si256((const __m256i*)b)
                                                         : _mm256_maskz_loadu_epi32(own, b);
      t[r] = _mm512_castsi512_ps(_mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1));
    }
    transpose8x2_ps(t);
    for (int j = 0; j < 8; ++j) x[j0 + j] = t[j];
  }
}

// replay_rows8_avx2 on 16 rows (one row per lane): the same operations in the same order. Rows [t, t + 16)
// must be replayed rows (mask 1, not -1) of a validated call, fp32, or bf16 with t > 0. Returns the rows
// with a non-finite logit among their k, or -1 when a row of the block is not a replayed row (-1 row or
// mask 0), with nothing written.
template <int DT, int KP>
MOE_AVX512 int replay_rows16_avx512(const Params& p, const char* rows, size_t row_bytes, const int32_t* src,
                                    const uint8_t* mask, int32_t* out_idx, float* out_w, uint8_t* out_flags) {
  const int k = p.k;
  __m512 x[KP];
  load_block16<KP>(src, k, x);
  // A -1 row is all -1 (validated): its first index decides, as plan_row's does.
  __mmask16 skip = _mm512_cmpeq_epi32_mask(_mm512_castps_si512(x[0]), _mm512_set1_epi32(-1));
  if (mask) skip |= _mm_cmpeq_epi8_mask(_mm_loadu_si128((const __m128i*)mask), _mm_setzero_si128());
  if (skip) return -1;
  const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512i at_row = _mm512_mullo_epi32(lane, _mm512_set1_epi32((int)(row_bytes / (DT == MOE_DTYPE_F32 ? 4 : 2))));
  const __m512i expo = _mm512_set1_epi32(0x7f800000);
  __mmask16 bad = 0;
  for (int j = 0; j < KP; ++j) {
    if (j >= k) break;
    const __m512i e = _mm512_add_epi32(at_row, _mm512_castps_si512(x[j]));
    __m512i bits;
    if (DT == MOE_DTYPE_F32)
      bits = _mm512_i32gather_epi32(e, rows, 4);
    else
      bits = _mm512_and_si512(_mm512_i32gather_epi32(e, rows - 2, 2), _mm512_set1_epi32((int)0xffff0000u));
    bad |= _mm512_cmpeq_epi32_mask(_mm512_and_si512(bits, expo), expo);
    x[j] = _mm512_castsi512_ps(bits);
  }
  const __m512 zero = _mm512_setzero_ps();
  __m512 sum = zero;
  if (p.post_softmax()) {
    __m512 m = _mm512_set1_ps(bits_to_float(0xff800000u));
    for (int j = 0; j < KP; ++j)
      if (j < k) m = _mm512_max_ps(x[j], m);  // x > m ? x : m, as the scalar loop
    if (bad == 0) {  // every gathered logit finite: x - max <= 0, never NaN
      for (int j = 0; j < KP; ++j)
        if (j < k) x[j] = exp_det_lanes_le0(_mm512_sub_ps(x[j], m));
    } else {
      for (int j = 0; j < KP; ++j)
        if (j < k) x[j] = exp_det_lanes(_mm512_sub_ps(x[j], m));
    }
    for (int j = 0; j < KP; ++j)
      if (j < k) sum = _mm512_add_ps(sum, x[j]);
    for (int j = 0; j < KP; ++j)
      if (j < k) x[j] = _mm512_div_ps(x[j], sum);
  } else {
    if (p.score_fn == MOE_SCORE_SIGMOID) {
      for (int j = 0; j < KP; ++j)
        if (j < k) x[j] = sigmoid_lanes(x[j]);
    } else {
      for (int j = 0; j < KP; ++j)
        if (j < k) x[j] = sqrtsoftplus_lanes(x[j]);
    }
    if (p.normalize) {
      for (int j = 0; j < KP; ++j)
        if (j < k) sum = _mm512_add_ps(sum, x[j]);
      sum = _mm512_add_ps(sum, _mm512_set1_ps(kSigmoidNormEps));
      for (int j = 0; j < KP; ++j)
        if (j < k) x[j] = _mm512_div_ps(x[j], sum);
    }
  }
  const __m512 scale = _mm512_set1_ps(p.scale);
  const __mmask16 keep = p.nonfinite == MOE_NONFINITE_ZERO ? (__mmask16)~bad : (__mmask16)0xffff;
  for (int j = 0; j < KP; ++j) x[j] = j < k ? _mm512_maskz_mul_ps(keep, x[j], scale) : zero;
  // Back to rows: vector r of a transposed j block holds row r's 8 weights (low half) and row r + 8's (high).
  // Stored row by row, full vectors: a row's vector past its k (junk) lands on the next rows' weights, which
  // their stores then overwrite; only a vector that would leave the block is masked. (Masked stores of every
  // row measured 2-3x slower once the outputs no longer fit in L2: T = 65536, e64k6 and e128k8.)
  for (int j0 = 0; j0 < KP; j0 += 8)
    if (j0 < k) transpose8x2_ps(x + j0);
  for (int r = 0; r < 16; ++r)
    for (int j0 = 0; j0 < KP; j0 += 8) {
      if (j0 >= k) break;
      const __m256 v = r < 8 ? _mm512_castps512_ps256(x[j0 + r]) : _mm512_extractf32x8_ps(x[j0 + r - 8], 1);
      if (r * k + j0 + 8 > 16 * k)
        _mm256_mask_storeu_ps(out_w + r * k + j0, (__mmask8)((1u << (k - j0)) - 1), v);
      else
        _mm256_storeu_ps(out_w + r * k + j0, v);
    }
  if (src != out_idx) {  // the [16, k] index block is contiguous: k vectors of 16
    for (int v = 0; v < KP; ++v)
      if (v < k) _mm512_storeu_si512(out_idx + 16 * v, _mm512_loadu_si512(src + 16 * v));
  }
  if (out_flags) _mm_storeu_si128((__m128i*)out_flags, _mm_maskz_set1_epi8(bad, 1));
  return __builtin_popcount((unsigned)bad);
}

#endif

// Rows [t0, t1) of a call, any configuration; returns the rows flagged non-finite.
template <int DT>
MOE_CPU_CLONES int64_t route_rows_general(RouteCtx& c, int64_t t0, int64_t t1) {
  const Params& p = *c.p;
  const int k = p.k;
  float scores[MOE_MAX_EXPERTS];
  uint32_t skeys[MOE_MAX_EXPERTS];
  uint32_t lkeys[MOE_MAX_EXPERTS];
  uint64_t keys[MOE_MAX_TOPK + MOE_MAX_GROUPS];
  float w[MOE_MAX_TOPK];
  int32_t arange[MOE_MAX_TOPK];
  for (int j = 0; j < k; ++j) arange[j] = j;
  const bool zero = p.nonfinite == MOE_NONFINITE_ZERO;
  int64_t nonfinite = 0;
  Candidates cand;
#if MOE_CPU_AVX2_SIGMOID
  const bool lanes8 = c.replay && !p.needs_full_row() && k <= kReplayLanesMaxK && cpu_has_avx2();
#endif
#if MOE_CPU_AVX2_SIGMOID
  // The loop fetches 16 rows ahead, so the first two blocks of a pool chunk would come unfetched.
  if (lanes8)
    for (int64_t b = t0; b < t0 + kLanesAhead && b + 8 <= t1; b += 8) prefetch_block<DT>(c, b);
#endif
  for (int64_t t = t0; t < t1; ++t) {
#if MOE_CPU_AVX2_SIGMOID
    if (lanes8 && t + 8 <= t1 && replay_lanes_fit<DT>(p, c.replay, c.mask, t)) {
      if (t + kLanesAhead + 8 <= t1) prefetch_block<DT>(c, t + kLanesAhead);
      nonfinite += replay_rows8<DT>(p, c.logits + t * c.row_bytes, c.row_bytes, c.replay + t * k, c.out_idx + t * k,
                                         c.out_w + t * k, c.out_flags ? c.out_flags + t : nullptr);
      t += 7;
      continue;
    }
#endif
    RowLoader<DT> load{c.logits + t * c.row_bytes};
    int32_t* idx = c.out_idx + t * k;
    const RowPlan plan = plan_row(p, c.replay, c.mask, t, arange);
    RowSoftmax sm{0.0f, 1.0f};
    if (p.needs_full_row()) sm = row_softmax_cpu(load, p.experts, scores);  // row_keys turns them into P
    bool nf;
    if (plan.src) {
      const int32_t* src = plan.src;
      if (t + kAhead < t1 && !p.needs_full_row()) {  // replay reads k scattered logits: fetch ahead
        const int32_t* next = c.replay + (t + kAhead) * k;  // -1 or masked-out garbage: prefetch never faults
        const char* ahead = c.logits + (t + kAhead) * c.row_bytes;
        for (int j = 0; j < k; ++j) __builtin_prefetch(ahead + (size_t)next[j] * (DT == MOE_DTYPE_F32 ? 4 : 2));
      }
      if (src != idx) std::copy(src, src + k, idx);
      nf = p.needs_full_row() && row_has_nonfinite(load, p.experts);
      weights_cpu(p, load, idx, sm, w, nf);
    } else {
      nf = select_row_cpu(p, load, sm, scores, skeys, lkeys, keys, idx, cand);
      weights_cpu_call(p, load, idx, sm, w, nf);
    }
    float* out = c.out_w + t * k;
    if (zero && nf)
      for (int j = 0; j < k; ++j) out[j] = 0.0f;
    else
      for (int j = 0; j < k; ++j) out[j] = w[j] * p.scale;
    if (c.out_flags) c.out_flags[t] = (uint8_t)nf;
    nonfinite += nf;
  }
  return nonfinite;
}

#if MOE_CPU_AVX2_SIGMOID
// Rows [t0, t1) of a replay call on the AVX-512 kernel, 16 rows a block; blocks it does not take (a -1 or
// masked-out row, bf16 row 0) and the last rows go to route_rows_general. Returns the non-finite rows.
template <int DT, int KP>
MOE_AVX512 int64_t replay_rows_avx512(RouteCtx& c, int64_t t0, int64_t t1) {
  const Params& p = *c.p;
  const int k = p.k;
  const size_t es = DT == MOE_DTYPE_F32 ? 4 : 2;
  int64_t nonfinite = 0;
  // Fetch the logits kLanesAhead16 rows ahead: every line of short rows (a row's k logits touch most of
  // them), the k lines the indices name in long rows (junk indices of rows the kernel declines fetch junk;
  // a prefetch never faults). The 16-row gathers defeat the hardware prefetchers.
  auto fetch = [&](int64_t b) {
    const char* r0 = c.logits + b * c.row_bytes;
    if (c.row_bytes <= 512) {
      for (size_t o = 0; o < 16 * c.row_bytes; o += 64) __builtin_prefetch(r0 + o);
    } else {
      const int32_t* idx = c.replay + b * k;
      for (int r = 0; r < 16; ++r)
        for (int j = 0; j < k; ++j) __builtin_prefetch(r0 + r * c.row_bytes + (size_t)idx[r * k + j] * es);
    }
  };
  for (int64_t b = t0; b < t0 + kLanesAhead16 && b + 16 <= t1; b += 16) fetch(b);
  int64_t t = t0;
  for (; t + 16 <= t1; t += 16) {
    if (t + kLanesAhead16 + 16 <= t1) fetch(t + kLanesAhead16);
    int n = -1;
    if (DT == MOE_DTYPE_F32 || t > 0)
      n = replay_rows16_avx512<DT, KP>(p, c.logits + t * c.row_bytes, c.row_bytes, c.replay + t * k,
                                       c.mask ? c.mask + t : nullptr, c.out_idx + t * k, c.out_w + t * k,
                                       c.out_flags ? c.out_flags + t : nullptr);
    nonfinite += n >= 0 ? n : route_rows_general<DT>(c, t, t + 16);
  }
  if (t < t1) nonfinite += route_rows_general<DT>(c, t, t1);
  return nonfinite;
}
#endif

#if MOE_CPU_AVX2_SIGMOID
// One compare-exchange step of a sorting network on 16 float lanes: each lane meets lane p of x (p = the
// partner permutation), lanes in keep_max take the larger, the others the smaller. Finite lanes only: -0
// and +0 compare equal here, as their selection keys do.
MOE_AVX512 inline __m512 cmpx16_ps(__m512 x, __m512 partner, __mmask16 keep_max) {
  return _mm512_mask_max_ps(_mm512_min_ps(x, partner), keep_max, x, partner);
}

// The 16 lanes of each of x[0 .. R) sorted descending (bitonic network in its flip form: every step keeps the
// larger value in the lower lane, 10 steps). The R rows' steps interleave: each step waits on the one before.
template <int R>
MOE_AVX512 inline void sort16_desc_ps(__m512* x) {
  const __m512i rev8 = _mm512_setr_epi32(7, 6, 5, 4, 3, 2, 1, 0, 15, 14, 13, 12, 11, 10, 9, 8);
  const __m512i rev16 = _mm512_setr_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
  for (int r = 0; r < R; ++r) x[r] = cmpx16_ps(x[r], _mm512_permute_ps(x[r], 0xb1), 0x5555);        // blocks of 2
  for (int r = 0; r < R; ++r) x[r] = cmpx16_ps(x[r], _mm512_permute_ps(x[r], 0x1b), 0x3333);        // 4: flip
  for (int r = 0; r < R; ++r) x[r] = cmpx16_ps(x[r], _mm512_permute_ps(x[r], 0xb1), 0x5555);
  for (int r = 0; r < R; ++r) x[r] = cmpx16_ps(x[r], _mm512_permutexvar_ps(rev8, x[r]), 0x0f0f);    // 8: flip
  for (int r = 0; r < R; ++r) x[r] = cmpx16_ps(x[r], _mm512_permute_ps(x[r], 0x4e), 0x3333);
  for (int r = 0; r < R; ++r) x[r] = cmpx16_ps(x[r], _mm512_permute_ps(x[r], 0xb1), 0x5555);
  for (int r = 0; r < R; ++r) x[r] = cmpx16_ps(x[r], _mm512_permutexvar_ps(rev16, x[r]), 0x00ff);   // 16: flip
  for (int r = 0; r < R; ++r) x[r] = cmpx16_ps(x[r], _mm512_shuffle_f32x4(x[r], x[r], 0xb1), 0x0f0f);
  for (int r = 0; r < R; ++r) x[r] = cmpx16_ps(x[r], _mm512_permute_ps(x[r], 0x4e), 0x3333);
  for (int r = 0; r < R; ++r) x[r] = cmpx16_ps(x[r], _mm512_permute_ps(x[r], 0xb1), 0x5555);
}

// The same step on 8 signed 64-bit lanes (rank keys: selection key << 32 | ~expert index, all distinct).
MOE_AVX512 inline __m512i cmpx8_epi64(__m512i x, __m512i partner, __mmask8 keep_max) {
  return _mm512_mask_max_epi64(_mm512_min_epi64(x, partner), keep_max, x, partner);
}

// Half-cleaners of a bitonic 8-lane sequence (the last three steps of a descending bitonic merge).
MOE_AVX512 inline __m512i clean8_desc_epi64(__m512i x) {
  x = cmpx8_epi64(x, _mm512_shuffle_i64x2(x, x, 0x4e), 0x0f);
  x = cmpx8_epi64(x, _mm512_permutex_epi64(x, 0x4e), 0x33);
  return cmpx8_epi64(x, _mm512_shuffle_epi32(x, (_MM_PERM_ENUM)0x4e), 0x55);
}

// The 8 lanes of x sorted descending (6 steps).
MOE_AVX512 inline __m512i sort8_desc_epi64(__m512i x) {
  x = cmpx8_epi64(x, _mm512_shuffle_epi32(x, (_MM_PERM_ENUM)0x4e), 0x55);  // blocks of 2
  x = cmpx8_epi64(x, _mm512_permutex_epi64(x, 0x1b), 0x33);               // blocks of 4: flip
  x = cmpx8_epi64(x, _mm512_shuffle_epi32(x, (_MM_PERM_ENUM)0x4e), 0x55);
  x = cmpx8_epi64(x, _mm512_permutexvar_epi64(_mm512_setr_epi64(7, 6, 5, 4, 3, 2, 1, 0), x), 0x0f);  // 8: flip
  x = cmpx8_epi64(x, _mm512_permutex_epi64(x, 0x4e), 0x33);
  return cmpx8_epi64(x, _mm512_shuffle_epi32(x, (_MM_PERM_ENUM)0x4e), 0x55);
}

// Logits [16 v, 16 v + 16) of a row as floats (exact for the half types).
template <int DT>
MOE_AVX512 inline __m512 load16_ps(const void* row, int v) {
  if (DT == MOE_DTYPE_F32) return _mm512_loadu_ps(static_cast<const float*>(row) + 16 * v);
  const __m256i h = _mm256_loadu_si256(static_cast<const __m256i*>(row) + v);
  if (DT == MOE_DTYPE_BF16) return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  return _mm512_cvtph_ps(h);
}

// Candidates of one row of post16_rows (at most 16 are ranked; store positions wrap at 32): logits, and
// ~expert index, packed to the front; lanes from nc to 16 hold -inf.
struct Post16Row {
  alignas(64) float key[48];
  alignas(64) int32_t nidx[48];
};

// First half of the AVX-512 live selection of R softmax-post rows (at row, row + row_bytes, ...) of E = 16 nv
// logits (k <= 8), R rows interleaved so that their dependency chains overlap: 16 lane maxima; the row's float
// sum, which is finite only when every logit is (a finite row whose sum overflows is declined too: the general
// path decides it exactly); the k-th largest lane maximum (a sorting network), which bounds the k-th largest
// logit from below since each lane maximum is a different expert; and the logits at or above it with their
// indices, compressed to the front of out[r] in index order. Works on the floats themselves: over finite
// values float order is the selection key order (-0 == +0), and no instruction turns a logit into a key until
// the ~10 candidates are known. nc[r]: the candidate count (k <= nc; ranked by post16_rank when nc <= 16), or
// -1 for a row with a non-finite logit (or an overflowing sum). NV: nv as a constant (the loops unroll), or 0.
template <int DT, int NV, int R>
MOE_AVX512 inline void post16_candidates(const char* row, size_t row_bytes, int nv_rt, int k, Post16Row* out, int* nc) {
  const int nv = NV ? NV : nv_rt;
  __m512 m0[R], m1[R], s0[R], s1[R];
  for (int r = 0; r < R; ++r) {
    m0[r] = s0[r] = load16_ps<DT>(row + r * row_bytes, 0);
    m1[r] = _mm512_set1_ps(-FLT_MAX);
    s1[r] = _mm512_setzero_ps();
  }
  for (int v = 1; v < nv; ++v)
    for (int r = 0; r < R; ++r) {
      const __m512 y = load16_ps<DT>(row + r * row_bytes, v);
      if (v & 1) {
        m1[r] = _mm512_max_ps(m1[r], y);
        s1[r] = _mm512_add_ps(s1[r], y);
      } else {
        m0[r] = _mm512_max_ps(m0[r], y);
        s0[r] = _mm512_add_ps(s0[r], y);
      }
    }
  unsigned bad = 0;
  for (int r = 0; r < R; ++r) {
    // fpclass 0x99: QNaN, +inf, -inf, SNaN
    bad |= (_mm512_fpclass_ps_mask(_mm512_add_ps(s0[r], s1[r]), 0x99) != 0) << r;
    m0[r] = _mm512_max_ps(m0[r], m1[r]);
  }
  sort16_desc_ps<R>(m0);
  __m512 bound[R];
  for (int r = 0; r < R; ++r) bound[r] = _mm512_permutexvar_ps(_mm512_set1_epi32(k - 1), m0[r]);
  const __m512 ninf = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  __m512i nidx = _mm512_xor_si512(iota, _mm512_set1_epi32(-1));  // ~(16 v + lane)
  const __m512i step = _mm512_set1_epi32(16);
  unsigned n[R];
  for (int r = 0; r < R; ++r) n[r] = 0;
  for (int v = 0; v < nv; ++v) {
    for (int r = 0; r < R; ++r) {
      const __m512 y = load16_ps<DT>(row + r * row_bytes, v);
      const __mmask16 m = _mm512_cmp_ps_mask(y, bound[r], _CMP_GE_OQ);
      // Past 32 candidates the row is declined: wrapping the store position keeps it inside the buffer.
      const unsigned pos = n[r] & 31u;
      _mm512_storeu_ps(out[r].key + pos, _mm512_mask_compress_ps(ninf, m, y));
      _mm512_storeu_si512(out[r].nidx + pos, _mm512_maskz_compress_epi32(m, nidx));
      n[r] += (unsigned)__builtin_popcount(_cvtmask16_u32(m));
    }
    nidx = _mm512_sub_epi32(nidx, step);
  }
  for (int r = 0; r < R; ++r) nc[r] = ((bad >> r) & 1) ? -1 : (int)n[r];
}

// Second half: the k (<= 8) best of nc <= 16 candidates in order, written to out_idx. Each candidate becomes
// a distinct signed 64-bit rank key (selection key << 32 | ~index: the larger key wins, then the lower
// index), and a bitonic network sorts them: 8 lanes when nc <= 8, else two sorted halves merged.
MOE_AVX512 inline void post16_rank(const Post16Row& c, int nc, int k, int32_t* out_idx, float* out_val) {
  const __m512i b = _mm512_castps_si512(_mm512_load_ps(c.key));
  // finite_key on 16 lanes (the -inf padding gets a key below every finite one)
  const __m512i neg = _mm512_srai_epi32(b, 31);
  const __m512i key = _mm512_sub_epi32(_mm512_xor_si512(b, _mm512_srli_epi32(neg, 1)), neg);
  const __m512i ni = _mm512_load_si512(c.nidx);
  const __m512i lo_pairs = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
  __m512i top = sort8_desc_epi64(_mm512_permutex2var_epi32(ni, lo_pairs, key));
  if (nc > 8) {
    const __m512i hi_pairs = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    const __m512i rest = sort8_desc_epi64(_mm512_permutex2var_epi32(ni, hi_pairs, key));
    // top descending, rest ascending: a bitonic 16; the larger of each pair is the best 8, bitonic
    const __m512i up = _mm512_permutexvar_epi64(_mm512_setr_epi64(7, 6, 5, 4, 3, 2, 1, 0), rest);
    top = clean8_desc_epi64(_mm512_max_epi64(top, up));
  }
  const __m256i idx = _mm256_xor_si256(_mm512_cvtepi64_epi32(top), _mm256_set1_epi32(-1));
  _mm256_mask_storeu_epi32(out_idx, (__mmask8)((1u << k) - 1u), idx);
  // The selected logits in rank order, for post16_weights: finite_key_bits of the keys (+0 for -0)
  _mm256_store_si256((__m256i*)out_val, finite_key_bits(_mm512_cvtepi64_epi32(_mm512_srli_epi64(top, 32))));
}

// The softmax-post weights of 16 rows from their k (<= 8) selected logits in rank order, val[r][0 .. k), all
// finite: replay_rows16_avx512's operations in its order, one row per lane, with no index block to transpose
// and no gathers (the selection already holds the logits). So they are weights_cpu's bits: m = the running
// max (x > m ? x : m), exp_det(l - m), the sum in rank order, the divisions, the scale. The logits of -0 come
// back as +0, which changes no weight: l - m differs from the exact one at most in the sign of a zero
// result, and exp_det gives 1 for both zeros.
MOE_AVX512 inline void post16_weights(const Params& p, const float (*val)[8], float* out_w, uint8_t* out_flags) {
  const int k = p.k;
  __m512 x[8];
  for (int r = 0; r < 8; ++r)
    x[r] = _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_load_ps(val[r])), _mm256_load_ps(val[r + 8]), 1);
  transpose8x2_ps(x);  // x[j] lane r: row r's j-th logit
  __m512 m = _mm512_set1_ps(bits_to_float(0xff800000u));
  for (int j = 0; j < 8; ++j)
    if (j < k) m = _mm512_max_ps(x[j], m);
  for (int j = 0; j < 8; ++j)
    if (j < k) x[j] = exp_det_lanes_le0(_mm512_sub_ps(x[j], m));
  __m512 sum = _mm512_setzero_ps();
  for (int j = 0; j < 8; ++j)
    if (j < k) sum = _mm512_add_ps(sum, x[j]);
  const __m512 scale = _mm512_set1_ps(p.scale);
  for (int j = 0; j < 8; ++j) x[j] = j < k ? _mm512_mul_ps(_mm512_div_ps(x[j], sum), scale) : _mm512_setzero_ps();
  transpose8x2_ps(x);  // x[r]: row r's weights (low half), row r + 8's (high half)
  // Row by row, full 256-bit stores: the junk past a row's k lands on the next row's weights, which its own
  // store then overwrites; only the last row's store, which would leave the block, is masked.
  for (int r = 0; r < 16; ++r) {
    const __m256 v = r < 8 ? _mm512_castps512_ps256(x[r]) : _mm512_extractf32x8_ps(x[r - 8], 1);
    if (r * k + 8 > 16 * k)
      _mm256_mask_storeu_ps(out_w + r * k, (__mmask8)((1u << k) - 1), v);
    else
      _mm256_storeu_ps(out_w + r * k, v);
  }
  if (out_flags) _mm_storeu_si128((__m128i*)out_flags, _mm_setzero_si128());
}

// Softmax-post weights, one row at a time, of the rows t + r (r < n) of a 16-row block whose selection
// succeeded (bit r of ok; the others took the general path): for blocks the 16-row weight kernels cannot
// take whole.
template <int DT>
__attribute__((always_inline)) inline void post_weights_rows(const RouteCtx& c, int64_t t, int n, unsigned ok) {
  const Params& p = *c.p;
  const int k = p.k;
  for (int r = 0; r < n; ++r) {
    if (!((ok >> r) & 1)) continue;
    const int64_t row = t + r;
    float w[MOE_MAX_TOPK];
    bool nf = false;
    weights_cpu(p, RowLoader<DT>{c.logits + row * c.row_bytes}, c.out_idx + row * k, RowSoftmax{0.0f, 1.0f}, w, nf);
    for (int j = 0; j < k; ++j) c.out_w[row * k + j] = w[j] * p.scale;
    if (c.out_flags) c.out_flags[row] = 0;
  }
}

// Live softmax-post rows, 16 at a time, k <= 8 and E a multiple of 16 (E <= 512): post16_candidates for the
// 16 rows, two at a time, then post16_rank for each (two passes, so that independent rows are in flight
// rather than one long dependency chain), then the weights of the 16 rows at once from their selected logits
// (post16_weights; every logit of these rows is finite; a block with a declined row takes weights_cpu
// row by row, as does the tail of fewer than 16 rows). A row with
// more than 16 candidates (ties at the bound) takes softmax_post_select_avx2 with A lane vectors; rows
// with a non-finite logit, and rows that selection declines, take the general path.
template <int DT, int A, int NV>
MOE_AVX512 int64_t post16_rows(RouteCtx& c, int64_t t0, int64_t t1) {
  const Params& p = *c.p;
  const int k = p.k, nv = p.experts >> 4;
  Post16Row cand[16];
  alignas(32) float val[16][8];
  int nc[16];
  PostScratch s;
  int64_t nonfinite = 0;
  for (int64_t t = t0; t < t1; t += 16) {
    const int n = t1 - t < 16 ? (int)(t1 - t) : 16;
    const char* rows = c.logits + t * c.row_bytes;
    int r = 0;
    for (; r + 2 <= n; r += 2)
      post16_candidates<DT, NV, 2>(rows + r * c.row_bytes, c.row_bytes, nv, k, cand + r, nc + r);
    if (r < n) post16_candidates<DT, NV, 1>(rows + r * c.row_bytes, c.row_bytes, nv, k, cand + r, nc + r);
    unsigned ok = 0;
    for (int r = 0; r < n; ++r) {
      int32_t* out = c.out_idx + (t + r) * k;
      if (nc[r] < 0) continue;
      if (nc[r] <= 16) {
        post16_rank(cand[r], nc[r], k, out, val[r]);
      } else {
        if (!softmax_post_select_avx2<DT, A>(c.logits + (t + r) * c.row_bytes, p.experts, k, s)) continue;
        softmax_post_rank_avx2(s, k, out);
        const RowLoader<DT> load{c.logits + (t + r) * c.row_bytes};
        for (int j = 0; j < k; ++j) val[r][j] = load(out[j]);
      }
      ok |= 1u << r;
    }
    for (int r = 0; r < n; ++r)
      if (!((ok >> r) & 1)) nonfinite += route_rows_general<DT>(c, t + r, t + r + 1);
    if (ok == 0xffffu) {
      post16_weights(p, val, c.out_w + t * k, c.out_flags ? c.out_flags + t : nullptr);
      continue;
    }
    post_weights_rows<DT>(c, t, n, ok);
  }
  return nonfinite;
}
#endif

#if MOE_CPU_AVX2_SIGMOID
// softmax_post_rows_avx2 with the weights of 16 rows at once on the AVX-512 replay kernel, for k > 8 (k <= 8
// takes post16_rows). The selection stays softmax_post_select_avx2's, software-pipelined: with 16 lane
// maxima, more than 16 candidates are common once k > 8 (a quarter of E = 512, k = 10 rows), and an AVX-512
// ranking by rotations measured 5-20% slower on Zen 4.
template <int DT, int A>
MOE_AVX512 int64_t softmax_post_rows_avx512(RouteCtx& c, int64_t t0, int64_t t1) {
  const Params& p = *c.p;
  const int k = p.k;
  PostScratch s[2];
  int64_t nonfinite = 0;
  for (int64_t t = t0; t < t1; t += 16) {
    const int n = t1 - t < 16 ? (int)(t1 - t) : 16;
    unsigned ok = 0;
    for (int r = 0; r < n; ++r) {
      ok |= (unsigned)softmax_post_select_avx2<DT, A>(c.logits + (t + r) * c.row_bytes, p.experts, k, s[r & 1]) << r;
      if (r > 0 && ((ok >> (r - 1)) & 1)) softmax_post_rank_avx2(s[(r - 1) & 1], k, c.out_idx + (t + r - 1) * k);
    }
    if ((ok >> (n - 1)) & 1) softmax_post_rank_avx2(s[(n - 1) & 1], k, c.out_idx + (t + n - 1) * k);
    for (int r = 0; r < n; ++r)
      if (!((ok >> r) & 1)) nonfinite += route_rows_general<DT>(c, t + r, t + r + 1);
    if (ok == 0xffffu && DT != MOE_DTYPE_F16 && (DT == MOE_DTYPE_F32 || t > 0)) {
      constexpr int D = DT == MOE_DTYPE_F16 ? MOE_DTYPE_F32 : DT;
      if (k <= 8)
        replay_rows16_avx512<D, 8>(p, c.logits + t * c.row_bytes, c.row_bytes, c.out_idx + t * k, nullptr,
                                   c.out_idx + t * k, c.out_w + t * k, c.out_flags ? c.out_flags + t : nullptr);
      else
        replay_rows16_avx512<D, 16>(p, c.logits + t * c.row_bytes, c.row_bytes, c.out_idx + t * k, nullptr,
                                    c.out_idx + t * k, c.out_w + t * k, c.out_flags ? c.out_flags + t : nullptr);
      continue;
    }
    post_weights_rows<DT>(c, t, n, ok);
  }
  return nonfinite;
}
#endif

#if MOE_CPU_AVX2_SIGMOID
bool cpu_has_fused() {
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c") &&
                          __builtin_cpu_supports("popcnt");
  return has && cpu_has_avx2();
}

// Live softmax-post rows: softmax_post_select_avx2 per row (A: its lanes per 8), then the weights of 8
// rows at once, one row per lane, by the replay kernel over the indices just written (it computes what
// weights_cpu does, and every logit of these rows is finite). Rows the selection declines take the general
// path, and so do the weights of rows outside a full block of 8 (or f16, or bf16 row 0, which the replay
// kernel does not take).
template <int DT, int A>
__attribute__((target("avx2,f16c,popcnt"))) int64_t softmax_post_rows_avx2(RouteCtx& c, int64_t t0, int64_t t1) {
  const Params& p = *c.p;
  const int k = p.k;
  PostScratch s[2];
  int64_t nonfinite = 0;
  for (int64_t t = t0; t < t1; t += 8) {
    const int n = t1 - t < 8 ? (int)(t1 - t) : 8;
    unsigned ok = 0;
    // Software-pipelined: row r's first half, then row r - 1's ranks, so that two independent chains are
    // in flight (and the ranks read candidates stored a row earlier).
    for (int r = 0; r < n; ++r) {
      ok |= (unsigned)softmax_post_select_avx2<DT, A>(c.logits + (t + r) * c.row_bytes, p.experts, k, s[r & 1]) << r;
      if (r > 0 && ((ok >> (r - 1)) & 1)) softmax_post_rank_avx2(s[(r - 1) & 1], k, c.out_idx + (t + r - 1) * k);
    }
    if ((ok >> (n - 1)) & 1) softmax_post_rank_avx2(s[(n - 1) & 1], k, c.out_idx + (t + n - 1) * k);
    if (ok == 0xffu && DT != MOE_DTYPE_F16 && (DT == MOE_DTYPE_F32 || t > 0)) {
      replay_rows8<DT>(p, c.logits + t * c.row_bytes, c.row_bytes, c.out_idx + t * k, c.out_idx + t * k,
                            c.out_w + t * k, c.out_flags ? c.out_flags + t : nullptr);
      continue;
    }
    for (int r = 0; r < n; ++r) {
      const int64_t row = t + r;
      if (!((ok >> r) & 1)) {
        nonfinite += route_rows_general<DT>(c, row, row + 1);
        continue;
      }
      float w[MOE_MAX_TOPK];
      bool nf = false;
      weights_cpu(p, RowLoader<DT>{c.logits + row * c.row_bytes}, c.out_idx + row * k, RowSoftmax{0.0f, 1.0f}, w, nf);
      for (int j = 0; j < k; ++j) c.out_w[row * k + j] = w[j] * p.scale;
      if (c.out_flags) c.out_flags[row] = 0;
    }
  }
  return nonfinite;
}
#endif

// Which row kernel live rows of this router take: 0 the general path, A = 1 or 2 softmax_post_rows_avx2
// with 8 A lane maxima (16 halve the candidates from E = 128 on; below, they cost more than they save).
int fused_lanes(const Params& p) {
#if MOE_CPU_AVX2_SIGMOID
  if (!p.post_softmax() || p.grouped() || p.experts % 8 != 0 || p.k > 16 || !cpu_has_fused()) return 0;
  if (p.k > 8 || p.experts >= 128) return p.experts >= 16 ? 2 : 0;
  return 1;
#else
  (void)p;
  return 0;
#endif
}

template <int DT>
void route_rows(void* vctx, int64_t t0, int64_t t1) {
  RouteCtx& c = *static_cast<RouteCtx*>(vctx);
  int64_t nonfinite;
#if MOE_CPU_AVX2_SIGMOID
  if (c.post16 != 0) {
    // fused_lanes gives k <= 8 rows A = 1 below E = 128 and A = 2 from it
    switch (c.post16 - 1) {
      case 1: nonfinite = post16_rows<DT, 1, 1>(c, t0, t1); break;
      case 2: nonfinite = post16_rows<DT, 1, 2>(c, t0, t1); break;
      case 4: nonfinite = post16_rows<DT, 1, 4>(c, t0, t1); break;
      case 8: nonfinite = post16_rows<DT, 2, 8>(c, t0, t1); break;
      default: nonfinite = c.fused == 1 ? post16_rows<DT, 1, 0>(c, t0, t1) : post16_rows<DT, 2, 0>(c, t0, t1); break;
    }
  } else if (c.fused == 1 && c.live16)
    nonfinite = softmax_post_rows_avx512<DT, 1>(c, t0, t1);
  else if (c.fused == 2 && c.live16)
    nonfinite = softmax_post_rows_avx512<DT, 2>(c, t0, t1);
  else if (DT != MOE_DTYPE_F16 && c.replay16 == 8)
    nonfinite = replay_rows_avx512<DT == MOE_DTYPE_F16 ? MOE_DTYPE_F32 : DT, 8>(c, t0, t1);
  else if (DT != MOE_DTYPE_F16 && c.replay16 == 16)
    nonfinite = replay_rows_avx512<DT == MOE_DTYPE_F16 ? MOE_DTYPE_F32 : DT, 16>(c, t0, t1);
  else if (c.fused == 1)
    nonfinite = softmax_post_rows_avx2<DT, 1>(c, t0, t1);
  else if (c.fused == 2)
    nonfinite = softmax_post_rows_avx2<DT, 2>(c, t0, t1);
  else
#endif
    nonfinite = route_rows_general<DT>(c, t0, t1);
  c.nonfinite.fetch_add(nonfinite, std::memory_order_relaxed);
}

struct BackwardCtx {
  const Params* p;
  const char* logits;
  size_t row_bytes;
  const int32_t* idx;
  const float* grad_w;
  const uint8_t* flags;
  float* grad_logits;
};

template <int DT>
MOE_CPU_CLONES void backward_rows(void* vctx, int64_t t0, int64_t t1) {
  BackwardCtx& c = *static_cast<BackwardCtx*>(vctx);
  const Params& p = *c.p;
  const bool zero = p.nonfinite == MOE_NONFINITE_ZERO;
  float w[MOE_MAX_TOPK];
  float buf[MOE_MAX_EXPERTS];
  for (int64_t t = t0; t < t1; ++t) {
    RowLoader<DT> load{c.logits + t * c.row_bytes};
    const int32_t* idx = c.idx + t * p.k;
    float* grad = c.grad_logits + t * p.experts;
    // The k logits of a long row are scattered cache lines: fetch them ahead (short rows stream).
    if (t + kAhead < t1 && !p.needs_full_row() && c.row_bytes >= 1024) {
      const int32_t* next = c.idx + (t + kAhead) * p.k;
      const char* ahead = c.logits + (t + kAhead) * c.row_bytes;
      for (int j = 0; j < p.k; ++j) __builtin_prefetch(ahead + (size_t)next[j] * (DT == MOE_DTYPE_F32 ? 4 : 2));
    }
    bool nf = zero && c.flags[t] != 0;  // ZERO: the forward's flags (its read set), then our own reads
    RowSoftmax sm{0.0f, 1.0f};
    if (!nf && p.needs_full_row()) {
      sm = row_softmax_cpu(load, p.experts, buf);
      nf = zero && row_has_nonfinite(load, p.experts);
    }
    if (!nf) weights_cpu(p, load, idx, sm, w, nf);
    if (zero && nf) {
      std::fill(grad, grad + p.experts, 0.0f);
      continue;
    }
    backward_row(p, load, idx, w, sm, c.grad_w + t * p.k, grad, p.needs_full_row() ? buf : nullptr);
  }
}

struct ValidateCtx {
  const int32_t* idx;
  const uint8_t* mask;
  int k, experts;
  bool minus_one_ok;
  std::atomic<int64_t> first_bad;
};

inline void atomic_min(std::atomic<int64_t>& a, int64_t v) {
  int64_t cur = a.load(std::memory_order_relaxed);
  while (v < cur && !a.compare_exchange_weak(cur, v, std::memory_order_relaxed)) {
  }
}

#if MOE_CPU_AVX2_SIGMOID
// Rows of k <= 16 indices that are certainly valid (all in [0, experts), no two equal), one or two vectors
// of 8 lanes per row: lanes past k hold distinct negative fillers, and any row this test does not pass goes
// to the exact scalar check (masked-out rows, rows of -1 and invalid rows alike). Duplicates: 4 rotations
// compare every pair within a vector, 8 rotations of the second vector every pair across the two. Returns
// the first row that needs the scalar check.
__attribute__((target("avx2"), always_inline)) inline __m256i out_of_range(__m256i v, __m256i hi) {
  return _mm256_or_si256(_mm256_cmpgt_epi32(_mm256_setzero_si256(), v), _mm256_cmpgt_epi32(v, hi));
}

template <bool TWO>
__attribute__((target("avx2"))) int64_t first_unclear_row(const int32_t* idx, int64_t t0, int64_t t1, int k, int experts) {
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i used = _mm256_cmpgt_epi32(_mm256_set1_epi32(TWO ? k - 8 : k), lane);
  const __m256i filler = _mm256_sub_epi32(_mm256_set1_epi32(-1), lane);
  const __m256i hi = _mm256_set1_epi32(experts - 1);
  for (int64_t t = t0; t < t1; ++t) {
    const int32_t* row = idx + t * k;
    // The row's last (or only) vector: its own lanes, fillers past k.
    const __m256i v = _mm256_blendv_epi8(filler, _mm256_maskload_epi32(row + (TWO ? 8 : 0), used), used);
    __m256i bad = _mm256_and_si256(used, out_of_range(v, hi));
    __m256i rot[8];
    for (int r = 1; r < (TWO ? 8 : 5); ++r) rot[r] = _mm256_permutevar8x32_epi32(v, _mm256_add_epi32(lane, _mm256_set1_epi32(r)));
    for (int r = 1; r <= 4; ++r) bad = _mm256_or_si256(bad, _mm256_cmpeq_epi32(v, rot[r]));
    if (TWO) {
      const __m256i u = _mm256_loadu_si256((const __m256i*)row);
      bad = _mm256_or_si256(bad, out_of_range(u, hi));
      bad = _mm256_or_si256(bad, _mm256_cmpeq_epi32(u, v));
      for (int r = 1; r < 8; ++r) bad = _mm256_or_si256(bad, _mm256_cmpeq_epi32(u, rot[r]));
      for (int r = 1; r <= 4; ++r)
        bad = _mm256_or_si256(bad, _mm256_cmpeq_epi32(u, _mm256_permutevar8x32_epi32(u, _mm256_add_epi32(lane, _mm256_set1_epi32(r)))));
    }
    if (!_mm256_testz_si256(bad, bad)) return t;
  }
  return t1;
}

// first_unclear_row on 16 rows a block, for k = K exactly: the block's indices transposed to one vector per
// j (load_block16), then every lane's range (the unsigned maximum of its K indices against E: -1 and other
// negatives are out of range too) and every pair i < j. Returns the first row that
// needs the exact scalar check, or the first row of the last (fewer than 16) rows when none does.
template <int K>
MOE_AVX512 int64_t first_unclear_row16(const int32_t* idx, int64_t t0, int64_t t1, int experts) {
  constexpr int KP = K <= 8 ? 8 : 16;
  const __m512i hi = _mm512_set1_epi32(experts);
  int64_t t = t0;
  for (; t + 16 <= t1; t += 16) {
    __m512 f[KP];
    load_block16<KP>(idx + t * K, K, f);
    __m512i x[K];
    for (int j = 0; j < K; ++j) x[j] = _mm512_castps_si512(f[j]);
    // Independent compares OR-ed into four masks: one chain of K (K - 1) / 2 + K masked compares, each
    // waiting for the last, cost e128k8 0.8 ns a row of its ~1.5 (cpu_bench, T = 4096).
    __m512i top = x[0];
    for (int j = 1; j < K; ++j) top = _mm512_max_epu32(top, x[j]);
    __mmask16 bad[4] = {_mm512_cmpge_epu32_mask(top, hi), 0, 0, 0};
    int n = 1;
    for (int i = 0; i < K; ++i)
      for (int j = i + 1; j < K; ++j, ++n) bad[n & 3] |= _mm512_cmpeq_epi32_mask(x[i], x[j]);
    const unsigned any = (unsigned)(bad[0] | bad[1]) | (unsigned)(bad[2] | bad[3]);
    if (any) return t + __builtin_ctz(any);
  }
  return t;
}

using FirstUnclear16 = int64_t (*)(const int32_t*, int64_t, int64_t, int);

template <int... K>
constexpr std::array<FirstUnclear16, sizeof...(K)> first_unclear16_table(std::integer_sequence<int, K...>) {
  return {{&first_unclear_row16<K + 1>...}};
}
// first_unclear_row16<k> for k = 1..16 (index k - 1).
const std::array<FirstUnclear16, 16> kFirstUnclear16 = first_unclear16_table(std::make_integer_sequence<int, 16>{});
#endif

void validate_rows(void* vctx, int64_t t0, int64_t t1) {
  ValidateCtx& c = *static_cast<ValidateCtx*>(vctx);
#if MOE_CPU_AVX2_SIGMOID
  if (c.k <= 16 && cpu_has_avx512()) {
    const FirstUnclear16 first = kFirstUnclear16[c.k - 1];
    for (;; ++t0) {
      t0 = first(c.idx, t0, t1, c.experts);
      if (t0 + 16 > t1) break;  // the last rows: the AVX2 test below
      int reason;
      if (first_bad_row(c.idx + t0 * c.k, c.mask ? c.mask + t0 : nullptr, 1, c.k, c.experts, &reason, c.minus_one_ok) == 0) {
        atomic_min(c.first_bad, t0);
        return;
      }
    }
  }
  if (c.k <= 16 && cpu_has_avx2()) {
    for (int64_t t = t0;; ++t) {
      t = c.k <= 8 ? first_unclear_row<false>(c.idx, t, t1, c.k, c.experts)
                   : first_unclear_row<true>(c.idx, t, t1, c.k, c.experts);
      if (t >= t1) return;
      int reason;
      if (first_bad_row(c.idx + t * c.k, c.mask ? c.mask + t : nullptr, 1, c.k, c.experts, &reason, c.minus_one_ok) == 0) {
        atomic_min(c.first_bad, t);
        return;
      }
    }
  }
#endif
  int reason;
  int64_t bad = first_bad_row(c.idx + t0 * c.k, c.mask ? c.mask + t0 : nullptr, t1 - t0, c.k, c.experts, &reason,
                              c.minus_one_ok);
  if (bad >= 0) atomic_min(c.first_bad, bad + t0);
}

// Rejects the first invalid row (masked-out rows are not checked) with a detailed error.
int validate_indices(moe_router* r, const int32_t* idx, const uint8_t* mask, int64_t tokens, bool minus_one_ok) {
  ValidateCtx c{idx, mask, r->params.k, r->params.experts, minus_one_ok, {INT64_MAX}};
  if (tokens < kValidateParallelMinRows)
    validate_rows(&c, 0, tokens);
  else
    r->pool->run(tokens, 4096, validate_rows, &c);
  int64_t bad = c.first_bad.load();
  if (bad == INT64_MAX) return MOE_OK;
  int reason = check_replay_row(idx + bad * r->params.k, r->params.k, r->params.experts);
  return replay_error(bad, reason, idx, r->params.k, r->params.experts);
}

// Non-finite policy ERROR: the first row whose read set (spec section 2) holds a NaN or +-inf,
// found before anything is written. Live rows read the whole row; replayed rows their k logits,
// or the whole row for softmax pre. `idx` are replay indices (route) or the backward's indices.
struct ReadSetCtx {
  const Params* p;
  const char* logits;
  size_t row_bytes;
  int dtype;
  const int32_t* idx;
  const uint8_t* mask;
  bool backward;
  std::atomic<int64_t> first;
};

// The first non-finite logit row t reads, as its expert index, or -1.
int first_nonfinite_read(const ReadSetCtx& c, int64_t t, const int32_t* arange) {
  const Params& p = *c.p;
  const void* row = c.logits + t * c.row_bytes;
  const int32_t* src = c.backward ? c.idx + t * p.k : plan_row(p, c.idx, c.mask, t, arange).src;
  if (!src || p.needs_full_row()) {
    for (int i = 0; i < p.experts; ++i)
      if (!is_finite(load_logit(row, c.dtype, i))) return i;
    return -1;
  }
  for (int j = 0; j < p.k; ++j)
    if (!is_finite(load_logit(row, c.dtype, src[j]))) return src[j];
  return -1;
}

void find_nonfinite_rows(void* vctx, int64_t t0, int64_t t1) {
  ReadSetCtx& c = *static_cast<ReadSetCtx*>(vctx);
  int32_t arange[MOE_MAX_TOPK];
  for (int j = 0; j < c.p->k; ++j) arange[j] = j;
  for (int64_t t = t0; t < t1; ++t)
    if (first_nonfinite_read(c, t, arange) >= 0) {
      atomic_min(c.first, t);
      return;
    }
}

int reject_nonfinite(moe_router* r, const void* logits, int dtype, int64_t tokens, const int32_t* idx,
                     const uint8_t* mask, bool backward) {
  const Params& p = r->params;
  ReadSetCtx c{&p, static_cast<const char*>(logits), dtype_size(dtype) * (size_t)p.experts, dtype, idx, mask,
               backward, {INT64_MAX}};
  r->pool->run(tokens, std::max<int64_t>(16, 8192 / p.experts), find_nonfinite_rows, &c);
  const int64_t t = c.first.load();
  if (t == INT64_MAX) return MOE_OK;
  int32_t arange[MOE_MAX_TOPK];
  for (int j = 0; j < p.k; ++j) arange[j] = j;
  const int e = first_nonfinite_read(c, t, arange);
  return nonfinite_error(t, e, load_logit(c.logits + t * c.row_bytes, dtype, e));
}

int64_t grain_for(const Params& p) { return std::max<int64_t>(16, 8192 / p.experts); }

// Replay of k logits per row: chunks of at least 256 rows, so that the rows a chunk starts with, which
// its prefetches do not reach ahead of, stay a few percent of it. One thread over T = 65536 in calls of
// 64 / 256 / 1024 rows (cpu_bench-like harness, load 17): e64k6 43 / 31 / 27 ns per row, e128k8 55 / 45 / 42.
int64_t replay_grain_for(const Params& p) {
  return p.needs_full_row() ? grain_for(p) : std::max<int64_t>(256, grain_for(p));
}

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

int64_t cpu_set_pool_spin_us(int64_t us) {
  const int64_t was = shared_pool().spin_us();
  shared_pool().set_spin_us(us);
  return was;
}

int cpu_route(moe_router* r, const void* logits, int dtype, int64_t tokens, const int32_t* replay_idx,
              const uint8_t* replay_mask, int32_t* out_idx, float* out_w, uint8_t* out_flags,
              int64_t* out_nonfinite) {
  FpEnvGuard fp;
  const BiasRead bias(r);  // every row of this call ranks with the bias current now, whatever set_bias does meanwhile
  const Params p = call_params(r, bias);
  if (replay_idx) {
    int st = validate_indices(r, replay_idx, replay_mask, tokens, p.minus_one_rows != MOE_MINUS_ONE_REJECT);
    if (st != MOE_OK) return st;
  }
  if (p.nonfinite == MOE_NONFINITE_ERROR) {
    int st = reject_nonfinite(r, logits, dtype, tokens, replay_idx, replay_mask, false);
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
  c.out_flags = out_flags;
  c.fused = replay_idx ? 0 : fused_lanes(p);
  c.replay16 = 0;
  c.live16 = c.fused != 0 && p.experts % 16 == 0 && cpu_has_avx512();
  c.post16 = 0;
  if (c.live16 && p.k <= 8) {
    const int nv = p.experts / 16;
    c.post16 = (nv == 1 || nv == 2 || nv == 4 || nv == 8 ? nv : 0) + 1;
  }
#if MOE_CPU_AVX2_SIGMOID
  if (replay_idx && dtype != MOE_DTYPE_F16 && !p.needs_full_row() && p.k <= kReplayLanesMaxK && cpu_has_avx512())
    c.replay16 = p.k <= 8 ? 8 : 16;
#endif
  CpuPool::Body body = dtype == MOE_DTYPE_F32    ? route_rows<MOE_DTYPE_F32>
                       : dtype == MOE_DTYPE_BF16 ? route_rows<MOE_DTYPE_BF16>
                                                 : route_rows<MOE_DTYPE_F16>;
  const bool row_replay = replay_idx && !p.needs_full_row();  // k logits a row: the rows rule
  if (tokens * p.experts < kParallelMinElements || (row_replay && tokens < kReplayParallelMinRows))
    body(&c, 0, tokens);
  else
    r->pool->run(tokens, replay_idx ? replay_grain_for(p) : grain_for(p), body, &c);
  if (out_nonfinite) *out_nonfinite = c.nonfinite.load();
  return MOE_OK;
}

int cpu_backward(moe_router* r, const void* logits, int dtype, int64_t tokens, const int32_t* idx,
                 const float* grad_w, const uint8_t* flags, float* grad_logits) {
  FpEnvGuard fp;
  const Params& p = r->params;
  int st = validate_indices(r, idx, nullptr, tokens, false);
  if (st != MOE_OK) return st;
  if (p.nonfinite == MOE_NONFINITE_ERROR) {
    st = reject_nonfinite(r, logits, dtype, tokens, idx, nullptr, true);
    if (st != MOE_OK) return st;
  }
  BackwardCtx c{&p, static_cast<const char*>(logits), dtype_size(dtype) * (size_t)p.experts, idx, grad_w, flags,
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
