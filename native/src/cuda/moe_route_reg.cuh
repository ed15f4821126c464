// SPDX-License-Identifier: Apache-2.0
// The register-row routing shared by route_reg_kernel (moe_route_kernel.cu) and route_grouped_kernel
// (moe_route_grouped_kernel.cu): one warp per token, lane l holding experts l + 32 m (slot m < C).
// Both kernels build their selection keys and masks in their own way (the grouped one from its group
// scores); from the keys on, the selection, the move of a token's entries to its segment of W lanes, the
// gather of their logits and the weights pass exist only here, so that the two kernels cannot drift.
//
// Selection keys are 32 bits: score_key + 1, 0 for an expert taken or not eligible (score_key is at most
// 0xff800000, so + 1 never wraps). A round is __reduce_max_sync of the lanes' best keys, then (keys that
// may be equal) __reduce_min_sync of the expert indices holding that key: the lower index wins a tie,
// exactly the order of the 64-bit rank_key. Packed keys (bf16 and fp16 logits ranked by the logit): the
// score key of such a value has constant low 8 bits (its float has at least 13 zero mantissa bits, and the
// key maps them to all zeros or all ones by sign), so they can hold 255 - index (E <= 256): keys are
// distinct, a larger one is a better expert or, for equal scores, a lower index, and one REDUX per round
// names the winner. The + 0x100 keeps a NaN logit's key (0) above the 0 of taken and dropped experts.
// Each lane sorts its C keys once (equal keys kept in slot order, i.e. by index), so a lane's first key
// is its best and the round's winner pops it (docs/cuda-design.md, step 5).
#ifndef MOE_ROUTE_REG_CUH_
#define MOE_ROUTE_REG_CUH_

#include "moe_cuda_common.cuh"

