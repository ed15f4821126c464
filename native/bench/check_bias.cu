// SPDX-License-Identifier: Apache-2.0
// moe_check section "bias": moe_router_set_bias while other threads route on the same router (the
// contract in moe_router.h). Every routing call must rank all its rows with one bias version, one that
// was current at some moment of the call and not older than the last set_bias that returned before the
// call started. CPU router: host calls large enough for the worker pool's chunks. CUDA router: host
// variants from several threads, and direct calls enqueued before and after a set_bias on one stream.
//
// Versions: 0 is no bias (ranked by logit), odd ones put +8 on experts 0..3 and -8 on 60..63 (every row
// picks 0..3), even ones the mirror (every row picks 60..63), so a call mixing versions, or a row ranked
// with a half-copied bias, matches none of the three full results.
#include <atomic>
#include <memory>
#include <thread>

#include "check_support.h"

namespace check {
namespace {

constexpr int kE = 64, kK = 4;
constexpr float kBoost = 8.0f;

std::vector<float> bias_version(int v) {
  std::vector<float> b(kE, 0.0f);
  for (int j = 0; j < kK; ++j) {
    b[j] = v % 2 == 1 ? kBoost : -kBoost;
    b[kE - 1 - j] = -b[j];
  }
  return b;
}

moe_router_config base_config() {
  moe_router_config c{};  // the spec defaults (0) for every option after the bias
  c.num_experts = kE;
  c.top_k = kK;
  c.score_fn = MOE_SCORE_SIGMOID;
  c.scale = 1.0f;
  return c;
}

int version_class(int v) { return v == 0 ? 0 : v % 2 == 1 ? 1 : 2; }

// The full result of each version class, from CPU routers created with that bias.
struct Versions {
  std::vector<int32_t> idx[3];
  std::vector<float> w[3];

