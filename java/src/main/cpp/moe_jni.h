// SPDX-License-Identifier: Apache-2.0
// Scalar-only wrappers over the C ABI for the JavaCPP binding: handles travel as jlong and
// results come back as "value >= 0, or -status", so hot calls need no out-parameters.
#ifndef MOE_JNI_H_
#define MOE_JNI_H_

#include <stdint.h>
#include <string.h>
#include "moe_floor.h"
#include "moe_router.h"
#if defined(__x86_64__)
#include <xmmintrin.h>
#endif

static inline moe_router_config moe_jni_config(int experts, int top_k, int score_fn, int pre_softmax, int groups,
                                                int group_topk, float scale, const float* bias, int normalize,
                                                int group_score, int nonfinite, int minus_one_rows) {
  moe_router_config c;
  c.num_experts = experts;
  c.top_k = top_k;
  c.score_fn = score_fn;
  c.pre_softmax = pre_softmax;
  c.num_groups = groups;
  c.group_topk = group_topk;
  c.scale = scale;
  c.expert_bias = bias;
  c.normalize = normalize;
  c.group_score = group_score;
  c.nonfinite = nonfinite;
  c.minus_one_rows = minus_one_rows;
  return c;
}

static inline int64_t moe_jni_router_create(int backend, int device, int experts, int top_k, int score_fn,
                                            int pre_softmax, int groups, int group_topk, float scale,
                                            const float* bias, int normalize, int group_score, int nonfinite,
                                            int minus_one_rows) {
  moe_router_config c = moe_jni_config(experts, top_k, score_fn, pre_softmax, groups, group_topk, scale, bias,
                                       normalize, group_score, nonfinite, minus_one_rows);
  moe_router* r = 0;
  int st = moe_router_create(&c, backend, device, &r);
  return st == MOE_OK ? (int64_t)(intptr_t)r : -(int64_t)st;
}

// moe_config_validate over the same scalars (tests compare its messages with RouterConfig's).
static inline int moe_jni_config_validate(int experts, int top_k, int score_fn, int pre_softmax, int groups,
                                          int group_topk, float scale, const float* bias, int normalize,
                                          int group_score, int nonfinite, int minus_one_rows) {
  moe_router_config c = moe_jni_config(experts, top_k, score_fn, pre_softmax, groups, group_topk, scale, bias,
                                       normalize, group_score, nonfinite, minus_one_rows);
  return moe_config_validate(&c);
}

static inline int moe_jni_router_destroy(int64_t h) { return moe_router_destroy((moe_router*)(intptr_t)h); }

static inline int moe_jni_router_set_bias(int64_t h, const float* bias) {
  return moe_router_set_bias((moe_router*)(intptr_t)h, bias);
}

static inline int moe_jni_router_set_threads(int64_t h, int threads) {
  return moe_router_set_threads((moe_router*)(intptr_t)h, threads);
}

// Host memory on any backend (CUDA stages through device buffers). Returns non-finite rows or -status.
static inline int64_t moe_jni_route_host(int64_t h, const void* logits, int dtype, int64_t tokens,
                                         const int32_t* replay_idx, const uint8_t* replay_mask, int32_t* out_idx,
                                         float* out_w, uint8_t* out_flags) {
  int64_t nonfinite = 0;
  int st = moe_route_host((moe_router*)(intptr_t)h, logits, dtype, tokens, replay_idx, replay_mask, out_idx, out_w,
                          out_flags, &nonfinite);
  return st == MOE_OK ? nonfinite : -(int64_t)st;
}

// Device memory (CUDA router): asynchronous on `stream`; d_flags (device uint8 [tokens]) and d_nonfinite
// (device int64) are optional.
static inline int moe_jni_route_device(int64_t h, const void* logits, int dtype, int64_t tokens,
                                       const int32_t* replay_idx, const uint8_t* replay_mask, int32_t* out_idx,
                                       float* out_w, uint8_t* d_flags, int64_t* d_nonfinite, void* stream) {
  return moe_route((moe_router*)(intptr_t)h, logits, dtype, tokens, replay_idx, replay_mask, out_idx, out_w, d_flags,
                   d_nonfinite, stream);
}

