// SPDX-License-Identifier: Apache-2.0
// Token dropping on the device (spec section 6), the same decisions as moe_cpu_dropping.cpp: each expert
// keeps `cap` tokens by routing prob (a token not routed to it has prob 0; ties to the lower token index)
// or by position; pad_to_capacity fills the map with the tokens the expert would take next.
//
// Parallel layout: a counting sort builds each expert's routed entries in token order (one thread per
// chunk of 256 tokens counts, one block scans the chunks per expert and the experts, one thread per chunk
// places its entries); then every decision is a count, so no sort is needed:
// - POSITION: an entry is kept when its position in the expert's list is < cap;
// - PROBS: an entry's rank is the number of the expert's routed entries with a larger rank key
//   (rank_key of moe_routing_math.h: prob, then lower index) plus the non-routed tokens (prob 0) above it:
//   all of them when its key is below prob 0 (negative or NaN), those of lower index at exactly 0, none
//   above. One thread per entry counts over its expert's list (stopping at cap): O(sum over experts of
//   count * min(count, cap)) comparisons, the cost to watch for large per-expert counts;
// - the final map: one thread per (token, expert); a non-routed token is on the map (pad_to_capacity)
//   when its own rank, from a binary search of the expert's list and the prefix counts of routed
//   zeros, is < cap.
// Every kernel returns at once when the call's verdict holds an invalid idx row (launch_validate_rows
// runs first), so a rejected call writes nothing.
#include "moe_training.cuh"

