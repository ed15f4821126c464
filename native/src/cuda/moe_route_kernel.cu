// SPDX-License-Identifier: Apache-2.0
// Fused live routing: scores + bias + group-limited selection + top-k + weights + scaling, one pass
// over the logits. E <= 256: the register path (route_reg_kernel below; docs/cuda-design.md has its cost
// model). Above, a team per token: one warp (4 tokens per 128-thread block) for E <= 512, a
// 256-thread block per token above. The row is staged once in shared memory as float (16-byte
// loads when aligned); selection is an exact top-k over the distinct u64 rank keys of
// moe_routing_math.h, found by k rounds of "largest key below the previous winner": every thread
// keeps the best of its own experts, a team max picks the winner, and only the thread that owned it
// rescans. Keys are distinct, so the result (and its descending order) does not depend on how the
// experts are spread over threads, which keeps indices identical to the CPU's insertion sort.
// Experts are ranked by the ranking key K of the spec (the logit without a bias, R with one: S + b for
// sigmoid and sqrtsoftplus, P + b for softmax pre); group scores sum the top group_terms routing
// scores R of a group (TOPK_SUM: floor(k / Gk), TOP2_SUM: 2, MAX: 1). Per row: the whole row is read,
// its non-finite flag is the OR over it; non-finite policy ZERO writes zero weights for flagged rows
// (ERROR was decided before this kernel by moe_nonfinite_kernel.cu: a rejected call never gets here).
// Replay rows reach this kernel only for softmax pre (the weights need the row's softmax) and for
// masked-out or all -1 rows under minus_one_rows LIVE, which are routed live; all -1 rows under
// ARANGE replay experts 0..k-1.
#include <atomic>

#include "moe_cuda_common.cuh"
#include "moe_route_reg.cuh"