static inline int moe_jni_backward_host(int64_t h, const void* logits, int dtype, int64_t tokens, const int32_t* idx,
                                        const float* grad_w, const uint8_t* flags, float* grad_logits) {
  return moe_route_backward_host((moe_router*)(intptr_t)h, logits, dtype, tokens, idx, grad_w, flags, grad_logits);
}

static inline int moe_jni_backward_device(int64_t h, const void* logits, int dtype, int64_t tokens,
                                          const int32_t* idx, const float* grad_w, const uint8_t* d_flags,
                                          float* grad_logits, void* stream) {
  return moe_route_backward((moe_router*)(intptr_t)h, logits, dtype, tokens, idx, grad_w, d_flags, grad_logits,
                            stream);
}

// Returns -1 when no replay was rejected, else bad_row * 4 + reason (reason < 4), or < -1 as -status - 1.
static inline int64_t moe_jni_check_replay(int64_t h) {
  int64_t row = -1;
  int reason = 0;
  int st = moe_router_check_replay((moe_router*)(intptr_t)h, &row, &reason);
  if (st == MOE_OK) return -1;
  if (st == MOE_ERR_INVALID_REPLAY) return row * 4 + reason;
  return -(int64_t)st - 1;
}
// The address JavaCPP computed for a direct-buffer argument (GetDirectBufferAddress + position).
static inline int64_t moe_jni_address(const void* p) { return (int64_t)(intptr_t)p; }

// memcpy between a pinned Java array and a raw host address (the Java backend's address overloads).
static inline void moe_jni_copy(void* dst, const void* src, int64_t bytes) { memcpy(dst, src, (size_t)bytes); }

// Device memory and streams (tests of the device-pointer calls): pointer/handle >= 0, or -status.
static inline int64_t moe_jni_cuda_malloc(int device, int64_t bytes) {
  void* p = 0;
  int st = moe_cuda_malloc(device, bytes, &p);
  return st == MOE_OK ? (int64_t)(intptr_t)p : -(int64_t)st;
}
static inline int moe_jni_cuda_free(int64_t p) { return moe_cuda_free((void*)(intptr_t)p); }
static inline int moe_jni_cuda_upload(int64_t dst, const void* src, int64_t bytes) {
  return moe_cuda_memcpy((void*)(intptr_t)dst, src, bytes);
}
static inline int moe_jni_cuda_download(void* dst, int64_t src, int64_t bytes) {
  return moe_cuda_memcpy(dst, (const void*)(intptr_t)src, bytes);
}
static inline int64_t moe_jni_cuda_stream_create(int device) {
  void* s = 0;
  int st = moe_cuda_stream_create(device, &s);
  return st == MOE_OK ? (int64_t)(intptr_t)s : -(int64_t)st;
}
static inline int moe_jni_cuda_stream_destroy(int64_t s) { return moe_cuda_stream_destroy((void*)(intptr_t)s); }
static inline int moe_jni_cuda_stream_synchronize(int64_t s) { return moe_cuda_stream_synchronize((void*)(intptr_t)s); }