namespace moe {
namespace {

__device__ __forceinline__ bool rejected(const unsigned long long* call_bad) {
  return call_bad && *call_bad != kNoBadRow;
}

struct DropPtrs {
  int32_t* cc;
  long long* begin;
  long long* list;
  long long* pos;
  long long* zpre;
  long long* above;  // [E] above prob 0, then [E] at prob 0
  uint8_t* kept;
};

struct DropArgs {
  const int32_t* idx;
  const float* w;
  long long tokens, cap, chunks;
  int k, experts;
  bool drop, probs, pad;
};

__global__ void __launch_bounds__(256)
    drop_zero_kernel(int32_t* __restrict__ kept_counts, int experts, unsigned long long* __restrict__ dropped,
                     const unsigned long long* __restrict__ call_bad) {
  if (rejected(call_bad)) return;
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (kept_counts)
    for (int e = i; e < experts; e += gridDim.x * blockDim.x) kept_counts[e] = 0;
  if (dropped && i == 0) *dropped = 0;
}

__global__ void __launch_bounds__(256) drop_count_kernel(DropArgs a, DropPtrs p, const unsigned long long* call_bad) {
  if (rejected(call_bad)) return;
  for (long long c = (long long)blockIdx.x * blockDim.x + threadIdx.x; c < a.chunks;
       c += (long long)gridDim.x * blockDim.x) {
    int32_t* cc = p.cc + c * a.experts;
    for (int e = 0; e < a.experts; ++e) cc[e] = 0;
    const long long n1 = (c + 1) * kDropChunkRows < a.tokens ? (c + 1) * kDropChunkRows : a.tokens;
    for (long long n = c * kDropChunkRows * a.k; n < n1 * a.k; ++n) ++cc[a.idx[n]];
  }
}

// One block: per expert, chunk counts -> the chunk's base in the expert's list; then the CSR offsets.
__global__ void __launch_bounds__(256) drop_scan_kernel(DropArgs a, DropPtrs p, const unsigned long long* call_bad) {
  if (rejected(call_bad)) return;
  for (int e = threadIdx.x; e < a.experts; e += blockDim.x) {
    long long run = 0;
    for (long long c = 0; c < a.chunks; ++c) {
      const int32_t v = p.cc[c * a.experts + e];
      p.cc[c * a.experts + e] = (int32_t)run;
      run += v;
    }
    p.begin[e + 1] = run;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    p.begin[0] = 0;
    for (int e = 0; e < a.experts; ++e) p.begin[e + 1] += p.begin[e];
  }
}

__global__ void __launch_bounds__(256) drop_fill_kernel(DropArgs a, DropPtrs p, const unsigned long long* call_bad) {
  if (rejected(call_bad)) return;
  for (long long c = (long long)blockIdx.x * blockDim.x + threadIdx.x; c < a.chunks;
       c += (long long)gridDim.x * blockDim.x) {
    int32_t* cc = p.cc + c * a.experts;
    const long long n1 = (c + 1) * kDropChunkRows < a.tokens ? (c + 1) * kDropChunkRows : a.tokens;
    for (long long n = c * kDropChunkRows * a.k; n < n1 * a.k; ++n) {
      const int e = a.idx[n];
      const long long q = cc[e]++;
      p.list[p.begin[e] + q] = n;
      p.pos[n] = q;
    }
  }
}

// Probs policy: per expert, routed entries above prob 0 and at prob 0 (prefix counts for the map's pad).
__global__ void __launch_bounds__(256) drop_zeros_kernel(DropArgs a, DropPtrs p, const unsigned long long* call_bad) {
  if (rejected(call_bad)) return;
  const uint32_t zero_key = score_key(0.0f);
  for (int e = blockIdx.x * blockDim.x + threadIdx.x; e < a.experts; e += gridDim.x * blockDim.x) {
    long long above = 0, zeros = 0;
    for (long long q = p.begin[e]; q < p.begin[e + 1]; ++q) {
      p.zpre[q] = zeros;
      const uint32_t key = score_key(a.w[p.list[q]]);
      zeros += key == zero_key;
      above += key > zero_key;
    }
    p.above[e] = above;
    p.above[a.experts + e] = zeros;
  }
}

__global__ void __launch_bounds__(256)
    drop_entries_kernel(DropArgs a, DropPtrs p, uint8_t* __restrict__ out_kept, int32_t* __restrict__ kept_counts,
                        unsigned long long* __restrict__ dropped, const unsigned long long* call_bad) {
  if (rejected(call_bad)) return;
  const uint32_t zero_key = score_key(0.0f);
  unsigned long long lost = 0;
  for (long long n = (long long)blockIdx.x * blockDim.x + threadIdx.x; n < a.tokens * a.k;
       n += (long long)gridDim.x * blockDim.x) {
    const int e = a.idx[n];
    bool keep = true;
    if (a.drop && !a.probs) {
      keep = p.pos[n] < a.cap;
    } else if (a.drop) {
      const long long t = n / a.k, b0 = p.begin[e], count = p.begin[e + 1] - b0;
      const uint64_t key = rank_key(a.w[n], (int)t);
      const uint32_t sk = (uint32_t)(key >> 32);
      long long rank = sk < zero_key ? a.tokens - count : sk == zero_key ? t - p.pos[n] : 0;
      for (long long q = 0; q < count && rank < a.cap; ++q) {
        const long long m = p.list[b0 + q];
        rank += rank_key(a.w[m], (int)(m / a.k)) > key;
      }
      keep = rank < a.cap;
    }
    p.kept[n] = keep ? 1 : 0;
    if (out_kept) out_kept[n] = keep ? 1 : 0;
    if (keep && kept_counts) atomicAdd(&kept_counts[e], 1);
    lost += !keep;
  }
  if (dropped) {
    for (int off = 16; off > 0; off >>= 1) lost += __shfl_xor_sync(dev::kFull, lost, off);
    if ((threadIdx.x & 31) == 0 && lost) atomicAdd(dropped, lost);
  }
}

// Whether non-routed token t is on expert e's padded map (pad_to_capacity while dropping).
__device__ bool pad_slot(const DropArgs& a, const DropPtrs& p, long long t, int e) {
  const long long b0 = p.begin[e], count = p.begin[e + 1] - b0;
  long long lo = 0, hi = count;  // routed tokens of e before t: binary search of the token-ordered list
  while (lo < hi) {
    const long long mid = (lo + hi) / 2;
    if (p.list[b0 + mid] / a.k < t)
      lo = mid + 1;
    else
      hi = mid;
  }
  const long long nonrouted_before = t - lo;
  if (!a.probs) return nonrouted_before < a.cap - (count < a.cap ? count : a.cap);
  const long long zeros_before = lo < count ? p.zpre[b0 + lo] : p.above[a.experts + e];
  return p.above[e] + zeros_before + nonrouted_before < a.cap;
}

__global__ void __launch_bounds__(256)
    drop_map_kernel(DropArgs a, DropPtrs p, uint8_t* __restrict__ out_map, float* __restrict__ out_probs,
                    const unsigned long long* call_bad) {
  if (rejected(call_bad)) return;
  const long long total = a.tokens * a.experts;
  for (long long x = (long long)blockIdx.x * blockDim.x + threadIdx.x; x < total;
       x += (long long)gridDim.x * blockDim.x) {
    const long long t = x / a.experts;
    const int e = (int)(x % a.experts);
    int j = 0;
    while (j < a.k && a.idx[t * a.k + j] != e) ++j;
    bool on;
    float prob = 0.0f;
    if (j < a.k) {
      on = p.kept[t * a.k + j] != 0;
      if (on && out_probs) prob = a.w[t * a.k + j];
    } else {
      on = a.pad && (!a.drop || pad_slot(a, p, t, e));
    }
    if (out_map) out_map[x] = on ? 1 : 0;
    if (out_probs) out_probs[x] = prob;
  }
}

}  // namespace

cudaError_t launch_drop_tokens(const int32_t* idx, const float* w, int64_t tokens, int k, int experts, int64_t cap,
                               int policy, bool pad, uint8_t* out_map, float* out_probs, uint8_t* out_kept,
                               int32_t* out_kept_counts, unsigned long long* out_dropped, char* ws,
                               const unsigned long long* call_bad, int sm_count, cudaStream_t stream) {
  const DropLayout l = drop_layout(tokens, k, experts, policy);
  DropPtrs p{};
  p.cc = reinterpret_cast<int32_t*>(ws + l.cc);
  p.begin = reinterpret_cast<long long*>(ws + l.begin);
  p.list = reinterpret_cast<long long*>(ws + l.list);
  p.pos = reinterpret_cast<long long*>(ws + l.pos);
  p.zpre = reinterpret_cast<long long*>(ws + l.zpre);
  p.above = reinterpret_cast<long long*>(ws + l.above);
  p.kept = reinterpret_cast<uint8_t*>(ws + l.kept);
  DropArgs a{};
  a.idx = idx;
  a.w = w;
  a.tokens = tokens;
  a.cap = cap;
  a.chunks = (tokens + kDropChunkRows - 1) / kDropChunkRows;
  a.k = k;
  a.experts = experts;
  a.drop = cap < tokens;
  a.probs = policy == MOE_DROP_PROBS;
  a.pad = pad;
  cudaError_t e = launch_kernel(drop_zero_kernel, grid_for(experts, 256, sm_count, 1), 256, 0, stream,
                                out_kept_counts, experts, out_dropped, call_bad);
  if (e != cudaSuccess || tokens == 0) return e;
  const unsigned chunk_grid = grid_for(a.chunks, 64, sm_count, 4);
  if ((e = launch_kernel(drop_count_kernel, chunk_grid, 64, 0, stream, a, p, call_bad)) != cudaSuccess) return e;
  if ((e = launch_kernel(drop_scan_kernel, 1, 256, 0, stream, a, p, call_bad)) != cudaSuccess) return e;
  if ((e = launch_kernel(drop_fill_kernel, chunk_grid, 64, 0, stream, a, p, call_bad)) != cudaSuccess) return e;
  if (a.probs && a.drop && pad && out_map &&
      (e = launch_kernel(drop_zeros_kernel, grid_for(experts, 256, sm_count, 1), 256, 0, stream, a, p, call_bad)) !=
          cudaSuccess)
    return e;
  if ((e = launch_kernel(drop_entries_kernel, grid_for(tokens * k, 256, sm_count, 8), 256, 0, stream, a, p, out_kept,
                         out_kept_counts, out_dropped, call_bad)) != cudaSuccess)
    return e;
  if (!out_map && !out_probs) return cudaSuccess;
  return launch_kernel(drop_map_kernel, grid_for(tokens * experts, 256, sm_count, 8), 256, 0, stream, a, p, out_map,
                       out_probs, call_bad);
}

}  // namespace moe
