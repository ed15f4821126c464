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
// What the compared calls exercised (printed with the summary, so that a run that stopped covering a
// case shows it): calls the CPU rejected (compared with the CUDA rejections), rows flagged non-finite,
// replay rows of -1 accepted.
inline long long g_rejected_calls = 0, g_flagged_rows = 0, g_minus_one_rows = 0;

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
  // Routing options of spec sections 1-5 beyond the v1 ones (0 = the default of each).
  int normalize = MOE_NORMALIZE_DEFAULT;
  int group_score = MOE_GROUP_TOPK_SUM;
  int nonfinite = MOE_NONFINITE_PROPAGATE;
  int minus_one = MOE_MINUS_ONE_REJECT;
};

// A configuration with the v2 options set (Config's positional form stops at the v1 ones).
inline Config with_options(Config c, int normalize, int group_score, int nonfinite, int minus_one) {
  c.normalize = normalize;
  c.group_score = group_score;
  c.nonfinite = nonfinite;
  c.minus_one = minus_one;
  return c;
}

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

// Logits that saturate every score function: |L| up to 60 in float32 (sigmoid(L) == 1.0f above ~17,
// sqrtsoftplus linear above 20, exp underflow), with repeated saturated values in a row.
inline std::vector<uint8_t> saturated_logits(std::mt19937_64& rng, int64_t T, int E, int dtype) {
  std::vector<float> v((size_t)T * E);
  for (auto& x : v) {
    const uint64_t r = rng() % 8;
    x = r == 0 ? 25.0f : r == 1 ? -25.0f : (float)((int)(rng() % 121) - 60) * 0.5f;
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

// Replay rows of -1 (padding) for routers that accept them: about one row in five, and every row
// when T == 1 one time in two.
inline void plant_minus_one_rows(std::mt19937_64& rng, std::vector<int32_t>& idx, int64_t T, int k) {
  for (int64_t t = 0; t < T; ++t)
    if (rng() % (T == 1 ? 2 : 5) == 0)
      for (int j = 0; j < k; ++j) idx[(size_t)t * k + j] = -1;
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
                   const std::vector<float>& gw, int64_t gnf, const std::vector<uint8_t>* cf = nullptr,
                   const std::vector<uint8_t>* gf = nullptr) {
  ++g_checks;
  int bad = 0;
  if (cf && gf)
    for (int64_t t = 0; t < T; ++t)
      if ((*cf)[t] != (*gf)[t] && bad++ < 3)
        failf("%s: non-finite flag of row %lld cpu=%d cuda=%d", what.c_str(), (long long)t, (*cf)[t], (*gf)[t]);
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
    moe_router_config cfg{c.E, c.k, c.score, c.pre, c.G, c.Gk, c.scale, b, c.normalize, c.group_score,
                          c.nonfinite, c.minus_one};
    MK(moe_router_create(&cfg, MOE_BACKEND_CPU, 0, &cpu));
    MK(moe_router_create(&cfg, MOE_BACKEND_CUDA, 0, &gpu));
  }
  ~Routers() {
    moe_router_destroy(cpu);
    moe_router_destroy(gpu);
  }
};

// The row a CPU rejection names ("row 12: ..."), or -1.
inline int64_t message_row(const std::string& msg) {
  long long row = -1;
  return sscanf(msg.c_str(), "row %lld:", &row) == 1 ? (int64_t)row : -1;
}

// A rejected call of the CPU backend: the CUDA device-pointer call must write nothing and be
// reported by check_replay with the same status, row and (for non-finite rows) the same text up to
// " (rejected on the device)"; the host-staged call must fail at once with the CPU's exact message.
inline void expect_device_rejection(moe_router* gpu, const std::string& what, int cpu_status, const std::string& cpu_msg) {
  ++g_checks;
  int64_t row = -5;
  int reason = -5;
  const int st = moe_router_check_replay(gpu, &row, &reason);
  const std::string msg = moe_last_error_message();
  const int64_t want = message_row(cpu_msg);
  // "row R: the logit of expert E is NaN (non-finite policy ERROR)" -> the device's text starts with all of it
  // but the closing parenthesis.
  const std::string stem = cpu_msg.substr(0, cpu_msg.size() - 1);
  const bool text_ok = cpu_status != MOE_ERR_NONFINITE || msg.compare(0, stem.size(), stem) == 0;
  if (st != cpu_status || row != want || !text_ok)
    failf("%s: check_replay status %d row %lld '%s'; the CPU rejected the call with status %d: '%s'", what.c_str(), st,
          (long long)row, msg.c_str(), cpu_status, cpu_msg.c_str());
  if (moe_router_check_replay(gpu, &row, &reason) != MOE_OK) failf("%s: check_replay did not reset", what.c_str());
}

inline void expect_host_rejection(const std::string& what, int st, int cpu_status, const std::string& cpu_msg) {
  ++g_checks;
  if (st != cpu_status || cpu_msg != moe_last_error_message())
    failf("%s: status %d '%s'; the CPU rejected the call with status %d '%s'", what.c_str(), st,
          moe_last_error_message(), cpu_status, cpu_msg.c_str());
}

template <typename T>
bool all_bits(const std::vector<T>& v, uint8_t byte) {
  for (const T& x : v) {
    const uint8_t* b = reinterpret_cast<const uint8_t*>(&x);
    for (size_t i = 0; i < sizeof(T); ++i)
      if (b[i] != byte) return false;
  }
  return true;
}

// The forward of one call (live when rep is null) on the CPU router, the CUDA device-pointer path
// and the CUDA host-staged path: identical indices, weights, row flags and counts, or the same
// rejection with nothing written. `in_place`: the device call's out_idx aliases its replay indices.
// Returns the CPU's status and outputs (for the backward) and the device-pointer call's outputs.
struct Forward {
  int status = MOE_OK;
  std::string message;  // the CPU's, when it rejected the call
  std::vector<int32_t> idx, dev_idx;
  std::vector<float> dev_w;
  std::vector<uint8_t> flags, dev_flags;
};

inline Forward check_forward(Routers& r, const std::string& what, int dtype, int64_t T, int k,
                             const std::vector<uint8_t>& logits, const uint8_t* d_logits, const int32_t* rep,
                             const int32_t* d_rep, const uint8_t* mask, const uint8_t* d_mask, bool in_place,
                             cudaStream_t stream) {
  const size_t n = (size_t)T * k;
  Forward f;
  f.idx.assign(n, -7);
  f.flags.assign((size_t)T, 7);
  std::vector<float> cw(n, -1.0f);
  int64_t cnf = -1;
  f.status = moe_route(r.cpu, logits.data(), dtype, T, rep, mask, f.idx.data(), cw.data(), f.flags.data(), &cnf,
                       nullptr);
  const std::string cpu_msg = moe_last_error_message();
  if (f.status != MOE_OK) f.message = cpu_msg;
  if (f.status != MOE_OK && f.status != MOE_ERR_NONFINITE && f.status != MOE_ERR_INVALID_REPLAY)
    failf("%s: the CPU call failed: %d %s", what.c_str(), f.status, cpu_msg.c_str());
  if (f.status != MOE_OK) {
    ++g_rejected_calls;
  } else {
    for (uint8_t b : f.flags) g_flagged_rows += b;
    if (rep)
      for (int64_t t = 0; t < T; ++t) g_minus_one_rows += (!mask || mask[t]) && rep[(size_t)t * k] == -1;
  }

  DBuf<int32_t> d_idx(n + 1);
  DBuf<float> d_w(n + 1);
  DBuf<uint8_t> d_flags((size_t)T + 1);
  DBuf<int64_t> d_nf(1);
  d_idx.poison();
  d_w.poison();
  d_flags.poison();
  d_nf.poison();
  if (in_place) {
    CK(cudaMemcpy(d_idx.p, d_rep, n * sizeof(int32_t), cudaMemcpyDeviceToDevice));
    CK(cudaDeviceSynchronize());  // a device-to-device cudaMemcpy does not wait
  }
  MK(moe_route(r.gpu, d_logits, dtype, T, in_place ? d_idx.p : d_rep, d_mask, d_idx.p, d_w.p, d_flags.p, d_nf.p,
               stream));
  CK(cudaStreamSynchronize(stream));
  std::vector<int32_t> gi = d_idx.down();
  std::vector<float> gw = d_w.down();
  std::vector<uint8_t> gf = d_flags.down();
  gi.resize(n);
  gw.resize(n);
  gf.resize((size_t)T);
  if (f.status == MOE_OK) {
    int64_t bad_row = 0;
    int reason = 0;
    if (moe_router_check_replay(r.gpu, &bad_row, &reason) != MOE_OK)
      failf("%s/device: check_replay reported row %lld (%s) for a call the CPU accepted", what.c_str(),
            (long long)bad_row, moe_last_error_message());
    compare_route(what + "/device", T, k, f.idx, cw, cnf, gi, gw, d_nf.down()[0], &f.flags, &gf);
  } else {
    expect_device_rejection(r.gpu, what + "/device", f.status, cpu_msg);
    std::vector<int32_t> want_idx = in_place ? std::vector<int32_t>(rep, rep + n) : std::vector<int32_t>(n, -1);
    if (gi != want_idx || !all_bits(gw, 0xff) || !all_bits(gf, 0xff) || d_nf.down()[0] != -1)
      failf("%s/device: a rejected call wrote outputs", what.c_str());
  }
  f.dev_idx = gi;
  f.dev_w = gw;
  f.dev_flags = gf;

  std::vector<int32_t> hi(n, -7);
  std::vector<float> hw(n, -1.0f);
  std::vector<uint8_t> hf((size_t)T, 7);
  int64_t hnf = -1;
  const int hst = moe_route_host(r.gpu, logits.data(), dtype, T, rep, mask, hi.data(), hw.data(), hf.data(), &hnf);
  if (f.status == MOE_OK) {
    if (hst != MOE_OK) failf("%s/host: status %d (%s)", what.c_str(), hst, moe_last_error_message());
    else compare_route(what + "/host", T, k, f.idx, cw, cnf, hi, hw, hnf, &f.flags, &hf);
  } else {
    expect_host_rejection(what + "/host", hst, f.status, cpu_msg);
    if (hi != std::vector<int32_t>(n, -7) || hw != std::vector<float>(n, -1.0f) || hnf != -1 ||
        hf != std::vector<uint8_t>((size_t)T, 7))
      failf("%s/host: a rejected call wrote outputs", what.c_str());
  }
  return f;
}

// The backward at idx with the forward's row flags (read under ZERO only, passed always) on the
// three paths: identical gradients, or the same rejection with nothing written. Returns the CPU's
// status and message and the device-pointer call's gradients.
struct Backward {
  int status = MOE_OK;
  std::string message;
  std::vector<float> dev_grad;
};

inline Backward check_backward(Routers& r, const std::string& what, int dtype, int64_t T, int E, int k,
                           const std::vector<uint8_t>& logits, const uint8_t* d_logits, const std::vector<int32_t>& idx,
                           const std::vector<float>& dw, const std::vector<uint8_t>& flags, cudaStream_t stream) {
  std::vector<float> cg((size_t)T * E, 7.0f), hg((size_t)T * E, 7.0f);
  const int cst = moe_route_backward(r.cpu, logits.data(), dtype, T, idx.data(), dw.data(), flags.data(), cg.data(),
                                     nullptr);
  const std::string cpu_msg = moe_last_error_message();
  Backward b;
  b.status = cst;
  if (cst != MOE_OK) b.message = cpu_msg;
  if (cst != MOE_OK && cst != MOE_ERR_NONFINITE) failf("%s: the CPU call failed: %d %s", what.c_str(), cst, cpu_msg.c_str());
  if (cst != MOE_OK) ++g_rejected_calls;
  DBuf<int32_t> d_idx(idx.size());
  DBuf<float> d_dw(dw.size()), d_grad((size_t)T * E);
  DBuf<uint8_t> d_flags((size_t)T + 1);
  d_idx.up(idx.data());
  d_dw.up(dw.data());
  CK(cudaMemcpy(d_flags.p, flags.data(), (size_t)T, cudaMemcpyHostToDevice));
  CK(cudaDeviceSynchronize());
  d_grad.poison();
  MK(moe_route_backward(r.gpu, d_logits, dtype, T, d_idx.p, d_dw.p, d_flags.p, d_grad.p, stream));
  CK(cudaStreamSynchronize(stream));
  b.dev_grad = d_grad.down();
  if (cst == MOE_OK) {
    int64_t bad_row = 0;
    int reason = 0;
    if (moe_router_check_replay(r.gpu, &bad_row, &reason) != MOE_OK)
      failf("%s/device: check_replay reported row %lld (%s) for a call the CPU accepted", what.c_str(),
            (long long)bad_row, moe_last_error_message());
    compare_grad(what + "/device", cg, b.dev_grad);
  } else {
    expect_device_rejection(r.gpu, what + "/device", cst, cpu_msg);
    if (!all_bits(b.dev_grad, 0xff)) failf("%s/device: a rejected backward wrote gradients", what.c_str());
  }
  const int hst = moe_route_backward_host(r.gpu, logits.data(), dtype, T, idx.data(), dw.data(), flags.data(),
                                          hg.data());
  if (cst == MOE_OK) {
    if (hst != MOE_OK) failf("%s/host: status %d (%s)", what.c_str(), hst, moe_last_error_message());
    else compare_grad(what + "/host", cg, hg);
  } else {
    expect_host_rejection(what + "/host", hst, cst, cpu_msg);
    if (hg != std::vector<float>((size_t)T * E, 7.0f)) failf("%s/host: a rejected backward wrote gradients", what.c_str());
  }
  return b;
}

// One configuration, dtype, token count and data mode: live, replay (full, masked, in place; rows
// of -1 where the router accepts them), backward at the live and the replayed indices, each on the
// device-pointer path and the host-staging path.
inline void check_case_logits(const Config& c, int dtype, int64_t T, int mode, const std::vector<uint8_t>& logits,
                              std::mt19937_64& rng, cudaStream_t stream) {
  Routers r(c, rng);
  const int E = c.E, k = c.k;
  DBuf<uint8_t> d_logits(logits.size());
  d_logits.up(logits.data());

  Forward live = check_forward(r, label(c, dtype, T, mode, "live"), dtype, T, k, logits, d_logits.p, nullptr, nullptr,
                               nullptr, nullptr, false, stream);

  std::vector<int32_t> rep = random_replay(rng, T, E, k);
  if (c.minus_one != MOE_MINUS_ONE_REJECT) plant_minus_one_rows(rng, rep, T, k);
  std::vector<uint8_t> mask((size_t)T);
  for (auto& m : mask) m = (uint8_t)(rng() % 3 != 0);
  DBuf<int32_t> d_rep(rep.size());
  DBuf<uint8_t> d_mask((size_t)T);
  d_rep.up(rep.data());
  d_mask.up(mask.data());
  Forward replayed;
  for (int variant = 0; variant < 3; ++variant) {
    const char* vname = variant == 0 ? "replay" : variant == 1 ? "replay+mask" : "replay in place";
    Forward f = check_forward(r, label(c, dtype, T, mode, vname), dtype, T, k, logits, d_logits.p, rep.data(), d_rep.p,
                              variant == 1 ? mask.data() : nullptr, variant == 1 ? d_mask.p : nullptr, variant == 2,
                              stream);
    if (variant == 0) replayed = f;
  }

  // Backward at the indices each forward used (the replayed rows' experts, or what -1 rows became),
  // with that forward's flags; random valid rows when the forward was rejected (non-finite ERROR).
  std::vector<float> dw((size_t)T * k);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (auto& x : dw) x = nd(rng);
  for (int which = 0; which < 2; ++which) {
    const Forward& f = which == 0 ? live : replayed;
    const std::vector<int32_t> ix = f.status == MOE_OK ? f.idx : random_replay(rng, T, E, k);
    const std::vector<uint8_t> flags = f.status == MOE_OK ? f.flags : std::vector<uint8_t>((size_t)T, 0);
    check_backward(r, label(c, dtype, T, mode, which == 0 ? "backward(live idx)" : "backward(replay idx)"), dtype, T,
                   E, k, logits, d_logits.p, ix, dw, flags, stream);
  }
}

inline void check_case(const Config& c, int dtype, int64_t T, int mode, std::mt19937_64& rng, cudaStream_t stream) {
  check_case_logits(c, dtype, T, mode,
                    mode == 7 ? saturated_logits(rng, T, c.E, dtype) : make_logits(rng, T, c.E, dtype, mode), rng,
                    stream);
}


// Spec section 6 on the device-pointer entry points (check_training.cu): the CPU router's results, after
// checking that the CUDA router's equal them bit for bit (a failure is counted, not returned).
struct LossResult {
  int status = MOE_OK;
  moe_loss_values values{};
  std::vector<int32_t> counts;
  std::vector<float> scores, grad;
  std::vector<uint8_t> map;
};
struct DropResult {
  int status = MOE_OK;
  std::vector<uint8_t> map, kept;
  std::vector<float> probs;
  std::vector<int32_t> kept_counts;
  int64_t dropped = -1;
};
// v_t from padding (empty: none).
std::vector<uint8_t> check_valid_tokens(Routers& r, const std::string& tag, int dtype, int64_t T, int E,
                                        const std::vector<uint8_t>& logits, const uint8_t* d_logits,
                                        const std::vector<uint8_t>& padding, cudaStream_t stream);
// Counts of idx over the valid rows (empty: all), in the idx and the map form.
std::vector<int32_t> check_counts(Routers& r, const std::string& tag, int64_t T, int k, int E,
                                  const std::vector<int32_t>& idx, const std::vector<uint8_t>& valid,
                                  cudaStream_t stream);
// The losses of `config` (host G); outputs: the aux counts, scores and map too; grad0 (empty: no
// gradient) is the gradient the call adds onto.
LossResult check_losses(Routers& r, const std::string& tag, int dtype, int64_t T, int E,
                        const std::vector<uint8_t>& logits, const uint8_t* d_logits, const std::vector<uint8_t>& valid,
                        const moe_loss_config& config, bool outputs, const std::vector<float>& grad0,
                        cudaStream_t stream);
DropResult check_drop(Routers& r, const std::string& tag, int64_t T, int k, int E, const std::vector<int32_t>& idx,
                      const std::vector<float>& w, double cf, int policy, int pad, cudaStream_t stream);

// Sections in other files (each counts its checks and failures in the globals above).
void run_training(cudaStream_t stream, bool quick);
void run_goldens(const std::vector<std::string>& dirs, cudaStream_t stream);
void run_edges(cudaStream_t stream, bool quick);
void run_concurrency(bool quick);
void run_bias(bool quick);
void run_grouped(cudaStream_t stream, bool quick);  // check_grouped.cu

}  // namespace check

#endif  // MOE_CHECK_SUPPORT_H_