  bool row_equal(int c, const int32_t* idx_row, const float* w_row, int64_t t) const {
    for (int j = 0; j < kK; ++j)
      if (idx[c][t * kK + j] != idx_row[j] || fbits(w[c][t * kK + j]) != fbits(w_row[j])) return false;
    return true;
  }
  // The class whose whole result this is, or -1.
  int match(const std::vector<int32_t>& got_idx, const std::vector<float>& got_w, int64_t T) const {
    for (int c = 0; c < 3; ++c) {
      int64_t t = 0;
      while (t < T && row_equal(c, &got_idx[t * kK], &got_w[t * kK], t)) ++t;
      if (t == T) return c;
    }
    return -1;
  }
};

Versions expected(const std::vector<uint8_t>& logits, int64_t T) {
  Versions ex;
  for (int c = 0; c < 3; ++c) {
    std::vector<float> b = bias_version(c);
    moe_router_config cfg = base_config();
    cfg.expert_bias = c == 0 ? nullptr : b.data();
    moe_router* r = nullptr;
    MK(moe_router_create(&cfg, MOE_BACKEND_CPU, 0, &r));
    ex.idx[c].resize((size_t)T * kK);
    ex.w[c].resize((size_t)T * kK);
    MK(moe_route_host(r, logits.data(), MOE_DTYPE_F32, T, nullptr, nullptr, ex.idx[c].data(), ex.w[c].data(), nullptr,
                      nullptr));
    moe_router_destroy(r);
  }
  ++g_checks;
  for (int a = 0; a < 3; ++a)
    for (int b = a + 1; b < 3; ++b)
      for (int64_t t = 0; t < T; ++t)
        if (ex.row_equal(b, &ex.idx[a][t * kK], &ex.w[a][t * kK], t)) {
          failf("bias: versions %d and %d route row %lld alike: a mix there would go unseen", a, b, (long long)t);
          return ex;
        }
  return ex;
}

// `callers` threads route T rows `calls` times each on a router created without a bias while one thread
// sets versions 1, 2, 3, ...; returns the number of bias changes.
int race(const std::string& what, moe_router* router, int64_t T, const std::vector<uint8_t>& logits,
         const Versions& ex, int callers, int calls) {
  std::atomic<int> started{0}, completed{0};
  std::atomic<bool> done{false};
  const std::vector<float> biases[2] = {bias_version(2), bias_version(1)};
  std::vector<std::string> errors(callers);
  std::thread flipper([&] {
    for (int v = 1; !done.load(); ++v) {
      started.store(v);  // one writer: started and completed only grow
      if (moe_router_set_bias(router, biases[v % 2].data()) != MOE_OK) {
        errors[0] = std::string("set_bias failed: ") + moe_last_error_message();
        return;
      }
      completed.store(v);
    }
  });
  std::vector<std::thread> pool;
  for (int c = 0; c < callers; ++c)
    pool.emplace_back([&, c] {
      std::vector<int32_t> idx((size_t)T * kK);
      std::vector<float> w((size_t)T * kK);
      for (int n = 0; n < calls && errors[c].empty(); ++n) {
        const int before = completed.load();
        if (moe_route_host(router, logits.data(), MOE_DTYPE_F32, T, nullptr, nullptr, idx.data(), w.data(), nullptr,
                           nullptr) != MOE_OK) {
          errors[c] = std::string("route failed: ") + moe_last_error_message();
          return;
        }
        const int after = started.load();
        const int got = ex.match(idx, w, T);
        bool allowed = false;
        for (int v = before; v <= after && !allowed; ++v) allowed = version_class(v) == got;
        if (got < 0)
          errors[c] = "call " + std::to_string(n) + " mixes bias versions";
        else if (!allowed)
          errors[c] = "call " + std::to_string(n) + " used version class " + std::to_string(got) + " but only versions " +
                      std::to_string(before) + ".." + std::to_string(after) + " were current during it";
      }
    });
  for (auto& th : pool) th.join();
  done.store(true);
  flipper.join();
  for (int c = 0; c < callers; ++c) {
    ++g_checks;
    if (!errors[c].empty()) failf("%s: thread %d: %s", what.c_str(), c, errors[c].c_str());
  }
  return completed.load();
}

// Direct calls on one stream: a call enqueued before set_bias keeps the version it was enqueued with
// (the first set_bias on a router without a bias included: Params.biased and the device bias change
// together), a call enqueued after it uses the new one.
void direct_calls_around_set_bias(moe_router* gpu, int64_t T, const std::vector<uint8_t>& logits, const Versions& ex) {
  cudaStream_t s;
  CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  DBuf<uint8_t> d_logits(logits.size());
  d_logits.up(logits.data());
  std::vector<std::unique_ptr<DBuf<int32_t>>> idx;
  std::vector<std::unique_ptr<DBuf<float>>> w;
  for (int v = 0; v < 3; ++v) {
    idx.emplace_back(new DBuf<int32_t>((size_t)T * kK));
    w.emplace_back(new DBuf<float>((size_t)T * kK));
    idx[v]->poison();
    w[v]->poison();
  }
  for (int v = 0; v < 3; ++v) {
    if (v > 0) MK(moe_router_set_bias(gpu, bias_version(v).data()));
    MK(moe_route(gpu, d_logits.p, MOE_DTYPE_F32, T, nullptr, nullptr, idx[v]->p, w[v]->p, nullptr, nullptr, s));
  }
  CK(cudaStreamSynchronize(s));
  for (int v = 0; v < 3; ++v) {
    std::vector<int32_t> gi = idx[v]->down();
    std::vector<float> gw = w[v]->down();
    gi.resize((size_t)T * kK);
    gw.resize((size_t)T * kK);
    ++g_checks;
    const int got = ex.match(gi, gw, T);
    if (got != v) failf("bias: direct call after %d set_bias calls used version class %d, expected %d", v, got, v);
  }
  CK(cudaStreamDestroy(s));
}

}  // namespace

void run_bias(bool quick) {
  const int before = g_failures;
  std::mt19937_64 rng(31);
  // 8192 rows of 64 experts: the CPU pool runs them in many chunks (grain 128 rows), so a version change
  // between chunks or inside a row's bias read is visible. The emulated device gets fewer rows.
  for (const int backend : {MOE_BACKEND_CPU, MOE_BACKEND_CUDA}) {
    const bool cuda = backend == MOE_BACKEND_CUDA;
    const int64_t T = cuda ? 256 : 8192;
    const std::vector<uint8_t> logits = make_logits(rng, T, kE, MOE_DTYPE_F32, 0);
    const Versions ex = expected(logits, T);
    const moe_router_config cfg = base_config();
    moe_router* r = nullptr;
    if (cuda) {
      MK(moe_router_create(&cfg, backend, 0, &r));
      direct_calls_around_set_bias(r, T, logits, ex);
      moe_router_destroy(r);
    }
    MK(moe_router_create(&cfg, backend, 0, &r));  // no bias yet: the first set_bias starts ranking by R
    const std::string what = cuda ? "bias CUDA router (host variants)" : "bias CPU router";
    const int flips = race(what, r, T, logits, ex, 2, cuda ? (quick ? 4 : 12) : (quick ? 20 : 60));
    if (g_verbose) printf("%s: %d bias changes\n", what.c_str(), flips);
    moe_router_destroy(r);
  }
  printf("%-36s %s\n", "bias", g_failures == before ? "ok" : "MISMATCH");
  fflush(stdout);
}

}  // namespace check
