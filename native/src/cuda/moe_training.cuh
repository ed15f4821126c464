// SPDX-License-Identifier: Apache-2.0
// Launches of the spec section 6 kernels (moe_training_kernel.cu: valid tokens, counts, losses;
// moe_dropping_kernel.cu: token dropping) and the layout of their caller-owned workspaces, which the
// size queries and the launchers both compute from here. docs/cuda-training.md gives the passes and costs.
#ifndef MOE_TRAINING_CUH_
#define MOE_TRAINING_CUH_

#include "moe_cuda_common.cuh"

namespace moe {

// The CPU backend's work item of the loss sums (moe_cpu_training.cpp): 256 positions of one sequence.
constexpr int64_t kLossChunkRows = 256;
// Tokens per chunk of the dropping's counting sort (one thread per chunk keeps token order).
constexpr int64_t kDropChunkRows = 256;

inline size_t ws_align(size_t b) { return (b + 255) & ~(size_t)255; }

// Shape of one losses call: sequences (1 without the sequence loss) x chunks of 256 positions.
struct LossShape {
  int64_t tokens, batch, seq_len, seq_chunks, items;
  int experts;
  bool stats, z, seq;
};

inline LossShape loss_shape(const moe_loss_config& c, int64_t tokens, int experts, bool want_outputs) {
  LossShape s{};
  s.tokens = tokens;
  s.experts = experts;
  s.seq = c.seq_aux_coeff != 0.0f;
  s.stats = c.aux_coeff != 0.0f || s.seq || c.global_aux_coeff != 0.0f || want_outputs;
  s.z = c.z_coeff != 0.0f;
  s.batch = s.seq ? tokens / c.seq_length : 1;
  s.seq_len = s.seq ? c.seq_length : tokens;
  s.seq_chunks = (s.seq_len + kLossChunkRows - 1) / kLossChunkRows;
  s.items = s.batch * s.seq_chunks;
  return s;
}

// Byte offsets into the losses workspace.
struct LossLayout {
  size_t a;        // [T, E] float: aux scores A (0 on invalid rows)
  size_t m;        // [T, E] u8: plain top-k map M
  size_t rz;       // [T] double: lse^2 of valid rows
  size_t rv;       // [T] u8: v_t
  size_t isum;     // [items, E] double: per-item sums of A, rows in order
  size_t icnt;     // [items, E] int64: per-item sums of M
  size_t iz;       // [items] double
  size_t in;       // [items] int64
  size_t csum;     // [E] double: the item sums merged in item order
  size_t ccnt;     // [E] int64
  size_t cseq;     // [B, E] double: merged per sequence (sequence loss)
  size_t cseqn;    // [B, E] int64
  size_t da;       // [B or 1, E] float: dLoss/dA of a valid row
  size_t scal;     // LossScalars
  size_t total;
};

// What the merge pass leaves for the gradient pass.
struct LossScalars {
  float zc;        // 2 * z_coeff / N
  int has_da;      // an aux-type loss has a gradient
  int has_z;       // the z-loss has a gradient
  int pad;
};

inline LossLayout loss_layout(const LossShape& s) {
  const size_t T = (size_t)s.tokens, E = (size_t)s.experts, I = (size_t)s.items;
  const size_t R = (size_t)(s.seq ? s.batch : 1);
  LossLayout l{};
  size_t o = 0;
  auto take = [&](size_t bytes) {
    const size_t at = o;
    o += ws_align(bytes);
    return at;
  };
  l.a = take(s.stats ? T * E * sizeof(float) : 0);
  l.m = take(s.stats ? T * E : 0);
  l.rz = take(T * sizeof(double));
  l.rv = take(T);
  l.isum = take(s.stats ? I * E * sizeof(double) : 0);
  l.icnt = take(s.stats ? I * E * sizeof(int64_t) : 0);
  l.iz = take(I * sizeof(double));
  l.in = take(I * sizeof(int64_t));
  l.csum = take(s.stats ? E * sizeof(double) : 0);
  l.ccnt = take(s.stats ? E * sizeof(int64_t) : 0);
  l.cseq = take(s.seq ? R * E * sizeof(double) : 0);
  l.cseqn = take(s.seq ? R * E * sizeof(int64_t) : 0);
  l.da = take(s.stats ? R * E * sizeof(float) : 0);
  l.scal = take(sizeof(LossScalars));
  l.total = o;
  return l;
}

// Byte offsets into the dropping workspace.
struct DropLayout {
  size_t cc;     // [chunks, E] int32: routed entries per chunk, then the chunk's base in the expert's list
  size_t begin;  // [E + 1] int64: CSR offsets of the experts' routed entries
  size_t list;   // [T * k] int64: entries t * k + j of each expert in token order
  size_t pos;    // [T * k] int64: an entry's position in its expert's list (routed tokens before it)
  size_t zpre;   // [T * k] int64: routed entries at prob exactly 0 before a list position (probs)
  size_t above;  // [E] int64: routed entries above prob 0; [E] int64 after it: at prob 0 (probs)
  size_t kept;   // [T * k] u8: the entry is kept
  size_t total;
};

inline DropLayout drop_layout(int64_t tokens, int k, int experts, int policy) {
  const size_t T = (size_t)tokens, E = (size_t)experts, N = T * (size_t)k;
  const size_t chunks = (T + kDropChunkRows - 1) / kDropChunkRows;
  const bool probs = policy == MOE_DROP_PROBS;
  DropLayout l{};
  size_t o = 0;
  auto take = [&](size_t bytes) {
    const size_t at = o;
    o += ws_align(bytes);
    return at;
  };
  l.cc = take(chunks * E * sizeof(int32_t));
  l.begin = take((E + 1) * sizeof(int64_t));
  l.list = take(N * sizeof(int64_t));
  l.pos = take(N * sizeof(int64_t));
  l.zpre = take(probs ? N * sizeof(int64_t) : 0);
  l.above = take(probs ? 2 * E * sizeof(int64_t) : 0);
  l.kept = take(N);
  l.total = o;
  return l;
}

// Loss options the kernels need (host values of moe_loss_config; G a device pointer).
struct LossArgs {
  int score_fn, experts, k, dtype, layout;
  bool zero;
  float aux_coeff, seq_coeff, glob_coeff, z_coeff;
  const double* global_tokens;
  double global_num_tokens;
};

// ---------------------------------------------------------------------------------- launches
// `call_bad` (nullable): the call's verdict slot; when it holds a row the kernels write nothing.

// v_t into out_valid [T]; out_count (nullable) = N.
cudaError_t launch_valid_tokens(const Params& p, const void* logits, int dtype, int64_t tokens,
                                const uint8_t* padding, uint8_t* out_valid, unsigned long long* out_count,
                                int sm_count, cudaStream_t stream);
// counts [E] over the valid rows of idx [T, k] (idx non-null) or of map [T, E].
cudaError_t launch_tokens_per_expert(const int32_t* idx, const uint8_t* map, const uint8_t* valid, int64_t tokens,
                                     int k, int experts, int32_t* counts, const unsigned long long* call_bad,
                                     int sm_count, cudaStream_t stream);
// The losses: row pass, item pass, merge (one block), gradient pass. `out` a device moe_loss_values.
cudaError_t launch_losses(const LossArgs& a, const LossShape& s, const void* logits, const uint8_t* valid,
                          moe_loss_values* out, int32_t* out_counts, float* out_scores, uint8_t* out_map,
                          float* grad, char* workspace, int sm_count, cudaStream_t stream);
// Token dropping of idx [T, k] (validated into call_bad first) with capacity `cap` (< T: dropping).
cudaError_t launch_drop_tokens(const int32_t* idx, const float* w, int64_t tokens, int k, int experts, int64_t cap,
                               int policy, bool pad, uint8_t* out_map, float* out_probs, uint8_t* out_kept,
                               int32_t* out_kept_counts, unsigned long long* out_dropped, char* workspace,
                               const unsigned long long* call_bad, int sm_count, cudaStream_t stream);

}  // namespace moe

#endif  // MOE_TRAINING_CUH_