// Test hook (FpEnvTest): a host route or backward called from a thread whose MXCSR has FTZ (mode bit 1)
// and/or DAZ (bit 2) set, as a thread of a fast-math process would be; the caller's MXCSR is restored
// before returning to the JVM. `backward` != 0: moe_route_backward_host with `replay_idx` the indices,
// `out_w` the weight gradients and `out_grad` the logit gradients. Returns what the call returned, or
// -MOE_ERR_UNSUPPORTED off x86-64.
static inline int64_t moe_jni_test_fpenv_call(int64_t h, int mode, int backward, const void* logits, int dtype,
                                              int64_t tokens, const int32_t* replay_idx, int32_t* out_idx,
                                              float* out_w, uint8_t* out_flags, float* out_grad) {
#if defined(__x86_64__)
  const unsigned saved = _mm_getcsr();
  const unsigned set = saved | ((mode & 1) ? 0x8000u : 0u) | ((mode & 2) ? 0x0040u : 0u);
  _mm_setcsr(set);
  int64_t r;
  if (backward) {
    r = -(int64_t)moe_route_backward_host((moe_router*)(intptr_t)h, logits, dtype, tokens, replay_idx, out_w,
                                          out_flags, out_grad);
  } else {
    int64_t nonfinite = 0;
    int st = moe_route_host((moe_router*)(intptr_t)h, logits, dtype, tokens, replay_idx, 0, out_idx, out_w, out_flags,
                            &nonfinite);
    r = st == MOE_OK ? nonfinite : -(int64_t)st;
  }
  const unsigned seen = _mm_getcsr();
  _mm_setcsr(saved);
  // The library must hand back the caller's control bits as it found them (status flags may change).
  if ((seen & ~0x3fu) != (set & ~0x3fu)) return -(int64_t)MOE_ERR_INTERNAL;
  return r;
#else
  (void)h; (void)mode; (void)backward; (void)logits; (void)dtype; (void)tokens; (void)replay_idx; (void)out_idx;
  (void)out_w; (void)out_flags; (void)out_grad;
  return -(int64_t)MOE_ERR_UNSUPPORTED;
#endif
}

// Test hook (CpuIsaLevelsTest): caps the CPU kernels' instruction set (0 scalar, 1 AVX2, 2 AVX-512; -1 no cap:
// what the CPU has, capped by MOE_ROUTER_CPU_ISA) for the whole process; returns the level now in use.
namespace moe {
int cpu_set_isa_cap(int cap);
}
static inline int moe_jni_test_cpu_isa(int cap) { return moe::cpu_set_isa_cap(cap); }

// Memory floors of the benchmarks (CpuGoalsBenchmark): native/include/moe_floor.h, the loops cpu_bench times too.
static inline int64_t moe_jni_floor_stream(const void* in, int64_t bytes, int32_t* out_idx, float* out_w,
                                           int64_t outs) {
  return moe_floor_stream(in, bytes, out_idx, out_w, outs);
}

static inline int64_t moe_jni_floor_gather(const float* logits, int64_t tokens, int experts, const int32_t* idx, int k,
                                           int32_t* out_idx, float* out_w) {
  return moe_floor_gather(logits, tokens, experts, idx, k, out_idx, out_w);
}

// Does nothing: measures the bare cost of a JNI call into this library.
static inline int moe_jni_noop(void) { return 0; }

static inline int moe_jni_routing_agreement(const int32_t* a, const int32_t* b, int64_t rows, int k, int64_t stride,
                                            int experts, int64_t* out2, uint8_t* row_differs) {
  return moe_routing_agreement(a, b, rows, k, stride, experts, &out2[0], &out2[1], row_differs);
}
// Spec section 6. Valid rows: N >= 0, or -status.
static inline int64_t moe_jni_valid_tokens(int64_t h, const void* logits, int dtype, int64_t tokens,
                                           const uint8_t* padding, uint8_t* out_valid) {
  int64_t n = 0;
  int st = moe_valid_tokens_host((moe_router*)(intptr_t)h, logits, dtype, tokens, padding, out_valid, &n);
  return st == MOE_OK ? n : -(int64_t)st;
}

static inline void moe_jni_loss_config(moe_loss_config* c, float aux, float seq_aux, float global_aux, float z,
                                       int64_t seq_length, int seq_layout, const double* global_tokens,
                                       double global_num_tokens) {
  memset(c, 0, sizeof *c);
  c->aux_coeff = aux;
  c->seq_aux_coeff = seq_aux;
  c->global_aux_coeff = global_aux;
  c->z_coeff = z;
  c->seq_length = seq_length;
  c->seq_layout = seq_layout;
  c->global_tokens = global_tokens;
  c->global_num_tokens = global_num_tokens;
}

