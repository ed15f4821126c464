// SPDX-License-Identifier: Apache-2.0
// C ABI entry points of spec section 6 (valid tokens, counts, losses, token dropping): argument checks,
// all before any output is written, then the CPU implementation (any router: CUDA ones run them here) in
// the default floating-point environment (moe_cpu_fpenv.h: the caller's FTZ/DAZ changes no bit).
// org.moerouter.MoeRouter, LossConfig and TokenDropping check the same rules with the same texts.
#include <math.h>

#include "moe_cpu_fpenv.h"
#include "moe_internal.h"

using namespace moe;

namespace {

int check_router_call(const moe_router* r, int dtype, int64_t tokens) {
  if (!r) return fail(MOE_ERR_INVALID_ARGUMENT, "router is null (closed?)");
  if (!valid_dtype(dtype)) return fail(MOE_ERR_INVALID_ARGUMENT, "unknown dtype %d", dtype);
  if (tokens < 0) return fail(MOE_ERR_INVALID_ARGUMENT, "tokens must be >= 0, got %lld", (long long)tokens);
  return MOE_OK;
}

int check_coeff(const char* loss, float c) {
  if (!(c >= 0.0f) || !is_finite(c))
    return fail(MOE_ERR_INVALID_ARGUMENT, "%s coefficient must be finite and >= 0, got %g", loss, (double)c);
  return MOE_OK;
}

// read_global: G is host memory (the host call, CPU routers); a CUDA router's G is device memory.
int check_loss_config(const moe_loss_config& c, int experts, int64_t tokens, bool read_global = true) {
  int st;
  if ((st = check_coeff("aux loss", c.aux_coeff)) != MOE_OK) return st;
  if ((st = check_coeff("seq aux loss", c.seq_aux_coeff)) != MOE_OK) return st;
  if ((st = check_coeff("global aux loss", c.global_aux_coeff)) != MOE_OK) return st;
  if ((st = check_coeff("z-loss", c.z_coeff)) != MOE_OK) return st;
  if (c.seq_aux_coeff > 0.0f) {
    if (c.seq_length < 1)
      return fail(MOE_ERR_INVALID_ARGUMENT, "seq aux loss needs a seq length >= 1, got %lld", (long long)c.seq_length);
    if (c.seq_layout != MOE_SEQ_SB && c.seq_layout != MOE_SEQ_BS)
      return fail(MOE_ERR_INVALID_ARGUMENT, "unknown seq layout %d", c.seq_layout);
    if (tokens % c.seq_length != 0)
      return fail(MOE_ERR_INVALID_ARGUMENT,
                  "seq aux loss: tokens (%lld) must be a multiple of the seq length (%lld): tokens = seq length * batch",
                  (long long)tokens, (long long)c.seq_length);
  }
  if (c.global_aux_coeff > 0.0f) {
    if (!c.global_tokens)
      return fail(MOE_ERR_INVALID_ARGUMENT, "global aux loss needs the global tokens per expert (G [experts])");
    for (int i = 0; read_global && i < experts; ++i)
      if (!(c.global_tokens[i] >= 0.0) || !isfinite(c.global_tokens[i]))
        return fail(MOE_ERR_INVALID_ARGUMENT, "global tokens per expert[%d] must be finite and >= 0, got %g", i,
                    c.global_tokens[i]);
    if (!(c.global_num_tokens >= 0.0) || !isfinite(c.global_num_tokens))
      return fail(MOE_ERR_INVALID_ARGUMENT, "global num tokens must be finite and >= 0, got %g", c.global_num_tokens);
  }
  return MOE_OK;
}

int check_drop_args(const moe_router* r, const int32_t* idx, const float* w, int64_t tokens, double capacity_factor,
                    int policy, const float* out_probs) {
  int st = check_router_call(r, MOE_DTYPE_F32, tokens);
  if (st != MOE_OK) return st;
  if (!(capacity_factor > 0.0) || !isfinite(capacity_factor))
    return fail(MOE_ERR_INVALID_ARGUMENT, "capacity factor must be finite and > 0, got %g", capacity_factor);
  if (policy != MOE_DROP_PROBS && policy != MOE_DROP_POSITION)
    return fail(MOE_ERR_INVALID_ARGUMENT, "unknown drop policy %d", policy);
  if (tokens > 0 && !idx) return fail(MOE_ERR_INVALID_ARGUMENT, "drop tokens: idx must not be null");
  if (tokens > 0 && !w && (policy == MOE_DROP_PROBS || out_probs))
    return fail(MOE_ERR_INVALID_ARGUMENT, "drop tokens: the weights are needed (probs policy or out_probs)");
  return MOE_OK;
}

// A device call's workspace: at least `need` bytes, 16-byte aligned.
int check_workspace(const char* op, const void* ws, int64_t bytes, int64_t need) {
  if (need > 0 && !ws) return fail(MOE_ERR_INVALID_ARGUMENT, "%s: workspace must not be null (%lld bytes needed)", op,
                                   (long long)need);
  if (bytes < need)
    return fail(MOE_ERR_INVALID_ARGUMENT, "%s: workspace of %lld bytes is too small: %lld bytes needed", op,
                (long long)bytes, (long long)need);
  if (((uintptr_t)ws & 15u) != 0)
    return fail(MOE_ERR_INVALID_ARGUMENT, "%s: workspace must be 16-byte aligned", op);
  return MOE_OK;
}

bool is_cuda(const moe_router* r) { return r && r->backend == MOE_BACKEND_CUDA; }

}  // namespace

