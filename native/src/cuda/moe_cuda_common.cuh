// SPDX-License-Identifier: Apache-2.0
// Shared pieces of the CUDA backend: router state, launch declarations (the "ops" of each .cu file)
// and the device helpers every kernel uses.
//
// Bit-identity with the CPU backend: every per-expert value (score, exp, sigmoid, sqrtsoftplus,
// weight) comes from the same moe_routing_math.h functions, and every float operation goes through
// its explicitly rounded add_rn / sub_rn / mul_rn / div_rn, so no build flag contracts or
// approximates it (scripts/check-ptx.sh); every order-dependent reduction (softmax denominator, k-term
// sums of the weights, group scores) is evaluated in exactly the order the header uses (canonical
// 32-lane sum; sequential j = 0..k-1 sums broadcast by shuffles), and the order-free ones (max,
// top-k over distinct u64 rank keys) may be evaluated in any order.
//
// Per-call verdicts (one u64 per call in flight, see moe_cuda_router.cu): kNoBadRow, or a rejected
// replay row (row << 2 | MOE_REPLAY_*), or under non-finite policy ERROR the first row reading a NaN or
// +-inf (kNonfiniteTag | row << 16 | expert << 2 | value kind). A smaller verdict wins (atomicMin), so
// an invalid replay row is reported before any non-finite row, as the CPU backend validates first.
#ifndef MOE_CUDA_COMMON_CUH_
#define MOE_CUDA_COMMON_CUH_

#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

#include <atomic>
#include <mutex>
#include <type_traits>
#include <utility>
#include <vector>

#include "../moe_internal.h"

namespace moe {

// "No bad row" value of the verdict and error slots.
constexpr unsigned long long kNoBadRow = ~0ull;
// Verdicts at or above this are non-finite rows (policy ERROR); below, rejected replay rows.
constexpr unsigned long long kNonfiniteTag = 1ull << 62;
// Value kinds of a non-finite verdict (the message says which, after the logits may be gone).
constexpr unsigned kValueNaN = 0, kValuePosInf = 1, kValueNegInf = 2;

#if defined(__CUDACC__)
__host__ __device__
#endif
inline unsigned long long pack_nonfinite(int64_t row, int expert, unsigned kind) {
  static_assert(MOE_MAX_EXPERTS <= (1 << 14), "the expert field of a non-finite verdict has 14 bits");
  return kNonfiniteTag | ((unsigned long long)row << 16) | ((unsigned long long)expert << 2) | kind;
}

// Per-call verdict slots of direct (uncaptured) device-pointer calls. Slot i is reused by call
// i + kCallSlots, which first waits (on the device) for slot_done[i], recorded after the call that
// used it last: the slot is never shared by two calls in flight, and the host never blocks.
constexpr int kCallSlots = 32;
// Verdict slots for calls captured into CUDA graphs: each captured validated call owns one for the
// lifetime of its graph (a launch of a graph reuses it, and CUDA serialises launches of one
// executable graph); it returns to the pool when the graph and its executables are destroyed.
constexpr int kGraphSlots = 1024;

// Free graph slots. Shared by the router and by the user objects its captures attach to graphs,
// which may outlive it: the last owner frees it.
struct GraphSlotPool {
  std::mutex mu;
  std::vector<int> free;
  std::atomic<int> owners{1};
  void release() {
    if (--owners == 0) delete this;
  }
};

// Per-router device state. Everything a device-pointer call needs is allocated at creation, so that
// moe_route / moe_route_backward only enqueue memsets, kernels and event operations (CUDA-graph
// capturable). The router never keeps a caller's stream: it waits for its own calls through the
// slot events, so a stream destroyed by the caller is never touched again.
struct CudaState {
  int device = 0;
  int sm_count = 1;
  Params dparams{};  // Params with bias -> d_bias (device); every router that accepts a bias (sigmoid,
                     // sqrtsoftplus, softmax pre) has d_bias (zeros when no bias was given), so that
                     // graphs read the bias current at their launch.
  float* d_bias = nullptr;
  // d_words[kErrorWord]: router error slot, atomicMin over rejected calls, atomically taken by
  // check_replay; d_words[kTakenWord]: where check_replay's exchange lands; d_words[kHostWord]: the
  // verdict of the host variants' non-finite scan (under staging_mu; reported synchronously, never
  // through the error slot); then the kCallSlots direct-call slots and the kGraphSlots graph slots.
  // After the kWords words: per word, the multi-block validation's accumulator (kWords more, kNoBadRow
  // between calls) and finished-block count (kWords more, 0 between calls) of the verdict slot at the same
  // index; the validation's last block restores both (launch_validate_rows).
  unsigned long long* d_words = nullptr;
  static constexpr int kErrorWord = 0, kTakenWord = 1, kHostWord = 2, kFirstCallSlot = 3,
                       kFirstGraphSlot = kFirstCallSlot + kCallSlots, kWords = kFirstGraphSlot + kGraphSlots;
  unsigned long long* validation_acc(const unsigned long long* verdict) {
    return d_words + kWords + (verdict - d_words);
  }
  unsigned long long* validation_done(const unsigned long long* verdict) {
    return d_words + 2 * kWords + (verdict - d_words);
  }
  cudaEvent_t slot_done[kCallSlots] = {};
  unsigned next_slot = 0;
  GraphSlotPool* graph_slots = nullptr;
  std::mutex enqueue_mu;  // direct device-pointer calls: slot choice + enqueue, as one step
  std::mutex staging_mu;  // host variants: staging buffers and host_stream
  cudaStream_t host_stream = nullptr;  // router-owned: *_host variants, set_bias, check_replay

