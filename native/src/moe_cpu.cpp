// Native CPU backend: the per-token math of moe_routing_math.h, multi-threaded over tokens.
#include <algorithm>
#include <atomic>
#include <new>

#include "moe_cpu_pool.h"
#include "moe_internal.h"

namespace moe {
namespace {

// Below this many logits per call the pool's wake-up costs more than it saves.
constexpr int64_t kParallelMinElements = 1 << 15;

template <int DT>
struct RowLoader {
  const void* row;
  MOE_HD float operator()(int i) const {
    if (DT == MOE_DTYPE_F32) return static_cast<const float*>(row)[i];
    if (DT == MOE_DTYPE_BF16) return bf16_to_float(static_cast<const uint16_t*>(row)[i]);
    return f16_to_float(static_cast<const uint16_t*>(row)[i]);
  }
};

size_t dtype_size(int dtype) { return dtype == MOE_DTYPE_F32 ? 4 : 2; }

template <typename Load>
bool row_has_nonfinite(const Load& load, int experts) {
  for (int i = 0; i < experts; ++i)
    if (!is_finite(load(i))) return true;
  return false;
}

// score_key without branches, so the key loops vectorise; equal to score_key for every input.
MOE_HD uint32_t score_key_flat(float r) {
  const uint32_t b = float_to_bits(r + 0.0f);
  const uint32_t key = b ^ ((uint32_t)((int32_t)b >> 31) | 0x80000000u);
  const uint32_t not_nan = 0u - (uint32_t)((b & 0x7fffffffu) <= 0x7f800000u);
  return key & not_nan;
}

MOE_HD uint32_t nonfinite_bit(float l) { return (uint32_t)((float_to_bits(l) & 0x7f800000u) == 0x7f800000u); }

// Plain (ungrouped) live selection, same result as select_row: score keys first (a loop the
// compiler can vectorise), then a scan that skips blocks whose best key cannot enter the top k.
// Scanning in ascending index order, a later expert with an equal score never displaces an
// earlier one, so comparing the 32-bit score key against the k-th is exact.
template <typename Load>
bool select_plain_row(const Params& p, const Load& load, const RowSoftmax& sm, uint32_t* skeys, uint64_t* keys,
                      int32_t* idx) {
  const int E = p.experts, k = p.k;
  uint32_t bad = 0;
  if (p.score_fn == MOE_SCORE_SOFTMAX && !p.pre_softmax) {  // R = L: keys straight from the logits
    for (int i = 0; i < E; ++i) {
      const float l = load(i);
      bad |= nonfinite_bit(l);
      skeys[i] = score_key_flat(l);
    }
  } else {
    for (int i = 0; i < E; ++i) {
      const float l = load(i);
      bad |= nonfinite_bit(l);
      skeys[i] = score_key_flat(routing_score(p, l, i, sm));
    }
  }
  int count = 0;
  for (int i = 0; i < k; ++i) topk_insert(keys, count, k, ((uint64_t)skeys[i] << 32) | (0xffffffffu - (uint32_t)i));
  uint32_t thr = (uint32_t)(keys[k - 1] >> 32);
  int i = k;
  constexpr int kBlock = 16;
  for (; i + kBlock <= E; i += kBlock) {
    uint32_t m = 0;
    for (int j = 0; j < kBlock; ++j) m = skeys[i + j] > m ? skeys[i + j] : m;
    if (m <= thr) continue;
    for (int j = i; j < i + kBlock; ++j)
      if (skeys[j] > thr) {
        topk_insert(keys, count, k, ((uint64_t)skeys[j] << 32) | (0xffffffffu - (uint32_t)j));
        thr = (uint32_t)(keys[k - 1] >> 32);
      }
  }
  for (; i < E; ++i)
    if (skeys[i] > thr) {
      topk_insert(keys, count, k, ((uint64_t)skeys[i] << 32) | (0xffffffffu - (uint32_t)i));
      thr = (uint32_t)(keys[k - 1] >> 32);
    }
  for (int j = 0; j < k; ++j) idx[j] = rank_key_index(keys[j]);
  return bad != 0;
}

struct RouteCtx {
  const Params* p;
  const char* logits;
  size_t row_bytes;
  const int32_t* replay;
  const uint8_t* mask;
  int32_t* out_idx;
  float* out_w;
  std::atomic<int64_t> nonfinite{0};
};

template <int DT>
void route_rows(void* vctx, int64_t t0, int64_t t1) {
  RouteCtx& c = *static_cast<RouteCtx*>(vctx);
  const Params& p = *c.p;
  const int k = p.k;
  float scores[MOE_MAX_EXPERTS];
  uint32_t skeys[MOE_MAX_EXPERTS];
  uint64_t keys[MOE_MAX_TOPK + MOE_MAX_GROUPS];
  float w[MOE_MAX_TOPK];
  int64_t nonfinite = 0;
  for (int64_t t = t0; t < t1; ++t) {
    RowLoader<DT> load{c.logits + t * c.row_bytes};
    int32_t* idx = c.out_idx + t * k;
    const bool replay = c.replay && (!c.mask || c.mask[t] != 0);
    RowSoftmax sm{0.0f, 1.0f};
    if (p.needs_full_row()) sm = row_softmax(load, p.experts);
    bool nf;
    if (replay) {
      const int32_t* src = c.replay + t * k;
      if (src != idx) std::copy(src, src + k, idx);
      nf = p.needs_full_row() && row_has_nonfinite(load, p.experts);
    } else {
      nf = p.grouped() ? select_row(p, load, sm, scores, keys, idx)
                       : select_plain_row(p, load, sm, skeys, keys, idx);
    }
    unscaled_weights(p, load, idx, &sm, w, nf);
    float* out = c.out_w + t * k;
    for (int j = 0; j < k; ++j) out[j] = w[j] * p.scale;
    nonfinite += nf;
  }
  c.nonfinite.fetch_add(nonfinite, std::memory_order_relaxed);
}

struct BackwardCtx {
  const Params* p;
  const char* logits;
  size_t row_bytes;
  const int32_t* idx;
  const float* grad_w;
  float* grad_logits;
};

template <int DT>
void backward_rows(void* vctx, int64_t t0, int64_t t1) {
  BackwardCtx& c = *static_cast<BackwardCtx*>(vctx);
  const Params& p = *c.p;
  float w[MOE_MAX_TOPK];
  for (int64_t t = t0; t < t1; ++t) {
    RowLoader<DT> load{c.logits + t * c.row_bytes};
    const int32_t* idx = c.idx + t * p.k;
    RowSoftmax sm{0.0f, 1.0f};
    if (p.needs_full_row()) sm = row_softmax(load, p.experts);
    bool nf = false;
    unscaled_weights(p, load, idx, &sm, w, nf);
    backward_row(p, load, idx, w, sm, c.grad_w + t * p.k, c.grad_logits + t * p.experts);
  }
}

struct ValidateCtx {
  const int32_t* idx;
  const uint8_t* mask;
  int k, experts;
  std::atomic<int64_t> first_bad;
};

void validate_rows(void* vctx, int64_t t0, int64_t t1) {
  ValidateCtx& c = *static_cast<ValidateCtx*>(vctx);
  int reason;
  int64_t bad = first_bad_row(c.idx + t0 * c.k, c.mask ? c.mask + t0 : nullptr, t1 - t0, c.k, c.experts, &reason);
  if (bad < 0) return;
  bad += t0;
  int64_t cur = c.first_bad.load(std::memory_order_relaxed);
  while (bad < cur && !c.first_bad.compare_exchange_weak(cur, bad, std::memory_order_relaxed)) {
  }
}

// Rejects the first invalid row (masked-out rows are not checked) with a detailed error.
int validate_indices(moe_router* r, const int32_t* idx, const uint8_t* mask, int64_t tokens) {
  ValidateCtx c{idx, mask, r->params.k, r->params.experts, {INT64_MAX}};
  r->pool->run(tokens, 4096, validate_rows, &c);
  int64_t bad = c.first_bad.load();
  if (bad == INT64_MAX) return MOE_OK;
  int reason = check_replay_row(idx + bad * r->params.k, r->params.k, r->params.experts);
  return replay_error(bad, reason, idx, r->params.k, r->params.experts);
}

int64_t grain_for(const Params& p) { return std::max<int64_t>(16, 8192 / p.experts); }

}  // namespace

int cpu_router_init(moe_router* r) {
  if (r->backend != MOE_BACKEND_CPU) return MOE_OK;
  return cpu_set_threads(r, 0);
}

void cpu_router_release(moe_router* r) {
  delete r->pool;
  r->pool = nullptr;
}

int cpu_set_threads(moe_router* r, int threads) {
  if (threads == 0) threads = (int)std::max(1u, std::thread::hardware_concurrency());
  CpuPool* pool = new (std::nothrow) CpuPool(threads);
  if (!pool) return fail(MOE_ERR_OUT_OF_MEMORY, "thread pool allocation failed");
  delete r->pool;
  r->pool = pool;
  return MOE_OK;
}

int cpu_route(moe_router* r, const void* logits, int dtype, int64_t tokens, const int32_t* replay_idx,
              const uint8_t* replay_mask, int32_t* out_idx, float* out_w, int64_t* out_nonfinite) {
  const Params& p = r->params;
  if (replay_idx) {
    int st = validate_indices(r, replay_idx, replay_mask, tokens);
    if (st != MOE_OK) return st;
  }
  RouteCtx c;
  c.p = &p;
  c.logits = static_cast<const char*>(logits);
  c.row_bytes = dtype_size(dtype) * (size_t)p.experts;
  c.replay = replay_idx;
  c.mask = replay_mask;
  c.out_idx = out_idx;
  c.out_w = out_w;
  CpuPool::Body body = dtype == MOE_DTYPE_F32    ? route_rows<MOE_DTYPE_F32>
                       : dtype == MOE_DTYPE_BF16 ? route_rows<MOE_DTYPE_BF16>
                                                 : route_rows<MOE_DTYPE_F16>;
  if (tokens * p.experts < kParallelMinElements)
    body(&c, 0, tokens);
  else
    r->pool->run(tokens, grain_for(p), body, &c);
  if (out_nonfinite) *out_nonfinite = c.nonfinite.load();
  return MOE_OK;
}

int cpu_backward(moe_router* r, const void* logits, int dtype, int64_t tokens, const int32_t* idx,
                 const float* grad_w, float* grad_logits) {
  const Params& p = r->params;
  int st = validate_indices(r, idx, nullptr, tokens);
  if (st != MOE_OK) return st;
  BackwardCtx c{&p, static_cast<const char*>(logits), dtype_size(dtype) * (size_t)p.experts, idx, grad_w,
                grad_logits};
  CpuPool::Body body = dtype == MOE_DTYPE_F32    ? backward_rows<MOE_DTYPE_F32>
                       : dtype == MOE_DTYPE_BF16 ? backward_rows<MOE_DTYPE_BF16>
                                                 : backward_rows<MOE_DTYPE_F16>;
  if (tokens * p.experts < kParallelMinElements)
    body(&c, 0, tokens);
  else
    r->pool->run(tokens, grain_for(p), body, &c);
  return MOE_OK;
}

}  // namespace moe
