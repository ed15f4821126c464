// SPDX-License-Identifier: Apache-2.0
// Fused live routing, group-limited, with the groups in registers (docs/cuda-design-grouped.md has the
// cost model). Taken by launch_route_live (moe_route_kernel.cu) when grouped_path_accepts(): E <= 256,
// E and the group size multiples of 32, and no softmax pre (sigmoid, sqrtsoftplus with or without a
// bias, softmax post); every other configuration keeps route_reg_kernel or the team kernels.
//
// Layout: one warp per token, lane l holds experts l + 32 m (slot m < E / 32), read straight from
// global memory, as in route_reg_kernel. With 32 | group size, group g is the slots [g s, (g + 1) s)
// (s = group size / 32) of every lane: no expert's group is ever computed, a slot's group is a
// constant of the kernel, and a group's top terms are warp reductions over one slot range.
//
// Per token: the routing scores R (score + bias) of the row as 32-bit keys (score_key + 1; the
// value is recovered from the key, exactly up to the sign of zero and NaN payloads, which change no
// sum: a sum starting at +0 is never -0, and every NaN keys as 0). Group score = the top `per`
// values of R in descending order (moe::group_score_from_sorted): each round is one REDUX max over
// the lanes' best keys of the group and a ballot counting how many lanes hold it; the value is added
// once per holder (equal keys are equal values, so which of them is taken does not change the sum),
// and each holder drops that slot; with one slot per group (E / G = 32) and at most two terms, a group
// is two REDUX and one ballot, no loop. The kept groups (top Gk by rank_key(score, g)) are decided on
// warp-uniform values: lane g ranks group g against the others (one shuffle per group) and a ballot
// gives the kept mask. Selection, gather, weights and outputs are route_reg_kernel's, from
// moe_route_reg.cuh (sorted per-lane keys, the winner pops; one REDUX per round with packed keys for
// bf16/fp16 ranked by the logit; 4 tokens per warp pass when k <= 8).
// Non-finite rows need no special case: NaN keys as 0 + 1 (below every number, above taken and
// dropped experts), exactly the CPU's order, and the row flag is the OR over the row (ZERO writes zero
// weights; ERROR rows were rejected by moe_nonfinite_kernel.cu before this kernel runs).
// Replay rows: only the live rows of a replay call come here (masked-out rows, all -1 rows under
// LIVE): launch_route_live skips the replayed ones (skip_replay_rows), which the replay kernel wrote.
#include <atomic>

#include "moe_cuda_common.cuh"
#include "moe_route_reg.cuh"

