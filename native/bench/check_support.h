// SPDX-License-Identifier: Apache-2.0
// Shared pieces of moe_check (CUDA backend vs native CPU backend through the C ABI): counters,
// input generators, device buffers and the bit-exact comparisons. Header-only (inline) so that
// every check source of the GPU tool and of the SIMT harness build includes it.
#ifndef MOE_CHECK_SUPPORT_H_
#define MOE_CHECK_SUPPORT_H_

#include <cuda_runtime.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "bench_common.h"
#include "moe_router.h"

namespace check {

inline int g_failures = 0;
inline int g_checks = 0;
inline bool g_verbose = false;

inline void failf(const char* fmt, ...) {
  ++g_failures;
  if (g_failures > 40) return;
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "FAIL: ");
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "\n");
  va_end(ap);
}

struct Config {
  const char* name;
  int E, k, score, pre, G, Gk;
  float scale;
  bool bias;                            // random bias ...
  const float* bias_values = nullptr;   // ... or these values
};

inline uint32_t fbits(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}

inline uint16_t to_half(float f) {  // truncating float -> binary16 (inputs only need to be valid halves)
  uint32_t b = fbits(f);
  uint16_t sign = (uint16_t)((b >> 16) & 0x8000u);
  if (f != f) return 0x7e00;
  int e = (int)((b >> 23) & 0xff) - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) return sign;
  return (uint16_t)(sign | (e << 10) | ((b >> 13) & 0x3ff));
}

// Floats as `dtype` bytes (bf16 by truncation, fp16 by to_half; NaN stays NaN).
inline std::vector<uint8_t> to_dtype(const std::vector<float>& f, int dtype) {
  std::vector<uint8_t> out(f.size() * (dtype == MOE_DTYPE_F32 ? 4 : 2));
  for (size_t i = 0; i < f.size(); ++i) {
    if (dtype == MOE_DTYPE_F32) {
      memcpy(&out[i * 4], &f[i], 4);
    } else {
      uint16_t h = dtype == MOE_DTYPE_BF16 ? (uint16_t)(f[i] != f[i] ? 0x7fc0 : fbits(f[i]) >> 16) : to_half(f[i]);
      memcpy(&out[i * 2], &h, 2);
    }
  }
  return out;
}

// Logits in `dtype` bytes. mode 0: normal; 1: heavy ties (quantised); 2: wide (saturating sigmoid);
// 3: normal with NaN/Inf rows.
inline std::vector<uint8_t> make_logits(std::mt19937_64& rng, int64_t T, int E, int dtype, int mode) {
  std::normal_distribution<float> nd(0.0f, mode == 2 ? 20.0f : 2.0f);
  std::vector<float> v((size_t)T * E);
  for (auto& x : v) {
    x = nd(rng);
    if (mode == 1) x = roundf(x * 2.0f) / 2.0f;
  }
  if (mode == 3) {
    const float nan = nanf(""), inf = INFINITY;
    for (int64_t t = 0; t < T; ++t) {
      uint64_t r = rng() % 7;
      float* row = &v[(size_t)t * E];
      if (r == 0) row[rng() % E] = nan;
      if (r == 1) row[rng() % E] = inf;
      if (r == 2) row[rng() % E] = -inf;
      if (r == 3)
        for (int i = 0; i < E; ++i) row[i] = nan;
      if (r == 4)
        for (int i = 0; i < E; i += 2) row[i] = -inf;
    }
  }
  return to_dtype(v, dtype);
}

inline std::vector<int32_t> random_replay(std::mt19937_64& rng, int64_t T, int E, int k) {
  std::vector<int32_t> idx((size_t)T * k);
  std::vector<int32_t> perm(E);
  for (int64_t t = 0; t < T; ++t) {
    for (int i = 0; i < E; ++i) perm[i] = i;
    for (int j = 0; j < k; ++j) {
      int m = j + (int)(rng() % (uint64_t)(E - j));
      std::swap(perm[j], perm[m]);
      idx[(size_t)t * k + j] = perm[j];
    }
  }
  return idx;
}

// CUDA and CPU must agree bit for bit; NaN matches NaN whatever its payload (the payload of a
// propagated NaN is not part of the contract and differs between host and device arithmetic).
inline bool same_f(float a, float b) { return fbits(a) == fbits(b) || (a != a && b != b); }

// CUDA buffer helper.
template <typename T>
struct DBuf {
  T* p = nullptr;
  size_t n = 0;
  explicit DBuf(size_t count) : n(count) { CK(cudaMalloc(&p, count * sizeof(T) + 16)); }
  ~DBuf() { cudaFree(p); }
  // cudaMemcpy from pageable memory and cudaMemset may return before the device memory is written,
  // and the legacy stream does not order the non-blocking streams used below: wait for them.
  void up(const T* h) {
    CK(cudaMemcpy(p, h, n * sizeof(T), cudaMemcpyHostToDevice));
    CK(cudaDeviceSynchronize());
  }
  std::vector<T> down() const {
    std::vector<T> h(n);
    CK(cudaMemcpy(h.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost));
    return h;
  }
  void poison() {
    CK(cudaMemset(p, 0xff, n * sizeof(T) + 16));
    CK(cudaDeviceSynchronize());
  }
};

