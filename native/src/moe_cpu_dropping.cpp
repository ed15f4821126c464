// SPDX-License-Identifier: Apache-2.0
// Token dropping with a capacity factor on the CPU (spec section 6, Megatron apply_router_token_dropping):
// each expert keeps its best `cap` tokens by routing prob or by position, ties to the lower token index.
// org.moerouter.JavaTraining mirrors it. Experts are independent, so they run in parallel and the result
// does not depend on the thread count.
#include <math.h>
#include <string.h>

#include <algorithm>
#include <functional>
#include <new>
#include <vector>

#include "moe_cpu_pool.h"
#include "moe_internal.h"

namespace moe {
namespace {

struct DropCtx {
  const int32_t* idx;
  const float* w;
  int64_t tokens;
  int k, experts;
  int64_t cap;       // < tokens when dropping happens
  bool drop;         // cap < tokens
  bool by_probs;     // MOE_DROP_PROBS
  bool pad;          // pad_to_capacity
  const int64_t* begin;  // [E + 1] CSR offsets of the routed entries of each expert
  const int64_t* entry;  // routed entries t * k + j, in token order per expert
  uint64_t* keys;        // scratch, same layout as entry (probs policy)
  uint8_t* map;
  float* probs;
  uint8_t* kept;
  int32_t* kept_counts;
};

// A token not routed to the expert has prob 0: its key.
const uint32_t kZeroKey = score_key(0.0f);

void keep_entry(const DropCtx& x, int e, int64_t entry, int32_t& kept) {
  const int64_t t = entry / x.k;
  if (x.kept) x.kept[entry] = 1;
  if (x.map) x.map[t * x.experts + e] = 1;
  if (x.probs) x.probs[t * x.experts + e] = x.w[entry];
  ++kept;
}

// Takes `n` tokens of expert e in token order: a routed one only when accept(entry) says so (the
// others are skipped: they were placed, or will be, by key), a non-routed one always, as a padding slot
// on the map (prob 0) with pad_to_capacity, else as a slot that keeps nothing.
template <typename Accept>
void take_in_token_order(const DropCtx& x, int e, int64_t n, const Accept& accept, int32_t& kept) {
  const int64_t* list = x.entry + x.begin[e];
  const int64_t count = x.begin[e + 1] - x.begin[e];
  int64_t next = 0;  // the next routed entry of e in token order
  for (int64_t t = 0; t < x.tokens && n > 0; ++t) {
    while (next < count && list[next] / x.k < t) ++next;
    if (next < count && list[next] / x.k == t) {
      if (!accept(list[next])) continue;
      keep_entry(x, e, list[next], kept);
    } else if (x.pad && x.map) {
      x.map[t * x.experts + e] = 1;
    }
    --n;
  }
}

void drop_experts(void* vctx, int64_t e0, int64_t e1) {
  const DropCtx& x = *static_cast<const DropCtx*>(vctx);
  for (int64_t ei = e0; ei < e1; ++ei) {
    const int e = (int)ei;
    const int64_t* list = x.entry + x.begin[e];
    const int64_t count = x.begin[e + 1] - x.begin[e];
    int32_t kept = 0;
    if (!x.drop) {
      for (int64_t i = 0; i < count; ++i) keep_entry(x, e, list[i], kept);
      if (x.pad && x.map)
        for (int64_t t = 0; t < x.tokens; ++t) x.map[t * x.experts + e] = 1;
    } else if (!x.by_probs) {
      // POSITION: routed tokens first, in token order; padding slots after them, lowest index first.
      const int64_t routed = std::min<int64_t>(count, x.cap);
      for (int64_t i = 0; i < routed; ++i) keep_entry(x, e, list[i], kept);
      if (x.pad && routed < x.cap) take_in_token_order(x, e, x.cap - routed, [](int64_t) { return false; }, kept);
    } else {
      // PROBS: every token is ranked by (prob, lower index); a non-routed token has prob 0. Routed entries
      // above 0 come first in key order, then every token at exactly 0 (routed or not) by index, then the
      // routed entries below 0 or NaN in key order.
      uint64_t* keys = x.keys + x.begin[e];
      for (int64_t i = 0; i < count; ++i) keys[i] = rank_key(x.w[list[i]], (int)(list[i] / x.k));
      std::sort(keys, keys + count, std::greater<uint64_t>());
      int64_t left = x.cap, i = 0;
      auto entry_of = [&](uint64_t key) {
        const int64_t t = rank_key_index(key);
        const int32_t* row = x.idx + t * x.k;
        int j = 0;
        while (row[j] != e) ++j;
        return t * x.k + j;
      };
      for (; i < count && left > 0 && (uint32_t)(keys[i] >> 32) > kZeroKey; ++i, --left)
        keep_entry(x, e, entry_of(keys[i]), kept);
      if (left > 0) {
        int64_t zeros = 0;  // tokens at prob exactly 0: every non-routed token and the routed zeros
        for (int64_t m = i; m < count && (uint32_t)(keys[m] >> 32) == kZeroKey; ++m) ++zeros;
        zeros += x.tokens - count;
        const int64_t take = std::min(left, zeros);
        take_in_token_order(x, e, take, [&](int64_t en) { return score_key(x.w[en]) == kZeroKey; }, kept);
        left -= take;
        i += zeros - (x.tokens - count);
        for (; i < count && left > 0; ++i, --left) keep_entry(x, e, entry_of(keys[i]), kept);
      }
    }
    if (x.kept_counts) x.kept_counts[e] = kept;
  }
}

}  // namespace

int64_t drop_capacity(int64_t tokens, int k, int experts, double capacity_factor) {
  // Python math.ceil((tokens * k / experts) * capacity_factor) in float64 (Megatron get_capacity).
  const double cap = ceil(((double)(tokens * k) / (double)experts) * capacity_factor);
  return cap >= (double)tokens ? tokens : (int64_t)cap;
}

int cpu_drop_tokens(moe_router* r, const int32_t* idx, const float* w, int64_t tokens, double capacity_factor,
                    int policy, int pad, uint8_t* out_map, float* out_probs, uint8_t* out_kept,
                    int32_t* out_kept_counts, int64_t* out_dropped) {
  const int E = r->config.num_experts, k = r->config.top_k;
  std::vector<int64_t> begin, entry;
  std::vector<uint64_t> keys;
  std::vector<int32_t> counts;
  try {
    begin.assign((size_t)E + 1, 0);
    entry.resize((size_t)(tokens * k));
    if (policy == MOE_DROP_PROBS) keys.resize((size_t)(tokens * k));
    if (!out_kept_counts) counts.resize((size_t)E);
  } catch (const std::bad_alloc&) {
    return fail(MOE_ERR_OUT_OF_MEMORY, "drop tokens: no memory for %lld entries", (long long)(tokens * k));
  }
  for (int64_t i = 0; i < tokens * k; ++i) ++begin[idx[i] + 1];
  for (int e = 0; e < E; ++e) begin[e + 1] += begin[e];
  {
    std::vector<int64_t>& fill = entry;
    std::vector<int64_t> next(begin.begin(), begin.end() - 1);
    for (int64_t i = 0; i < tokens * k; ++i) fill[next[idx[i]]++] = i;  // token order per expert
  }
  if (out_map) memset(out_map, 0, (size_t)(tokens * E));
  if (out_probs) std::fill(out_probs, out_probs + tokens * E, 0.0f);
  if (out_kept) memset(out_kept, 0, (size_t)(tokens * k));
  DropCtx x{};
  x.idx = idx;
  x.w = w;
  x.tokens = tokens;
  x.k = k;
  x.experts = E;
  x.cap = drop_capacity(tokens, k, E, capacity_factor);
  x.drop = x.cap < tokens;
  x.by_probs = policy == MOE_DROP_PROBS;
  x.pad = pad != 0;
  x.begin = begin.data();
  x.entry = entry.data();
  x.keys = keys.data();
  x.map = out_map;
  x.probs = out_probs;
  x.kept = out_kept;
  x.kept_counts = out_kept_counts ? out_kept_counts : counts.data();
  if (r->backend == MOE_BACKEND_CPU && r->pool && E > 1 && tokens * E >= (1 << 15))
    r->pool->run(E, 1, drop_experts, &x);
  else
    drop_experts(&x, 0, E);
  if (out_dropped) {
    int64_t kept = 0;
    for (int e = 0; e < E; ++e) kept += x.kept_counts[e];
    *out_dropped = tokens * k - kept;
  }
  return MOE_OK;
}

}  // namespace moe