  struct Buf {
    void* p = nullptr;
    size_t cap = 0;
  };
  Buf st_logits, st_idx_in, st_mask, st_idx_out, st_w, st_grad, st_nf, st_flags;
};

// Kernel launch that returns its own error. `kernel<<<>>>` reports only through cudaGetLastError,
// which also returns (and clears) an error the application left pending: never use it here.
template <typename... P, typename... A>
cudaError_t launch_kernel(void (*kernel)(P...), unsigned grid, unsigned block, size_t smem, cudaStream_t stream,
                          A&&... args) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(grid);
  cfg.blockDim = dim3(block);
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  return cudaLaunchKernelEx(&cfg, kernel, std::forward<A>(args)...);
}

// ---------------------------------------------------------------------------------- launches
// Each returns cudaSuccess or the launch error. `call_bad` (nullable): device per-call slot; when it
// holds a row the kernels return without writing anything.

// Replay validation (moe_replay_kernel.cu): call_bad = the first bad row (mask 0 rows skipped, all -1
// rows too when minus_one_ok), packed row << 2 | reason, or kNoBadRow; a bad row also goes to err_slot
// (atomicMin). counter (nullable): zeroed if no row was bad (the call's non-finite count; only when
// nothing after the validation can still reject the call). One launch at any size: above 256 rows the
// blocks meet in acc (kNoBadRow before and after) and count themselves in done (0 before and after;
// CudaState::validation_acc / validation_done of call_bad), and the last one decides.
cudaError_t launch_validate_rows(const int32_t* idx, const uint8_t* mask, int64_t tokens, int k, int experts,
                                 bool minus_one_ok, unsigned long long* call_bad, unsigned long long* err_slot,
                                 unsigned long long* counter, unsigned long long* acc, unsigned long long* done,
                                 int sm_count, cudaStream_t stream);
// Non-finite policy ERROR (moe_nonfinite_kernel.cu), after the validation of the same call: the first
// row whose read set holds a NaN or +-inf, and its first such logit, -> atomicMin into verdict and
// err_slot (nullable). Routing (`backward` false) reads what moe_route reads (idx: replay indices or
// null, mask nullable); backward reads idx's k logits (softmax pre: the whole row). Does nothing when
// the verdict already holds a rejected replay row.
cudaError_t launch_nonfinite_scan(const Params& p, const void* logits, int dtype, int64_t tokens, const int32_t* idx,
                                  const uint8_t* mask, bool backward, unsigned long long* verdict,
                                  unsigned long long* err_slot, int sm_count, cudaStream_t stream);
