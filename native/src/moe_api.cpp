// SPDX-License-Identifier: Apache-2.0
// C ABI entry points: validation, error reporting and dispatch to the CPU or CUDA backend.
#include <stdarg.h>
#include <stdio.h>
#include <chrono>
#include <new>
#include <thread>

#include "moe_cpu_fpenv.h"
#include "moe_internal.h"

namespace moe {

static thread_local char g_error[512] = "";

int fail(int status, const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(g_error, sizeof g_error, fmt, ap);
  va_end(ap);
  return status;
}

void clear_error() { g_error[0] = '\0'; }

Params params_from_config(const moe_router_config& c, const float* bias) {
  Params p;
  p.experts = c.num_experts;
  p.k = c.top_k;
  p.score_fn = c.score_fn;
  p.pre_softmax = c.score_fn == MOE_SCORE_SOFTMAX && c.pre_softmax != 0;
  bool grouped = c.num_groups > 1 && c.group_topk > 0 && c.group_topk < c.num_groups;
  p.groups = grouped ? c.num_groups : 1;
  p.group_topk = grouped ? c.group_topk : 1;
  p.scale = c.scale;
  p.bias = bias;
  p.biased = bias != nullptr;
  p.normalize = c.top_k > 1 && !(c.score_fn == MOE_SCORE_SOFTMAX && !p.pre_softmax) &&
                (c.normalize == MOE_NORMALIZE_DEFAULT ? c.score_fn != MOE_SCORE_SOFTMAX : c.normalize == MOE_NORMALIZE_ON);
  p.group_terms = c.group_score == MOE_GROUP_TOP2_SUM ? 2 : c.group_score == MOE_GROUP_MAX ? 1 : p.k / p.group_topk;
  p.nonfinite = c.nonfinite;
  p.minus_one_rows = c.minus_one_rows;
  return p;
}

Params call_params(const moe_router* r, const BiasRead& hold) {
  Params p = r->params;
  p.bias = hold.data();
  p.biased = p.bias != nullptr;
  return p;
}

// After bias_now moved on: returns once no call can still read the version it replaced. A call that read
// it counted itself before that read, so before the store, on one of the two counters; each counter is
// drained after a flip of the epoch sends new calls to the other, so the wait ends after the calls in
// flight, whatever rate calls arrive at. Usually both are 0 already (no call on this router right now).
static void wait_for_bias_readers(moe_router* r) {
  for (int phase = 0; phase < 2; ++phase) {
    const unsigned drained = r->bias_epoch.fetch_add(1) & 1u;
    for (int spins = 0; r->bias_readers[drained].load() != 0; ++spins) {
      if (spins < 64) std::this_thread::yield();
      else std::this_thread::sleep_for(std::chrono::microseconds(50));  // a long call: do not burn a core on it
    }
  }
}

// A new bias version holding a copy of `values` [experts], or null when out of memory.
static BiasVersion new_bias_version(const float* values, int experts) {
  try {
    return std::make_shared<const std::vector<float>>(values, values + experts);
  } catch (const std::bad_alloc&) {
    return nullptr;
  }
}

const char* group_score_name(int g) {
  return g == MOE_GROUP_TOP2_SUM ? "TOP2_SUM" : g == MOE_GROUP_MAX ? "MAX" : "TOPK_SUM";
}

bool bias_allowed(const moe_router_config& c) {
  return c.score_fn != MOE_SCORE_SOFTMAX || c.pre_softmax != 0;
}

int bias_rejected() {
  return fail(MOE_ERR_INVALID_ARGUMENT, "expert bias with the softmax score function needs pre-softmax (R = P + b)");
}

bool valid_dtype(int dtype) {
  return dtype == MOE_DTYPE_F32 || dtype == MOE_DTYPE_BF16 || dtype == MOE_DTYPE_F16;
}

int64_t first_bad_row(const int32_t* idx, const uint8_t* mask, int64_t tokens, int k, int experts, int* reason,
                      bool minus_one_ok) {
  for (int64_t t = 0; t < tokens; ++t) {
    if (mask && mask[t] == 0) continue;
    if (minus_one_ok && is_minus_one_row(idx + t * k, k)) continue;
    int why = check_replay_row(idx + t * k, k, experts);
    if (why != MOE_REPLAY_OK) {
      *reason = why;
      return t;
    }
  }
  return -1;
}

int nonfinite_error(int64_t row, int expert, float l) {
  const char* what = l != l ? "NaN" : l > 0.0f ? "+inf" : "-inf";
  return fail(MOE_ERR_NONFINITE, "row %lld: the logit of expert %d is %s (non-finite policy ERROR)", (long long)row,
              expert, what);
}

int replay_error(int64_t row, int reason, const int32_t* idx, int k, int experts) {
  const int32_t* r = idx + row * k;
  // Rows of -1 get the rule that applies to them (spec section 4), after the range message.
  const char* why = "";
  if (reason == MOE_REPLAY_OUT_OF_RANGE && r[0] == -1 && is_minus_one_row(r, k))
    why = " (a padding row of -1: rejected by minus-one rows REJECT; LIVE or ARANGE accept it)";
  else if (reason == MOE_REPLAY_OUT_OF_RANGE)
    for (int j = 0; j < k; ++j)
      if (r[j] == -1) why = " (a row mixing -1 and experts is always rejected)";
  for (int j = 0; j < k; ++j) {
    if (reason == MOE_REPLAY_OUT_OF_RANGE && (r[j] < 0 || r[j] >= experts))
      return fail(MOE_ERR_INVALID_REPLAY, "row %lld: expert %d at position %d is out of range [0, %d)%s",
                  (long long)row, r[j], j, experts, why);
    if (reason == MOE_REPLAY_DUPLICATE)
      for (int m = 0; m < j; ++m)
        if (r[m] == r[j])
          return fail(MOE_ERR_INVALID_REPLAY, "row %lld: expert %d appears twice (positions %d and %d)",
                      (long long)row, r[j], m, j);
  }
  return fail(MOE_ERR_INVALID_REPLAY, "row %lld: invalid expert indices", (long long)row);
}

}  // namespace moe