extern "C" {

int moe_valid_tokens_host(moe_router* r, const void* logits, int dtype, int64_t tokens, const uint8_t* padding_mask,
                          uint8_t* out_valid, int64_t* out_count) {
  int st = check_router_call(r, dtype, tokens);
  if (st != MOE_OK) return st;
  if (tokens > 0 && !out_valid) return fail(MOE_ERR_INVALID_ARGUMENT, "valid tokens: out_valid must not be null");
  if (tokens > 0 && !logits && r->config.nonfinite == MOE_NONFINITE_ZERO)
    return fail(MOE_ERR_INVALID_ARGUMENT,
                "valid tokens: non-finite policy ZERO reads the logits (a row with a non-finite logit is not valid)");
  FpEnvGuard fp;  // DAZ would read a subnormal logit as 0: still finite, but keep every entry point alike
  return cpu_valid_tokens(r, logits, dtype, tokens, padding_mask, out_valid, out_count);
}

int moe_tokens_per_expert_valid(const int32_t* idx, const uint8_t* valid, int64_t tokens, int k, int experts,
                                int32_t* counts) {
  if (tokens < 0 || k < 1 || experts < 1 || !counts || (tokens > 0 && !idx))
    return fail(MOE_ERR_INVALID_ARGUMENT, "tokens_per_expert: bad arguments (tokens=%lld, k=%d, experts=%d)",
                (long long)tokens, k, experts);
  for (int64_t i = 0; i < tokens * k; ++i)
    if (idx[i] < 0 || idx[i] >= experts)
      return fail(MOE_ERR_INVALID_REPLAY, "row %lld: expert %d out of range [0, %d)", (long long)(i / k), idx[i],
                  experts);
  return cpu_tokens_per_expert(idx, nullptr, valid, tokens, k, experts, counts);
}

int moe_map_tokens_per_expert(const uint8_t* map, const uint8_t* valid, int64_t tokens, int experts,
                              int32_t* counts) {
  if (tokens < 0 || experts < 1 || experts > MOE_MAX_EXPERTS || !counts || (tokens > 0 && !map))
    return fail(MOE_ERR_INVALID_ARGUMENT, "map tokens_per_expert: bad arguments (tokens=%lld, experts=%d)",
                (long long)tokens, experts);
  return cpu_tokens_per_expert(nullptr, map, valid, tokens, 0, experts, counts);
}

int moe_losses_host(moe_router* r, const void* logits, int dtype, int64_t tokens, const uint8_t* valid,
                    const moe_loss_config* config, moe_loss_values* out, int32_t* out_aux_counts,
                    float* out_aux_scores, uint8_t* out_aux_map, float* grad_logits) {
  int st = check_router_call(r, dtype, tokens);
  if (st != MOE_OK) return st;
  if (!config || !out) return fail(MOE_ERR_INVALID_ARGUMENT, "losses: config and out must not be null");
  if (tokens > 0 && !logits) return fail(MOE_ERR_INVALID_ARGUMENT, "logits must not be null");
  if ((st = check_loss_config(*config, r->config.num_experts, tokens)) != MOE_OK) return st;
  FpEnvGuard fp;
  return cpu_losses(r, logits, dtype, tokens, valid, *config, out, out_aux_counts, out_aux_scores, out_aux_map,
                    grad_logits);
}

int moe_drop_tokens_host(moe_router* r, const int32_t* idx, const float* w, int64_t tokens, double capacity_factor,
                         int policy, int pad_to_capacity, uint8_t* out_map, float* out_probs, uint8_t* out_kept,
                         int32_t* out_kept_counts, int64_t* out_dropped) {
  int st = check_drop_args(r, idx, w, tokens, capacity_factor, policy, out_probs);
  if (st != MOE_OK) return st;
  const int k = r->config.top_k, E = r->config.num_experts;
  int reason = 0;
  int64_t bad = first_bad_row(idx, nullptr, tokens, k, E, &reason, false);
  if (bad >= 0) return replay_error(bad, reason, idx, k, E);
  FpEnvGuard fp;  // under DAZ a subnormal weight would rank as 0
  return cpu_drop_tokens(r, idx, w, tokens, capacity_factor, policy, pad_to_capacity, out_map, out_probs, out_kept,
                         out_kept_counts, out_dropped);
}

// ------------------------------------------------- device-pointer forms (CPU routers: the host calls)

int moe_valid_tokens(moe_router* r, const void* logits, int dtype, int64_t tokens, const uint8_t* padding_mask,
                     uint8_t* out_valid, int64_t* out_count, void* stream) {
  if (!is_cuda(r)) return moe_valid_tokens_host(r, logits, dtype, tokens, padding_mask, out_valid, out_count);
  int st = check_router_call(r, dtype, tokens);
  if (st != MOE_OK) return st;
  if (tokens > 0 && !out_valid) return fail(MOE_ERR_INVALID_ARGUMENT, "valid tokens: out_valid must not be null");
  if (tokens > 0 && !logits && r->config.nonfinite == MOE_NONFINITE_ZERO)
    return fail(MOE_ERR_INVALID_ARGUMENT,
                "valid tokens: non-finite policy ZERO reads the logits (a row with a non-finite logit is not valid)");
  return cuda_valid_tokens(r, logits, dtype, tokens, padding_mask, out_valid, out_count, stream);
}

int moe_tokens_per_expert_device(moe_router* r, const int32_t* idx, const uint8_t* valid, int64_t tokens,
                                 int32_t* counts, void* stream) {
  if (!r) return fail(MOE_ERR_INVALID_ARGUMENT, "router is null (closed?)");
  if (!is_cuda(r))
    return moe_tokens_per_expert_valid(idx, valid, tokens, r->config.top_k, r->config.num_experts, counts);
  if (tokens < 0 || !counts || (tokens > 0 && !idx))
    return fail(MOE_ERR_INVALID_ARGUMENT, "tokens_per_expert: bad arguments (tokens=%lld, k=%d, experts=%d)",
                (long long)tokens, r->config.top_k, r->config.num_experts);
  return cuda_tokens_per_expert(r, idx, nullptr, valid, tokens, counts, stream);
}

int moe_map_tokens_per_expert_device(moe_router* r, const uint8_t* map, const uint8_t* valid, int64_t tokens,
                                     int32_t* counts, void* stream) {
  if (!r) return fail(MOE_ERR_INVALID_ARGUMENT, "router is null (closed?)");
  if (!is_cuda(r)) return moe_map_tokens_per_expert(map, valid, tokens, r->config.num_experts, counts);
  if (tokens < 0 || !counts || (tokens > 0 && !map))
    return fail(MOE_ERR_INVALID_ARGUMENT, "map tokens_per_expert: bad arguments (tokens=%lld, experts=%d)",
                (long long)tokens, r->config.num_experts);
  return cuda_tokens_per_expert(r, nullptr, map, valid, tokens, counts, stream);
}

int moe_losses_workspace_size(moe_router* r, int64_t tokens, const moe_loss_config* config, int aux_outputs,
                              int64_t* out_bytes) {
  int st = check_router_call(r, MOE_DTYPE_F32, tokens);
  if (st != MOE_OK) return st;
  if (!config || !out_bytes) return fail(MOE_ERR_INVALID_ARGUMENT, "losses workspace: config and out must not be null");
  if ((st = check_loss_config(*config, r->config.num_experts, tokens, false)) != MOE_OK) return st;
  *out_bytes = is_cuda(r) ? cuda_losses_workspace(*config, tokens, r->config.num_experts, aux_outputs != 0) : 0;
  return MOE_OK;
}

int moe_losses(moe_router* r, const void* logits, int dtype, int64_t tokens, const uint8_t* valid,
               const moe_loss_config* config, moe_loss_values* out, int32_t* out_aux_counts, float* out_aux_scores,
               uint8_t* out_aux_map, float* grad_logits, void* workspace, int64_t workspace_bytes, void* stream) {
  if (!is_cuda(r))
    return moe_losses_host(r, logits, dtype, tokens, valid, config, out, out_aux_counts, out_aux_scores, out_aux_map,
                           grad_logits);
  int st = check_router_call(r, dtype, tokens);
  if (st != MOE_OK) return st;
  if (!config || !out) return fail(MOE_ERR_INVALID_ARGUMENT, "losses: config and out must not be null");
  if (tokens > 0 && !logits) return fail(MOE_ERR_INVALID_ARGUMENT, "logits must not be null");
  if ((st = check_loss_config(*config, r->config.num_experts, tokens, false)) != MOE_OK) return st;
  const bool aux_outputs = out_aux_counts || out_aux_scores || out_aux_map;
  const int64_t need = cuda_losses_workspace(*config, tokens, r->config.num_experts, aux_outputs);
  if ((st = check_workspace("losses", workspace, workspace_bytes, need)) != MOE_OK) return st;
  return cuda_losses(r, logits, dtype, tokens, valid, *config, out, out_aux_counts, out_aux_scores, out_aux_map,
                     grad_logits, workspace, stream);
}

int moe_drop_tokens_workspace_size(moe_router* r, int64_t tokens, int policy, int64_t* out_bytes) {
  int st = check_router_call(r, MOE_DTYPE_F32, tokens);
  if (st != MOE_OK) return st;
  if (policy != MOE_DROP_PROBS && policy != MOE_DROP_POSITION)
    return fail(MOE_ERR_INVALID_ARGUMENT, "unknown drop policy %d", policy);
  if (!out_bytes) return fail(MOE_ERR_INVALID_ARGUMENT, "drop tokens workspace: out must not be null");
  *out_bytes = is_cuda(r) ? cuda_drop_workspace(tokens, r->config.top_k, r->config.num_experts, policy) : 0;
  return MOE_OK;
}

int moe_drop_tokens(moe_router* r, const int32_t* idx, const float* w, int64_t tokens, double capacity_factor,
                    int policy, int pad_to_capacity, uint8_t* out_map, float* out_probs, uint8_t* out_kept,
                    int32_t* out_kept_counts, int64_t* out_dropped, void* workspace, int64_t workspace_bytes,
                    void* stream) {
  if (!is_cuda(r))
    return moe_drop_tokens_host(r, idx, w, tokens, capacity_factor, policy, pad_to_capacity, out_map, out_probs,
                                out_kept, out_kept_counts, out_dropped);
  int st = check_drop_args(r, idx, w, tokens, capacity_factor, policy, out_probs);
  if (st != MOE_OK) return st;
  const int k = r->config.top_k, E = r->config.num_experts;
  if ((st = check_workspace("drop tokens", workspace, workspace_bytes, cuda_drop_workspace(tokens, k, E, policy))) !=
      MOE_OK)
    return st;
  return cuda_drop_tokens(r, idx, w, tokens, drop_capacity(tokens, k, E, capacity_factor), policy, pad_to_capacity,
                          out_map, out_probs, out_kept, out_kept_counts, out_dropped, workspace, stream);
}

}  // extern "C"