// *taken = the error slot's value, and the slot reset, in one atomic exchange (check_replay).
cudaError_t launch_take_error(unsigned long long* err_slot, unsigned long long* taken, cudaStream_t stream);
// Zeroes *nonfinite unless the call was rejected (keeps "a rejected call writes no output").
cudaError_t launch_zero_if_valid(unsigned long long* nonfinite, const unsigned long long* call_bad,
                                 cudaStream_t stream);
// Replay rows of post-softmax / sigmoid / sqrtsoftplus routers: weights from the k replayed logits
// only. Rows with mask 0, and all -1 rows under minus_one_rows LIVE, are skipped (the live kernel
// routes them); all -1 rows under ARANGE replay experts 0..k-1. out_flags [T] (nullable): 1 where a
// read logit is non-finite.
cudaError_t launch_route_replay(const Params& p, const void* logits, int dtype, int64_t tokens,
                                const int32_t* replay, const uint8_t* mask, int32_t* out_idx, float* out_w,
                                uint8_t* out_flags, unsigned long long* nonfinite, const unsigned long long* call_bad,
                                int sm_count, cudaStream_t stream);

// Live routing (moe_route_kernel.cu). Replay rows (replay && mask != 0, all -1 rows excepted under
// LIVE) are skipped when skip_replay_rows, else routed with the replayed experts (pre-softmax: full
// row needed; all -1 rows under ARANGE: experts 0..k-1).
cudaError_t launch_route_live(const Params& p, const void* logits, int dtype, int64_t tokens,
                              const int32_t* replay, const uint8_t* mask, bool skip_replay_rows, int32_t* out_idx,
                              float* out_w, uint8_t* out_flags, unsigned long long* nonfinite,
                              const unsigned long long* call_bad, int sm_count, cudaStream_t stream);

// Group-limited live routing with the groups in registers (moe_route_grouped_kernel.cu), for the
// configurations grouped_path_accepts (E <= 256, 32 | E / G, no softmax pre, replay rows skipped);
// launch_route_live dispatches to it. Same contract as launch_route_live with skip_replay_rows.
bool grouped_path_accepts(const Params& p, const int32_t* replay, bool skip_replay_rows);
cudaError_t launch_route_grouped(const Params& p, const void* logits, int dtype, int64_t tokens,
                                 const int32_t* replay, const uint8_t* mask, int32_t* out_idx, float* out_w,
                                 uint8_t* out_flags, unsigned long long* nonfinite,
                                 const unsigned long long* call_bad, int sm_count, cudaStream_t stream);

// Backward (moe_backward_kernel.cu): grad_logits [T, E], every element written. flags [T] (the
// forward's non-finite row flags) are read under non-finite policy ZERO only (then required).
cudaError_t launch_backward(const Params& p, const void* logits, int dtype, int64_t tokens, const int32_t* idx,
                            const float* grad_w, const uint8_t* flags, float* grad_logits,
                            const unsigned long long* call_bad, int sm_count, cudaStream_t stream);

// Routing agreement (moe_agreement_kernel.cu): out2 = {rows_differ, overlap_total}, zeroed here.
cudaError_t launch_agreement(const int32_t* a, const int32_t* b, int64_t rows, int k, int64_t row_stride,
                             unsigned long long* out2, uint8_t* row_differs, cudaStream_t stream);

// Grid size for grid-stride kernels: enough blocks to fill the device, never more than needed.
inline unsigned grid_for(int64_t work_items, int items_per_block, int sm_count, int blocks_per_sm = 16) {
  int64_t need = (work_items + items_per_block - 1) / items_per_block;
  int64_t cap = (int64_t)sm_count * blocks_per_sm;
  if (need > cap) need = cap;
  if (need < 1) need = 1;
  return (unsigned)need;
}

// Blocks per SM that `kernel` reaches with `threads` and `smem` bytes, asked of the runtime once and kept in
// `cached` (one per kernel instantiation; at least 1): the launchers size their grids to one full wave.
template <class Kernel>
int blocks_per_sm_cached(std::atomic<int>& cached, Kernel kernel, int threads, size_t smem) {
  int b = cached.load(std::memory_order_relaxed);
  if (b > 0) return b;
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&b, kernel, threads, smem) != cudaSuccess || b < 1) b = 1;
  cached.store(b, std::memory_order_relaxed);
  return b;
}