// out_values [5]: aux, seq aux, global aux, z, N (exact in a double).
static inline int moe_jni_losses(int64_t h, const void* logits, int dtype, int64_t tokens, const uint8_t* valid,
                                 float aux, float seq_aux, float global_aux, float z, int64_t seq_length,
                                 int seq_layout, const double* global_tokens, double global_num_tokens,
                                 double* out_values, int32_t* out_counts, float* out_scores, uint8_t* out_map,
                                 float* grad) {
  moe_loss_config c;
  moe_jni_loss_config(&c, aux, seq_aux, global_aux, z, seq_length, seq_layout, global_tokens, global_num_tokens);
  moe_loss_values v;
  int st = moe_losses_host((moe_router*)(intptr_t)h, logits, dtype, tokens, valid, &c, &v, out_counts, out_scores,
                           out_map, grad);
  if (st != MOE_OK) return st;
  out_values[0] = v.aux_loss;
  out_values[1] = v.seq_aux_loss;
  out_values[2] = v.global_aux_loss;
  out_values[3] = v.z_loss;
  out_values[4] = (double)v.valid_tokens;
  return MOE_OK;
}

// Dropped entries >= 0, or -status.
static inline int64_t moe_jni_drop_tokens(int64_t h, const int32_t* idx, const float* w, int64_t tokens,
                                          double capacity_factor, int policy, int pad, uint8_t* out_map,
                                          float* out_probs, uint8_t* out_kept, int32_t* out_kept_counts) {
  int64_t dropped = 0;
  int st = moe_drop_tokens_host((moe_router*)(intptr_t)h, idx, w, tokens, capacity_factor, policy, pad, out_map,
                                out_probs, out_kept, out_kept_counts, &dropped);
  return st == MOE_OK ? dropped : -(int64_t)st;
}

// Spec section 6 on device pointers (CUDA routers; CPU routers run the host calls on these addresses).
static inline int moe_jni_valid_tokens_device(int64_t h, const void* logits, int dtype, int64_t tokens,
                                              const uint8_t* padding, uint8_t* out_valid, int64_t* out_count,
                                              void* stream) {
  return moe_valid_tokens((moe_router*)(intptr_t)h, logits, dtype, tokens, padding, out_valid, out_count, stream);
}

// map == 0: counts of idx [tokens, k]; else column sums of map [tokens, E].
static inline int moe_jni_tokens_per_expert_device(int64_t h, const int32_t* idx, const uint8_t* map,
                                                   const uint8_t* valid, int64_t tokens, int32_t* counts,
                                                   void* stream) {
  moe_router* r = (moe_router*)(intptr_t)h;
  return map ? moe_map_tokens_per_expert_device(r, map, valid, tokens, counts, stream)
             : moe_tokens_per_expert_device(r, idx, valid, tokens, counts, stream);
}

// Workspace bytes >= 0, or -status. kind 0: losses (aux_outputs != 0 with the aux outputs); kind 1: dropping.
static inline int64_t moe_jni_workspace_bytes(int64_t h, int kind, int64_t tokens, float aux, float seq_aux,
                                              float global_aux, float z, int64_t seq_length, int seq_layout,
                                              int aux_outputs, int policy) {
  int64_t bytes = 0;
  int st;
  if (kind == 0) {
    moe_loss_config c;
    moe_jni_loss_config(&c, aux, seq_aux, global_aux, z, seq_length, seq_layout, 0, 0.0);
    st = moe_losses_workspace_size((moe_router*)(intptr_t)h, tokens, &c, aux_outputs, &bytes);
  } else {
    st = moe_drop_tokens_workspace_size((moe_router*)(intptr_t)h, tokens, policy, &bytes);
  }
  return st == MOE_OK ? bytes : -(int64_t)st;
}