using namespace moe;

extern "C" {

const char* moe_status_string(int status) {
  // Switch on the enum with no default: a new moe_status without a text here is a compiler warning.
  switch (static_cast<moe_status>(status)) {
    case MOE_OK: return "ok";
    case MOE_ERR_INVALID_ARGUMENT: return "invalid argument";
    case MOE_ERR_INVALID_REPLAY: return "invalid replay indices";
    case MOE_ERR_UNSUPPORTED: return "unsupported";
    case MOE_ERR_NO_DEVICE: return "no CUDA device";
    case MOE_ERR_CUDA: return "CUDA error";
    case MOE_ERR_OUT_OF_MEMORY: return "out of memory";
    case MOE_ERR_INTERNAL: return "internal error";
    case MOE_ERR_NONFINITE: return "non-finite logits";
  }
  return "unknown status";
}

const char* moe_last_error_message(void) { return g_error; }

// The rules and messages are mirrored by RouterConfig.Builder.build() (Java), in the same order;
// RouterConfigTest checks that both reject the same configurations with the same text.
int moe_config_validate(const moe_router_config* c) {
  if (!c) return fail(MOE_ERR_INVALID_ARGUMENT, "config is null");
  const int E = c->num_experts, k = c->top_k;
  if (E < 1 || E > MOE_MAX_EXPERTS)
    return fail(MOE_ERR_INVALID_ARGUMENT, "experts must be in [1, %d], got %d", MOE_MAX_EXPERTS, E);
  if (k < 1 || k > MOE_MAX_TOPK)
    return fail(MOE_ERR_INVALID_ARGUMENT, "topK must be in [1, %d], got %d", MOE_MAX_TOPK, k);
  if (k > E) return fail(MOE_ERR_INVALID_ARGUMENT, "topK (%d) exceeds the number of experts (%d)", k, E);
  if (c->score_fn != MOE_SCORE_SOFTMAX && c->score_fn != MOE_SCORE_SIGMOID && c->score_fn != MOE_SCORE_SQRTSOFTPLUS)
    return fail(MOE_ERR_INVALID_ARGUMENT, "unknown score function %d", c->score_fn);
  if (c->pre_softmax && c->score_fn != MOE_SCORE_SOFTMAX)
    return fail(MOE_ERR_INVALID_ARGUMENT, "pre-softmax applies to the softmax score function only");
  if (c->normalize != MOE_NORMALIZE_DEFAULT && c->normalize != MOE_NORMALIZE_ON && c->normalize != MOE_NORMALIZE_OFF)
    return fail(MOE_ERR_INVALID_ARGUMENT, "unknown normalize value %d", c->normalize);
  if (c->normalize == MOE_NORMALIZE_OFF && c->score_fn == MOE_SCORE_SOFTMAX && !c->pre_softmax)
    return fail(MOE_ERR_INVALID_ARGUMENT,
                "normalize=false needs pre-softmax: softmax post is normalised by construction");
  if (c->expert_bias && !bias_allowed(*c)) return bias_rejected();
  if (!(c->scale > 0.0f) || !is_finite(c->scale))
    return fail(MOE_ERR_INVALID_ARGUMENT, "scale must be finite and > 0, got %g", (double)c->scale);
  if (c->group_score != MOE_GROUP_TOPK_SUM && c->group_score != MOE_GROUP_TOP2_SUM && c->group_score != MOE_GROUP_MAX)
    return fail(MOE_ERR_INVALID_ARGUMENT, "unknown group score %d", c->group_score);
  if (c->nonfinite != MOE_NONFINITE_PROPAGATE && c->nonfinite != MOE_NONFINITE_ZERO &&
      c->nonfinite != MOE_NONFINITE_ERROR)
    return fail(MOE_ERR_INVALID_ARGUMENT, "unknown non-finite policy %d", c->nonfinite);
  if (c->minus_one_rows != MOE_MINUS_ONE_REJECT && c->minus_one_rows != MOE_MINUS_ONE_LIVE &&
      c->minus_one_rows != MOE_MINUS_ONE_ARANGE)
    return fail(MOE_ERR_INVALID_ARGUMENT, "unknown minus-one rows policy %d", c->minus_one_rows);
  const int G = c->num_groups, Gk = c->group_topk;
  if (G < 0 || Gk < 0) return fail(MOE_ERR_INVALID_ARGUMENT, "groups (%d) and group topK (%d) must be >= 0", G, Gk);
  if (G > 1 || Gk > 0) {
    if (G < 1 || G > MOE_MAX_GROUPS)
      return fail(MOE_ERR_INVALID_ARGUMENT, "groups must be in [1, %d], got %d", MOE_MAX_GROUPS, G);
    if (E % G != 0) return fail(MOE_ERR_INVALID_ARGUMENT, "experts (%d) not divisible by groups (%d)", E, G);
    if (Gk < 1 || Gk > G)
      return fail(MOE_ERR_INVALID_ARGUMENT, "group topK must be in [1, groups=%d], got %d", G, Gk);
    if (Gk * (E / G) < k)
      return fail(MOE_ERR_INVALID_ARGUMENT,
                  "the %d kept groups of %d experts hold fewer experts than topK (%d)", Gk, E / G, k);
    if (c->group_score == MOE_GROUP_TOPK_SUM && k / Gk < 1)
      return fail(MOE_ERR_INVALID_ARGUMENT,
                  "TOPK_SUM sums the top floor(topK / groupTopK) scores of a group, which is 0 for topK %d and "
                  "groupTopK %d (use TOP2_SUM or MAX)", k, Gk);
    if (c->group_score == MOE_GROUP_TOP2_SUM && E / G < 2)
      return fail(MOE_ERR_INVALID_ARGUMENT, "TOP2_SUM needs at least 2 experts per group, got %d", E / G);
  } else if (c->group_score != MOE_GROUP_TOPK_SUM) {
    return fail(MOE_ERR_INVALID_ARGUMENT, "group score %s applies to group-limited routing only (no groups set)",
                group_score_name(c->group_score));
  }
  if (c->expert_bias)
    for (int i = 0; i < E; ++i)
      if (!is_finite(c->expert_bias[i]))
        return fail(MOE_ERR_INVALID_ARGUMENT, "expert bias[%d] is not finite", i);
  return MOE_OK;
}

int moe_cuda_device_count(void) { return cuda_device_count(); }
int moe_cuda_compiled(void) { return cuda_compiled(); }

int moe_router_create(const moe_router_config* config, int backend, int device, moe_router** out) {
  if (!out) return fail(MOE_ERR_INVALID_ARGUMENT, "out is null");
  *out = nullptr;
  int st = moe_config_validate(config);
  if (st != MOE_OK) return st;
  if (backend != MOE_BACKEND_CPU && backend != MOE_BACKEND_CUDA)
    return fail(MOE_ERR_INVALID_ARGUMENT, "unknown backend %d", backend);
  moe_router* r = new (std::nothrow) moe_router();
  if (!r) return fail(MOE_ERR_OUT_OF_MEMORY, "router allocation failed");
  r->config = *config;
  r->config.expert_bias = nullptr;
  r->backend = backend;
  r->params = params_from_config(r->config, nullptr);
  if (config->expert_bias && !(r->bias = new_bias_version(config->expert_bias, config->num_experts))) {
    moe_router_destroy(r);
    return fail(MOE_ERR_OUT_OF_MEMORY, "router allocation failed (expert bias)");
  }
  if (r->bias) r->bias_now.store(r->bias->data());
  st = backend == MOE_BACKEND_CPU ? cpu_router_init(r) : cuda_router_init(r, device);
  if (st != MOE_OK) {
    moe_router_destroy(r);
    return st;
  }
  *out = r;
  return MOE_OK;
}

int moe_router_destroy(moe_router* r) {
  if (!r) return MOE_OK;
  cpu_router_release(r);
  cuda_router_release(r);
  delete r;
  return MOE_OK;
}

int moe_router_set_bias(moe_router* r, const float* host_bias) {
  if (!r || !host_bias) return fail(MOE_ERR_INVALID_ARGUMENT, "router and bias must not be null");
  if (!bias_allowed(r->config)) return bias_rejected();
  for (int i = 0; i < r->config.num_experts; ++i)
    if (!is_finite(host_bias[i])) return fail(MOE_ERR_INVALID_ARGUMENT, "expert bias[%d] is not finite", i);
  // Calls in flight keep the version they read; calls that start after the store read the new one.
  BiasVersion next = new_bias_version(host_bias, r->config.num_experts);
  if (!next) return fail(MOE_ERR_OUT_OF_MEMORY, "set_bias: allocation of the new bias failed");
  std::lock_guard<std::mutex> setting(r->set_mu);
  if (r->backend == MOE_BACKEND_CUDA) {
    int st = cuda_set_bias(r, next->data());
    if (st != MOE_OK) return st;
  }
  r->bias.swap(next);
  r->bias_now.store(r->bias->data());
  wait_for_bias_readers(r);
  return MOE_OK;  // `next`, the old version, is freed here: no call reads it any more
}

int moe_router_set_threads(moe_router* r, int threads) {
  if (!r) return fail(MOE_ERR_INVALID_ARGUMENT, "router is null");
  if (threads < 0) return fail(MOE_ERR_INVALID_ARGUMENT, "threads must be >= 0, got %d", threads);
  return r->backend == MOE_BACKEND_CPU ? cpu_set_threads(r, threads) : MOE_OK;
}

int moe_set_num_threads(int threads) {
  if (threads < 0) return fail(MOE_ERR_INVALID_ARGUMENT, "threads must be >= 0, got %d", threads);
  return cpu_set_num_threads(threads);
}

int moe_get_num_threads(void) { return cpu_num_threads(); }

static int check_route_args(const moe_router* r, const void* logits, int dtype, int64_t tokens,
                            const int32_t* replay_idx, const uint8_t* replay_mask, const void* out_idx,
                            const void* out_w) {
  if (!r) return fail(MOE_ERR_INVALID_ARGUMENT, "router is null (closed?)");
  if (!valid_dtype(dtype)) return fail(MOE_ERR_INVALID_ARGUMENT, "unknown dtype %d", dtype);
  if (tokens < 0) return fail(MOE_ERR_INVALID_ARGUMENT, "tokens must be >= 0, got %lld", (long long)tokens);
  if (tokens > 0 && (!logits || !out_idx || !out_w))
    return fail(MOE_ERR_INVALID_ARGUMENT, "logits and outputs must not be null");
  if (replay_mask && !replay_idx) return fail(MOE_ERR_INVALID_ARGUMENT, "replay mask given without replay indices");
  return MOE_OK;
}

int moe_route(moe_router* r, const void* logits, int dtype, int64_t tokens, const int32_t* replay_idx,
              const uint8_t* replay_mask, int32_t* out_idx, float* out_w, uint8_t* out_flags, int64_t* out_nonfinite,
              void* stream) {
  int st = check_route_args(r, logits, dtype, tokens, replay_idx, replay_mask, out_idx, out_w);
  if (st != MOE_OK) return st;
  if (r->backend == MOE_BACKEND_CUDA)
    return cuda_route(r, logits, dtype, tokens, replay_idx, replay_mask, out_idx, out_w, out_flags, out_nonfinite,
                      stream);
  return cpu_route(r, logits, dtype, tokens, replay_idx, replay_mask, out_idx, out_w, out_flags, out_nonfinite);
}

int moe_route_host(moe_router* r, const void* logits, int dtype, int64_t tokens, const int32_t* replay_idx,
                   const uint8_t* replay_mask, int32_t* out_idx, float* out_w, uint8_t* out_flags,
                   int64_t* out_nonfinite) {
  int st = check_route_args(r, logits, dtype, tokens, replay_idx, replay_mask, out_idx, out_w);
  if (st != MOE_OK) return st;
  if (r->backend == MOE_BACKEND_CUDA)
    return cuda_route_host(r, logits, dtype, tokens, replay_idx, replay_mask, out_idx, out_w, out_flags,
                           out_nonfinite);
  return cpu_route(r, logits, dtype, tokens, replay_idx, replay_mask, out_idx, out_w, out_flags, out_nonfinite);
}

static int check_backward_args(const moe_router* r, const void* logits, int dtype, int64_t tokens,
                               const int32_t* idx, const float* grad_w, const uint8_t* flags,
                               const float* grad_logits) {
  if (!r) return fail(MOE_ERR_INVALID_ARGUMENT, "router is null (closed?)");
  if (!valid_dtype(dtype)) return fail(MOE_ERR_INVALID_ARGUMENT, "unknown dtype %d", dtype);
  if (tokens < 0) return fail(MOE_ERR_INVALID_ARGUMENT, "tokens must be >= 0, got %lld", (long long)tokens);
  if (tokens > 0 && (!logits || !idx || !grad_w || !grad_logits))
    return fail(MOE_ERR_INVALID_ARGUMENT, "logits, indices and gradients must not be null");
  if (tokens > 0 && !flags && r->params.nonfinite == MOE_NONFINITE_ZERO)
    return fail(MOE_ERR_INVALID_ARGUMENT,
                "non-finite policy ZERO: backward needs the forward's non-finite row flags (a live row read its "
                "whole row, which the indices alone do not tell)");
  return MOE_OK;
}

int moe_route_backward(moe_router* r, const void* logits, int dtype, int64_t tokens, const int32_t* idx,
                       const float* grad_w, const uint8_t* flags, float* grad_logits, void* stream) {
  int st = check_backward_args(r, logits, dtype, tokens, idx, grad_w, flags, grad_logits);
  if (st != MOE_OK) return st;
  if (r->backend == MOE_BACKEND_CUDA)
    return cuda_backward(r, logits, dtype, tokens, idx, grad_w, flags, grad_logits, stream);
  return cpu_backward(r, logits, dtype, tokens, idx, grad_w, flags, grad_logits);
}

int moe_route_backward_host(moe_router* r, const void* logits, int dtype, int64_t tokens, const int32_t* idx,
                            const float* grad_w, const uint8_t* flags, float* grad_logits) {
  int st = check_backward_args(r, logits, dtype, tokens, idx, grad_w, flags, grad_logits);
  if (st != MOE_OK) return st;
  if (r->backend == MOE_BACKEND_CUDA)
    return cuda_backward_host(r, logits, dtype, tokens, idx, grad_w, flags, grad_logits);
  return cpu_backward(r, logits, dtype, tokens, idx, grad_w, flags, grad_logits);
}

int moe_router_check_replay(moe_router* r, int64_t* bad_row, int* reason) {
  if (!r) return fail(MOE_ERR_INVALID_ARGUMENT, "router is null (closed?)");
  if (bad_row) *bad_row = -1;
  if (reason) *reason = MOE_REPLAY_OK;
  return r->backend == MOE_BACKEND_CUDA ? cuda_check_replay(r, bad_row, reason) : MOE_OK;
}

int moe_tokens_per_expert(const int32_t* idx, int64_t tokens, int k, int experts, int32_t* counts) {
  return moe_tokens_per_expert_valid(idx, nullptr, tokens, k, experts, counts);  // every row valid
}

int moe_dense_views(const int32_t* idx, const float* w, int64_t tokens, int k, int experts, uint8_t* map,
                    uint64_t* map_bits, float* probs) {
  if (tokens < 0 || k < 1 || k > MOE_MAX_TOPK || experts < k || experts > MOE_MAX_EXPERTS)
    return fail(MOE_ERR_INVALID_ARGUMENT, "dense_views: bad shape (tokens=%lld, k=%d, experts=%d)", (long long)tokens,
                k, experts);
  if (tokens > 0 && (!idx || (probs && !w)))
    return fail(MOE_ERR_INVALID_ARGUMENT, "dense_views: indices (and weights, for probs) must not be null");
  int reason = 0;
  int64_t bad = first_bad_row(idx, nullptr, tokens, k, experts, &reason, false);
  if (bad >= 0) return replay_error(bad, reason, idx, k, experts);
  return cpu_dense_views(idx, w, tokens, k, experts, map, map_bits, probs);
}

static int check_loss_args(const moe_router* r, const void* logits, int dtype, int64_t tokens, float coeff,
                           const float* out_loss) {
  if (!r) return fail(MOE_ERR_INVALID_ARGUMENT, "router is null (closed?)");
  if (!valid_dtype(dtype)) return fail(MOE_ERR_INVALID_ARGUMENT, "unknown dtype %d", dtype);
  if (tokens < 0) return fail(MOE_ERR_INVALID_ARGUMENT, "tokens must be >= 0, got %lld", (long long)tokens);
  if (tokens > 0 && !logits) return fail(MOE_ERR_INVALID_ARGUMENT, "logits must not be null");
  if (!out_loss) return fail(MOE_ERR_INVALID_ARGUMENT, "out_loss must not be null");
  if (!is_finite(coeff)) return fail(MOE_ERR_INVALID_ARGUMENT, "loss coefficient is not finite");
  return MOE_OK;
}

int moe_aux_loss_host(moe_router* r, const void* logits, int dtype, int64_t tokens, float coeff, float* out_scores,
                      uint8_t* out_topk_map, int32_t* out_counts, float* out_loss, float* grad_logits) {
  int st = check_loss_args(r, logits, dtype, tokens, coeff, out_loss);
  if (st != MOE_OK) return st;
  FpEnvGuard fp;  // CPU results do not depend on the caller's FTZ/DAZ (moe_cpu_fpenv.h)
  return cpu_aux_loss(r, logits, dtype, tokens, coeff, out_scores, out_topk_map, out_counts, out_loss, grad_logits);
}

int moe_z_loss_host(moe_router* r, const void* logits, int dtype, int64_t tokens, float coeff, float* out_loss,
                    float* grad_logits) {
  int st = check_loss_args(r, logits, dtype, tokens, coeff, out_loss);
  if (st != MOE_OK) return st;
  FpEnvGuard fp;
  return cpu_z_loss(r, logits, dtype, tokens, coeff, out_loss, grad_logits);
}

static int agreement_args(const int32_t* a, const int32_t* b, int64_t rows, int k, int64_t row_stride, int experts) {
  if (rows < 0 || k < 1 || k > MOE_MAX_TOPK || experts < 1 || row_stride < k || (rows > 0 && (!a || !b)))
    return fail(MOE_ERR_INVALID_ARGUMENT,
                "routing_agreement: bad arguments (rows=%lld, k=%d, row_stride=%lld, experts=%d)", (long long)rows, k,
                (long long)row_stride, experts);
  return MOE_OK;
}

int moe_routing_agreement(const int32_t* a, const int32_t* b, int64_t rows, int k, int64_t row_stride, int experts,
                          int64_t* out_rows_differ, int64_t* out_overlap_total, uint8_t* row_differs) {
  int st = agreement_args(a, b, rows, k, row_stride, experts);
  if (st != MOE_OK) return st;
  if (!out_rows_differ || !out_overlap_total)
    return fail(MOE_ERR_INVALID_ARGUMENT, "routing_agreement: null output pointer");
  // Validate everything first so a bad row leaves the outputs untouched.
  for (int64_t r = 0; r < rows; ++r) {
    const int32_t* rows_ab[2] = {a + r * row_stride, b + r * row_stride};
    for (int s = 0; s < 2; ++s)
      for (int j = 0; j < k; ++j) {
        int32_t e = rows_ab[s][j];
        if (e < 0 || e >= experts)
          return fail(MOE_ERR_INVALID_REPLAY, "routing_agreement: selection %c row %lld: expert %d out of range [0, %d)",
                      s ? 'b' : 'a', (long long)r, e, experts);
        for (int i = 0; i < j; ++i)
          if (rows_ab[s][i] == e)
            return fail(MOE_ERR_INVALID_REPLAY, "routing_agreement: selection %c row %lld: expert %d appears twice",
                        s ? 'b' : 'a', (long long)r, e);
      }
  }
  int64_t differ = 0, overlap = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const int32_t* ra = a + r * row_stride;
    const int32_t* rb = b + r * row_stride;
    int common = 0;
    for (int i = 0; i < k; ++i)
      for (int j = 0; j < k; ++j) common += ra[i] == rb[j];
    overlap += common;
    differ += common != k;
    if (row_differs) row_differs[r] = (uint8_t)(common != k);
  }
  *out_rows_differ = differ;
  *out_overlap_total = overlap;
  return MOE_OK;
}

