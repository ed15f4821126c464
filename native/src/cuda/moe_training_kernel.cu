// SPDX-License-Identifier: Apache-2.0
// Spec section 6 on the device: valid tokens, counts over valid rows, and the losses (aux, sequence aux,
// global aux, z) with their gradients, bit-identical to the CPU backend (moe_cpu_training.cpp).
//
// Parallel layout and why:
// - Valid tokens, idx counts: one thread per row (grid-stride); N and the counts are integer atomics,
//   exact in any order. Map counts: one thread per (chunk of 256 rows, expert), one atomic each.
// - Losses, four launches on the stream, no float atomics:
//   1. rows: one thread per row runs the row functions of moe_routing_math.h (aux_scores_row, the plain
//      top-k through topk_insert, row_softmax + row_logsumexp), the very code the CPU backend's row loop
//      mirrors, and stores A [T, E], M [T, E], lse^2 and v_t in the workspace.
//   2. items: one thread per (work item, expert) sums its item's rows IN ROW ORDER in double. A work item is
//      the CPU's: 256 positions of one sequence (all rows form one sequence without the sequence loss).
//   3. merge: one block merges the items in item order (per sequence too), forms the loss values in the
//      CPU's operation order with explicitly rounded double arithmetic, and dLoss/dA.
//   4. gradient: one thread per valid row adds aux_grad_row (c = 1) and the z-loss gradient.
//   The CPU's sums are exactly these sums in this order, so values and gradients are the same bits.
// - Limits: one thread per row reads its row with a stride of E elements (uncoalesced; the L1/L2 absorb
//   it for E up to a few hundred); the merge's dot products are sequential (one thread, B * E terms for
//   the sequence loss). docs/cuda-training.md gives the bytes and passes.
#include "moe_training.cuh"