// The launchers' one switch from a logits dtype code to the kernels' DT template argument: calls
// launch(std::integral_constant<int, DT>{}) (the caller takes decltype(dt)::value), fp16 for every code
// that is not fp32 or bf16 (the API validated it before).
template <typename F>
cudaError_t with_dtype(int dtype, F&& launch) {
  switch (dtype) {
    case MOE_DTYPE_F32:
      return launch(std::integral_constant<int, MOE_DTYPE_F32>{});
    case MOE_DTYPE_BF16:
      return launch(std::integral_constant<int, MOE_DTYPE_BF16>{});
    default:
      return launch(std::integral_constant<int, MOE_DTYPE_F16>{});
  }
}

#if defined(__CUDACC__)
__host__ __device__
#endif
inline size_t dtype_bytes(int dtype) { return dtype == MOE_DTYPE_F32 ? 4 : 2; }

#if defined(__CUDACC__)
namespace dev {

constexpr unsigned kFull = 0xffffffffu;

__device__ __forceinline__ float neg_inf() { return __uint_as_float(0xff800000u); }

template <typename T>
__device__ __forceinline__ T umax(T a, T b) {
  return a > b ? a : b;
}

// Max of u64 keys over aligned segments of `width` lanes (width a power of two <= 32).
__device__ __forceinline__ unsigned long long seg_max_u64(unsigned long long v, int width) {
  for (int off = width >> 1; off > 0; off >>= 1) v = umax(v, __shfl_xor_sync(kFull, v, off));
  return v;
}

// Max of floats with the header's `v > m` rule (NaN never wins); inputs are never NaN here.
__device__ __forceinline__ float seg_max_f(float v, int width) {
  for (int off = width >> 1; off > 0; off >>= 1) {
    float o = __shfl_xor_sync(kFull, v, off);
    v = o > v ? o : v;
  }
  return v;
}

__device__ __forceinline__ int seg_or(int v, int width) {
  for (int off = width >> 1; off > 0; off >>= 1) v |= __shfl_xor_sync(kFull, v, off);
  return v;
}

// Element loader of one dtype (the same conversions as moe_routing_math.h load_logit).
template <int DT>
__device__ __forceinline__ float load_elem(const void* base, int64_t i) {
  if (DT == MOE_DTYPE_F32) return __ldg(static_cast<const float*>(base) + i);
  uint16_t h = __ldg(static_cast<const unsigned short*>(base) + i);
  return DT == MOE_DTYPE_BF16 ? bf16_to_float(h) : f16_to_float(h);
}

// Elements per 16-byte vector.
template <int DT>
struct Vec {
  static constexpr int N = DT == MOE_DTYPE_F32 ? 4 : 8;
};

// Converts one 16-byte vector to floats.
template <int DT>
__device__ __forceinline__ void convert16(const uint4& u, float* out) {
  if (DT == MOE_DTYPE_F32) {
    out[0] = __uint_as_float(u.x);
    out[1] = __uint_as_float(u.y);
    out[2] = __uint_as_float(u.z);
    out[3] = __uint_as_float(u.w);
  } else {
    const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      uint16_t lo = (uint16_t)(w[q] & 0xffffu), hi = (uint16_t)(w[q] >> 16);
      out[2 * q] = DT == MOE_DTYPE_BF16 ? bf16_to_float(lo) : f16_to_float(lo);
      out[2 * q + 1] = DT == MOE_DTYPE_BF16 ? bf16_to_float(hi) : f16_to_float(hi);
    }
  }
}

