// SPDX-License-Identifier: Apache-2.0
// Replay: weights at given experts (spec section 4), validated on the device.
//
// Validation runs first (one thread per row, moe::check_replay_row; all -1 rows pass under
// minus_one_rows LIVE and ARANGE); a bad row is recorded with atomicMin(row << 2 | reason) in the
// call's own verdict slot (CudaState: never shared by two calls in flight) and in the router's error
// slot. Every later kernel of the call reads the verdict slot and returns at once when it holds a row,
// so a rejected call writes nothing and the host never waits.
//
// Post-softmax, sigmoid and sqrtsoftplus replay read only the k replayed logits per row: a segment of
// W lanes (W = next power of two >= k, at most 32) per token, so small k packs several tokens per
// warp. The weights use dev::seg_weights, i.e. moe::unscaled_weights' exact operation order; the
// row's non-finite flag is the OR over those k logits (ZERO: zero weights). All -1 rows: skipped
// under LIVE (the live kernel routes them), experts 0..k-1 under ARANGE.
#include "moe_cuda_common.cuh"

namespace moe {
namespace {

// Any number of rows in one launch: each block finds its first bad row (shared atomicMin) and folds it
// into `acc`; the last block to finish (a fenced count that wraps back to 0) takes acc (restoring
// kNoBadRow), stores the verdict, reports a bad row to err_slot and zeroes a valid call's counter. No
// memset of the verdict before, no reset kernel after: a validated call is 2 launches at any size.
__global__ void __launch_bounds__(256)
    validate_rows_kernel(const int32_t* __restrict__ idx, const uint8_t* __restrict__ mask, int64_t tokens, int k,
                         int experts, int minus_one_ok, unsigned long long* call_bad, unsigned long long* err_slot,
                         unsigned long long* counter, unsigned long long* acc, unsigned long long* done) {
  __shared__ unsigned long long first;
  __shared__ bool last;
  if (threadIdx.x == 0) first = kNoBadRow;
  __syncthreads();
  for (int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; t < tokens; t += (int64_t)gridDim.x * blockDim.x) {
    if (mask && mask[t] == 0) continue;
    if (minus_one_ok && is_minus_one_row(idx + t * k, k)) continue;
    const int why = check_replay_row(idx + t * k, k, experts);
    if (why != MOE_REPLAY_OK) atomicMin(&first, ((unsigned long long)t << 2) | (unsigned long long)why);
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    if (first != kNoBadRow) atomicMin(acc, first);
    __threadfence();  // this block's acc update before its count: the last block sees every block's
    last = atomicInc(reinterpret_cast<unsigned*>(done), gridDim.x - 1) == gridDim.x - 1;
  }
  __syncthreads();
  if (!last || threadIdx.x != 0) return;
  __threadfence();
  const unsigned long long bad = atomicExch(acc, kNoBadRow);
  *call_bad = bad;
  if (bad != kNoBadRow)
    atomicMin(err_slot, bad);
  else if (counter)
    *counter = 0;
}

// Up to kSmallRows rows: one block resets the verdict, validates, and (counter non-null) zeroes the
// non-finite counter of a valid call: one launch instead of a memset, the validation and a reset kernel,
// which at decode sizes is most of a replay call's time. The verdict is this call's own slot, so the
// plain store that resets it races with nothing; the router's error slot takes the row by atomicMin.
constexpr int kSmallRows = 256;

__global__ void __launch_bounds__(kSmallRows)
    validate_rows_small_kernel(const int32_t* __restrict__ idx, const uint8_t* __restrict__ mask, int64_t tokens,
                               int k, int experts, int minus_one_ok, unsigned long long* call_bad,
                               unsigned long long* err_slot, unsigned long long* counter) {
  __shared__ unsigned long long first;
  if (threadIdx.x == 0) first = kNoBadRow;
  __syncthreads();
  const int64_t t = threadIdx.x;
  if (t < tokens && !(mask && mask[t] == 0) && !(minus_one_ok && is_minus_one_row(idx + t * k, k))) {
    const int why = check_replay_row(idx + t * k, k, experts);
    if (why != MOE_REPLAY_OK) atomicMin(&first, ((unsigned long long)t << 2) | (unsigned long long)why);
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    *call_bad = first;
    if (first != kNoBadRow)
      atomicMin(err_slot, first);
    else if (counter)
      *counter = 0;
  }
}

// Read and reset in one step: a rejection landing between a read and a reset would be lost.
__global__ void take_error_kernel(unsigned long long* err_slot, unsigned long long* taken) {
  *taken = atomicExch(err_slot, kNoBadRow);
}

__global__ void zero_if_valid_kernel(unsigned long long* nonfinite, const unsigned long long* call_bad) {
  if (*call_bad == kNoBadRow) *nonfinite = 0;
}

template <int DT, int W>
__global__ void __launch_bounds__(256)
    route_replay_kernel(Params p, const void* __restrict__ logits, int64_t tokens, const int32_t* replay,
                        const uint8_t* __restrict__ mask, int32_t* out_idx, float* __restrict__ out_w,
                        uint8_t* __restrict__ out_flags, unsigned long long* __restrict__ nonfinite,
                        const unsigned long long* __restrict__ call_bad) {
  if (call_bad && *call_bad != kNoBadRow) return;
  constexpr int kTokensPerWarp = 32 / W;
  const int lane = threadIdx.x & 31;
  const int sub = lane & (W - 1);
  const int seg = lane / W;
  const int k = p.k;
  const int64_t E = p.experts;
  const int64_t warp = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
  const int64_t warps = ((int64_t)gridDim.x * blockDim.x) >> 5;
  const bool zero_nonfinite = p.nonfinite == MOE_NONFINITE_ZERO;
  unsigned long long nf_rows = 0;
  // The loop bound is warp-uniform: every lane joins the shuffles, inactive segments write nothing.
  for (int64_t base = warp * kTokensPerWarp; base < tokens; base += warps * kTokensPerWarp) {
    const int64_t t = base + seg;
    bool active = t < tokens && (!mask || mask[t] != 0);
    bool v0 = active && sub < k;
    bool v1 = active && W == 32 && sub + 32 < k;
    int32_t e0 = v0 ? replay[t * k + sub] : 0;
    int32_t e1 = v1 ? replay[t * k + sub + 32] : 0;
    // Validated rows: one starting with -1 is all -1 (LIVE or ARANGE). The first entry travels by
    // shuffle, not memory: out_idx may alias replay and lane `sub` == 0 writes it below.
    if (__shfl_sync(dev::kFull, e0, lane & ~(W - 1)) == -1 && active) {
      if (p.minus_one_rows == MOE_MINUS_ONE_ARANGE) {
        e0 = sub;
        e1 = sub + 32;
      } else {
        active = v0 = v1 = false;
      }
    }
    const float l0 = v0 ? dev::load_elem<DT>(logits, t * E + e0) : 0.0f;
    const float l1 = v1 ? dev::load_elem<DT>(logits, t * E + e1) : 0.0f;
    float u0, u1, w0, w1;
    bool nf = false;
    dev::seg_weights<W, true>(p, sub, l0, l1, 0.0f, 0.0f, u0, u1, w0, w1, nf);
    const bool zero = zero_nonfinite && nf;
    if (v0) {
      out_idx[t * k + sub] = e0;  // may alias replay: the same thread read it above
      out_w[t * k + sub] = zero ? 0.0f : mul_rn(w0, p.scale);
    }
    if (v1) {
      out_idx[t * k + sub + 32] = e1;
      out_w[t * k + sub + 32] = zero ? 0.0f : mul_rn(w1, p.scale);
    }
    if (active && sub == 0) {
      if (out_flags) out_flags[t] = nf ? 1 : 0;
      if (nf) ++nf_rows;
    }
  }
  if (nonfinite) {
    for (int off = 16; off > 0; off >>= 1) nf_rows += __shfl_xor_sync(dev::kFull, nf_rows, off);
    if (lane == 0 && nf_rows) atomicAdd(nonfinite, nf_rows);
  }
}

template <int DT, int W>
cudaError_t launch_replay_w(const Params& p, const void* logits, int64_t tokens, const int32_t* replay,
                            const uint8_t* mask, int32_t* out_idx, float* out_w, uint8_t* out_flags,
                            unsigned long long* nf, const unsigned long long* call_bad, int sm_count,
                            cudaStream_t stream) {
  constexpr int threads = 256;
  constexpr int tokens_per_block = threads / 32 * (32 / W);
  const unsigned grid = grid_for(tokens, tokens_per_block, sm_count, 8);
  return launch_kernel(route_replay_kernel<DT, W>, grid, threads, 0, stream, p, logits, tokens, replay, mask, out_idx,
                       out_w, out_flags, nf, call_bad);
}

template <int DT>
cudaError_t launch_replay_dt(const Params& p, const void* logits, int64_t tokens, const int32_t* replay,
                             const uint8_t* mask, int32_t* out_idx, float* out_w, uint8_t* out_flags,
                             unsigned long long* nf, const unsigned long long* call_bad, int sm_count,
                             cudaStream_t stream) {
  if (p.k <= 4)
    return launch_replay_w<DT, 4>(p, logits, tokens, replay, mask, out_idx, out_w, out_flags, nf, call_bad, sm_count,
                                  stream);
  if (p.k <= 8)
    return launch_replay_w<DT, 8>(p, logits, tokens, replay, mask, out_idx, out_w, out_flags, nf, call_bad, sm_count,
                                  stream);
  if (p.k <= 16)
    return launch_replay_w<DT, 16>(p, logits, tokens, replay, mask, out_idx, out_w, out_flags, nf, call_bad,
                                   sm_count, stream);
  return launch_replay_w<DT, 32>(p, logits, tokens, replay, mask, out_idx, out_w, out_flags, nf, call_bad, sm_count,
                                 stream);
}

}  // namespace

cudaError_t launch_validate_rows(const int32_t* idx, const uint8_t* mask, int64_t tokens, int k, int experts,
                                 bool minus_one_ok, unsigned long long* call_bad, unsigned long long* err_slot,
                                 unsigned long long* counter, unsigned long long* acc, unsigned long long* done,
                                 int sm_count, cudaStream_t stream) {
  if (tokens <= kSmallRows)
    return launch_kernel(validate_rows_small_kernel, 1, kSmallRows, 0, stream, idx, mask, tokens, k, experts,
                         minus_one_ok ? 1 : 0, call_bad, err_slot, counter);
  const unsigned grid = grid_for(tokens, 256, sm_count, 8);
  return launch_kernel(validate_rows_kernel, grid, 256, 0, stream, idx, mask, tokens, k, experts,
                       minus_one_ok ? 1 : 0, call_bad, err_slot, counter, acc, done);
}

cudaError_t launch_take_error(unsigned long long* err_slot, unsigned long long* taken, cudaStream_t stream) {
  return launch_kernel(take_error_kernel, 1, 1, 0, stream, err_slot, taken);
}

cudaError_t launch_zero_if_valid(unsigned long long* nonfinite, const unsigned long long* call_bad,
                                 cudaStream_t stream) {
  return launch_kernel(zero_if_valid_kernel, 1, 1, 0, stream, nonfinite, call_bad);
}

cudaError_t launch_route_replay(const Params& p, const void* logits, int dtype, int64_t tokens,
                                const int32_t* replay, const uint8_t* mask, int32_t* out_idx, float* out_w,
                                uint8_t* out_flags, unsigned long long* nonfinite, const unsigned long long* call_bad,
                                int sm_count, cudaStream_t stream) {
  if (tokens <= 0) return cudaSuccess;
  return with_dtype(dtype, [&](auto dt) {
    return launch_replay_dt<decltype(dt)::value>(p, logits, tokens, replay, mask, out_idx, out_w, out_flags,
                                                 nonfinite, call_bad, sm_count, stream);
  });
}

}  // namespace moe