inline std::string label(const Config& c, int dtype, int64_t T, int mode, const char* what) {
  static const char* dn[] = {"f32", "bf16", "f16"};
  char buf[256];
  snprintf(buf, sizeof buf, "%s %s T=%lld mode=%d %s", c.name, dn[dtype], (long long)T, mode, what);
  return buf;
}

inline void compare_route(const std::string& what, int64_t T, int k, const std::vector<int32_t>& ci,
                   const std::vector<float>& cw, int64_t cnf, const std::vector<int32_t>& gi,
                   const std::vector<float>& gw, int64_t gnf) {
  ++g_checks;
  int bad = 0;
  for (int64_t i = 0; i < T * k; ++i) {
    if (ci[i] != gi[i]) {
      if (bad++ < 3)
        failf("%s: idx[%lld][%lld] cpu=%d cuda=%d", what.c_str(), (long long)(i / k), (long long)(i % k), ci[i],
              gi[i]);
    } else if (!same_f(cw[i], gw[i])) {
      if (bad++ < 3)
        failf("%s: w[%lld][%lld] cpu=%.9g cuda=%.9g (bits %08x %08x)", what.c_str(), (long long)(i / k),
              (long long)(i % k), cw[i], gw[i], fbits(cw[i]), fbits(gw[i]));
    }
  }
  if (cnf != gnf) failf("%s: non-finite rows cpu=%lld cuda=%lld", what.c_str(), (long long)cnf, (long long)gnf);
  if (g_verbose && !bad) printf("  ok  %s\n", what.c_str());
}

inline void compare_grad(const std::string& what, const std::vector<float>& c, const std::vector<float>& g) {
  ++g_checks;
  int bad = 0;
  for (size_t i = 0; i < c.size(); ++i)
    if (!same_f(c[i], g[i]) && bad++ < 3)
      failf("%s: grad[%zu] cpu=%.9g cuda=%.9g (bits %08x %08x)", what.c_str(), i, c[i], g[i], fbits(c[i]),
            fbits(g[i]));
  if (g_verbose && !bad) printf("  ok  %s\n", what.c_str());
}

struct Routers {
  moe_router* cpu = nullptr;
  moe_router* gpu = nullptr;
  Routers(const Config& c, std::mt19937_64& rng) {
    std::vector<float> bias(c.E);
    std::normal_distribution<float> nd(0.0f, 0.05f);
    for (auto& b : bias) b = nd(rng);
    const float* b = c.bias_values ? c.bias_values : c.bias ? bias.data() : nullptr;
    moe_router_config cfg{c.E, c.k, c.score, c.pre, c.G, c.Gk, c.scale, b, MOE_NORMALIZE_DEFAULT, MOE_GROUP_TOPK_SUM,
                          MOE_NONFINITE_PROPAGATE, MOE_MINUS_ONE_REJECT};
    MK(moe_router_create(&cfg, MOE_BACKEND_CPU, 0, &cpu));
    MK(moe_router_create(&cfg, MOE_BACKEND_CUDA, 0, &gpu));
  }
  ~Routers() {
    moe_router_destroy(cpu);
    moe_router_destroy(gpu);
  }
};