// Copies one row of logits (converted to float) into shared memory `dst` by `n` cooperating threads
// (thread `tid`); 16-byte loads when `vec` (row start 16-byte aligned, E a multiple of the vector).
// Returns whether this thread saw a non-finite logit.
template <int DT>
__device__ __forceinline__ bool stage_row(const void* row, int experts, bool vec, float* dst, int tid, int n) {
  bool nonfinite = false;
  if (vec) {
    constexpr int V = Vec<DT>::N;
    const uint4* src = static_cast<const uint4*>(row);
    const int chunks = experts / V;
    for (int c = tid; c < chunks; c += n) {
      uint4 u = __ldg(src + c);
      float f[V];
      convert16<DT>(u, f);
#pragma unroll
      for (int q = 0; q < V; ++q) nonfinite |= !is_finite(f[q]);
      float4* d = reinterpret_cast<float4*>(dst + c * V);
#pragma unroll
      for (int q = 0; q < V / 4; ++q) d[q] = make_float4(f[4 * q], f[4 * q + 1], f[4 * q + 2], f[4 * q + 3]);
    }
  } else {
    for (int i = tid; i < experts; i += n) {
      float v = load_elem<DT>(row, i);
      nonfinite |= !is_finite(v);
      dst[i] = v;
    }
  }
  return nonfinite;
}

// Sequential sum over j = 0..k-1 of v[j] (entries held like seg_weights'): the k-term sums of
// moe_routing_math.h in their order, every lane getting the same value.
template <int W>
__device__ __forceinline__ float seg_seq_sum(int k, float v0, float v1) {
  const int base = (threadIdx.x & 31) & ~(W - 1);
  float s = 0.0f;
  for (int j = 0; j < k; ++j) {
    float t = j < 32 ? __shfl_sync(kFull, v0, base + j) : __shfl_sync(kFull, v1, base + j - 32);
    s = add_rn(s, t);
  }
  return s;
}

// Weights of k experts held by a segment of W lanes (lane `sub` holds entries j = sub and, when
// W == 32 and k > 32, j = sub + 32), exactly as moe::unscaled_weights computes them: per-entry
// values are elementwise; the k-term sums run j = 0, 1, ..., k-1 in order on every lane (the terms
// are broadcast by shuffles). u0/u1 get the values before normalisation (P, or the score S; the
// weights themselves for softmax post), w0/w1 the unscaled weights. For softmax pre, p0/p1 are
// the probabilities P[idx] (exp_det(l - max) / sum). kReadNf: `nonfinite` |= a read logit is
// non-finite (softmax post, sigmoid and sqrtsoftplus read only these k logits; softmax pre's caller
// checks the whole row).
template <int W, bool kReadNf>
__device__ __forceinline__ void seg_weights(const Params& p, int sub, float l0, float l1, float p0, float p1,
                                            float& u0, float& u1, float& w0, float& w1, bool& nonfinite) {
  const int k = p.k;
  const bool two = W == 32 && k > 32;  // uniform: the second entry exists on some lane
  const bool v0 = sub < k;
  const bool v1 = two && sub + 32 < k;
  if (kReadNf && !p.pre_softmax) {
    const int nf = (v0 && !is_finite(l0)) || (v1 && !is_finite(l1));
    nonfinite |= seg_or(nf, W) != 0;
  }
  if (p.post_softmax()) {  // softmax over the k selected logits
    float m = neg_inf();
    if (v0 && l0 > m) m = l0;
    if (v1 && l1 > m) m = l1;
    m = seg_max_f(m, W);
    const float e0 = exp_det(sub_rn(l0, m)), e1 = two ? exp_det(sub_rn(l1, m)) : 0.0f;
    const float sum = seg_seq_sum<W>(k, e0, e1);
    w0 = u0 = div_rn(e0, sum);
    w1 = u1 = div_rn(e1, sum);
    return;
  }
  if (p.pre_softmax) {
    u0 = p0;
    u1 = p1;
  } else if (p.score_fn == MOE_SCORE_SIGMOID) {
    u0 = sigmoid_det(l0);
    u1 = two ? sigmoid_det(l1) : 0.0f;
  } else {
    u0 = sqrtsoftplus_det(l0);
    u1 = two ? sqrtsoftplus_det(l1) : 0.0f;
  }
  w0 = u0;
  w1 = u1;
  if (p.normalize) {
    const float denom = add_rn(seg_seq_sum<W>(k, u0, u1), kSigmoidNormEps);
    w0 = div_rn(u0, denom);
    w1 = div_rn(u1, denom);
  }
}

