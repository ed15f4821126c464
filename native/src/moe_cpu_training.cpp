// SPDX-License-Identifier: Apache-2.0
// Training extras on the CPU (spec section 6): dense views, valid tokens, counts, and the losses (aux,
// sequence aux, global aux, z) with their gradients. org.moerouter.JavaTraining mirrors the losses op
// for op, so both backends give the same bits. They run once per step and layer and favour
// determinism: per-expert sums are accumulated in double over fixed work items (B sequences x chunks of
// 256 positions; one sequence of all rows without the sequence loss) and merged in item order,
// whatever the thread count.
#include <math.h>

#include <algorithm>
#include <new>
#include <vector>

#include "moe_cpu_pool.h"
#include "moe_internal.h"

namespace moe {
namespace {

constexpr int64_t kChunkRows = 256;
// Below this many logits a call runs on its caller: the pool's wake-up costs more.
constexpr int64_t kParallelMinElements = 1 << 15;

struct Loader {
  const void* row;
  int dtype;
  float operator()(int i) const { return load_logit(row, dtype, i); }
};

struct LossCtx {
  int score_fn, experts, k, dtype;
  bool zero;   // nonfinite ZERO: a row with a non-finite logit is invalid
  bool stats;  // aux scores A and map M wanted (any aux-type loss, or their outputs)
  bool z;      // z-loss wanted
  int64_t tokens;
  int64_t batch, seq_len, seq_chunks;  // work item w = (w / seq_chunks, w % seq_chunks)
  int layout;                          // moe_seq_layout
  size_t row_bytes;
  const char* logits;
  const uint8_t* valid;
  // statistics pass: per work item
  double* item_sums;     // [items, E] sum of A
  int64_t* item_counts;  // [items, E] sum of M
  double* item_z;        // [items] sum of lse^2
  int64_t* item_n;       // [items] valid rows
  float* out_scores;
  uint8_t* out_map;
  // gradient pass
  const float* dA;  // [1 or B, E]: dLoss/dA of a valid row of sequence b (one row without the seq loss)
  bool dA_per_seq;
  float zc;  // 2 * coeff / N
  float* grad;
};

// A row converted to float once: the per-element loops then read plain floats and vectorise (the
// dtype switch of Loader inside them does not). Conversion is exact, so the results are the same bits.
struct FloatRow {
  const float* p;
  float operator()(int i) const { return p[i]; }
};

FloatRow load_row(const LossCtx& x, int64_t t, float* buf) {
  const char* row = x.logits + t * x.row_bytes;
  if (x.dtype == MOE_DTYPE_F32) return FloatRow{reinterpret_cast<const float*>(row)};
  if (x.dtype == MOE_DTYPE_BF16)
    for (int i = 0; i < x.experts; ++i) buf[i] = bf16_to_float(reinterpret_cast<const uint16_t*>(row)[i]);
  else
    for (int i = 0; i < x.experts; ++i) buf[i] = f16_to_float(reinterpret_cast<const uint16_t*>(row)[i]);
  return FloatRow{buf};
}

int64_t row_of(const LossCtx& x, int64_t b, int64_t s) {
  return x.layout == MOE_SEQ_BS ? b * x.seq_len + s : s * x.batch + b;
}

int64_t seq_of(const LossCtx& x, int64_t t) { return x.layout == MOE_SEQ_BS ? t / x.seq_len : t % x.batch; }

bool row_valid(const LossCtx& x, int64_t t, const FloatRow& load) {
  if (x.valid && !x.valid[t]) return false;
  if (x.zero)
    for (int i = 0; i < x.experts; ++i)
      if (!is_finite(load(i))) return false;
  return true;
}

// logsumexp from the canonical softmax statistics (moe_routing_math.h, shared with the CUDA kernels).
float row_lse(const RowSoftmax& sm) { return row_logsumexp(sm); }

// Aux scores A of one row into a: aux_scores_row of moe_routing_math.h (JavaRouting.Kernel.auxScoresRow),
// the same operations in the same order, in loops that vectorise. Keeps what the gradient and the z-loss
// reuse: the softmax statistics, or S (in s) and Σ = sum S + 1e-20 for sigmoid and sqrtsoftplus.
struct AuxRow {
  RowSoftmax sm;  // softmax
  float z;        // sigmoid, sqrtsoftplus: Σ
};

AuxRow aux_row(int score_fn, const FloatRow& load, int E, float* s, float* a) {
  AuxRow r{};
  if (score_fn == MOE_SCORE_SOFTMAX) {
    r.sm = row_softmax(load, E);
    for (int i = 0; i < E; ++i) a[i] = exp_det(load(i) - r.sm.max) / r.sm.sum;
    return r;
  }
  if (score_fn == MOE_SCORE_SQRTSOFTPLUS)
    for (int i = 0; i < E; ++i) s[i] = sqrtsoftplus_det(load(i));
  else
    for (int i = 0; i < E; ++i) s[i] = sigmoid_det(load(i));
  float lanes[kSumLanes];
  for (int j = 0; j < kSumLanes; ++j) lanes[j] = 0.0f;
  int i = 0;
  for (; i + kSumLanes <= E; i += kSumLanes)  // lane j adds j, j + 32, ... in order, as i % 32 does
    for (int j = 0; j < kSumLanes; ++j) lanes[j] += s[i + j];
  for (int j = 0; i + j < E; ++j) lanes[j] += s[i + j];
  r.z = fold_lanes(lanes) + kSigmoidNormEps;
  for (int m = 0; m < E; ++m) a[m] = s[m] / r.z;
  return r;
}

// dLoss/dL of a valid row added to g, from dA [E]: aux_grad_row with c = 1 (JavaRouting.Kernel.auxGradRow),
// op for op, from the row's aux_row instead of recomputed scores. Softmax: A * (dA - dot); sigmoid and
// sqrtsoftplus: S' / Σ * (dA - dot), dot = sum dA * A (spec section 6, loss gradients).
void aux_grad(int score_fn, const FloatRow& load, int E, const AuxRow& r, const float* s, const float* a,
              const float* dA, float* g) {
  float dot = 0.0f;
  for (int i = 0; i < E; ++i) dot = dot + dA[i] * a[i];
  if (score_fn == MOE_SCORE_SOFTMAX) {
    for (int i = 0; i < E; ++i) g[i] = g[i] + a[i] * (dA[i] - dot);
  } else if (score_fn == MOE_SCORE_SQRTSOFTPLUS) {
    for (int i = 0; i < E; ++i) {
      const float l = load(i);
      const float d = l > 20.0f ? 1.0f : sigmoid_det(l);
      g[i] = g[i] + d / (2.0f * s[i] + kSigmoidNormEps) / r.z * (dA[i] - dot);
    }
  } else {
    for (int i = 0; i < E; ++i) g[i] = g[i] + s[i] * (1.0f - s[i]) / r.z * (dA[i] - dot);
  }
}

void loss_stats(void* vctx, int64_t w0, int64_t w1) {
  LossCtx& x = *static_cast<LossCtx*>(vctx);
  const int E = x.experts;
  float scores[MOE_MAX_EXPERTS], sbuf[MOE_MAX_EXPERTS], buf[MOE_MAX_EXPERTS];
  uint64_t keys[MOE_MAX_TOPK];
  for (int64_t w = w0; w < w1; ++w) {
    const int64_t b = w / x.seq_chunks, s0 = (w % x.seq_chunks) * kChunkRows;
    const int64_t s1 = std::min(x.seq_len, s0 + kChunkRows);
    double* psum = x.stats ? x.item_sums + w * E : nullptr;
    int64_t* cnt = x.stats ? x.item_counts + w * E : nullptr;
    if (x.stats) {
      std::fill(psum, psum + E, 0.0);
      std::fill(cnt, cnt + E, (int64_t)0);
    }
    double zsum = 0.0;
    int64_t n = 0;
    for (int64_t s = s0; s < s1; ++s) {
      const int64_t t = row_of(x, b, s);
      const FloatRow load = load_row(x, t, buf);
      if (!row_valid(x, t, load)) {
        if (x.out_scores) std::fill(x.out_scores + t * E, x.out_scores + (t + 1) * E, 0.0f);
        if (x.out_map) std::fill(x.out_map + t * E, x.out_map + (t + 1) * E, (uint8_t)0);
        continue;
      }
      ++n;
      AuxRow ar{};
      if (x.stats) {
        ar = aux_row(x.score_fn, load, E, sbuf, scores);
        int count = 0;
        for (int i = 0; i < E; ++i) {
          psum[i] += scores[i];
          topk_insert(keys, count, x.k, rank_key(load(i), i));  // M ranks the logits themselves
        }
        for (int j = 0; j < x.k; ++j) ++cnt[rank_key_index(keys[j])];
        if (x.out_scores) std::copy(scores, scores + E, x.out_scores + t * E);
        if (x.out_map) {
          uint8_t* m = x.out_map + t * E;
          std::fill(m, m + E, (uint8_t)0);
          for (int j = 0; j < x.k; ++j) m[rank_key_index(keys[j])] = 1;
        }
      }
      if (x.z) {
        const bool have = x.stats && x.score_fn == MOE_SCORE_SOFTMAX;  // the same statistics, already there
        const float lse = row_lse(have ? ar.sm : row_softmax(load, E));
        zsum += (double)lse * (double)lse;
      }
    }
    x.item_z[w] = zsum;
    x.item_n[w] = n;
  }
}

void loss_grad(void* vctx, int64_t c0, int64_t c1) {
  LossCtx& x = *static_cast<LossCtx*>(vctx);
  const int E = x.experts;
  float a[MOE_MAX_EXPERTS], sbuf[MOE_MAX_EXPERTS], buf[MOE_MAX_EXPERTS];
  const int64_t t1 = std::min(x.tokens, c1 * kChunkRows);
  for (int64_t t = c0 * kChunkRows; t < t1; ++t) {
    const FloatRow load = load_row(x, t, buf);
    if (!row_valid(x, t, load)) continue;
    float* g = x.grad + t * E;
    AuxRow ar{};
    if (x.dA) {
      ar = aux_row(x.score_fn, load, E, sbuf, a);
      aux_grad(x.score_fn, load, E, ar, sbuf, a, x.dA + (x.dA_per_seq ? seq_of(x, t) * E : 0), g);
    }
    if (x.z) {
      if (x.dA && x.score_fn == MOE_SCORE_SOFTMAX) {  // softmax(L) is A: the same bits
        const float gz = x.zc * row_lse(ar.sm);
        for (int i = 0; i < E; ++i) g[i] = g[i] + gz * a[i];
      } else {
        const RowSoftmax sm = row_softmax(load, E);
        const float gz = x.zc * row_lse(sm);
        for (int i = 0; i < E; ++i) g[i] = g[i] + gz * (exp_det(load(i) - sm.max) / sm.sum);
      }
    }
  }
}

void run_items(moe_router* r, int64_t items, int64_t work, CpuPool::Body body, LossCtx* ctx) {
  if (r->backend == MOE_BACKEND_CPU && r->pool && items > 1 && work >= kParallelMinElements)
    r->pool->run(items, 1, body, ctx);
  else
    body(ctx, 0, items);
}

struct ValidCtx {
  int experts, dtype;
  bool zero;
  size_t row_bytes;
  const char* logits;
  const uint8_t* padding;
  uint8_t* out;
};

void valid_rows(void* vctx, int64_t t0, int64_t t1) {
  ValidCtx& x = *static_cast<ValidCtx*>(vctx);
  for (int64_t t = t0; t < t1; ++t) {
    bool v = !(x.padding && x.padding[t]);
    if (v && x.zero) {
      const Loader load{x.logits + t * x.row_bytes, x.dtype};
      for (int i = 0; i < x.experts && v; ++i) v = is_finite(load(i));
    }
    x.out[t] = v ? 1 : 0;
  }
}

}  // namespace

int cpu_losses(moe_router* r, const void* logits, int dtype, int64_t tokens, const uint8_t* valid,
               const moe_loss_config& c, moe_loss_values* out, int32_t* out_counts, float* out_scores,
               uint8_t* out_map, float* grad) {
  const int E = r->config.num_experts, k = r->config.top_k;
  const bool aux = c.aux_coeff != 0.0f, seq = c.seq_aux_coeff != 0.0f, glob = c.global_aux_coeff != 0.0f;
  LossCtx x{};
  x.score_fn = r->config.score_fn;
  x.experts = E;
  x.k = k;
  x.dtype = dtype;
  x.zero = r->config.nonfinite == MOE_NONFINITE_ZERO;
  x.stats = aux || seq || glob || out_counts || out_scores || out_map;
  x.z = c.z_coeff != 0.0f;
  x.tokens = tokens;
  // Without the sequence loss: one sequence of every row (t = s), chunks of 256 rows.
  x.batch = seq ? tokens / c.seq_length : 1;
  x.seq_len = seq ? c.seq_length : tokens;
  x.layout = seq ? c.seq_layout : MOE_SEQ_BS;
  x.seq_chunks = (x.seq_len + kChunkRows - 1) / kChunkRows;
  x.row_bytes = (size_t)E * (dtype == MOE_DTYPE_F32 ? 4 : 2);
  x.logits = static_cast<const char*>(logits);
  x.valid = valid;
  x.out_scores = out_scores;
  x.out_map = out_map;
  const int64_t items = x.batch * x.seq_chunks, B = x.batch;
  std::vector<double> sums, zs, p, pb;
  std::vector<int64_t> counts, ns, cn, cb;
  std::vector<float> dA;
  try {
    if (x.stats) {
      sums.resize((size_t)items * E);
      counts.resize((size_t)items * E);
    }
    zs.resize((size_t)items);
    ns.resize((size_t)items);
    p.assign((size_t)E, 0.0);
    cn.assign((size_t)E, 0);
    if (seq) {
      pb.assign((size_t)B * E, 0.0);
      cb.assign((size_t)B * E, 0);
    }
  } catch (const std::bad_alloc&) {
    return fail(MOE_ERR_OUT_OF_MEMORY, "losses: no memory for the partial sums of %lld work items", (long long)items);
  }
  x.item_sums = sums.data();
  x.item_counts = counts.data();
  x.item_z = zs.data();
  x.item_n = ns.data();
  run_items(r, items, tokens * E, loss_stats, &x);

  int64_t n = 0;
  double zsum = 0.0;
  for (int64_t w = 0; w < items; ++w) {
    n += ns[w];
    zsum += zs[w];
    if (!x.stats) continue;
    const int64_t b = w / x.seq_chunks;
    for (int i = 0; i < E; ++i) {
      p[i] += sums[w * E + i];
      cn[i] += counts[w * E + i];
      if (seq) {
        pb[b * E + i] += sums[w * E + i];
        cb[b * E + i] += counts[w * E + i];
      }
    }
  }
  if (out_counts)
    for (int i = 0; i < E; ++i) out_counts[i] = (int32_t)cn[i];
  moe_loss_values v{};
  v.valid_tokens = n;
  // dLoss/dA = coefficient * X_i: (c, N) aux, (c_b, N / B) and 1 / B seq, (G, Ng) global (spec section 6).
  double a_aux = 0.0, a_seq = 0.0, a_glob = 0.0;
  if (n > 0) {
    const double N = (double)n;
    if (aux) {
      double dot = 0.0;
      for (int i = 0; i < E; ++i) dot += (double)cn[i] * p[i];
      a_aux = (double)c.aux_coeff * E / ((double)k * N * N);
      v.aux_loss = a_aux * dot;
    }
    if (seq) {
      const double nq = N / (double)B;
      double dot = 0.0;
      for (int64_t j = 0; j < B * E; ++j) dot += (double)cb[j] * pb[j];
      a_seq = (double)c.seq_aux_coeff * E / ((double)k * nq * nq * (double)B);
      v.seq_aux_loss = a_seq * dot;
    }
    if (glob && c.global_num_tokens > 0.0) {
      const double ng = c.global_num_tokens;
      double dot = 0.0;
      for (int i = 0; i < E; ++i) dot += c.global_tokens[i] * p[i];
      a_glob = (double)c.global_aux_coeff * E / ((double)k * ng * ng);
      v.global_aux_loss = a_glob * dot;
    }
    if (x.z) v.z_loss = (double)c.z_coeff * zsum / N;
  }
  if (grad && n > 0 && (a_aux != 0.0 || a_seq != 0.0 || a_glob != 0.0 || x.z)) {
    const int64_t rows = seq ? B : 1;
    if (a_aux != 0.0 || a_seq != 0.0 || a_glob != 0.0) {
      try {
        dA.resize((size_t)rows * E);
      } catch (const std::bad_alloc&) {
        return fail(MOE_ERR_OUT_OF_MEMORY, "losses: no memory for the aux-score gradients");
      }
      for (int64_t b = 0; b < rows; ++b)
        for (int i = 0; i < E; ++i) {
          double d = 0.0;
          if (a_aux != 0.0) d += a_aux * (double)cn[i];
          if (a_glob != 0.0) d += a_glob * c.global_tokens[i];
          if (a_seq != 0.0) d += a_seq * (double)cb[b * E + i];
          dA[b * E + i] = (float)d;
        }
      x.dA = dA.data();
      x.dA_per_seq = seq;
    }
    x.zc = x.z ? (float)(2.0 * (double)c.z_coeff / (double)n) : 0.0f;
    x.grad = grad;
    run_items(r, (tokens + kChunkRows - 1) / kChunkRows, tokens * E, loss_grad, &x);
  }
  *out = v;
  return MOE_OK;
}

int cpu_aux_loss(moe_router* r, const void* logits, int dtype, int64_t tokens, float coeff, float* out_scores,
                 uint8_t* out_map, int32_t* out_counts, float* out_loss, float* grad) {
  moe_loss_config c{};
  c.aux_coeff = coeff;
  moe_loss_values v{};
  int st = cpu_losses(r, logits, dtype, tokens, nullptr, c, &v, out_counts, out_scores, out_map, grad);
  if (st == MOE_OK) *out_loss = (float)v.aux_loss;
  return st;
}

int cpu_z_loss(moe_router* r, const void* logits, int dtype, int64_t tokens, float coeff, float* out_loss,
               float* grad) {
  moe_loss_config c{};
  c.z_coeff = coeff;
  moe_loss_values v{};
  int st = cpu_losses(r, logits, dtype, tokens, nullptr, c, &v, nullptr, nullptr, nullptr, grad);
  if (st == MOE_OK) *out_loss = (float)v.z_loss;
  return st;
}

int cpu_valid_tokens(moe_router* r, const void* logits, int dtype, int64_t tokens, const uint8_t* padding,
                     uint8_t* out_valid, int64_t* out_count) {
  ValidCtx x{};
  x.experts = r->config.num_experts;
  x.dtype = dtype;
  x.zero = r->config.nonfinite == MOE_NONFINITE_ZERO;
  x.row_bytes = (size_t)x.experts * (dtype == MOE_DTYPE_F32 ? 4 : 2);
  x.logits = static_cast<const char*>(logits);
  x.padding = padding;
  x.out = out_valid;
  if (x.zero && r->backend == MOE_BACKEND_CPU && r->pool && tokens * x.experts >= kParallelMinElements)
    r->pool->run(tokens, kChunkRows, valid_rows, &x);
  else
    valid_rows(&x, 0, tokens);
  int64_t n = 0;
  for (int64_t t = 0; t < tokens; ++t) n += out_valid[t];
  if (out_count) *out_count = n;
  return MOE_OK;
}

int cpu_tokens_per_expert(const int32_t* idx, const uint8_t* map, const uint8_t* valid, int64_t tokens, int k,
                          int experts, int32_t* counts) {
  std::fill(counts, counts + experts, 0);
  for (int64_t t = 0; t < tokens; ++t) {
    if (valid && !valid[t]) continue;
    if (idx) {
      for (int j = 0; j < k; ++j) ++counts[idx[t * k + j]];
    } else {
      const uint8_t* m = map + t * experts;
      for (int e = 0; e < experts; ++e) counts[e] += m[e] != 0;
    }
  }
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