// One configuration, dtype, token count and data mode: live, replay (full, masked, in place),
// backward, on the device-pointer path and the host-staging path.
inline void check_case_logits(const Config& c, int dtype, int64_t T, int mode, const std::vector<uint8_t>& logits,
                              std::mt19937_64& rng, cudaStream_t stream) {
  Routers r(c, rng);
  const int E = c.E, k = c.k;
  const size_t esz = dtype == MOE_DTYPE_F32 ? 4 : 2;
  DBuf<uint8_t> d_logits(logits.size());
  d_logits.up(logits.data());
  DBuf<int32_t> d_idx((size_t)T * k), d_replay((size_t)T * k);
  DBuf<float> d_w((size_t)T * k);
  DBuf<int64_t> d_nf(1);
  DBuf<uint8_t> d_mask((size_t)T);
  (void)esz;

  // ---- live
  std::vector<int32_t> ci((size_t)T * k, -7), hi((size_t)T * k, -7);
  std::vector<float> cw((size_t)T * k, -1.0f), hw((size_t)T * k, -1.0f);
  int64_t cnf = -1, hnf = -1;
  MK(moe_route(r.cpu, logits.data(), dtype, T, nullptr, nullptr, ci.data(), cw.data(), nullptr, &cnf, nullptr));
  d_idx.poison();
  d_w.poison();
  d_nf.poison();
  MK(moe_route(r.gpu, d_logits.p, dtype, T, nullptr, nullptr, d_idx.p, d_w.p, nullptr, d_nf.p, stream));
  CK(cudaStreamSynchronize(stream));
  compare_route(label(c, dtype, T, mode, "live/device"), T, k, ci, cw, cnf, d_idx.down(), d_w.down(), d_nf.down()[0]);
  MK(moe_route_host(r.gpu, logits.data(), dtype, T, nullptr, nullptr, hi.data(), hw.data(), nullptr, &hnf));
  compare_route(label(c, dtype, T, mode, "live/host"), T, k, ci, cw, cnf, hi, hw, hnf);

  // ---- replay: full, masked, in place
  std::vector<int32_t> rep = random_replay(rng, T, E, k);
  std::vector<uint8_t> mask((size_t)T);
  for (auto& m : mask) m = (uint8_t)(rng() % 3 != 0);
  d_replay.up(rep.data());
  d_mask.up(mask.data());
  for (int variant = 0; variant < 3; ++variant) {
    const uint8_t* hmask = variant == 1 ? mask.data() : nullptr;
    const char* vname = variant == 0 ? "replay" : variant == 1 ? "replay+mask" : "replay in place";
    MK(moe_route(r.cpu, logits.data(), dtype, T, rep.data(), hmask, ci.data(), cw.data(), nullptr, &cnf, nullptr));
    d_w.poison();
    d_nf.poison();
    const int32_t* rp = d_replay.p;
    if (variant == 2) {
      CK(cudaMemcpy(d_idx.p, d_replay.p, (size_t)T * k * 4, cudaMemcpyDeviceToDevice));
      CK(cudaDeviceSynchronize());  // a device-to-device cudaMemcpy does not wait
      rp = d_idx.p;
    } else {
      d_idx.poison();
    }
    MK(moe_route(r.gpu, d_logits.p, dtype, T, rp, variant == 1 ? d_mask.p : nullptr, d_idx.p, d_w.p, nullptr, d_nf.p, stream));
    CK(cudaStreamSynchronize(stream));
    int64_t bad_row = 0;
    int reason = 0;
    if (moe_router_check_replay(r.gpu, &bad_row, &reason) != MOE_OK)
      failf("%s: check_replay reported row %lld for valid indices", label(c, dtype, T, mode, vname).c_str(),
            (long long)bad_row);
    std::string l = label(c, dtype, T, mode, vname);
    compare_route(l + "/device", T, k, ci, cw, cnf, d_idx.down(), d_w.down(), d_nf.down()[0]);
    std::fill(hi.begin(), hi.end(), -7);
    std::fill(hw.begin(), hw.end(), -1.0f);
    MK(moe_route_host(r.gpu, logits.data(), dtype, T, rep.data(), hmask, hi.data(), hw.data(), nullptr, &hnf));
    compare_route(l + "/host", T, k, ci, cw, cnf, hi, hw, hnf);
  }

  // ---- backward (live indices of the CPU router, and the replayed ones)
  std::vector<float> dw((size_t)T * k);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (auto& x : dw) x = nd(rng);
  DBuf<float> d_dw(dw.size()), d_grad((size_t)T * E);
  d_dw.up(dw.data());
  std::vector<int32_t> live_idx((size_t)T * k);
  std::vector<float> tmpw((size_t)T * k);
  MK(moe_route(r.cpu, logits.data(), dtype, T, nullptr, nullptr, live_idx.data(), tmpw.data(), nullptr, nullptr, nullptr));
  for (int which = 0; which < 2; ++which) {
    const std::vector<int32_t>& ix = which == 0 ? live_idx : rep;
    std::vector<float> cg((size_t)T * E, 7.0f), hg((size_t)T * E, 7.0f);
    MK(moe_route_backward(r.cpu, logits.data(), dtype, T, ix.data(), dw.data(), nullptr, cg.data(), nullptr));
    d_replay.up(ix.data());
    d_grad.poison();
    MK(moe_route_backward(r.gpu, d_logits.p, dtype, T, d_replay.p, d_dw.p, nullptr, d_grad.p, stream));
    CK(cudaStreamSynchronize(stream));
    std::string l = label(c, dtype, T, mode, which == 0 ? "backward(live idx)" : "backward(replay idx)");
    compare_grad(l + "/device", cg, d_grad.down());
    MK(moe_route_backward_host(r.gpu, logits.data(), dtype, T, ix.data(), dw.data(), nullptr, hg.data()));
    compare_grad(l + "/host", cg, hg);
  }
}

inline void check_case(const Config& c, int dtype, int64_t T, int mode, std::mt19937_64& rng, cudaStream_t stream) {
  check_case_logits(c, dtype, T, mode, make_logits(rng, T, c.E, dtype, mode), rng, stream);
}


// Sections in other files (each counts its checks and failures in the globals above).
void run_goldens(const std::vector<std::string>& dirs, cudaStream_t stream);
void run_edges(cudaStream_t stream, bool quick);
void run_concurrency(bool quick);

}  // namespace check

#endif  // MOE_CHECK_SUPPORT_H_
