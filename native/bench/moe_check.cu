// SPDX-License-Identifier: Apache-2.0
// GPU self-check without Java: the CUDA backend against the native CPU backend through the C ABI
// (MOE_BACKEND_CPU vs MOE_BACKEND_CUDA routers) on random inputs, bf16/fp16 ties, NaN/Inf rows,
// poisoned outputs, replay (full, masked, in place), invalid replay rows (device and host paths),
// backward, CUDA-graph capture and the device routing agreement.
// Indices must match exactly; weights and gradients within 1e-6 relative (bit-exact expected; the
// number of non-bit-exact values is reported). Exit status 0 = pass, 1 = mismatch, 2 = no device.
//
//   moe_check [--quick] [--seed N] [--verbose]
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

namespace {

int g_failures = 0;
int g_checks = 0;
long long g_inexact = 0;
bool g_verbose = false;

void failf(const char* fmt, ...) {
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
  bool bias;
};

uint32_t fbits(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}

uint16_t to_half(float f) {  // truncating float -> binary16 (inputs only need to be valid halves)
  uint32_t b = fbits(f);
  uint16_t sign = (uint16_t)((b >> 16) & 0x8000u);
  if (f != f) return 0x7e00;
  int e = (int)((b >> 23) & 0xff) - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) return sign;
  return (uint16_t)(sign | (e << 10) | ((b >> 13) & 0x3ff));
}

// Logits in `dtype` bytes. mode 0: normal; 1: heavy ties (quantised); 2: wide (saturating sigmoid);
// 3: normal with NaN/Inf rows.
std::vector<uint8_t> make_logits(std::mt19937_64& rng, int64_t T, int E, int dtype, int mode) {
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
  std::vector<uint8_t> out((size_t)T * E * (dtype == MOE_DTYPE_F32 ? 4 : 2));
  for (size_t i = 0; i < v.size(); ++i) {
    if (dtype == MOE_DTYPE_F32) {
      memcpy(&out[i * 4], &v[i], 4);
    } else {
      uint16_t h = dtype == MOE_DTYPE_BF16 ? (uint16_t)(fbits(v[i]) >> 16) : to_half(v[i]);
      if (dtype == MOE_DTYPE_BF16 && v[i] != v[i]) h = 0x7fc0;
      memcpy(&out[i * 2], &h, 2);
    }
  }
  return out;
}