namespace moe {
namespace dev {

// The bias [E] read once per block into shared memory (strided: no bank conflict). `stage` must be uniform
// over the block (it depends on the parameters only): the barrier is inside.
__device__ __forceinline__ void stage_bias(float* sh, const float* bias, int E, bool stage) {
  if (!stage) return;
  for (int i = threadIdx.x; i < E; i += blockDim.x) sh[i] = __ldg(bias + i);
  __syncthreads();
}

// The packed key of a bf16 or fp16 logit x of expert i (E <= 256).
__device__ __forceinline__ unsigned packed_key(float x, int i) {
  return ((score_key(x) & 0xffffff00u) + 0x100u) | (unsigned)(255 - i);
}
__device__ __forceinline__ int packed_key_index(unsigned key) { return 255 - (int)(key & 0xffu); }

// A lane's C selection keys sorted descending in registers (C = 2, 4, 8), so that each round's winner
// pops its first key instead of rescanning. Distinct keys (packed): any network; the optimal ones (1, 5
// and 19 comparators, two instructions each).
__device__ __forceinline__ void cas_desc(unsigned& a, unsigned& b) {
  const unsigned hi = a > b ? a : b, lo = a > b ? b : a;
  a = hi;
  b = lo;
}
template <int C>
__device__ __forceinline__ void sort_desc_distinct(unsigned (&v)[C]) {
  static_assert(C == 2 || C == 4 || C == 8, "sorting networks for 2, 4 and 8 slots");
  constexpr int kN = C == 2 ? 1 : C == 4 ? 5 : 19;
  constexpr int kPairs[3][19][2] = {
      {{0, 1}},
      {{0, 1}, {2, 3}, {0, 2}, {1, 3}, {1, 2}},
      {{0, 2}, {1, 3}, {4, 6}, {5, 7}, {0, 4}, {1, 5}, {2, 6}, {3, 7}, {0, 1}, {2, 3},
       {4, 5}, {6, 7}, {2, 4}, {3, 5}, {1, 4}, {3, 6}, {1, 2}, {3, 4}, {5, 6}}};
  constexpr int kNet = C == 2 ? 0 : C == 4 ? 1 : 2;
#pragma unroll
  for (int c = 0; c < kN; ++c) cas_desc(v[kPairs[kNet][c][0]], v[kPairs[kNet][c][1]]);
}
// Keys that may be equal (fp32, or keys from R), each with its expert index: equal keys must stay in
// slot order (ascending index), so only neighbours are exchanged, and only when the later key is
// strictly larger (odd-even transposition: C rounds, stable).
template <int C>
__device__ __forceinline__ void sort_desc_stable(unsigned (&v)[C], unsigned (&idx)[C]) {
#pragma unroll
  for (int round = 0; round < C; ++round) {
#pragma unroll
    for (int a = round & 1; a + 1 < C; a += 2) {
      const bool swap = v[a + 1] > v[a];
      const unsigned va = v[a], ia = idx[a];
      v[a] = swap ? v[a + 1] : va;
      idx[a] = swap ? idx[a + 1] : ia;
      v[a + 1] = swap ? va : v[a + 1];
      idx[a + 1] = swap ? ia : idx[a + 1];
    }
  }
}
// The logit of a bf16 or fp16 value from its packed key ((score_key & 0xffffff00) + 0x100 | index byte):
// score_key is b | sign for b >= +0 and ~b below, and the float of such a value has its low 8 bits (bf16:
// 16) zero, so they are restored exactly. Two values differ: -0 comes back as +0 (score_key adds +0
// first), which changes no weight (exp_det, sigmoid_det and sqrtsoftplus_det give the same bits for
// both, and the softmax's differences of zeros are +0 either way), and NaN comes back with another
// payload (0xffffff00), still a NaN.
__device__ __forceinline__ float packed_key_logit(unsigned key) {
  const unsigned s = (key - 0x100u) & 0xffffff00u;
  return __uint_as_float((s & 0x80000000u) ? s ^ 0x80000000u : ~s & 0xffffff00u);
}
// The winner's lane drops its first entry: the rest shift up, `fill` enters at the end.
template <int C>
__device__ __forceinline__ void pop_if(unsigned (&v)[C], bool pop, unsigned fill) {
#pragma unroll
  for (int m = 0; m + 1 < C; ++m) v[m] = pop ? v[m + 1] : v[m];
  v[C - 1] = pop ? fill : v[C - 1];
}

// Top k of the warp's keys (key[m]: expert lane + 32 m; 0 = not eligible), in descending order: lane j
// gets the j-th winner in w0 and the (j+32)-th in w1 (k > 32), and for packed keys their keys in wk0 /
// wk1 (the logit comes with them: packed_key_logit). `key` is consumed.
template <int C>
__device__ __forceinline__ void select_top_k(unsigned (&key)[C], bool packed, int k, int lane, int& w0, int& w1,
                                             unsigned& wk0, unsigned& wk1) {
  const int k0 = k < 32 ? k : 32;
  // Rounds 0..31 and 32..k-1 apart: a round records its winner with one compare and one select.
  if (packed) {  // distinct keys: one REDUX per round names the winner
    sort_desc_distinct<C>(key);
    for (int r = 0; r < k0; ++r) {
      const unsigned win = __reduce_max_sync(kFull, key[0]);
      wk0 = lane == r ? win : wk0;
      pop_if<C>(key, key[0] == win, 0u);  // one lane: the keys are distinct
    }
    for (int r = 32; r < k; ++r) {
      const unsigned win = __reduce_max_sync(kFull, key[0]);
      wk1 = lane == r - 32 ? win : wk1;
      pop_if<C>(key, key[0] == win, 0u);
    }
    if (lane < k) w0 = packed_key_index(wk0);
    if (lane + 32 < k) w1 = packed_key_index(wk1);
    return;
  }
  // Equal keys: the lower index wins, so a lane's order must keep its slots ascending among equal keys
  // (a stable network), and its expert index travels with each key.
  unsigned own[C];
#pragma unroll
  for (int m = 0; m < C; ++m) own[m] = lane + 32 * m;
  sort_desc_stable<C>(key, own);
  // The round's winner: the lowest index holding the largest key.
  auto round = [&]() {
    const unsigned win = __reduce_max_sync(kFull, key[0]);
    const bool has = key[0] == win;
    const unsigned w = __reduce_min_sync(kFull, has ? own[0] : ~0u);
    const bool pop = has && own[0] == w;
    pop_if<C>(key, pop, 0u);
    pop_if<C>(own, pop, ~0u);
    return (int)w;
  };
  for (int r = 0; r < k0; ++r) {
    const int w = round();
    w0 = lane == r ? w : w0;
  }
  for (int r = 32; r < k; ++r) {
    const int w = round();
    w1 = lane == r - 32 ? w : w1;
  }
}

// What the weights pass needs, held by lane seg * W + sub for token base + seg of the warp's pass.
struct PassEntries {
  int e0 = 0, e1 = 0;          // the sub-th and (sub+32)-th expert
  float g0 = 0.0f, g1 = 0.0f;  // their logits (softmax pre: exp_det(l - max))
  float row_sum = 1.0f;        // softmax pre: the token's denominator
  bool active = false, row_nf = false;
};

// Token q's entries (lane j: the j-th and (j+32)-th winner, from select_top_k or a replayed row) move to
// its segment (W < 32: lane q * W + j takes lane j's), and each gathers its expert's value x[m] from the
// lane holding it or, from_key (a packed key ranking the logit itself, whose weights need the logit, not
// an exp), decodes it from the key (packed_key_logit). Warp-wide: every lane calls it for every token.
template <int C, int W>
__device__ __forceinline__ void take_entries(PassEntries& s, int q, int lane, bool two, bool from_key, int w0,
                                             int w1, unsigned wk0, unsigned wk1, const float (&x)[C], float row_sum,
                                             bool nf) {
  const int sub = lane & (W - 1);
  const bool mine = lane / W == q;  // this lane holds an entry of token q
  if (W < 32) {
    if (from_key) {
      wk0 = __shfl_sync(kFull, wk0, sub);
      w0 = packed_key_index(wk0);
    } else {
      w0 = __shfl_sync(kFull, w0, sub);
    }
    if (mine) {
      s.e0 = w0;
      s.row_sum = row_sum;
      s.row_nf = nf;
      s.active = true;
    }
  } else {
    s.e0 = w0;
    s.e1 = w1;
    s.row_sum = row_sum;
    s.row_nf = nf;
    s.active = true;
  }
  if (from_key) {
    if (mine) s.g0 = packed_key_logit(wk0);
    if (two) s.g1 = packed_key_logit(wk1);
  } else {
#pragma unroll
    for (int m = 0; m < C; ++m) {
      const float a = __shfl_sync(kFull, x[m], w0 & 31);
      if (mine && (w0 >> 5) == m) s.g0 = a;
      if (two) {
        const float b = __shfl_sync(kFull, x[m], w1 & 31);
        if ((w1 >> 5) == m) s.g1 = b;
      }
    }
  }
}

// Weights and outputs of the pass's tokens (moe::unscaled_weights' operations, in segments of W lanes);
// non-finite policy ZERO writes zero weights for a row that read a non-finite logit.
template <int W>
__device__ __forceinline__ void write_pass(const Params& p, const PassEntries& s, int64_t base, int lane, bool pre,
                                           bool two, int32_t* out_idx, float* out_w, uint8_t* out_flags) {
  const int k = p.k;
  const int sub = lane & (W - 1);
  const int64_t t = base + lane / W;
  const bool v0 = s.active && sub < k, v1 = s.active && two && sub + 32 < k;
  float l0 = 0.0f, l1 = 0.0f, p0 = 0.0f, p1 = 0.0f;
  if (pre) {
    p0 = v0 ? div_rn(s.g0, s.row_sum) : 0.0f;
    p1 = v1 ? div_rn(s.g1, s.row_sum) : 0.0f;
  } else {
    l0 = v0 ? s.g0 : 0.0f;
    l1 = v1 ? s.g1 : 0.0f;
  }
  float u0, u1, wt0, wt1;
  bool unused_nf = false;
  seg_weights<W, false>(p, sub, l0, l1, p0, p1, u0, u1, wt0, wt1, unused_nf);
  const bool zero = p.nonfinite == MOE_NONFINITE_ZERO && s.row_nf;
  if (v0) {
    out_idx[t * k + sub] = s.e0;
    out_w[t * k + sub] = zero ? 0.0f : mul_rn(wt0, p.scale);
  }
  if (v1) {
    out_idx[t * k + sub + 32] = s.e1;
    out_w[t * k + sub + 32] = zero ? 0.0f : mul_rn(wt1, p.scale);
  }
  if (out_flags && s.active && sub == 0) out_flags[t] = s.row_nf ? 1 : 0;
}

}  // namespace dev

// The launch shape both register kernels share (route_reg_kernel, route_grouped_kernel): C slots per lane
// (2, 4, 8 for E <= 64, 128, 256) and W lanes per token in the weights pass. W = 8 (4 tokens per warp
// pass) only when k <= 8 and one token per warp would need more than a full wave (SMs x the <C, 32>
// instantiation's resident blocks x warps per block): below that (decode sizes) a warp's 4 tokens would
// run one after the other while SMs idle. blocks_per_sm(c) and launch(c, w) take std::integral_constant
// arguments (the caller reads decltype(c)::value).
template <typename BlocksPerSm, typename Launch>
cudaError_t launch_reg_shape(const Params& p, int64_t tokens, int warps_per_block, int sm_count,
                             BlocksPerSm&& blocks_per_sm, Launch&& launch) {
  auto with_w = [&](auto c) {
    if (p.k <= 8 && tokens > (int64_t)sm_count * blocks_per_sm(c) * warps_per_block)
      return launch(c, std::integral_constant<int, 8>{});
    return launch(c, std::integral_constant<int, 32>{});
  };
  if (p.experts <= 64) return with_w(std::integral_constant<int, 2>{});
  if (p.experts <= 128) return with_w(std::integral_constant<int, 4>{});
  return with_w(std::integral_constant<int, 8>{});
}

}  // namespace moe

#endif  // MOE_ROUTE_REG_CUH_