namespace moe {
namespace {

struct RowLoad {
  const void* row;
  int dtype;
  __device__ float operator()(int i) const { return load_logit(row, dtype, i); }
};

__device__ __forceinline__ const void* row_ptr(const void* logits, int dtype, int64_t t, int experts) {
  return static_cast<const char*>(logits) + (size_t)t * experts * dtype_bytes(dtype);
}

__device__ __forceinline__ bool row_finite(const RowLoad& ld, int experts) {
  for (int i = 0; i < experts; ++i)
    if (!is_finite(ld(i))) return false;
  return true;
}

__device__ __forceinline__ bool rejected(const unsigned long long* call_bad) {
  return call_bad && *call_bad != kNoBadRow;
}

__device__ __forceinline__ void warp_add_to(unsigned long long n, unsigned long long* dst) {
  for (int off = 16; off > 0; off >>= 1) n += __shfl_xor_sync(dev::kFull, n, off);
  if ((threadIdx.x & 31) == 0 && n) atomicAdd(dst, n);
}

__global__ void __launch_bounds__(256)
    valid_tokens_kernel(const void* __restrict__ logits, int dtype, int64_t tokens, int experts, bool zero,
                        const uint8_t* __restrict__ padding, uint8_t* __restrict__ out,
                        unsigned long long* __restrict__ count) {
  unsigned long long n = 0;
  for (int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; t < tokens; t += (int64_t)gridDim.x * blockDim.x) {
    bool v = !(padding && padding[t]);
    if (v && zero) v = row_finite(RowLoad{row_ptr(logits, dtype, t, experts), dtype}, experts);
    out[t] = v ? 1 : 0;
    n += v;
  }
  if (count) warp_add_to(n, count);
}

__global__ void __launch_bounds__(256) zero_counts_kernel(int32_t* __restrict__ counts, int experts,
                                                          const unsigned long long* __restrict__ call_bad) {
  if (rejected(call_bad)) return;
  for (int e = blockIdx.x * blockDim.x + threadIdx.x; e < experts; e += gridDim.x * blockDim.x) counts[e] = 0;
}

__global__ void __launch_bounds__(256)
    idx_counts_kernel(const int32_t* __restrict__ idx, const uint8_t* __restrict__ valid, int64_t tokens, int k,
                      int32_t* __restrict__ counts, const unsigned long long* __restrict__ call_bad) {
  if (rejected(call_bad)) return;
  for (int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; t < tokens; t += (int64_t)gridDim.x * blockDim.x) {
    if (valid && !valid[t]) continue;
    for (int j = 0; j < k; ++j) atomicAdd(&counts[idx[t * k + j]], 1);
  }
}

__global__ void __launch_bounds__(256)
    map_counts_kernel(const uint8_t* __restrict__ map, const uint8_t* __restrict__ valid, int64_t tokens,
                      int experts, int32_t* __restrict__ counts) {
  const int64_t chunks = (tokens + kLossChunkRows - 1) / kLossChunkRows;
  for (int64_t w = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; w < chunks * experts;
       w += (int64_t)gridDim.x * blockDim.x) {
    const int64_t c = w / experts;
    const int e = (int)(w % experts);  // consecutive threads read consecutive bytes of a row
    const int64_t t1 = c * kLossChunkRows + kLossChunkRows < tokens ? c * kLossChunkRows + kLossChunkRows : tokens;
    int n = 0;
    for (int64_t t = c * kLossChunkRows; t < t1; ++t)
      if (!(valid && !valid[t])) n += map[t * experts + e] != 0;
    if (n) atomicAdd(&counts[e], n);
  }
}

// ------------------------------------------------------------------------------------------ losses
struct LossPtrs {
  float* a;
  uint8_t* m;
  double* rz;
  uint8_t* rv;
  double* isum;
  long long* icnt;
  double* iz;
  long long* in;
  double* csum;
  long long* ccnt;
  double* cseq;     // [B, E] per-sequence sums (sequence loss only), after csum and ccnt
  long long* cseqn;
  float* da;
  LossScalars* scal;
};

__device__ __forceinline__ int64_t loss_row_of(const LossShape& s, int layout, int64_t b, int64_t pos) {
  return layout == MOE_SEQ_BS ? b * s.seq_len + pos : pos * s.batch + b;
}

__global__ void __launch_bounds__(128)
    loss_rows_kernel(LossArgs a, LossShape s, const void* __restrict__ logits, const uint8_t* __restrict__ valid,
                     LossPtrs w, float* __restrict__ out_scores, uint8_t* __restrict__ out_map) {
  const int E = a.experts;
  for (int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; t < s.tokens;
       t += (int64_t)gridDim.x * blockDim.x) {
    const RowLoad ld{row_ptr(logits, a.dtype, t, E), a.dtype};
    bool v = !(valid && !valid[t]);
    if (v && a.zero) v = row_finite(ld, E);
    w.rv[t] = v ? 1 : 0;
    if (s.stats) {
      float* at = w.a + t * E;
      uint8_t* mt = w.m + t * E;
      for (int i = 0; i < E; ++i) mt[i] = 0;
      if (v) {
        aux_scores_row(a.score_fn, ld, E, at);
        uint64_t keys[MOE_MAX_TOPK];
        int count = 0;
        for (int i = 0; i < E; ++i) topk_insert(keys, count, a.k, rank_key(ld(i), i));  // M ranks the logits
        for (int j = 0; j < a.k; ++j) mt[rank_key_index(keys[j])] = 1;
      } else {
        for (int i = 0; i < E; ++i) at[i] = 0.0f;
      }
      if (out_scores)
        for (int i = 0; i < E; ++i) out_scores[t * E + i] = at[i];
      if (out_map)
        for (int i = 0; i < E; ++i) out_map[t * E + i] = mt[i];
    }
    double z = 0.0;
    if (s.z && v) {
      const double lse = (double)row_logsumexp(row_softmax(ld, E));
      z = __dmul_rn(lse, lse);
    }
    w.rz[t] = z;
  }
}

__global__ void __launch_bounds__(256) loss_items_kernel(LossShape s, int layout, LossPtrs w) {
  const int E = s.experts, per_item = s.stats ? E : 1;
  for (int64_t x = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; x < s.items * per_item;
       x += (int64_t)gridDim.x * blockDim.x) {
    const int64_t item = x / per_item;
    const int i = (int)(x % per_item);
    const int64_t b = item / s.seq_chunks, p0 = (item % s.seq_chunks) * kLossChunkRows;
    const int64_t p1 = p0 + kLossChunkRows < s.seq_len ? p0 + kLossChunkRows : s.seq_len;
    if (s.stats) {
      double psum = 0.0;
      long long cnt = 0;
      for (int64_t p = p0; p < p1; ++p) {
        const int64_t t = loss_row_of(s, layout, b, p);
        if (!w.rv[t]) continue;
        psum = __dadd_rn(psum, (double)w.a[t * E + i]);
        cnt += w.m[t * E + i];
      }
      w.isum[item * E + i] = psum;
      w.icnt[item * E + i] = cnt;
    }
    if (i == 0) {
      double zsum = 0.0;
      long long n = 0;
      for (int64_t p = p0; p < p1; ++p) {
        const int64_t t = loss_row_of(s, layout, b, p);
        if (!w.rv[t]) continue;
        ++n;
        zsum = __dadd_rn(zsum, w.rz[t]);
      }
      w.iz[item] = zsum;
      w.in[item] = n;
    }
  }
}

// coefficient * E / (k * d * d): the CPU's `(double)coeff * E / ((double)k * d * d)`.
__device__ __forceinline__ double loss_scale(float coeff, int experts, int k, double d) {
  return __ddiv_rn(__dmul_rn((double)coeff, (double)experts), __dmul_rn(__dmul_rn((double)k, d), d));
}

__global__ void __launch_bounds__(256)
    loss_merge_kernel(LossArgs a, LossShape s, LossPtrs w, moe_loss_values* __restrict__ out,
                      int32_t* __restrict__ out_counts) {
  __shared__ double coef[3];
  __shared__ int has_da;
  const int E = s.experts;
  const int64_t B = s.batch;
  if (s.stats) {
    for (int i = threadIdx.x; i < E; i += blockDim.x) {
      double p = 0.0;
      long long cn = 0;
      for (int64_t item = 0; item < s.items; ++item) {
        p = __dadd_rn(p, w.isum[item * E + i]);
        cn += w.icnt[item * E + i];
      }
      w.csum[i] = p;
      w.ccnt[i] = cn;
      if (out_counts) out_counts[i] = (int32_t)cn;
    }
    if (s.seq)
      for (int64_t j = threadIdx.x; j < B * E; j += blockDim.x) {
        const int64_t b = j / E;
        const int i = (int)(j % E);
        double p = 0.0;
        long long cn = 0;
        for (int64_t c = 0; c < s.seq_chunks; ++c) {
          p = __dadd_rn(p, w.isum[(b * s.seq_chunks + c) * E + i]);
          cn += w.icnt[(b * s.seq_chunks + c) * E + i];
        }
        w.cseq[j] = p;
        w.cseqn[j] = cn;
      }
  } else if (out_counts) {
    for (int i = threadIdx.x; i < E; i += blockDim.x) out_counts[i] = 0;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    long long n = 0;
    double zsum = 0.0;
    for (int64_t item = 0; item < s.items; ++item) {
      n += w.in[item];
      zsum = __dadd_rn(zsum, w.iz[item]);
    }
    moe_loss_values v{};
    v.valid_tokens = n;
    double a_aux = 0.0, a_seq = 0.0, a_glob = 0.0;
    if (n > 0) {
      const double N = (double)n;
      if (a.aux_coeff != 0.0f) {
        double dot = 0.0;
        for (int i = 0; i < E; ++i) dot = __dadd_rn(dot, __dmul_rn((double)w.ccnt[i], w.csum[i]));
        a_aux = loss_scale(a.aux_coeff, E, a.k, N);
        v.aux_loss = __dmul_rn(a_aux, dot);
      }
      if (s.seq) {
        const double nq = __ddiv_rn(N, (double)B);
        double dot = 0.0;
        for (int64_t j = 0; j < B * E; ++j) dot = __dadd_rn(dot, __dmul_rn((double)w.cseqn[j], w.cseq[j]));
        a_seq = __ddiv_rn(__dmul_rn((double)a.seq_coeff, (double)E),
                          __dmul_rn(__dmul_rn(__dmul_rn((double)a.k, nq), nq), (double)B));
        v.seq_aux_loss = __dmul_rn(a_seq, dot);
      }
      if (a.glob_coeff != 0.0f && a.global_num_tokens > 0.0) {
        double dot = 0.0;
        for (int i = 0; i < E; ++i) dot = __dadd_rn(dot, __dmul_rn(a.global_tokens[i], w.csum[i]));
        a_glob = loss_scale(a.glob_coeff, E, a.k, a.global_num_tokens);
        v.global_aux_loss = __dmul_rn(a_glob, dot);
      }
      if (s.z) v.z_loss = __ddiv_rn(__dmul_rn((double)a.z_coeff, zsum), N);
    }
    *out = v;
    coef[0] = a_aux;
    coef[1] = a_seq;
    coef[2] = a_glob;
    has_da = a_aux != 0.0 || a_seq != 0.0 || a_glob != 0.0;
    LossScalars sc{};
    sc.has_da = has_da;
    sc.has_z = n > 0 && s.z;
    sc.zc = sc.has_z ? (float)__ddiv_rn(__dmul_rn(2.0, (double)a.z_coeff), (double)n) : 0.0f;
    *w.scal = sc;
  }
  __syncthreads();
  if (!has_da) return;
  const int64_t rows = s.seq ? B : 1;
  for (int64_t j = threadIdx.x; j < rows * E; j += blockDim.x) {
    const int i = (int)(j % E);
    double d = 0.0;
    if (coef[0] != 0.0) d = __dadd_rn(d, __dmul_rn(coef[0], (double)w.ccnt[i]));
    if (coef[2] != 0.0) d = __dadd_rn(d, __dmul_rn(coef[2], a.global_tokens[i]));
    if (coef[1] != 0.0) d = __dadd_rn(d, __dmul_rn(coef[1], (double)w.cseqn[j]));
    w.da[j] = (float)d;
  }
}

__global__ void __launch_bounds__(128)
    loss_grad_kernel(LossArgs a, LossShape s, const void* __restrict__ logits, LossPtrs w, float* __restrict__ grad) {
  const LossScalars sc = *w.scal;
  if (!sc.has_da && !sc.has_z) return;
  const int E = a.experts;
  for (int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; t < s.tokens;
       t += (int64_t)gridDim.x * blockDim.x) {
    if (!w.rv[t]) continue;
    const RowLoad ld{row_ptr(logits, a.dtype, t, E), a.dtype};
    float* g = grad + t * E;
    if (sc.has_da) {
      const int64_t b = !s.seq ? 0 : a.layout == MOE_SEQ_BS ? t / s.seq_len : t % s.batch;
      aux_grad_row(a.score_fn, ld, E, w.a + t * E, w.da + b * E, 1.0f, g);
    }
    if (sc.has_z) {
      const RowSoftmax sm = row_softmax(ld, E);
      const float gz = mul_rn(sc.zc, row_logsumexp(sm));
      for (int i = 0; i < E; ++i) g[i] = add_rn(g[i], mul_rn(gz, div_rn(exp_det(sub_rn(ld(i), sm.max)), sm.sum)));
    }
  }
}

}  // namespace

cudaError_t launch_valid_tokens(const Params& p, const void* logits, int dtype, int64_t tokens,
                                const uint8_t* padding, uint8_t* out_valid, unsigned long long* out_count,
                                int sm_count, cudaStream_t stream) {
  if (out_count) {
    cudaError_t e = cudaMemsetAsync(out_count, 0, sizeof *out_count, stream);
    if (e != cudaSuccess) return e;
  }
  if (tokens == 0) return cudaSuccess;
  return launch_kernel(valid_tokens_kernel, grid_for(tokens, 256, sm_count, 8), 256, 0, stream, logits, dtype,
                       tokens, p.experts, p.nonfinite == MOE_NONFINITE_ZERO, padding, out_valid, out_count);
}

cudaError_t launch_tokens_per_expert(const int32_t* idx, const uint8_t* map, const uint8_t* valid, int64_t tokens,
                                     int k, int experts, int32_t* counts, const unsigned long long* call_bad,
                                     int sm_count, cudaStream_t stream) {
  cudaError_t e = launch_kernel(zero_counts_kernel, grid_for(experts, 256, sm_count, 1), 256, 0, stream, counts,
                                experts, call_bad);
  if (e != cudaSuccess || tokens == 0) return e;
  if (idx)
    return launch_kernel(idx_counts_kernel, grid_for(tokens, 256, sm_count, 8), 256, 0, stream, idx, valid, tokens,
                         k, counts, call_bad);
  const int64_t chunks = (tokens + kLossChunkRows - 1) / kLossChunkRows;
  return launch_kernel(map_counts_kernel, grid_for(chunks * experts, 256, sm_count, 8), 256, 0, stream, map, valid,
                       tokens, experts, counts);
}

cudaError_t launch_losses(const LossArgs& a, const LossShape& s, const void* logits, const uint8_t* valid,
                          moe_loss_values* out, int32_t* out_counts, float* out_scores, uint8_t* out_map,
                          float* grad, char* ws, int sm_count, cudaStream_t stream) {
  const LossLayout l = loss_layout(s);
  LossPtrs w{};
  w.a = reinterpret_cast<float*>(ws + l.a);
  w.m = reinterpret_cast<uint8_t*>(ws + l.m);
  w.rz = reinterpret_cast<double*>(ws + l.rz);
  w.rv = reinterpret_cast<uint8_t*>(ws + l.rv);
  w.isum = reinterpret_cast<double*>(ws + l.isum);
  w.icnt = reinterpret_cast<long long*>(ws + l.icnt);
  w.iz = reinterpret_cast<double*>(ws + l.iz);
  w.in = reinterpret_cast<long long*>(ws + l.in);
  w.csum = reinterpret_cast<double*>(ws + l.csum);
  w.ccnt = reinterpret_cast<long long*>(ws + l.ccnt);
  w.cseq = reinterpret_cast<double*>(ws + l.cseq);
  w.cseqn = reinterpret_cast<long long*>(ws + l.cseqn);
  w.da = reinterpret_cast<float*>(ws + l.da);
  w.scal = reinterpret_cast<LossScalars*>(ws + l.scal);
  cudaError_t e;
  if (s.tokens > 0) {
    e = launch_kernel(loss_rows_kernel, grid_for(s.tokens, 128, sm_count, 8), 128, 0, stream, a, s, logits, valid,
                      w, out_scores, out_map);
    if (e != cudaSuccess) return e;
  }
  const int64_t item_threads = s.items * (s.stats ? s.experts : 1);
  if (item_threads > 0) {
    e = launch_kernel(loss_items_kernel, grid_for(item_threads, 256, sm_count, 8), 256, 0, stream, s, a.layout, w);
    if (e != cudaSuccess) return e;
  }
  e = launch_kernel(loss_merge_kernel, 1, 256, 0, stream, a, s, w, out, out_counts);
  if (e != cudaSuccess || !grad || s.tokens == 0) return e;
  return launch_kernel(loss_grad_kernel, grid_for(s.tokens, 128, sm_count, 8), 128, 0, stream, a, s, logits, w, grad);
}

}  // namespace moe