int moe_routing_agreement_device(const int32_t* a, const int32_t* b, int64_t rows, int k, int64_t row_stride,
                                 int experts, int64_t* d_out2, uint8_t* d_row_differs, void* stream) {
  int st = agreement_args(a, b, rows, k, row_stride, experts);
  if (st != MOE_OK) return st;
  if (!d_out2) return fail(MOE_ERR_INVALID_ARGUMENT, "routing_agreement_device: null output pointer");
  return cuda_routing_agreement(a, b, rows, k, row_stride, experts, d_out2, d_row_differs, stream);
}

int moe_cuda_malloc(int device, int64_t bytes, void** out) {
  if (!out || bytes < 0) return fail(MOE_ERR_INVALID_ARGUMENT, "cuda_malloc: bad arguments (bytes=%lld)", (long long)bytes);
  *out = nullptr;
  return cuda_malloc(device, bytes, out);
}

int moe_cuda_free(void* ptr) { return ptr ? cuda_free(ptr) : MOE_OK; }

int moe_cuda_memcpy(void* dst, const void* src, int64_t bytes) {
  if (bytes < 0 || (bytes > 0 && (!dst || !src)))
    return fail(MOE_ERR_INVALID_ARGUMENT, "cuda_memcpy: bad arguments (bytes=%lld)", (long long)bytes);
  return bytes == 0 ? MOE_OK : cuda_memcpy(dst, src, bytes);
}

int moe_cuda_stream_create(int device, void** out) {
  if (!out) return fail(MOE_ERR_INVALID_ARGUMENT, "cuda_stream_create: out is null");
  *out = nullptr;
  return cuda_stream_create(device, out);
}

int moe_cuda_stream_destroy(void* stream) { return stream ? cuda_stream_destroy(stream) : MOE_OK; }
int moe_cuda_stream_synchronize(void* stream) { return cuda_stream_synchronize(stream); }

}  // extern "C"