// out_values: a device moe_loss_values (aux, seq aux, global aux, z as doubles, then N as an int64).
static inline int moe_jni_losses_device(int64_t h, const void* logits, int dtype, int64_t tokens, const uint8_t* valid,
                                        float aux, float seq_aux, float global_aux, float z, int64_t seq_length,
                                        int seq_layout, const double* global_tokens, double global_num_tokens,
                                        void* out_values, int32_t* out_counts, float* out_scores, uint8_t* out_map,
                                        float* grad, void* workspace, int64_t workspace_bytes, void* stream) {
  moe_loss_config c;
  moe_jni_loss_config(&c, aux, seq_aux, global_aux, z, seq_length, seq_layout, global_tokens, global_num_tokens);
  return moe_losses((moe_router*)(intptr_t)h, logits, dtype, tokens, valid, &c, (moe_loss_values*)out_values,
                    out_counts, out_scores, out_map, grad, workspace, workspace_bytes, stream);
}

static inline int moe_jni_drop_tokens_device(int64_t h, const int32_t* idx, const float* w, int64_t tokens,
                                             double capacity_factor, int policy, int pad, uint8_t* out_map,
                                             float* out_probs, uint8_t* out_kept, int32_t* out_kept_counts,
                                             int64_t* out_dropped, void* workspace, int64_t workspace_bytes,
                                             void* stream) {
  return moe_drop_tokens((moe_router*)(intptr_t)h, idx, w, tokens, capacity_factor, policy, pad, out_map, out_probs,
                         out_kept, out_kept_counts, out_dropped, workspace, workspace_bytes, stream);
}

// Test hook (FpEnvTest): spec section 6 from a thread with FTZ (mode & 1) and/or DAZ (mode & 2) set. op 0:
// moe_losses_host with the aux loss and the z-loss (coefficients aux, z), values into out_values [5]; op 1:
// moe_drop_tokens_host (probs policy, capacity factor cf). Returns the status as moe_jni_test_fpenv_call does.
static inline int64_t moe_jni_test_fpenv_training(int64_t h, int mode, int op, const float* logits, int64_t tokens,
                                                  float aux, float z, double* out_values, int32_t* out_counts,
                                                  float* grad, const int32_t* idx, const float* w, double cf,
                                                  uint8_t* map, float* probs, uint8_t* kept) {
#if defined(__x86_64__)
  const unsigned saved = _mm_getcsr();
  const unsigned set = saved | ((mode & 1) ? 0x8000u : 0u) | ((mode & 2) ? 0x0040u : 0u);
  _mm_setcsr(set);
  int st;
  if (op == 0) {
    st = moe_jni_losses(h, logits, MOE_DTYPE_F32, tokens, 0, aux, 0.0f, 0.0f, z, 0, 0, 0, 0.0, out_values, out_counts,
                        0, 0, grad);
  } else {
    int64_t dropped = 0;
    st = moe_drop_tokens_host((moe_router*)(intptr_t)h, idx, w, tokens, cf, MOE_DROP_PROBS, 0, map, probs, kept, 0,
                              &dropped);
  }
  const unsigned seen = _mm_getcsr();
  _mm_setcsr(saved);
  if ((seen & ~0x3fu) != (set & ~0x3fu)) return -(int64_t)MOE_ERR_INTERNAL;
  return -(int64_t)st;
#else
  (void)h; (void)mode; (void)op; (void)logits; (void)tokens; (void)aux; (void)z; (void)out_values; (void)out_counts;
  (void)grad; (void)idx; (void)w; (void)cf; (void)map; (void)probs; (void)kept;
  return -(int64_t)MOE_ERR_UNSUPPORTED;
#endif
}
#endif  // MOE_JNI_H_
