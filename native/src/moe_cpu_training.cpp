// SPDX-License-Identifier: Apache-2.0
// Training extras on the CPU (spec section 6): dense views, aux (load-balancing) loss, z-loss.
// They run once per step and layer, so they favour determinism over speed: per-expert sums are
// accumulated in double over fixed row chunks and merged in chunk order, whatever the thread count.
#include <math.h>

#include <algorithm>
#include <new>
#include <vector>

#include "moe_cpu_pool.h"
#include "moe_internal.h"

namespace moe {
namespace {

constexpr int64_t kChunkRows = 256;

struct Loader {
  const void* row;
  int dtype;
  float operator()(int i) const { return load_logit(row, dtype, i); }
};

struct RowsCtx {
  int score_fn, experts, k, dtype;
  int64_t tokens;
  size_t row_bytes;
  const char* logits;
  // aux pass 1
  float* out_scores;
  uint8_t* out_map;
  double* chunk_sums;     // [chunks, E] (aux) or [chunks] (z-loss)
  int64_t* chunk_counts;  // [chunks, E]
  // gradient passes
  const float* f;
  float c;
  float* grad;
};

Loader row_loader(const RowsCtx& x, int64_t t) { return Loader{x.logits + t * x.row_bytes, x.dtype}; }

void aux_pass1(void* vctx, int64_t c0, int64_t c1) {
  RowsCtx& x = *static_cast<RowsCtx*>(vctx);
  const int E = x.experts;
  float scores[MOE_MAX_EXPERTS];
  uint64_t keys[MOE_MAX_TOPK];
  for (int64_t ch = c0; ch < c1; ++ch) {
    double* psum = x.chunk_sums + ch * E;
    int64_t* cnt = x.chunk_counts + ch * E;
    std::fill(psum, psum + E, 0.0);
    std::fill(cnt, cnt + E, (int64_t)0);
    const int64_t t1 = std::min(x.tokens, (ch + 1) * kChunkRows);
    for (int64_t t = ch * kChunkRows; t < t1; ++t) {
      aux_scores_row(x.score_fn, row_loader(x, t), E, scores);
      int count = 0;
      for (int i = 0; i < E; ++i) {
        psum[i] += scores[i];
        topk_insert(keys, count, x.k, rank_key(scores[i], i));
      }
      for (int j = 0; j < x.k; ++j) ++cnt[rank_key_index(keys[j])];
      if (x.out_scores) std::copy(scores, scores + E, x.out_scores + t * E);
      if (x.out_map) {
        uint8_t* m = x.out_map + t * E;
        std::fill(m, m + E, (uint8_t)0);
        for (int j = 0; j < x.k; ++j) m[rank_key_index(keys[j])] = 1;
      }
    }
  }
}

void aux_pass2(void* vctx, int64_t c0, int64_t c1) {
  RowsCtx& x = *static_cast<RowsCtx*>(vctx);
  float scores[MOE_MAX_EXPERTS];
  const int64_t t0 = c0 * kChunkRows, t1 = std::min(x.tokens, c1 * kChunkRows);
  for (int64_t t = t0; t < t1; ++t) {
    Loader load = row_loader(x, t);
    aux_scores_row(x.score_fn, load, x.experts, scores);
    aux_grad_row(x.score_fn, load, x.experts, scores, x.f, x.c, x.grad + t * x.experts);
  }
}

// logsumexp of a row in double from the canonical softmax statistics.
double row_lse(const Loader& load, int experts, RowSoftmax* sm) {
  *sm = row_softmax(load, experts);
  return (double)sm->max + log((double)sm->sum);
}

void z_rows(void* vctx, int64_t c0, int64_t c1) {
  RowsCtx& x = *static_cast<RowsCtx*>(vctx);
  for (int64_t ch = c0; ch < c1; ++ch) {
    double sum = 0.0;
    const int64_t t1 = std::min(x.tokens, (ch + 1) * kChunkRows);
    for (int64_t t = ch * kChunkRows; t < t1; ++t) {
      Loader load = row_loader(x, t);
      RowSoftmax sm;
      double lse = row_lse(load, x.experts, &sm);
      sum += lse * lse;
      if (x.grad) {
        float g = x.c * (float)lse;
        float* out = x.grad + t * x.experts;
        for (int i = 0; i < x.experts; ++i) out[i] = out[i] + g * (exp_det(load(i) - sm.max) / sm.sum);
      }
    }
    x.chunk_sums[ch] = sum;
  }
}

void run_chunks(moe_router* r, int64_t chunks, CpuPool::Body body, RowsCtx* ctx) {
  const int64_t work = ctx->tokens * ctx->experts;
  if (r->backend == MOE_BACKEND_CPU && r->pool && chunks > 1 && work >= (1 << 15))
    r->pool->run(chunks, 1, body, ctx);
  else
    body(ctx, 0, chunks);
}

RowsCtx rows_ctx(moe_router* r, const void* logits, int dtype, int64_t tokens) {
  RowsCtx x{};
  x.score_fn = r->config.score_fn;
  x.experts = r->config.num_experts;
  x.k = r->config.top_k;
  x.dtype = dtype;
  x.tokens = tokens;
  x.row_bytes = (size_t)x.experts * (dtype == MOE_DTYPE_F32 ? 4 : 2);
  x.logits = static_cast<const char*>(logits);
  return x;
}

}  // namespace

int cpu_aux_loss(moe_router* r, const void* logits, int dtype, int64_t tokens, float coeff, float* out_scores,
                 uint8_t* out_map, int32_t* out_counts, float* out_loss, float* grad) {
  const int E = r->config.num_experts, k = r->config.top_k;
  const int64_t chunks = (tokens + kChunkRows - 1) / kChunkRows;
  std::vector<double> sums;
  std::vector<int64_t> counts;
  try {
    sums.resize((size_t)chunks * E);
    counts.resize((size_t)chunks * E);
  } catch (const std::bad_alloc&) {
    return fail(MOE_ERR_OUT_OF_MEMORY, "aux loss: no memory for %lld partial sums", (long long)chunks * E);
  }
  RowsCtx x = rows_ctx(r, logits, dtype, tokens);
  x.out_scores = out_scores;
  x.out_map = out_map;
  x.chunk_sums = sums.data();
  x.chunk_counts = counts.data();
  run_chunks(r, chunks, aux_pass1, &x);

  std::vector<float> f(E);
  double loss = 0.0;
  for (int i = 0; i < E; ++i) {
    double p = 0.0;
    int64_t n = 0;
    for (int64_t ch = 0; ch < chunks; ++ch) {
      p += sums[ch * E + i];
      n += counts[ch * E + i];
    }
    if (out_counts) out_counts[i] = (int32_t)n;
    double fi = tokens > 0 ? (double)n / ((double)tokens * k) : 0.0;
    f[i] = (float)fi;
    if (tokens > 0) loss += fi * (p / (double)tokens);
  }
  *out_loss = (float)((double)coeff * E * loss);
  if (grad && tokens > 0) {
    x.f = f.data();
    x.c = (float)((double)coeff * E / (double)tokens);
    x.grad = grad;
    run_chunks(r, chunks, aux_pass2, &x);
  }
  return MOE_OK;
}

int cpu_z_loss(moe_router* r, const void* logits, int dtype, int64_t tokens, float coeff, float* out_loss,
               float* grad) {
  const int64_t chunks = (tokens + kChunkRows - 1) / kChunkRows;
  std::vector<double> sums;
  try {
    sums.resize((size_t)chunks);
  } catch (const std::bad_alloc&) {
    return fail(MOE_ERR_OUT_OF_MEMORY, "z-loss: no memory");
  }
  RowsCtx x = rows_ctx(r, logits, dtype, tokens);
  x.chunk_sums = sums.data();
  x.grad = grad;
  x.c = tokens > 0 ? (float)(2.0 * coeff / (double)tokens) : 0.0f;
  run_chunks(r, chunks, z_rows, &x);
  double total = 0.0;
  for (int64_t ch = 0; ch < chunks; ++ch) total += sums[ch];
  *out_loss = tokens > 0 ? (float)((double)coeff * total / (double)tokens) : 0.0f;
  return MOE_OK;
}

int cpu_dense_views(const int32_t* idx, const float* w, int64_t tokens, int k, int experts, uint8_t* map,
                    uint64_t* bits, float* probs) {
  const int64_t words = (experts + 63) / 64;
  for (int64_t t = 0; t < tokens; ++t) {
    const int32_t* row = idx + t * k;
    if (map) std::fill(map + t * experts, map + (t + 1) * experts, (uint8_t)0);
    if (bits) std::fill(bits + t * words, bits + (t + 1) * words, (uint64_t)0);
    if (probs) std::fill(probs + t * experts, probs + (t + 1) * experts, 0.0f);
    for (int j = 0; j < k; ++j) {
      const int e = row[j];
      if (map) map[t * experts + e] = 1;
      if (bits) bits[t * words + e / 64] |= (uint64_t)1 << (e % 64);
      if (probs) probs[t * experts + e] = w[t * k + j];
    }
  }
  return MOE_OK;
}

}  // namespace moe