namespace moe {
namespace {

constexpr int kGrpBlockThreads = 128;
constexpr int kGrpWarps = kGrpBlockThreads / 32;
constexpr int kGrpMaxSlots = 8;  // E <= 256
static_assert(kGrpMaxSlots * 4 <= 32, "the slot -> group table packs 4 bits per slot in one u32");
static_assert(MOE_MAX_GROUPS <= 64, "kept-group masks are one u64");

// Resident blocks per SM asked of ptxas: route_reg_kernel's bounds (64 registers for C <= 4, 80 for
// C = 8); the kernel holds the logits, the R keys and the selection keys (3 C registers).
template <int C>
struct GrpBounds {
  static constexpr int kMinBlocks = C <= 4 ? 8 : 6;
};

// The value whose score_key is `key` (score_key's inverse): exact for every non-NaN value except -0,
// which comes back as +0 (score_key already maps both to one key); key 0 (NaN) gives a NaN.
__device__ __forceinline__ float key_value(unsigned key) {
  return __uint_as_float((key & 0x80000000u) ? (key & 0x7fffffffu) : ~key);
}

// Rows of a replay call that the replay kernel wrote (replayed rows, and all -1 rows under ARANGE); the
// others (masked-out rows, all -1 rows under LIVE) are routed live here.
__device__ __forceinline__ bool written_by_replay(const Params& p, const int32_t* replay, const uint8_t* mask,
                                                  int64_t t) {
  return replay && (!mask || mask[t] != 0) &&
         (replay[t * p.k] != -1 || p.minus_one_rows == MOE_MINUS_ONE_ARANGE);
}

// W: lanes per token in the weights phase (8: 4 tokens per warp pass, k <= 8; 32: one token per pass).
template <int DT, int C, int W>
__global__ void __launch_bounds__(kGrpBlockThreads, GrpBounds<C>::kMinBlocks)
    route_grouped_kernel(Params p, const void* __restrict__ logits, int64_t tokens, const int32_t* replay,
                         const uint8_t* __restrict__ mask, int32_t* out_idx, float* __restrict__ out_w,
                         uint8_t* __restrict__ out_flags, unsigned long long* __restrict__ nonfinite,
                         const unsigned long long* __restrict__ call_bad) {
  constexpr int P = 32 / W;  // tokens per pass of a warp
  extern __shared__ float4 dyn_smem[];
  if (call_bad && *call_bad != kNoBadRow) return;  // rejected replay: write nothing

  const int E = p.experts, k = p.k;
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const bool post = p.post_softmax();
  const bool by_logit = p.rank_by_logit();
  const bool two = W == 32 && k > 32;  // uniform: some lane holds a second entry
  // Packed selection keys (bf16/fp16 ranked by the logit; moe_route_reg.cuh): one REDUX per round.
  const bool packed = DT != MOE_DTYPE_F32 && by_logit;
  const int slots = E >> 5;  // E is a multiple of 32: slot m holds an expert on every lane or none
  const int G = p.groups, Gk = p.group_topk, per = p.per_group();
  const int spg = p.group_size() >> 5;  // slots per group
  unsigned slot_group = 0;              // 4 bits per slot: its group (uniform)
#pragma unroll
  for (int m = 0; m < C; ++m) slot_group |= (unsigned)(m / spg) << (4 * m);

  // The bias [E], read once per block. Softmax post has none.
  float* sh_bias = reinterpret_cast<float*>(dyn_smem);
  const bool with_bias = p.bias != nullptr && !post;
  dev::stage_bias(sh_bias, p.bias, E, with_bias);
  const size_t row_bytes = (size_t)E * dtype_bytes(DT);
  unsigned long long nf_rows = 0;

  const int64_t pass_stride = (int64_t)gridDim.x * kGrpWarps * P;
  for (int64_t base = ((int64_t)blockIdx.x * kGrpWarps + warp) * P; base < tokens; base += pass_stride) {
    dev::PassEntries pass;

    for (int q = 0; q < P; ++q) {
      const int64_t t = base + q;
      if (t >= tokens) break;  // uniform
      // Replayed rows were written by the replay kernel; masked-out rows and all -1 rows under LIVE are
      // routed live here (launch_route_live sends only skip_replay_rows calls to this kernel).
      if (written_by_replay(p, replay, mask, t)) continue;
      const void* row = static_cast<const char*>(logits) + (size_t)t * row_bytes;

      float x[C];
      bool nf = false;
#pragma unroll
      for (int m = 0; m < C; ++m) {
        x[m] = m < slots ? dev::load_elem<DT>(row, lane + 32 * m) : 0.0f;
        nf |= m < slots && !is_finite(x[m]);
      }
      nf = __any_sync(dev::kFull, nf) != 0;

      // kr: key of R (score_key + 1; 0 = no expert); key: the selection key (K = R with a bias, else the
      // logit), 0 once taken or dropped.
      unsigned kr[C], key[C];
#pragma unroll
      for (int m = 0; m < C; ++m) {
        const int i = lane + 32 * m;
        float r = x[m];
        if (!post && m < slots) {
          const float s = score_of(p.score_fn, x[m]);
          r = with_bias ? add_rn(s, sh_bias[i]) : s;
        }
        kr[m] = m < slots ? score_key(r) + 1u : 0u;
        if (packed)
          key[m] = m < slots ? dev::packed_key(x[m], i) : 0u;
        else
          key[m] = by_logit ? (m < slots ? score_key(x[m]) + 1u : 0u) : kr[m];
      }

      // Group scores: `per` terms per group, a REDUX per distinct value (a ballot counts its holders).
      // Unrolled over g (G <= C): kr stays in registers, every index is a constant. One slot per group
      // (32 experts, DeepSeek-V3's 256 / 8): the group's keys are kr[g], and a holder has nothing left.
      const bool one_slot = spg == 1;
      float gsum = 0.0f;  // lane g < G: group g's score
#pragma unroll
      for (int g = 0; g < C; ++g) {
        if (g >= G) break;  // uniform
        if (one_slot && per <= 2) {  // MAX, TOP2_SUM, TOPK_SUM with k / Gk <= 2: two REDUX, no loop
          const unsigned k1 = kr[g];
          const unsigned m1 = __reduce_max_sync(dev::kFull, k1);
          float sum = add_rn(0.0f, key_value(m1 - 1u));
          if (per == 2) {  // the second term: m1 again when two lanes hold it, else the next key
            const unsigned holders = __ballot_sync(dev::kFull, k1 == m1);
            const unsigned next = __reduce_max_sync(dev::kFull, k1 == m1 ? 0u : k1);
            sum = add_rn(sum, key_value((holders & (holders - 1u)) ? m1 - 1u : next - 1u));
          }
          if (lane == g) gsum = sum;
          continue;
        }
        unsigned c[C] = {};  // the group's keys (several slots per group)
        unsigned best = 0u;
        if (one_slot) {
          best = kr[g];
        } else {
#pragma unroll
          for (int m = 0; m < C; ++m) {
            c[m] = ((slot_group >> (4 * m)) & 15u) == (unsigned)g ? kr[m] : 0u;
            best = dev::umax(best, c[m]);
          }
        }
        float sum = 0.0f;
        for (int left = per; left > 0;) {  // uniform
          const unsigned win = __reduce_max_sync(dev::kFull, best);
          const unsigned holders = __ballot_sync(dev::kFull, best == win);
          const float v = key_value(win - 1u);
          const int n = __popc(holders) < left ? __popc(holders) : left;
          sum = add_rn(sum, v);  // n >= 1: the maximum's own lane
          for (int j = 1; j < n; ++j) sum = add_rn(sum, v);
          left -= n;
          if (left > 0 && best == win && one_slot) {
            best = 0u;
          } else if (left > 0 && best == win) {  // drop one slot holding it, then this lane's next best
            bool dropped = false;
            best = 0u;
#pragma unroll
            for (int m = 0; m < C; ++m) {
              if (!dropped && c[m] == win) {
                c[m] = 0u;
                dropped = true;
              }
              best = dev::umax(best, c[m]);
            }
          }
        }
        if (lane == g) gsum = sum;
      }
      const unsigned gkey = score_key(gsum);  // lane g < G: the key of group g's score
      // Kept groups: lane g counts the groups ranked before g (larger score key, or equal and lower index).
      int before = 0;
#pragma unroll
      for (int h = 0; h < C; ++h) {
        if (h >= G) break;  // uniform
        const unsigned o = __shfl_sync(dev::kFull, gkey, h);
        before += (o > gkey || (o == gkey && h < lane)) ? 1 : 0;
      }
      const unsigned kept = __ballot_sync(dev::kFull, lane < G && before < Gk);
#pragma unroll
      for (int m = 0; m < C; ++m)
        if (!((kept >> ((slot_group >> (4 * m)) & 15u)) & 1u)) key[m] = 0u;

      // Top k among the kept experts, the move to the token's segment and the gather: route_reg_kernel's
      // (a packed key carries its logit).
      int w0 = 0, w1 = 0;
      unsigned wk0 = 0u, wk1 = 0u;
      dev::select_top_k<C>(key, packed, k, lane, w0, w1, wk0, wk1);
      dev::take_entries<C, W>(pass, q, lane, two, packed, w0, w1, wk0, wk1, x, 1.0f, nf);
      nf_rows += nf ? 1 : 0;
    }

    // Weights of the pass's tokens.
    dev::write_pass<W>(p, pass, base, lane, false, two, out_idx, out_w, out_flags);
  }
  if (nonfinite && lane == 0 && nf_rows) atomicAdd(nonfinite, nf_rows);  // nf is warp-uniform
}

// Decode sizes (docs/cuda-design.md, step 11): a block per token, warp g holding group g (group size 32,
// one expert per lane, E / 32 warps), so a token's dependency chain holds one expert's score instead of
// eight. Each warp sums its group's top `per` values of R (a REDUX and a ballot per distinct value, as
// above); warp 0 ranks the group scores from shared memory, takes the kept groups' keys and logits into
// its C slots in ascending group order (slot m: the m-th kept group; so among equal keys the lower slot
// order is the lower expert index, which select_top_k's tie rule needs), and runs the selection, the
// gather and the weights of the register kernels (moe_route_reg.cuh).
constexpr int kDecMaxWarps = kGrpMaxSlots;  // E <= 256

template <int DT, int C>  // C: warp 0's slots for the kept groups (Gk <= C)
__global__ void __launch_bounds__(32 * kDecMaxWarps)
    route_grouped_decode_kernel(Params p, const void* __restrict__ logits, const int32_t* replay,
                                const uint8_t* __restrict__ mask, int32_t* out_idx, float* __restrict__ out_w,
                                uint8_t* __restrict__ out_flags, unsigned long long* __restrict__ nonfinite,
                                const unsigned long long* __restrict__ call_bad) {
  __shared__ unsigned sh_key[32 * kDecMaxWarps];  // selection keys, by expert
  __shared__ float sh_x[32 * kDecMaxWarps];       // logits, by expert
  __shared__ unsigned sh_gkey[kDecMaxWarps];      // score_key of each group's score
  if (call_bad && *call_bad != kNoBadRow) return;  // rejected replay: write nothing

  const int k = p.k, G = p.groups, Gk = p.group_topk, per = p.per_group();
  const int i = threadIdx.x;  // this thread's expert; its group is its warp
  const int lane = i & 31, g = i >> 5;
  const bool post = p.post_softmax();
  const bool by_logit = p.rank_by_logit();
  const bool packed = DT != MOE_DTYPE_F32 && by_logit;
  const bool two = k > 32;
  const float bias = p.bias != nullptr && !post ? __ldg(p.bias + i) : 0.0f;
  const size_t row_bytes = (size_t)p.experts * dtype_bytes(DT);
  const int64_t t = blockIdx.x;  // the launcher's grid is one block per token
  if (written_by_replay(p, replay, mask, t)) return;  // uniform over the block
  const float x = dev::load_elem<DT>(static_cast<const char*>(logits) + (size_t)t * row_bytes, i);
  float r = x;
  if (!post) {
    const float s = score_of(p.score_fn, x);
    r = p.bias != nullptr ? add_rn(s, bias) : s;
  }
  const unsigned kr = score_key(r) + 1u;
  sh_key[i] = packed ? dev::packed_key(x, i) : by_logit ? score_key(x) + 1u : kr;
  sh_x[i] = x;

  // Group g's score: its top `per` values of R in descending order; all holders of a value drop it.
  float sum = 0.0f;
  unsigned best = kr;
  for (int left = per; left > 0;) {  // uniform over the warp
    const unsigned win = __reduce_max_sync(dev::kFull, best);
    const unsigned holders = __ballot_sync(dev::kFull, best == win);
    const float v = key_value(win - 1u);
    const int n = __popc(holders) < left ? __popc(holders) : left;
    for (int j = 0; j < n; ++j) sum = add_rn(sum, v);
    left -= n;
    if (best == win) best = 0u;
  }
  if (lane == 0) sh_gkey[g] = score_key(sum);
  // The row flag is the OR over the row; the barrier also publishes the shared writes to warp 0.
  const bool nf = __syncthreads_or(!is_finite(x)) != 0;

  if (g == 0) {
    // Kept groups: lane h < G counts the groups ranked before h (larger key, or equal and lower index).
    const unsigned gkey = lane < G ? sh_gkey[lane] : 0u;
    int before = 0;
#pragma unroll
    for (int h = 0; h < kDecMaxWarps; ++h) {
      if (h >= G) break;  // uniform
      const unsigned o = sh_gkey[h];
      before += (o > gkey || (o == gkey && h < lane)) ? 1 : 0;
    }
    unsigned kept = __ballot_sync(dev::kFull, lane < G && before < Gk);
    unsigned key[C], grp = 0;  // grp: 4 bits per slot, its group
    float xs[C];
#pragma unroll
    for (int m = 0; m < C; ++m) {
      const int gm = kept ? __ffs(kept) - 1 : 0;
      key[m] = kept ? sh_key[32 * gm + lane] : 0u;
      xs[m] = kept ? sh_x[32 * gm + lane] : 0.0f;
      grp |= (unsigned)gm << (4 * m);
      kept &= kept - 1u;
    }
    int w0 = 0, w1 = 0;
    unsigned wk0 = 0u, wk1 = 0u;
    dev::select_top_k<C>(key, packed, k, lane, w0, w1, wk0, wk1);
    dev::PassEntries pass;
    dev::take_entries<C, 32>(pass, 0, lane, two, packed, w0, w1, wk0, wk1, xs, 1.0f, nf);
    if (!packed) {  // slot m, lane l -> expert 32 x (group of slot m) + l (a packed key names its expert)
      pass.e0 = 32 * (int)((grp >> (4 * (w0 >> 5))) & 15u) + (w0 & 31);
      pass.e1 = 32 * (int)((grp >> (4 * (w1 >> 5))) & 15u) + (w1 & 31);
    }
    dev::write_pass<32>(p, pass, t, lane, false, two, out_idx, out_w, out_flags);
    if (nonfinite && lane == 0 && nf) atomicAdd(nonfinite, 1ull);
  }
}

template <int DT, int C>
int decode_blocks_per_sm() {
  static std::atomic<int> cached{0};
  return blocks_per_sm_cached(cached, route_grouped_decode_kernel<DT, C>, 32 * kDecMaxWarps, 0);
}

// The decode kernel's C (the kept groups' slots, Gk <= 8): f(std::integral_constant<int, C>).
template <typename F>
auto with_decode_slots(const Params& p, F&& f) {
  if (p.group_topk <= 2) return f(std::integral_constant<int, 2>{});
  if (p.group_topk <= 4) return f(std::integral_constant<int, 4>{});
  return f(std::integral_constant<int, 8>{});
}

// Blocks per SM the kernel reaches (asked of the runtime once per instantiation, with the largest
// shared memory it uses): the grid is one full wave.
template <int DT, int C, int W>
int grouped_blocks_per_sm() {
  static std::atomic<int> cached{0};
  const size_t smem = (size_t)32 * C * sizeof(float);
  return blocks_per_sm_cached(cached, route_grouped_kernel<DT, C, W>, kGrpBlockThreads, smem);
}

template <int DT, int C, int W>
cudaError_t launch_grouped_w(const Params& p, const void* logits, int64_t tokens, const int32_t* replay,
                             const uint8_t* mask, int32_t* out_idx, float* out_w, uint8_t* out_flags,
                             unsigned long long* nf, const unsigned long long* call_bad, int sm_count,
                             cudaStream_t stream) {
  const size_t smem = (size_t)p.experts * sizeof(float);
  const unsigned grid = grid_for(tokens, kGrpWarps * (32 / W), sm_count, grouped_blocks_per_sm<DT, C, W>());
  return launch_kernel(route_grouped_kernel<DT, C, W>, grid, kGrpBlockThreads, smem, stream, p, logits, tokens,
                       replay, mask, out_idx, out_w, out_flags, nf, call_bad);
}

template <int DT>
cudaError_t launch_grouped_dt(const Params& p, const void* logits, int64_t tokens, const int32_t* replay,
                              const uint8_t* mask, int32_t* out_idx, float* out_w, uint8_t* out_flags,
                              unsigned long long* nf, const unsigned long long* call_bad, int sm_count,
                              cudaStream_t stream) {
  // Decode sizes: a block per token (one group per warp: group size 32) while the whole grid is resident at
  // once (blocks per SM asked for 256 threads, the most it launches); above that a warp per token routes
  // them at a similar cost per token, with no token waiting for a second wave.
  if (p.group_size() == 32) {
    const int64_t wave = with_decode_slots(p, [&](auto c) {
      return (int64_t)sm_count * decode_blocks_per_sm<DT, decltype(c)::value>();
    });
    if (tokens <= wave)
      return with_decode_slots(p, [&](auto c) {
        return launch_kernel(route_grouped_decode_kernel<DT, decltype(c)::value>, (unsigned)tokens, p.experts, 0,
                             stream, p, logits, replay, mask, out_idx, out_w, out_flags, nf, call_bad);
      });
  }
  return launch_reg_shape(
      p, tokens, kGrpWarps, sm_count, [](auto c) { return grouped_blocks_per_sm<DT, decltype(c)::value, 32>(); },
      [&](auto c, auto w) {
        return launch_grouped_w<DT, decltype(c)::value, decltype(w)::value>(
            p, logits, tokens, replay, mask, out_idx, out_w, out_flags, nf, call_bad, sm_count, stream);
      });
}

}  // namespace

bool grouped_path_accepts(const Params& p, const int32_t* replay, bool skip_replay_rows) {
  return p.grouped() && !p.pre_softmax && p.experts <= 32 * kGrpMaxSlots && p.experts % 32 == 0 &&
         p.group_size() % 32 == 0 && (!replay || skip_replay_rows);
}

cudaError_t launch_route_grouped(const Params& p, const void* logits, int dtype, int64_t tokens,
                                 const int32_t* replay, const uint8_t* mask, int32_t* out_idx, float* out_w,
                                 uint8_t* out_flags, unsigned long long* nonfinite,
                                 const unsigned long long* call_bad, int sm_count, cudaStream_t stream) {
  if (tokens <= 0) return cudaSuccess;
  return with_dtype(dtype, [&](auto dt) {
    return launch_grouped_dt<decltype(dt)::value>(p, logits, tokens, replay, mask, out_idx, out_w, out_flags,
                                                  nonfinite, call_bad, sm_count, stream);
  });
}

}  // namespace moe