std::vector<int32_t> random_replay(std::mt19937_64& rng, int64_t T, int E, int k) {
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

bool close_f(float a, float b) {
  if (fbits(a) == fbits(b)) return true;
  if (a != a && b != b) return true;
  ++g_inexact;
  if (!(fabsf(a) <= 3.4e38f) || !(fabsf(b) <= 3.4e38f)) return false;  // inf / nan vs number
  float m = fmaxf(fabsf(a), fabsf(b));
  return fabsf(a - b) <= 1e-6f * m;
}

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

std::string label(const Config& c, int dtype, int64_t T, int mode, const char* what) {
  static const char* dn[] = {"f32", "bf16", "f16"};
  char buf[256];
  snprintf(buf, sizeof buf, "%s %s T=%lld mode=%d %s", c.name, dn[dtype], (long long)T, mode, what);
  return buf;
}

void compare_route(const std::string& what, int64_t T, int k, const std::vector<int32_t>& ci,
                   const std::vector<float>& cw, int64_t cnf, const std::vector<int32_t>& gi,
                   const std::vector<float>& gw, int64_t gnf) {
  ++g_checks;
  int bad = 0;
  for (int64_t i = 0; i < T * k; ++i) {
    if (ci[i] != gi[i]) {
      if (bad++ < 3)
        failf("%s: idx[%lld][%lld] cpu=%d cuda=%d", what.c_str(), (long long)(i / k), (long long)(i % k), ci[i],
              gi[i]);
    } else if (!close_f(cw[i], gw[i])) {
      if (bad++ < 3)
        failf("%s: w[%lld][%lld] cpu=%.9g cuda=%.9g (bits %08x %08x)", what.c_str(), (long long)(i / k),
              (long long)(i % k), cw[i], gw[i], fbits(cw[i]), fbits(gw[i]));
    }
  }
  if (cnf != gnf) failf("%s: non-finite rows cpu=%lld cuda=%lld", what.c_str(), (long long)cnf, (long long)gnf);
  if (g_verbose && !bad) printf("  ok  %s\n", what.c_str());
}

void compare_grad(const std::string& what, const std::vector<float>& c, const std::vector<float>& g) {
  ++g_checks;
  int bad = 0;
  for (size_t i = 0; i < c.size(); ++i)
    if (!close_f(c[i], g[i]) && bad++ < 3)
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
    moe_router_config cfg{c.E, c.k, c.score, c.pre, c.G, c.Gk, c.scale, c.bias ? bias.data() : nullptr};
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
void check_case(const Config& c, int dtype, int64_t T, int mode, std::mt19937_64& rng, cudaStream_t stream) {
  Routers r(c, rng);
  const int E = c.E, k = c.k;
  const size_t esz = dtype == MOE_DTYPE_F32 ? 4 : 2;
  std::vector<uint8_t> logits = make_logits(rng, T, E, dtype, mode);
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
  MK(moe_route(r.cpu, logits.data(), dtype, T, nullptr, nullptr, ci.data(), cw.data(), &cnf, nullptr));
  d_idx.poison();
  d_w.poison();
  d_nf.poison();
  MK(moe_route(r.gpu, d_logits.p, dtype, T, nullptr, nullptr, d_idx.p, d_w.p, d_nf.p, stream));
  CK(cudaStreamSynchronize(stream));
  compare_route(label(c, dtype, T, mode, "live/device"), T, k, ci, cw, cnf, d_idx.down(), d_w.down(), d_nf.down()[0]);
  MK(moe_route_host(r.gpu, logits.data(), dtype, T, nullptr, nullptr, hi.data(), hw.data(), &hnf));
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
    MK(moe_route(r.cpu, logits.data(), dtype, T, rep.data(), hmask, ci.data(), cw.data(), &cnf, nullptr));
    d_w.poison();
    d_nf.poison();
    const int32_t* rp = d_replay.p;
    if (variant == 2) {
      CK(cudaMemcpy(d_idx.p, d_replay.p, (size_t)T * k * 4, cudaMemcpyDeviceToDevice));
      rp = d_idx.p;
    } else {
      d_idx.poison();
    }
    MK(moe_route(r.gpu, d_logits.p, dtype, T, rp, variant == 1 ? d_mask.p : nullptr, d_idx.p, d_w.p, d_nf.p, stream));
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
    MK(moe_route_host(r.gpu, logits.data(), dtype, T, rep.data(), hmask, hi.data(), hw.data(), &hnf));
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
  MK(moe_route(r.cpu, logits.data(), dtype, T, nullptr, nullptr, live_idx.data(), tmpw.data(), nullptr, nullptr));
  for (int which = 0; which < 2; ++which) {
    const std::vector<int32_t>& ix = which == 0 ? live_idx : rep;
    std::vector<float> cg((size_t)T * E, 7.0f), hg((size_t)T * E, 7.0f);
    MK(moe_route_backward(r.cpu, logits.data(), dtype, T, ix.data(), dw.data(), cg.data(), nullptr));
    d_replay.up(ix.data());
    d_grad.poison();
    MK(moe_route_backward(r.gpu, d_logits.p, dtype, T, d_replay.p, d_dw.p, d_grad.p, stream));
    CK(cudaStreamSynchronize(stream));
    std::string l = label(c, dtype, T, mode, which == 0 ? "backward(live idx)" : "backward(replay idx)");
    compare_grad(l + "/device", cg, d_grad.down());
    MK(moe_route_backward_host(r.gpu, logits.data(), dtype, T, ix.data(), dw.data(), hg.data()));
    compare_grad(l + "/host", cg, hg);
  }
}

// Invalid replay rows: device calls write nothing and report through check_replay; host calls
// fail at once with the CPU backend's message; masked-out bad rows are accepted.
void check_invalid(const Config& c, std::mt19937_64& rng, cudaStream_t stream) {
  Routers r(c, rng);
  const int64_t T = 300;
  const int E = c.E, k = c.k;
  std::vector<uint8_t> logits = make_logits(rng, T, E, MOE_DTYPE_F32, 0);
  std::vector<int32_t> rep = random_replay(rng, T, E, k);
  const int64_t dup_row = 123, oor_row = 200;
  if (k >= 2) rep[dup_row * k + k - 1] = rep[dup_row * k];
  rep[oor_row * k] = E;  // out of range
  const int64_t first = k >= 2 ? dup_row : oor_row;
  const int first_reason = k >= 2 ? MOE_REPLAY_DUPLICATE : MOE_REPLAY_OUT_OF_RANGE;
  DBuf<uint8_t> d_logits(logits.size());
  d_logits.up(logits.data());
  DBuf<int32_t> d_rep(rep.size()), d_idx(rep.size());
  DBuf<float> d_w(rep.size()), d_grad((size_t)T * E), d_dw(rep.size());
  DBuf<int64_t> d_nf(1);
  d_rep.up(rep.data());
  d_idx.poison();
  d_w.poison();
  d_nf.poison();
  d_grad.poison();
  CK(cudaMemset(d_dw.p, 0, rep.size() * 4));
  ++g_checks;
  MK(moe_route(r.gpu, d_logits.p, MOE_DTYPE_F32, T, d_rep.p, nullptr, d_idx.p, d_w.p, d_nf.p, stream));
  MK(moe_route_backward(r.gpu, d_logits.p, MOE_DTYPE_F32, T, d_rep.p, d_dw.p, d_grad.p, stream));
  CK(cudaStreamSynchronize(stream));
  for (int32_t v : d_idx.down())
    if (v != -1) {
      failf("%s invalid replay: device wrote indices of a rejected call", c.name);
      break;
    }
  for (float v : d_w.down())
    if (fbits(v) != 0xffffffffu) {
      failf("%s invalid replay: device wrote weights of a rejected call", c.name);
      break;
    }
  for (float v : d_grad.down())
    if (fbits(v) != 0xffffffffu) {
      failf("%s invalid backward: device wrote gradients of a rejected call", c.name);
      break;
    }
  if (d_nf.down()[0] != -1) failf("%s invalid replay: device wrote the non-finite count", c.name);
  int64_t bad_row = -5;
  int reason = -5;
  int st = moe_router_check_replay(r.gpu, &bad_row, &reason);
  if (st != MOE_ERR_INVALID_REPLAY || bad_row != first || reason != first_reason)
    failf("%s check_replay: status %d row %lld reason %d, expected %d row %lld reason %d (%s)", c.name, st,
          (long long)bad_row, reason, MOE_ERR_INVALID_REPLAY, (long long)first, first_reason,
          moe_last_error_message());
  else if (g_verbose)
    printf("  ok  %s device rejection: %s\n", c.name, moe_last_error_message());
  if (moe_router_check_replay(r.gpu, &bad_row, &reason) != MOE_OK)
    failf("%s check_replay did not reset after reporting", c.name);
  // host path: immediate error, outputs untouched
  std::vector<int32_t> hi(rep.size(), -7);
  std::vector<float> hw(rep.size(), -1.0f);
  int64_t nf = -3;
  st = moe_route_host(r.gpu, logits.data(), MOE_DTYPE_F32, T, rep.data(), nullptr, hi.data(), hw.data(), &nf);
  char expect[64];
  snprintf(expect, sizeof expect, "row %lld", (long long)first);
  if (st != MOE_ERR_INVALID_REPLAY || !strstr(moe_last_error_message(), expect))
    failf("%s host replay: status %d message '%s', expected INVALID_REPLAY naming %s", c.name, st,
          moe_last_error_message(), expect);
  for (size_t i = 0; i < hi.size(); ++i)
    if (hi[i] != -7 || hw[i] != -1.0f || nf != -3) {
      failf("%s host replay: a rejected call wrote outputs", c.name);
      break;
    }
  // masked-out bad rows are accepted
  std::vector<uint8_t> mask((size_t)T, 1);
  mask[dup_row] = 0;
  mask[oor_row] = 0;
  DBuf<uint8_t> d_mask((size_t)T);
  d_mask.up(mask.data());
  MK(moe_route(r.gpu, d_logits.p, MOE_DTYPE_F32, T, d_rep.p, d_mask.p, d_idx.p, d_w.p, d_nf.p, stream));
  CK(cudaStreamSynchronize(stream));
  if (moe_router_check_replay(r.gpu, &bad_row, &reason) != MOE_OK)
    failf("%s masked-out bad rows were rejected (row %lld)", c.name, (long long)bad_row);
  std::vector<int32_t> ci(rep.size());
  std::vector<float> cw(rep.size());
  int64_t cnf = 0;
  MK(moe_route(r.cpu, logits.data(), MOE_DTYPE_F32, T, rep.data(), mask.data(), ci.data(), cw.data(), &cnf, nullptr));
  compare_route(std::string(c.name) + " masked bad rows", T, k, ci, cw, cnf, d_idx.down(), d_w.down(), d_nf.down()[0]);
}

// The device-pointer calls captured into a CUDA graph (no allocation, copy or sync inside).
void check_graph(const Config& c, std::mt19937_64& rng) {
  Routers r(c, rng);
  const int64_t T = 1000;
  const int E = c.E, k = c.k;
  std::vector<uint8_t> logits = make_logits(rng, T, E, MOE_DTYPE_BF16, 1);
  std::vector<int32_t> rep = random_replay(rng, T, E, k);
  std::vector<float> dw((size_t)T * k, 0.25f);
  DBuf<uint8_t> d_logits(logits.size());
  d_logits.up(logits.data());
  DBuf<int32_t> d_rep(rep.size()), d_idx(rep.size()), d_idx2(rep.size());
  DBuf<float> d_w(rep.size()), d_w2(rep.size()), d_dw(dw.size()), d_grad((size_t)T * E);
  DBuf<int64_t> d_nf(1), d_nf2(1);
  d_rep.up(rep.data());
  d_dw.up(dw.data());
  cudaStream_t s;
  CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  ++g_checks;
  CK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
  int s1 = moe_route(r.gpu, d_logits.p, MOE_DTYPE_BF16, T, nullptr, nullptr, d_idx.p, d_w.p, d_nf.p, s);
  int s2 = moe_route(r.gpu, d_logits.p, MOE_DTYPE_BF16, T, d_rep.p, nullptr, d_idx2.p, d_w2.p, d_nf2.p, s);
  int s3 = moe_route_backward(r.gpu, d_logits.p, MOE_DTYPE_BF16, T, d_rep.p, d_dw.p, d_grad.p, s);
  cudaError_t ce = cudaStreamEndCapture(s, &graph);
  if (s1 != MOE_OK || s2 != MOE_OK || s3 != MOE_OK || ce != cudaSuccess) {
    failf("%s graph capture failed: %d %d %d %s (%s)", c.name, s1, s2, s3, cudaGetErrorString(ce),
          moe_last_error_message());
    cudaGetLastError();
    cudaStreamDestroy(s);
    return;
  }
  CK(cudaGraphInstantiate(&exec, graph, 0));
  d_idx.poison();
  d_w.poison();
  d_idx2.poison();
  d_w2.poison();
  d_grad.poison();
  CK(cudaGraphLaunch(exec, s));
  CK(cudaGraphLaunch(exec, s));
  CK(cudaStreamSynchronize(s));
  std::vector<int32_t> ci(rep.size()), ci2(rep.size());
  std::vector<float> cw(rep.size()), cw2(rep.size()), cg((size_t)T * E);
  int64_t cnf = 0, cnf2 = 0;
  MK(moe_route(r.cpu, logits.data(), MOE_DTYPE_BF16, T, nullptr, nullptr, ci.data(), cw.data(), &cnf, nullptr));
  MK(moe_route(r.cpu, logits.data(), MOE_DTYPE_BF16, T, rep.data(), nullptr, ci2.data(), cw2.data(), &cnf2, nullptr));
  MK(moe_route_backward(r.cpu, logits.data(), MOE_DTYPE_BF16, T, rep.data(), dw.data(), cg.data(), nullptr));
  compare_route(std::string(c.name) + " graph live", T, k, ci, cw, cnf, d_idx.down(), d_w.down(), d_nf.down()[0]);
  compare_route(std::string(c.name) + " graph replay", T, k, ci2, cw2, cnf2, d_idx2.down(), d_w2.down(),
                d_nf2.down()[0]);
  compare_grad(std::string(c.name) + " graph backward", cg, d_grad.down());
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(s);
}

void check_agreement(std::mt19937_64& rng, cudaStream_t stream) {
  const int64_t rows = 5000;
  const int k = 8, E = 64;
  const int64_t stride = 10;
  std::vector<int32_t> a((size_t)rows * stride), b((size_t)rows * stride);
  std::vector<int32_t> ra = random_replay(rng, rows, E, k), rb = random_replay(rng, rows, E, k);
  for (int64_t r = 0; r < rows; ++r)
    for (int j = 0; j < k; ++j) {
      a[r * stride + j] = ra[r * k + j];
      b[r * stride + j] = rng() % 2 ? ra[r * k + (j + 3) % k] : rb[r * k + j];  // some rows equal as sets
    }
  for (int64_t r = 0; r < rows; ++r) {  // make rows distinct again where the mix duplicated
    std::vector<int> seen(E, 0);
    bool dup = false;
    for (int j = 0; j < k; ++j) dup |= seen[b[r * stride + j]]++ > 0;
    if (dup)
      for (int j = 0; j < k; ++j) b[r * stride + j] = rb[r * k + j];
  }
  int64_t hd = 0, ho = 0;
  std::vector<uint8_t> hrow(rows);
  MK(moe_routing_agreement(a.data(), b.data(), rows, k, stride, E, &hd, &ho, hrow.data()));
  DBuf<int32_t> da(a.size()), db(b.size());
  DBuf<int64_t> dout(2);
  DBuf<uint8_t> drow(rows);
  da.up(a.data());
  db.up(b.data());
  ++g_checks;
  MK(moe_routing_agreement_device(da.p, db.p, rows, k, stride, E, dout.p, drow.p, stream));
  CK(cudaStreamSynchronize(stream));
  std::vector<int64_t> o = dout.down();
  if (o[0] != hd || o[1] != ho || drow.down() != hrow)
    failf("routing agreement: device (%lld, %lld) host (%lld, %lld)", (long long)o[0], (long long)o[1], (long long)hd,
          (long long)ho);
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false;
  uint64_t seed = 20240611;
  for (int i = 1; i < argc; ++i) {
    if (!strcmp(argv[i], "--quick"))
      quick = true;
    else if (!strcmp(argv[i], "--verbose"))
      g_verbose = true;
    else if (!strcmp(argv[i], "--seed") && i + 1 < argc)
      seed = strtoull(argv[++i], nullptr, 10);
    else {
      fprintf(stderr, "usage: %s [--quick] [--seed N] [--verbose]\n", argv[0]);
      return 2;
    }
  }
  if (!moe_cuda_compiled()) {
    fprintf(stderr, "moe_check: library built without CUDA\n");
    return 2;
  }
  int n = moe_cuda_device_count();
  if (n <= 0) {
    int raw = 0;
    cudaError_t why = cudaGetDeviceCount(&raw);
    fprintf(stderr, "moe_check: no CUDA device found (cudaGetDeviceCount: %s; this binary uses CUDA runtime %d.%d)\n",
            why == cudaSuccess ? "0 devices" : cudaGetErrorString(why), CUDART_VERSION / 1000, CUDART_VERSION % 1000 / 10);
    return 2;
  }
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  printf("moe_check: device 0: %s (sm_%d%d, %d SMs), seed %llu%s\n", prop.name, prop.major, prop.minor,
         prop.multiProcessorCount, (unsigned long long)seed, quick ? ", quick" : "");

  const Config configs[] = {
      // name, E, k, score, pre, G, Gk, scale, bias
      {"softmax_post_E8_k2", 8, 2, MOE_SCORE_SOFTMAX, 0, 0, 0, 1.0f, false},
      {"softmax_post_E64_k6", 64, 6, MOE_SCORE_SOFTMAX, 0, 0, 0, 1.0f, false},
      {"softmax_post_E128_k8", 128, 8, MOE_SCORE_SOFTMAX, 0, 0, 0, 1.0f, false},
      {"softmax_post_E160_k6_scale", 160, 6, MOE_SCORE_SOFTMAX, 0, 0, 0, 2.0f, false},
      {"softmax_post_E100_k7", 100, 7, MOE_SCORE_SOFTMAX, 0, 0, 0, 1.0f, false},
      {"softmax_post_E512_k10", 512, 10, MOE_SCORE_SOFTMAX, 0, 0, 0, 1.0f, false},
      {"softmax_post_E600_k40", 600, 40, MOE_SCORE_SOFTMAX, 0, 0, 0, 1.0f, false},
      {"softmax_post_E4096_k64", 4096, 64, MOE_SCORE_SOFTMAX, 0, 0, 0, 1.0f, false},
      {"softmax_pre_E64_k6", 64, 6, MOE_SCORE_SOFTMAX, 1, 0, 0, 1.0f, false},
      {"softmax_pre_E2047_k16", 2047, 16, MOE_SCORE_SOFTMAX, 1, 0, 0, 1.5f, false},
      {"softmax_pre_grouped_E96_k6", 96, 6, MOE_SCORE_SOFTMAX, 1, 8, 3, 1.0f, false},
      {"sigmoid_k1_E16", 16, 1, MOE_SCORE_SIGMOID, 0, 0, 0, 1.0f, false},
      {"sigmoid_E64_k4", 64, 4, MOE_SCORE_SIGMOID, 0, 0, 0, 1.0f, false},
      {"sigmoid_E33_k33", 33, 33, MOE_SCORE_SIGMOID, 0, 0, 0, 1.0f, false},
      {"sigmoid_bias_E96_k8_group4_2", 96, 8, MOE_SCORE_SIGMOID, 0, 4, 2, 1.0f, true},
      {"sigmoid_bias_group_E256_k8", 256, 8, MOE_SCORE_SIGMOID, 0, 8, 4, 2.5f, true},
      {"sigmoid_bias_group_E1000_k12", 1000, 12, MOE_SCORE_SIGMOID, 0, 10, 4, 1.0f, true},
      {"sigmoid_bias_group_E4096_k8_g64", 4096, 8, MOE_SCORE_SIGMOID, 0, 64, 8, 2.5f, true},
      {"sigmoid_group_E384_k8_g48", 384, 8, MOE_SCORE_SIGMOID, 0, 48, 2, 1.0f, false},
  };
  std::mt19937_64 rng(seed);
  cudaStream_t stream;
  CK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  const int64_t Ts_full[] = {1, 37, 1000};
  const int64_t Ts_quick[] = {1, 37};
  for (const Config& c : configs) {
    const int fails_before = g_failures;
    const long long big = (long long)c.E >= 2048 ? 1 : 0;
    for (int dtype = 0; dtype < 3; ++dtype)
      for (int mode = 0; mode < 4; ++mode) {
        if (quick && mode != (dtype + 1) % 4) continue;
        const int64_t* Ts = quick ? Ts_quick : Ts_full;
        const int nT = quick ? 2 : 3;
        for (int ti = 0; ti < nT; ++ti) {
          int64_t T = Ts[ti];
          if (big && T > 100) T = 200;
          check_case(c, dtype, T, mode, rng, stream);
        }
      }
    check_invalid(c, rng, stream);
    printf("%-36s %s\n", c.name, g_failures == fails_before ? "ok" : "MISMATCH");
    fflush(stdout);
  }
  check_graph(configs[15], rng);
  check_graph(configs[9], rng);
  check_agreement(rng, stream);
  CK(cudaStreamDestroy(stream));
  CK(cudaDeviceSynchronize());
  printf("moe_check: %d checks, %d failures, %lld values not bit-exact (within 1e-6 relative)\n", g_checks,
         g_failures, g_inexact);
  printf("moe_check: %s\n", g_failures ? "FAIL" : "PASS");
  return g_failures ? 1 : 0;
}