namespace moe {
namespace {

constexpr int kWarpTeamsPerBlock = 4;  // TW == 1: tokens per 128-thread block
// Resident blocks per SM asked of ptxas: at most 48 registers per thread for both paths (10 blocks of
// 128 threads, 5 of 256), the v1 kernels' occupancy; the options of spec sections 1-5 took them to
// 56 unbounded. No spills (ptxas -v, sm_80 and sm_90).
constexpr int kWarpTeamMinBlocksPerSm = 10;
constexpr int kBlockTeamMinBlocksPerSm = 5;
constexpr int kBlockTeamWarps = 8;     // large E: 256 threads per token
constexpr int kWarpPathMaxExperts = 512;

// Group-limited routing (warp level; run by one warp of the team): the kept-group bit mask.
// Group score = sum, in descending key order, of the top `per` routing scores of the group
// (moe::group_score_from_sorted). L lanes share a group (L a power of two, G * L <= 32); each
// round takes the largest key below the previous one inside the group by a segmented max.
__device__ unsigned long long select_groups(const Params& p, const float* sc, int lane) {
  const int G = p.groups, gs = p.group_size(), per = p.per_group(), Gk = p.group_topk;
  int L = 1;
  while (G * L * 2 <= 32 && L * 2 <= gs) L *= 2;
  const int groups_per_pass = 32 / L;
  unsigned long long gkey0 = 0, gkey1 = 0;  // G <= 64: L == 1 gives at most two passes
  const int sub = lane & (L - 1);
  for (int pass = 0; pass * groups_per_pass < G; ++pass) {
    const int g = pass * groups_per_pass + lane / L;
    const bool active = g < G;
    const int cnt = active ? (gs - sub + L - 1) / L : 0;  // elements j = sub + L * m, m < cnt
    const int start = cnt > 0 ? g % cnt : 0;               // rotation: spreads smem banks over groups
    float s = 0.0f;
    unsigned long long thr = ~0ull;
    for (int r = 0; r < per; ++r) {
      unsigned long long best = 0;
      int m = start;
      for (int it = 0; it < cnt; ++it) {
        const int i = g * gs + sub + L * m;
        const unsigned long long key = rank_key(sc[i], i);
        if (key < thr && key > best) best = key;
        if (++m == cnt) m = 0;
      }
      best = dev::seg_max_u64(best, L);
      if (active) s = add_rn(s, sc[rank_key_index(best)]);
      thr = best;
    }
    if (active && sub == 0) {
      if (pass == 0)
        gkey0 = rank_key(s, g);
      else
        gkey1 = rank_key(s, g);
    }
  }
  unsigned long long kept = 0, thr = ~0ull;
  for (int r = 0; r < Gk; ++r) {
    unsigned long long b = dev::umax(gkey0 < thr ? gkey0 : 0ull, gkey1 < thr ? gkey1 : 0ull);
    b = dev::seg_max_u64(b, 32);
    kept |= 1ull << rank_key_index(b);
    thr = b;
  }
  return kept;
}

// Largest rank key below `thr` among this thread's experts (i = tid, tid + n, ...) of kept groups.
__device__ __forceinline__ unsigned long long local_best(const float* sc, int experts, int tid, int n, bool grouped,
                                                         int gs, unsigned long long kept, unsigned long long thr) {
  unsigned long long best = 0;
  for (int i = tid; i < experts; i += n) {
    if (grouped && !((kept >> (i / gs)) & 1ull)) continue;
    const unsigned long long key = rank_key(sc[i], i);
    if (key < thr && key > best) best = key;
  }
  return best;
}

template <int DT, int TW>
__global__ void __launch_bounds__(TW == 1 ? 32 * kWarpTeamsPerBlock : 32 * TW,
                                  TW == 1 ? kWarpTeamMinBlocksPerSm : kBlockTeamMinBlocksPerSm)
    route_live_kernel(Params p, const void* __restrict__ logits, int64_t tokens, const int32_t* replay,
                      const uint8_t* __restrict__ mask, int skip_replay_rows, int vec, int32_t* out_idx,
                      float* __restrict__ out_w, uint8_t* __restrict__ out_flags,
                      unsigned long long* __restrict__ nonfinite, const unsigned long long* __restrict__ call_bad) {
  using TeamT = dev::Team<TW>;
  constexpr int N = TeamT::N;
  constexpr int kTeams = TW == 1 ? kWarpTeamsPerBlock : 1;
  __shared__ typename TeamT::Shared sh_all[kTeams];
  __shared__ unsigned long long sh_kept;
  extern __shared__ float4 dyn_smem[];

  if (call_bad && *call_bad != kNoBadRow) return;  // rejected replay: write nothing

  const int E = p.experts, k = p.k;
  const int epad = (E + 3) & ~3;
  const int team = TeamT::team(), tid = TeamT::tid(), lane = threadIdx.x & 31;
  const bool warp0 = TeamT::warp0();
  typename TeamT::Shared* sh = &sh_all[team];
  float* lg = reinterpret_cast<float*>(dyn_smem) + (size_t)team * 2 * epad;  // logits as float
  float* sc_buf = lg + epad;                                                  // routing scores
  const bool pre = p.score_fn == MOE_SCORE_SOFTMAX && p.pre_softmax;
  const bool grouped = p.grouped();
  const bool zero_nonfinite = p.nonfinite == MOE_NONFINITE_ZERO;
  const int gs = p.group_size();
  const size_t row_bytes = (size_t)E * dtype_bytes(DT);
  unsigned long long nf_rows = 0;

  for (int64_t t = (int64_t)blockIdx.x * kTeams + team; t < tokens; t += (int64_t)gridDim.x * kTeams) {
    bool is_replay = replay && (!mask || mask[t] != 0);
    // Validated rows: one starting with -1 is all -1, accepted only under LIVE or ARANGE.
    const bool arange = is_replay && replay[t * k] == -1 && p.minus_one_rows == MOE_MINUS_ONE_ARANGE;
    if (is_replay && !arange && replay[t * k] == -1) is_replay = false;  // LIVE: route it live
    if (is_replay && skip_replay_rows) continue;  // uniform over the team
    const void* row = static_cast<const char*>(logits) + (size_t)t * row_bytes;

    bool nf = dev::stage_row<DT>(row, E, vec != 0, lg, tid, N);
    nf = TeamT::any(nf);  // also orders the staging writes before the reads below
    if (TW == 1) __syncwarp();

    // Routing scores R (pre-softmax: P + b, the bias buffer holding zeros when none was given; post:
    // the logits themselves) for the group scores; the ranking key `kk` is R with a bias, else the
    // logits (lg is kept intact). Sigmoid and sqrtsoftplus compute R only where it is needed.
    const float* sc = lg;
    RowSoftmax sm{0.0f, 1.0f};
    if (pre) {
      sm = dev::team_row_softmax<TW>(lg, sc_buf, E, tid, sh);
      if (p.bias)
        for (int i = tid; i < E; i += N) sc_buf[i] = add_rn(div_rn(sc_buf[i], sm.sum), p.bias[i]);
      else
        for (int i = tid; i < E; i += N) sc_buf[i] = div_rn(sc_buf[i], sm.sum);  // == exp_det(l - max) / sum
      sc = sc_buf;
    } else if (!p.post_softmax() && (p.biased || grouped)) {
      for (int i = tid; i < E; i += N) sc_buf[i] = routing_score(p, lg[i], i, sm);
      sc = sc_buf;
    }
    const float* kk = p.rank_by_logit() ? lg : sc;
    TeamT::sync();

    // Selection: sel0 / sel1 on warp 0 lane j hold the j-th / (j+32)-th key.
    unsigned long long sel0 = 0, sel1 = 0;
    if (is_replay) {
      if (warp0) {
        if (lane < k) sel0 = rank_key(0.0f, arange ? lane : replay[t * k + lane]);
        if (lane + 32 < k) sel1 = rank_key(0.0f, arange ? lane + 32 : replay[t * k + lane + 32]);
      }
    } else {
      unsigned long long kept = ~0ull;
      if (grouped) {
        if (TW == 1) {
          kept = select_groups(p, sc, lane);
        } else {
          if (threadIdx.x < 32) {
            unsigned long long mask = select_groups(p, sc, lane);
            if (lane == 0) sh_kept = mask;
          }
          __syncthreads();
          kept = sh_kept;
        }
      }
      unsigned long long mine = local_best(kk, E, tid, N, grouped, gs, kept, ~0ull);
      for (int r = 0; r < k; ++r) {
        const unsigned long long win = TeamT::max_u64(mine, sh);
        if (lane == (r & 31)) {
          if (r < 32)
            sel0 = win;
          else
            sel1 = win;
        }
        if (mine == win) mine = local_best(kk, E, tid, N, grouped, gs, kept, win);
      }
    }

    // Weights on warp 0 (the experts' logits are in shared memory).
    if (warp0) {
      const int e0 = rank_key_index(sel0), e1 = rank_key_index(sel1);
      const bool v0 = lane < k, v1 = lane + 32 < k;
      const float l0 = v0 ? lg[e0] : 0.0f, l1 = v1 ? lg[e1] : 0.0f;
      float p0 = 0.0f, p1 = 0.0f;  // P: from R when no bias was added to it, else recomputed
      if (pre && !p.biased) {
        p0 = v0 ? sc[e0] : 0.0f;
        p1 = v1 ? sc[e1] : 0.0f;
      } else if (pre) {
        p0 = v0 ? div_rn(exp_det(sub_rn(l0, sm.max)), sm.sum) : 0.0f;
        p1 = v1 ? div_rn(exp_det(sub_rn(l1, sm.max)), sm.sum) : 0.0f;
      }
      float u0, u1, w0, w1;
      bool unused_nf = false;
      dev::seg_weights<32, false>(p, lane, l0, l1, p0, p1, u0, u1, w0, w1, unused_nf);
      const bool zero = zero_nonfinite && nf;  // ZERO: the row read a non-finite logit
      if (v0) {
        out_idx[t * k + lane] = e0;
        out_w[t * k + lane] = zero ? 0.0f : mul_rn(w0, p.scale);
      }
      if (v1) {
        out_idx[t * k + lane + 32] = e1;
        out_w[t * k + lane + 32] = zero ? 0.0f : mul_rn(w1, p.scale);
      }
      if (out_flags && lane == 0) out_flags[t] = nf ? 1 : 0;
    }
    nf_rows += nf ? 1 : 0;
    TeamT::sync();  // shared row buffers are reused by the next token
  }

  if (nonfinite) {
    // One atomic per team with a non-zero count (team leader's count is the team's).
    if (tid == 0 && nf_rows) atomicAdd(nonfinite, nf_rows);
  }
}

// ------------------------------------------------------------------ register path (E <= 256)
// One warp per token with the row in registers: lane l holds experts l + 32 m (m < C), read straight
// from global memory (each warp-wide load covers 32 consecutive elements). That layout is the
// canonical lane order of the softmax denominator (lane j adds j, j + 32, ..., then the xor
// butterfly), so the row softmax needs no shared memory. The selection (sorted per-lane keys, the
// winner pops), the move of the entries to their token's segment and the weights pass are
// moe_route_reg.cuh's, shared with route_grouped_kernel. The bias is staged once per block in shared
// memory (strided reads: no bank conflict) and the group of each slot is a lane constant. Group scores
// reuse select_groups over the routing scores R written to shared memory (grouped only; the
// configurations with 32 | group size take route_grouped_kernel instead).

constexpr int kRegBlockThreads = 128;
constexpr int kRegWarps = kRegBlockThreads / 32;
constexpr int kRegMaxExperts = 256;
// Resident blocks per SM asked of ptxas: 8 (64 registers, half the SM's warps) for C <= 4; 6 (80
// registers) for C = 8, which spills 112 bytes at 64 (the unrolled score loop keeps eight exp_det in
// flight) and took 94 unbounded (5 blocks). ptxas -v still reports 8-32 bytes of spill traffic at C = 4
// and 8 (16 even unbounded at C = 4): registers saved around the division's slow path.
template <int C>
struct RegBounds {
  static constexpr int kMinBlocks = C <= 4 ? 8 : 6;
};

// W: lanes per token in the weights phase. W = 8 (k <= 8): the warp selects 4 tokens one after the
// other, lane 8q + j keeping the j-th winner of token q, then computes the 4 tokens' weights at once
// (seg_weights over segments of 8 lanes: the exp, the division and the k-term sums run on useful lanes
// instead of a whole warp per token). W = 32: one token per pass.
template <int DT, int C, int W>
__global__ void __launch_bounds__(kRegBlockThreads, RegBounds<C>::kMinBlocks)
    route_reg_kernel(Params p, const void* __restrict__ logits, int64_t tokens, const int32_t* replay,
                     const uint8_t* __restrict__ mask, int skip_replay_rows, int32_t* out_idx,
                     float* __restrict__ out_w, uint8_t* __restrict__ out_flags,
                     unsigned long long* __restrict__ nonfinite, const unsigned long long* __restrict__ call_bad) {
  constexpr int P = 32 / W;  // tokens per pass of a warp
  extern __shared__ float4 dyn_smem[];
  if (call_bad && *call_bad != kNoBadRow) return;  // rejected replay: write nothing

  const int E = p.experts, k = p.k;
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const bool pre = p.score_fn == MOE_SCORE_SOFTMAX && p.pre_softmax;
  const bool post = p.post_softmax();
  const bool grouped = p.grouped();
  const bool by_logit = p.rank_by_logit();
  const bool need_r = !by_logit || grouped;  // R ranks (bias) or feeds the group scores
  const bool two = W == 32 && k > 32;         // uniform: some lane holds a second entry
  const bool packed = DT != MOE_DTYPE_F32 && by_logit;  // packed keys (moe_route_reg.cuh)
  // Shared memory: the bias [E] (read once per block), then per warp the R of its row [E] (grouped).
  float* sh_bias = reinterpret_cast<float*>(dyn_smem);
  float* sc = sh_bias + (size_t)(1 + warp) * E;
  const bool with_bias = p.bias != nullptr && need_r;
  dev::stage_bias(sh_bias, p.bias, E, with_bias);
  // Group of each slot, 8 bits per slot (G <= 64): one shift per slot per token instead of a division.
  unsigned long long grp = 0;
  if (grouped) {
    const int gs = p.group_size();
#pragma unroll
    for (int m = 0; m < C; ++m)
      if (lane + 32 * m < E) grp |= (unsigned long long)((lane + 32 * m) / gs) << (8 * m);
  }
  const size_t row_bytes = (size_t)E * dtype_bytes(DT);
  unsigned long long nf_rows = 0;

  const int64_t pass_stride = (int64_t)gridDim.x * kRegWarps * P;
  for (int64_t base = ((int64_t)blockIdx.x * kRegWarps + warp) * P; base < tokens; base += pass_stride) {
    dev::PassEntries pass;

    for (int q = 0; q < P; ++q) {
      const int64_t t = base + q;
      if (t >= tokens) break;  // uniform
      bool is_replay = replay && (!mask || mask[t] != 0);
      // Validated rows: one starting with -1 is all -1, accepted only under LIVE (routed live here) or
      // ARANGE (experts 0..k-1).
      const bool minus_one = is_replay && replay[t * k] == -1;
      const bool arange = minus_one && p.minus_one_rows == MOE_MINUS_ONE_ARANGE;
      if (minus_one && !arange) is_replay = false;
      if (is_replay && skip_replay_rows) continue;  // uniform over the warp
      const void* row = static_cast<const char*>(logits) + (size_t)t * row_bytes;

      float x[C];
      bool nf = false;
#pragma unroll
      for (int m = 0; m < C; ++m) {
        const int i = lane + 32 * m;
        x[m] = i < E ? dev::load_elem<DT>(row, i) : 0.0f;
        nf |= i < E && !is_finite(x[m]);
      }
      nf = __any_sync(dev::kFull, nf) != 0;

      // Softmax pre: ex = exp_det(x - max), and the canonical denominator (team_row_softmax's order).
      RowSoftmax sm{0.0f, 1.0f};
      float ex[C];
      if (pre) {
        float mx = dev::neg_inf();
#pragma unroll
        for (int m = 0; m < C; ++m)
          if (lane + 32 * m < E && x[m] > mx) mx = x[m];
        mx = dev::seg_max_f(mx, 32);
        float acc = 0.0f;
#pragma unroll
        for (int m = 0; m < C; ++m) {
          ex[m] = 0.0f;
          if (lane + 32 * m < E) {
            ex[m] = exp_det(sub_rn(x[m], mx));
            acc = add_rn(acc, ex[m]);
          }
        }
        for (int off = 16; off > 0; off >>= 1) acc = add_rn(acc, __shfl_xor_sync(dev::kFull, acc, off));
        sm.max = mx;
        sm.sum = acc;
      }

      // Keys: K is the logit without a bias, else R (routing_score's operations).
      unsigned key[C];
#pragma unroll
      for (int m = 0; m < C; ++m) {
        const int i = lane + 32 * m;
        float r = x[m];
        if (need_r && !post && i < E) {
          const float s = pre ? div_rn(ex[m], sm.sum) : score_of(p.score_fn, x[m]);
          r = with_bias ? add_rn(s, sh_bias[i]) : s;
        }
        if (grouped && i < E) sc[i] = r;
        if (packed)
          key[m] = i < E ? dev::packed_key(x[m], i) : 0u;
        else
          key[m] = i < E ? score_key(by_logit ? x[m] : r) + 1u : 0u;
        if (pre) x[m] = ex[m];  // from here x holds what the weights gather: exp for softmax pre
      }

      int w0 = 0, w1 = 0;  // lane j: the j-th and (j+32)-th expert of token q
      unsigned wk0 = 0u, wk1 = 0u;  // packed keys: lane j, the key of the j-th / (j+32)-th winner
      if (is_replay) {
        if (lane < k) w0 = arange ? lane : replay[t * k + lane];
        if (lane + 32 < k) w1 = arange ? lane + 32 : replay[t * k + lane + 32];
      } else {
        if (grouped) {
          __syncwarp();  // sc written by every lane
          const unsigned long long kept = select_groups(p, sc, lane);
#pragma unroll
          for (int m = 0; m < C; ++m)
            if (!((kept >> ((grp >> (8 * m)) & 0xffu)) & 1ull)) key[m] = 0u;
        }
        dev::select_top_k<C>(key, packed, k, lane, w0, w1, wk0, wk1);
      }
      // Packed keys ranking the logit itself (not softmax pre, whose weights need the exp) carry it.
      dev::take_entries<C, W>(pass, q, lane, two, packed && !pre && !is_replay, w0, w1, wk0, wk1, x, sm.sum, nf);
      nf_rows += nf ? 1 : 0;
      if (grouped) __syncwarp();  // sc is rewritten by the next token
    }

    // Weights of the pass's tokens.
    dev::write_pass<W>(p, pass, base, lane, pre, two, out_idx, out_w, out_flags);
  }
  if (nonfinite && lane == 0 && nf_rows) atomicAdd(nonfinite, nf_rows);  // nf is warp-uniform
}

// Blocks per SM the register kernel reaches (asked of the runtime once per instantiation, with the
// largest shared memory it uses; a smaller use only fits more): the grid is one full wave.
template <int DT, int C, int W>
int reg_blocks_per_sm() {
  static std::atomic<int> cached{0};
  const size_t smem = (size_t)(1 + kRegWarps) * 32 * C * sizeof(float);
  return blocks_per_sm_cached(cached, route_reg_kernel<DT, C, W>, kRegBlockThreads, smem);
}

template <int DT, int C, int W>
cudaError_t launch_reg_w(const Params& p, const void* logits, int64_t tokens, const int32_t* replay,
                         const uint8_t* mask, bool skip, int32_t* out_idx, float* out_w, uint8_t* out_flags,
                         unsigned long long* nf, const unsigned long long* call_bad, int sm_count,
                         cudaStream_t stream) {
  const size_t smem = (size_t)(1 + (p.grouped() ? kRegWarps : 0)) * p.experts * sizeof(float);
  const unsigned grid = grid_for(tokens, kRegWarps * (32 / W), sm_count, reg_blocks_per_sm<DT, C, W>());
  return launch_kernel(route_reg_kernel<DT, C, W>, grid, kRegBlockThreads, smem, stream, p, logits, tokens, replay,
                       mask, skip ? 1 : 0, out_idx, out_w, out_flags, nf, call_bad);
}

template <int DT, int TW>
cudaError_t launch_live_t(const Params& p, const void* logits, int64_t tokens, const int32_t* replay,
                          const uint8_t* mask, bool skip, int32_t* out_idx, float* out_w, uint8_t* out_flags,
                          unsigned long long* nf, const unsigned long long* call_bad, int sm_count,
                          cudaStream_t stream) {
  constexpr int kTeams = TW == 1 ? kWarpTeamsPerBlock : 1;
  constexpr int threads = TW == 1 ? 32 * kWarpTeamsPerBlock : 32 * TW;
  const int epad = (p.experts + 3) & ~3;
  const size_t smem = (size_t)kTeams * 2 * epad * sizeof(float);
  const size_t row_bytes = (size_t)p.experts * dtype_bytes(DT);
  const int vec = ((uintptr_t)logits % 16 == 0) && (row_bytes % 16 == 0);
  const unsigned grid = grid_for(tokens, kTeams, sm_count, TW == 1 ? 16 : 8);
  return launch_kernel(route_live_kernel<DT, TW>, grid, threads, smem, stream, p, logits, tokens, replay, mask,
                       skip ? 1 : 0, vec, out_idx, out_w, out_flags, nf, call_bad);
}

template <int DT>
cudaError_t launch_live_dt(const Params& p, const void* logits, int64_t tokens, const int32_t* replay,
                           const uint8_t* mask, bool skip, int32_t* out_idx, float* out_w, uint8_t* out_flags,
                           unsigned long long* nf, const unsigned long long* call_bad, int sm_count,
                           cudaStream_t stream) {
  if (p.experts <= kRegMaxExperts)
    return launch_reg_shape(
        p, tokens, kRegWarps, sm_count, [](auto c) { return reg_blocks_per_sm<DT, decltype(c)::value, 32>(); },
        [&](auto c, auto w) {
          return launch_reg_w<DT, decltype(c)::value, decltype(w)::value>(
              p, logits, tokens, replay, mask, skip, out_idx, out_w, out_flags, nf, call_bad, sm_count, stream);
        });
  if (p.experts <= kWarpPathMaxExperts)
    return launch_live_t<DT, 1>(p, logits, tokens, replay, mask, skip, out_idx, out_w, out_flags, nf, call_bad,
                                sm_count, stream);
  return launch_live_t<DT, kBlockTeamWarps>(p, logits, tokens, replay, mask, skip, out_idx, out_w, out_flags, nf,
                                            call_bad, sm_count, stream);
}

}  // namespace

cudaError_t launch_route_live(const Params& p, const void* logits, int dtype, int64_t tokens,
                              const int32_t* replay, const uint8_t* mask, bool skip_replay_rows, int32_t* out_idx,
                              float* out_w, uint8_t* out_flags, unsigned long long* nonfinite,
                              const unsigned long long* call_bad, int sm_count, cudaStream_t stream) {
  if (tokens <= 0) return cudaSuccess;
  if (grouped_path_accepts(p, replay, skip_replay_rows))  // groups in registers (moe_route_grouped_kernel.cu)
    return launch_route_grouped(p, logits, dtype, tokens, replay, mask, out_idx, out_w, out_flags, nonfinite,
                                call_bad, sm_count, stream);
  return with_dtype(dtype, [&](auto dt) {
    return launch_live_dt<decltype(dt)::value>(p, logits, tokens, replay, mask, skip_replay_rows, out_idx, out_w,
                                               out_flags, nonfinite, call_bad, sm_count, stream);
  });
}

}  // namespace moe