// Sum over j = 0..k-1 of a[j] * b[j] in order (a, b held like seg_weights' entries): the "dot" of
// moe::backward_row.
template <int W>
__device__ __forceinline__ float seg_dot(int k, float a0, float b0, float a1, float b1) {
  const int base = (threadIdx.x & 31) & ~(W - 1);
  float prod0 = mul_rn(a0, b0), prod1 = mul_rn(a1, b1);
  float dot = 0.0f;
  for (int j = 0; j < k; ++j) {
    float t = j < 32 ? __shfl_sync(kFull, prod0, base + j) : __shfl_sync(kFull, prod1, base + j - 32);
    dot = add_rn(dot, t);
  }
  return dot;
}

// Team of TW warps working on one token (TW == 1: one warp; TW > 1: the whole block).
template <int TW>
struct Team {
  static constexpr int N = TW * 32;
  // This thread's team in its block (TW == 1: a team per warp) and index in the team, and whether it is
  // in the team's first warp (the one that writes a token's outputs).
  __device__ __forceinline__ static int team() { return TW == 1 ? (int)(threadIdx.x >> 5) : 0; }
  __device__ __forceinline__ static int tid() { return TW == 1 ? (int)(threadIdx.x & 31) : (int)threadIdx.x; }
  __device__ __forceinline__ static bool warp0() { return TW == 1 || threadIdx.x < 32; }
  struct Shared {
    unsigned long long u64[TW];
    float f[TW];
    float bcast;
  };
  __device__ __forceinline__ static void sync() {
    if (TW == 1)
      __syncwarp();
    else
      __syncthreads();
  }
  __device__ __forceinline__ static unsigned long long max_u64(unsigned long long v, Shared* sh) {
    v = seg_max_u64(v, 32);
    if (TW == 1) return v;
    const int warp = threadIdx.x >> 5;
    if ((threadIdx.x & 31) == 0) sh->u64[warp] = v;
    __syncthreads();
    unsigned long long r = sh->u64[0];
#pragma unroll
    for (int w = 1; w < TW; ++w) r = umax(r, sh->u64[w]);
    __syncthreads();
    return r;
  }
  __device__ __forceinline__ static float max_f(float v, Shared* sh) {
    v = seg_max_f(v, 32);
    if (TW == 1) return v;
    const int warp = threadIdx.x >> 5;
    if ((threadIdx.x & 31) == 0) sh->f[warp] = v;
    __syncthreads();
    float r = sh->f[0];
#pragma unroll
    for (int w = 1; w < TW; ++w) r = sh->f[w] > r ? sh->f[w] : r;
    __syncthreads();
    return r;
  }
  __device__ __forceinline__ static bool any(bool v) {
    if (TW == 1) return __any_sync(kFull, v) != 0;
    return __syncthreads_or(v) != 0;
  }
};

// Canonical softmax of a row staged in shared memory `x` [E] (team-wide): out[i] becomes
// exp_det(x[i] - max) (out may be x) and the returned stats equal moe::row_softmax's bit for bit (the
// max is order-free; the sum is lane j adding i = j, j+32, ... in increasing order, then the xor
// butterfly 16, 8, 4, 2, 1, which is fold_lanes since float addition commutes).
template <int TW>
__device__ __forceinline__ RowSoftmax team_row_softmax(const float* x, float* out, int experts, int tid,
                                                       typename Team<TW>::Shared* sh) {
  float m = neg_inf();
  for (int i = tid; i < experts; i += Team<TW>::N) {
    float v = x[i];
    if (v > m) m = v;
  }
  m = Team<TW>::max_f(m, sh);
  for (int i = tid; i < experts; i += Team<TW>::N) out[i] = exp_det(sub_rn(x[i], m));
  Team<TW>::sync();
  RowSoftmax s;
  s.max = m;
  if (tid < 32) {
    float acc = 0.0f;
    for (int i = tid; i < experts; i += 32) acc = add_rn(acc, out[i]);
    for (int off = 16; off > 0; off >>= 1) acc = add_rn(acc, __shfl_xor_sync(kFull, acc, off));
    if (TW > 1 && tid == 0) sh->bcast = acc;
    s.sum = acc;
  }
  if (TW > 1) {
    __syncthreads();
    s.sum = sh->bcast;
    __syncthreads();
  }
  return s;
}

}  // namespace dev
#endif  // __CUDACC__

}  // namespace moe

#endif  // MOE_CUDA_COMMON_CUH_
