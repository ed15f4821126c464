// SPDX-License-Identifier: Apache-2.0
// Non-finite policy ERROR (spec section 2): before any output of a call is written, find the first
// row (lowest index) whose read set holds a NaN or +-inf, and the first such logit in the row's
// read order, exactly as the CPU backend's reject_nonfinite: a live row (no replay, mask 0, or all -1
// under minus_one_rows LIVE) and every softmax-pre row read the whole row, lowest expert first; a
// replayed row reads its k experts in the given order (0..k-1 for all -1 rows under ARANGE); the
// backward reads its k indices (softmax pre: the whole row). The result goes into the call's verdict
// (atomicMin of pack_nonfinite), which every later kernel of the call checks, and into the router's
// error slot for moe_router_check_replay (err_slot null: the host variants read the verdict back).
//
// Layout: a warp per row, grid-stride. Whole rows: each lane's first non-finite expert of its
// strided share, then a warp min; replayed rows: a ballot over the k entries. A warp stops at its
// first non-finite row (its later rows are higher). The scan is one extra read of what the call
// reads, paid by ERROR routers only.
#include "moe_cuda_common.cuh"

namespace moe {
namespace {

constexpr int kScanThreads = 256;

template <int DT>
__global__ void __launch_bounds__(kScanThreads)
    nonfinite_scan_kernel(Params p, const void* __restrict__ logits, int64_t tokens, const int32_t* __restrict__ idx,
                          const uint8_t* __restrict__ mask, int backward, unsigned long long* verdict,
                          unsigned long long* err_slot) {
  // A rejected replay row (set by the validation launched before) is reported first, and the indices
  // of an invalid row must not be read. Non-finite verdicts of this launch do not stop it: a block
  // starting late may still hold a lower row.
  if (*verdict < kNonfiniteTag) return;
  const int lane = threadIdx.x & 31;
  const int E = p.experts, k = p.k;
  const int64_t warp = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
  const int64_t warps = ((int64_t)gridDim.x * blockDim.x) >> 5;
  const size_t row_bytes = (size_t)E * dtype_bytes(DT);
  for (int64_t t = warp; t < tokens; t += warps) {
    const void* row = static_cast<const char*>(logits) + (size_t)t * row_bytes;
    const int32_t* src = nullptr;  // the replayed experts, or null: the whole row
    bool arange = false;
    if (idx && !p.needs_full_row() && (backward || !mask || mask[t] != 0)) {
      src = idx + t * k;
      if (!backward && src[0] == -1) {  // validated: all -1, under LIVE or ARANGE
        arange = p.minus_one_rows == MOE_MINUS_ONE_ARANGE;
        if (!arange) src = nullptr;
      }
    }
    int expert = -1;
    if (src || arange) {
      for (int j0 = 0; j0 < k && expert < 0; j0 += 32) {
        const int j = j0 + lane;
        const int e = j < k ? (arange ? j : src[j]) : 0;
        const unsigned bad = __ballot_sync(dev::kFull, j < k && !is_finite(dev::load_elem<DT>(row, e)));
        if (bad) {
          const int first = j0 + __ffs(bad) - 1;
          expert = arange ? first : src[first];
        }
      }
    } else {
      unsigned mine = 0xffffffffu;
      for (int i = lane; i < E; i += 32)
        if (!is_finite(dev::load_elem<DT>(row, i))) {
          mine = (unsigned)i;
          break;
        }
      const unsigned first = __reduce_min_sync(dev::kFull, mine);
      if (first != 0xffffffffu) expert = (int)first;
    }
    if (expert >= 0) {  // warp-uniform
      if (lane == 0) {
        const float v = dev::load_elem<DT>(row, expert);
        const unsigned kind = v != v ? kValueNaN : v > 0.0f ? kValuePosInf : kValueNegInf;
        const unsigned long long packed = pack_nonfinite(t, expert, kind);
        atomicMin(verdict, packed);
        if (err_slot) atomicMin(err_slot, packed);
      }
      break;
    }
  }
}

template <int DT>
cudaError_t launch_scan_dt(const Params& p, const void* logits, int64_t tokens, const int32_t* idx,
                           const uint8_t* mask, bool backward, unsigned long long* verdict,
                           unsigned long long* err_slot, int sm_count, cudaStream_t stream) {
  const unsigned grid = grid_for(tokens, kScanThreads / 32, sm_count, 8);
  return launch_kernel(nonfinite_scan_kernel<DT>, grid, kScanThreads, 0, stream, p, logits, tokens, idx, mask,
                       backward ? 1 : 0, verdict, err_slot);
}

}  // namespace

cudaError_t launch_nonfinite_scan(const Params& p, const void* logits, int dtype, int64_t tokens, const int32_t* idx,
                                  const uint8_t* mask, bool backward, unsigned long long* verdict,
                                  unsigned long long* err_slot, int sm_count, cudaStream_t stream) {
  if (tokens <= 0) return cudaSuccess;
  return with_dtype(dtype, [&](auto dt) {
    return launch_scan_dt<decltype(dt)::value>(p, logits, tokens, idx, mask, backward, verdict, err_slot, sm_count,
                                               stream);
  });
}

}  // namespace moe
